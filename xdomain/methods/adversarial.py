"""Adversarial alignment: DANN and CDAN(+E).

The discriminator sees the features through a gradient-reversal layer whose
coefficient follows the adaptation schedule (`--adapt_schedule=dann` gives
Ganin et al.'s 2 / (1 + exp(-10 p)) - 1), so one optimizer trains the
discriminator to tell the domains apart and the feature extractor to confuse it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xdomain import losses
from xdomain import models
from xdomain.methods import base
from xdomain.config import Config


def _discriminator(config: Config) -> models.DomainDiscriminator:
  return models.DomainDiscriminator(
      hidden_sizes=(config.discriminator_hidden, config.discriminator_hidden))


def _discriminate(discriminator, params, source, target, rng):
  """Discriminator logits of reversed source and target samples, one pass."""
  inputs = jnp.concatenate([source, target], axis=0)
  logits = discriminator.apply({"params": params}, inputs, train=True,
                               rngs={"dropout": rng})
  return logits[:source.shape[0]], logits[source.shape[0]:]


def make_dann(config: Config) -> base.Method:
  """DANN: Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016."""
  discriminator = _discriminator(config)
  reversal = base.adaptation_weight(config)

  def init_aux(rng, feature_dim, num_classes):
    del num_classes
    return {"discriminator": discriminator.init(
        rng, jnp.zeros((1, feature_dim)), train=False)["params"]}

  def terms(outputs, aux_params, rng, step):
    fs, ms, ft, mt = base.features_of_both(outputs)
    scale = reversal(step)
    ds, dt = _discriminate(discriminator, aux_params["discriminator"],
                           losses.gradient_reversal(fs, scale),
                           losses.gradient_reversal(ft, scale), rng)
    return {"domain_adversarial": losses.domain_balanced_mean(
        *losses.domain_adversarial(ds, dt, source_where=ms, target_where=mt),
        source_where=ms, target_where=mt)}

  return base.Method(name="dann", terms=terms,
                     weights={"domain_adversarial": 1.0}, init_aux=init_aux,
                     logged_schedules={"gradient_reversal": reversal})


def make_cdan(config: Config) -> base.Method:
  """CDAN(+E): Long et al., "Conditional Adversarial Domain Adaptation", NeurIPS 2018.

  The discriminator sees the multilinear map of features and predictions; when
  d * c exceeds `--cdan_random_dim` the randomized map of that size is used,
  with matrices drawn once from the run's seed. `--cdan_entropy` weights the
  examples by 1 + exp(-H) (CDAN+E).
  """
  discriminator = _discriminator(config)
  reversal = base.adaptation_weight(config)
  random_key = jax.random.fold_in(jax.random.key(config.seed), 0xCDA)

  def random_matrices(feature_dim, num_classes):
    if feature_dim * num_classes <= config.cdan_random_dim:
      return None
    return losses.cdan_random_matrices(random_key, feature_dim, num_classes,
                                       output_dim=config.cdan_random_dim,
                                       multilinear_max_dim=config.cdan_random_dim)

  def init_aux(rng, feature_dim, num_classes):
    matrices = random_matrices(feature_dim, num_classes)
    width = (feature_dim * num_classes if matrices is None
             else config.cdan_random_dim)
    return {"discriminator": discriminator.init(
        rng, jnp.zeros((1, width)), train=False)["params"]}

  def terms(outputs, aux_params, rng, step):
    fs, ms, ft, mt = base.features_of_both(outputs)
    ls, _, lt, _ = base.logits_of_both(outputs)
    matrices = random_matrices(fs.shape[-1], ls.shape[-1])
    scale = reversal(step)
    hs = losses.cdan_features(fs, jax.nn.softmax(ls), random_matrices=matrices)
    ht = losses.cdan_features(ft, jax.nn.softmax(lt), random_matrices=matrices)
    ds, dt = _discriminate(discriminator, aux_params["discriminator"],
                           losses.gradient_reversal(hs, scale),
                           losses.gradient_reversal(ht, scale), rng)
    entropy_logits = ({"source_class_logits": ls, "target_class_logits": lt}
                      if config.cdan_entropy else {})
    return {"cdan": losses.domain_balanced_mean(
        *losses.cdan(ds, dt, source_where=ms, target_where=mt, **entropy_logits),
        source_where=ms, target_where=mt)}

  return base.Method(name="cdan", terms=terms, weights={"cdan": 1.0},
                     init_aux=init_aux, logged_schedules={"gradient_reversal": reversal})
