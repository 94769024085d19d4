"""Methods that shape the target predictions: entropy minimisation and MCC."""

from __future__ import annotations

from xdomain import losses
from xdomain.methods import base
from xdomain.config import Config


def make_entropy(config: Config) -> base.Method:
  """Entropy minimisation on the target (Grandvalet & Bengio, NeurIPS 2004)."""

  def terms(outputs, aux_params, rng, step):
    del aux_params, rng, step
    _, _, lt, mt = base.logits_of_both(outputs)
    return {"entropy": base.masked_mean(losses.entropy(lt, where=mt), mt)}

  return base.Method(name="entropy", terms=terms,
                     weights={"entropy": base.adaptation_weight(config)})


def make_mcc(config: Config) -> base.Method:
  """Minimum class confusion: Jin et al., "Minimum Class Confusion", ECCV 2020."""

  def terms(outputs, aux_params, rng, step):
    del aux_params, rng, step
    _, _, lt, mt = base.logits_of_both(outputs)
    return {"mcc": losses.mcc(lt, temperature=config.mcc_temperature, where=mt)}

  return base.Method(name="mcc", terms=terms,
                     weights={"mcc": base.adaptation_weight(config)})
