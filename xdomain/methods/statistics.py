"""Statistics matching: DAN (multi-kernel MMD), JAN (joint MMD), Deep CORAL."""

from __future__ import annotations

import jax

from xdomain import losses
from xdomain.methods import base
from xdomain.config import Config


def make_dan(config: Config) -> base.Method:
  """DAN: Long et al., "Learning Transferable Features with Deep Adaptation Networks", ICML 2015.

  Multi-kernel MMD (unbiased, median-heuristic bandwidths) of the features.
  """

  def terms(outputs, aux_params, rng, step):
    del aux_params, rng, step
    fs, ms, ft, mt = base.features_of_both(outputs)
    # Old scale, at which the flag files' weights were chosen; issue 15's validators re-select.
    return {"mmd": losses.mmd(fs, ft, source_where=ms, target_where=mt,
                              bandwidth_heuristic="median", kernel_reduction="mean")}

  return base.Method(name="dan", terms=terms,
                     weights={"mmd": base.adaptation_weight(config)})


def make_jan(config: Config) -> base.Method:
  """JAN: Long et al., "Deep Transfer Learning with Joint Adaptation Networks", ICML 2017.

  Joint MMD over the features and the softmax predictions.
  """

  def terms(outputs, aux_params, rng, step):
    del aux_params, rng, step
    fs, ms, ft, mt = base.features_of_both(outputs)
    ls, _, lt, _ = base.logits_of_both(outputs)
    # Old scale, at which the flag files' weights were chosen; issue 15's validators re-select.
    return {"jmmd": losses.jmmd([fs, jax.nn.softmax(ls)],
                                [ft, jax.nn.softmax(lt)],
                                source_where=ms, target_where=mt,
                                bandwidth_heuristic="median", kernel_reduction="mean")}

  return base.Method(name="jan", terms=terms,
                     weights={"jmmd": base.adaptation_weight(config)})


def make_coral(config: Config) -> base.Method:
  """Deep CORAL: Sun & Saenko, "Deep CORAL", ECCV 2016 workshops."""

  def terms(outputs, aux_params, rng, step):
    del aux_params, rng, step
    fs, ms, ft, mt = base.features_of_both(outputs)
    return {"coral": losses.coral(fs, ft, source_where=ms, target_where=mt)}

  return base.Method(name="coral", terms=terms,
                     weights={"coral": base.adaptation_weight(config)})
