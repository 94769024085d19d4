"""Penalties on the features themselves: batch spectral penalisation (BSP) and
the adaptive feature norm (AFN)."""

from __future__ import annotations

import dataclasses

from xdomain import losses
from xdomain.config import Config
from xdomain.methods import adversarial
from xdomain.methods import base

DEFAULT_BSP_WEIGHT = 1e-4  # Chen et al.'s weight of the penalty


def with_bsp(method: base.Method, weight: float) -> base.Method:
  """`method` plus the batch spectral penalty of both domains' features (term `bsp`)."""

  def terms(outputs, aux_params, rng, step):
    values = dict(method.terms(outputs, aux_params, rng, step))
    fs, ms, ft, mt = base.features_of_both(outputs)
    values["bsp"] = losses.batch_spectral_penalty(fs, ft, source_where=ms, target_where=mt)
    return values

  return dataclasses.replace(method, terms=terms, weights={**method.weights, "bsp": weight})


def optional_bsp(make):
  """`make(config)` with the BSP term added when `--bsp_weight` > 0 (DANN, CDAN)."""

  def make_with_bsp(config: Config) -> base.Method:
    method = make(config)
    return with_bsp(method, config.bsp_weight) if config.bsp_weight > 0 else method

  return make_with_bsp


def make_bsp(config: Config) -> base.Method:
  """BSP: Chen et al., "Transferability vs. Discriminability: Batch Spectral
  Penalization for Adversarial Domain Adaptation", ICML 2019.

  CDAN(+E) with the penalty of the top singular value of each domain's
  feature matrix, weight `--bsp_weight` (1e-4 when 0), as TLlib's BSP;
  `--method=dann --bsp_weight=...` is the paper's DANN + BSP.
  """
  method = adversarial.make_cdan(config)
  method = with_bsp(method, config.bsp_weight or DEFAULT_BSP_WEIGHT)
  return dataclasses.replace(method, name="bsp")


def make_afn(config: Config) -> base.Method:
  """AFN: Xu et al., "Larger Norm More Transferable: An Adaptive Feature Norm
  Approach for Unsupervised Domain Adaptation", ICCV 2019.

  The stepwise variant (SAFN, `--afn_delta`) enlarges every feature norm by
  delta each step: the previous norm is the current one behind
  `stop_gradient`. `--afn_radius=R` > 0 is hard AFN instead. The term is the
  mean over the source plus the mean over the target, weighted by the
  adaptation weight (the paper's lambda = 0.05).
  """
  radius = config.afn_radius or None

  def terms(outputs, aux_params, rng, step):
    del aux_params, rng, step
    fs, ms, ft, mt = base.features_of_both(outputs)
    values = [base.masked_mean(losses.adaptive_feature_norm(
        f, delta=config.afn_delta, radius=radius, where=m), m) for f, m in ((fs, ms), (ft, mt))]
    return {"afn": values[0] + values[1]}

  return base.Method(name="afn", terms=terms, weights={"afn": base.adaptation_weight(config)})
