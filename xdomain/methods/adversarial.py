"""Adversarial alignment: DANN, IWDAN and CDAN(+E).

The discriminator sees the features through a gradient-reversal layer whose
coefficient follows the adaptation schedule (`--adapt_schedule=dann` gives
Ganin et al.'s 2 / (1 + exp(-10 p)) - 1), so one optimizer trains the
discriminator to tell the domains apart and the feature extractor to confuse it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from xdomain import losses
from xdomain import models
from xdomain.methods import base
from xdomain.config import Config
from xdomain.models import detection


def _discriminator(config: Config) -> models.DomainDiscriminator:
  return models.DomainDiscriminator(
      hidden_sizes=(config.discriminator_hidden, config.discriminator_hidden))


def _discriminate(discriminator, params, source, target, rng):
  """Discriminator logits of reversed source and target samples, one pass."""
  inputs = jnp.concatenate([source, target], axis=0)
  logits = discriminator.apply({"params": params}, inputs, train=True,
                               rngs={"dropout": rng})
  return logits[:source.shape[0]], logits[source.shape[0]:]


def _feature_discriminator_init(discriminator):
  """`init_aux` of a discriminator that reads the features."""

  def init_aux(rng, feature_dim, num_classes):
    del num_classes
    return {"discriminator": discriminator.init(
        rng, jnp.zeros((1, feature_dim)), train=False)["params"]}

  return init_aux


def _adversarial_loss(discriminator, params, fs, ms, ft, mt, scale, rng, source_weights=None):
  """The domain loss of source and target features behind gradient reversal of `scale`."""
  ds, dt = _discriminate(discriminator, params, losses.gradient_reversal(fs, scale),
                         losses.gradient_reversal(ft, scale), rng)
  return losses.domain_balanced_mean(
      *losses.domain_adversarial(ds, dt, source_weights=source_weights,
                                 source_where=ms, target_where=mt),
      source_where=ms, target_where=mt)


def _domain_loss(discriminator, params, outputs, scale, rng, source_weights=None):
  """DANN's domain loss of the features behind gradient reversal of `scale`."""
  fs, ms, ft, mt = base.features_of_both(outputs)
  return _adversarial_loss(discriminator, params, fs, ms, ft, mt, scale, rng,
                           source_weights=source_weights)


def _per_level_loss(discriminator, params, outputs, scale, rng):
  """The mean over FPN levels of each level's domain loss under its own
  discriminator (`params["level_<k>"]`)."""
  side = detection.image_size_of(outputs.source_features.shape[1])
  bounds = detection.level_bounds((side, side))
  level_losses = []
  for k, ((start, stop), level_rng) in enumerate(zip(bounds, jax.random.split(rng, len(bounds)))):
    level = outputs.replace(source_features=outputs.source_features[:, start:stop],
                            source_mask=outputs.source_mask[:, start:stop],
                            target_features=outputs.target_features[:, start:stop],
                            target_mask=outputs.target_mask[:, start:stop])
    level_losses.append(_domain_loss(discriminator, params[f"level_{k}"], level, scale,
                                     level_rng))
  return jnp.mean(jnp.stack(level_losses))


def _alignment(config: Config, discriminator):
  """(init_aux, loss) of the features' alignment: one discriminator over every
  sample, or with `--discriminator_per_level` (detection) one per FPN level and
  the mean of the levels' losses, which keeps a term at log 2 when the
  discriminators are at chance, as with one (EPM's code sums the levels).

  `loss(params, outputs, scale, rng)` is the domain loss behind reversal of `scale`.
  """
  init_one = _feature_discriminator_init(discriminator)
  if not config.discriminator_per_level:
    return init_one, functools.partial(_domain_loss, discriminator)

  def init_aux(rng, feature_dim, num_classes):
    rngs = jax.random.split(rng, len(detection.STRIDES))
    return {"discriminator": {
        f"level_{k}": init_one(level_rng, feature_dim, num_classes)["discriminator"]
        for k, level_rng in enumerate(rngs)}}

  return init_aux, functools.partial(_per_level_loss, discriminator)


def make_dann(config: Config) -> base.Method:
  """DANN: Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016.

  On detection it aligns every FPN location (DA-Faster's image-level term);
  `--discriminator_per_level` gives each level its own discriminator, as EPM."""
  init_aux, alignment_loss = _alignment(config, _discriminator(config))
  reversal = base.adaptation_weight(config)

  def terms(outputs, aux_params, rng, step):
    return {"domain_adversarial": alignment_loss(aux_params["discriminator"], outputs,
                                                 reversal(step), rng)}

  return base.Method(name="dann", terms=terms, weights={"domain_adversarial": 1.0},
                     init_aux=init_aux, logged_schedules={"gradient_reversal": reversal})


def make_epm(config: Config) -> base.Method:
  """EPM: Hsu et al., "Every Pixel Matters: Center-aware Feature Alignment for
  Domain Adaptive Object Detector", ECCV 2020 (detection only).

  DANN's alignment of every location of the FPN (EPM's global alignment) plus
  a center-aware one: a second discriminator sees each location's features
  scaled by an attention a = sigmoid(20 * max_k p_k * centre-ness) made from
  the detector's own outputs on that image (`models.detection.center_aware_attention`;
  EPM's "ca_feature" form and sharpness 20, as its released configurations),
  so that the locations the detector takes for object centres weigh most in
  what the adversary must make alike. The attention is a weighting, not a
  path for the reversed gradient into the class and centre-ness outputs
  (stopped). The center-aware term's reversal is the global term's times
  `--center_aware_weight`; both terms' discriminators learn at full strength.
  `--discriminator_per_level` gives each term one discriminator per FPN level,
  as EPM's code (the term is the levels' mean, where EPM sums them).

  Where it departs from EPM's code: EPM weighs the center-aware loss 10 times
  the global one (discriminator and reversal alike) at constant weights; here
  the reversal alone is scaled, on DANN's schedule. EPM's discriminators are
  convolutional; here they are per-location MLPs, by default one per term
  over every location of both levels (stride 8 outnumbers stride 16 four to
  one). EPM starts its center-aware stage from a globally aligned model; here
  both terms train from the start.
  """
  init_discriminators, alignment_loss = _alignment(config, _discriminator(config))
  reversal = base.adaptation_weight(config)

  def init_aux(rng, feature_dim, num_classes):
    global_rng, center_rng = jax.random.split(rng)
    return {**init_discriminators(global_rng, feature_dim, num_classes),
            "center_discriminator": init_discriminators(center_rng, feature_dim,
                                                        num_classes)["discriminator"]}

  def terms(outputs, aux_params, rng, step):
    global_rng, center_rng = jax.random.split(rng)
    scale = reversal(step)
    attention = lambda logits: jax.lax.stop_gradient(
        detection.center_aware_attention(logits))[..., None]
    centered = outputs.replace(
        source_features=attention(outputs.source_logits) * outputs.source_features,
        target_features=attention(outputs.target_logits) * outputs.target_features)
    return {
        "domain_adversarial": alignment_loss(aux_params["discriminator"], outputs, scale,
                                             global_rng),
        "center_aware_adversarial": alignment_loss(aux_params["center_discriminator"], centered,
                                                   scale * config.center_aware_weight,
                                                   center_rng),
    }

  return base.Method(name="epm", terms=terms,
                     weights={"domain_adversarial": 1.0, "center_aware_adversarial": 1.0},
                     init_aux=init_aux, logged_schedules={"gradient_reversal": reversal})


def class_weights(statistics) -> jax.Array:
  """IWDAN's class weights [K] from its running statistics (all ones before any step)."""
  return losses.class_importance_weights(
      statistics["confusion"] / jnp.maximum(statistics["source_count"], 1.0),
      statistics["target_predictions"] / jnp.maximum(statistics["target_count"], 1.0))


def make_iwdan(config: Config) -> base.Method:
  """IWDAN: Tachet des Combes et al., "Domain Adaptation with Conditional
  Distribution Matching and Generalized Label Shift", NeurIPS 2020.

  DANN aligns the feature distributions of the domains, which moves target
  examples into the source's class proportions when those differ (label
  shift). IWDAN weighs each source example by w_y ~ p_T(y) / p_S(y) in both the
  domain loss and the classification loss, so the features are aligned with
  a source reweighted to the target's estimated class proportions. w comes
  from the classifier's soft confusion matrix on the source and its mean
  prediction on the target (`losses.class_importance_weights`), both running
  averages with decay `--label_shift_decay` updated at every step (the paper
  re-solves once per epoch with a moving average of the weights). The source
  classification loss is reweighted by a term `source_reweighting` =
  mean((w_y - 1) * cross-entropy), so task + term = mean(w_y * cross-entropy).
  """
  discriminator = _discriminator(config)
  reversal = base.adaptation_weight(config)
  decay = config.label_shift_decay

  def init_statistics(num_classes):
    return {"confusion": jnp.zeros((num_classes, num_classes), jnp.float32),
            "source_count": jnp.zeros((), jnp.float32),
            "target_predictions": jnp.zeros((num_classes,), jnp.float32),
            "target_count": jnp.zeros((), jnp.float32)}

  def update_statistics(state, outputs):
    ls, ms, lt, mt = base.logits_of_both(outputs)
    labels = outputs.source_labels.reshape(-1)
    keep_s = jnp.ones(labels.shape, jnp.float32) if ms is None else ms.astype(jnp.float32)
    keep_t = (jnp.ones(lt.shape[:1], jnp.float32) if mt is None
              else mt.astype(jnp.float32))
    num_classes = ls.shape[-1]
    # [K, K]: soft prediction i (rows) of the source examples of true class j.
    confusion = jnp.einsum("ni,nj->ij", jax.nn.softmax(ls.astype(jnp.float32)) * keep_s[:, None],
                           jax.nn.one_hot(labels, num_classes))
    target = jnp.sum(jax.nn.softmax(lt.astype(jnp.float32)) * keep_t[:, None], axis=0)
    return {
        "confusion": decay * state["confusion"] + confusion,
        "source_count": decay * state["source_count"] + jnp.sum(keep_s),
        "target_predictions": decay * state["target_predictions"] + target,
        "target_count": decay * state["target_count"] + jnp.sum(keep_t),
    }

  def log_statistics(state):
    return {f"label_shift/weight_{k}": w for k, w in enumerate(class_weights(state))}

  def terms(outputs, aux_params, rng, step):
    ls, ms, _, _ = base.logits_of_both(outputs)
    labels = outputs.source_labels.reshape(-1)
    example_weights = class_weights(outputs.statistics)[labels]
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(
        ls.astype(jnp.float32), labels)
    return {
        "domain_adversarial": _domain_loss(discriminator, aux_params["discriminator"], outputs,
                                           reversal(step), rng, source_weights=example_weights),
        "source_reweighting": base.masked_mean((example_weights - 1.0) * cross_entropy, ms),
    }

  return base.Method(name="iwdan", terms=terms,
                     weights={"domain_adversarial": 1.0, "source_reweighting": 1.0},
                     init_aux=_feature_discriminator_init(discriminator),
                     logged_schedules={"gradient_reversal": reversal},
                     statistics=base.Statistics(init=init_statistics, update=update_statistics,
                                                log=log_statistics))


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
