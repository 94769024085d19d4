"""--method=epm: DANN's global alignment plus EPM's center-aware alignment (detection)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdomain import methods
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.methods import METHODS
from xdomain.methods import base
from xdomain.models import detection
from xdomain.models import heads

NUM_CLASSES, FEATURES, HIDDEN = 3, 6, 8


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _attention(outputs):
  """EPM's attention in numpy: sigmoid(20 * max class probability * centre-ness)."""
  outputs = np.asarray(outputs)
  return _sigmoid(20.0 * _sigmoid(outputs[..., :NUM_CLASSES]).max(-1) * _sigmoid(outputs[..., -1]))


def test_center_aware_attention_is_epms():
  outputs = np.random.default_rng(0).normal(size=(2, 7, NUM_CLASSES + 5)).astype(np.float32) * 3
  np.testing.assert_allclose(detection.center_aware_attention(jnp.asarray(outputs)),
                             _attention(outputs), rtol=1e-6)
  background = np.full((1, NUM_CLASSES + 5), -30.0, np.float32)
  np.testing.assert_allclose(detection.center_aware_attention(jnp.asarray(background)), 0.5)


def _outputs(seed=0):
  rng = np.random.default_rng(seed)
  make = lambda *shape: jnp.asarray(rng.normal(size=shape) * 2, jnp.float32)
  mask = jnp.ones((2, 5), bool)
  return base.Outputs(source_logits=make(2, 5, NUM_CLASSES + 5), source_features=make(2, 5, FEATURES),
                      source_labels=None, source_mask=mask,
                      target_logits=make(2, 5, NUM_CLASSES + 5),
                      target_features=make(2, 5, FEATURES), target_mask=mask)


def _gradients(method, aux, outputs, rng):
  """Gradients of the center-aware term with respect to the logits and features."""
  arrays = {name: getattr(outputs, name) for name in
            ("source_logits", "target_logits", "source_features", "target_features")}
  term = lambda a: method.terms(outputs.replace(**a), aux, rng, 0)["center_aware_adversarial"]
  return jax.grad(term)(arrays)


def _epm(center_aware_weight=1.0):
  config = Config(method="epm", discriminator_hidden=HIDDEN, adapt_weight=0.1,
                  adapt_schedule="constant", center_aware_weight=center_aware_weight)
  method = METHODS["epm"](config)
  return method, method.init_aux(jax.random.PRNGKey(1), FEATURES, NUM_CLASSES)


def test_center_aware_term_is_the_domain_loss_of_attention_scaled_features():
  method, aux = _epm()
  outputs, rng = _outputs(), jax.random.PRNGKey(2)
  terms = method.terms(outputs, aux, rng, 0)
  _, center_rng = jax.random.split(rng)
  scaled = [_attention(outputs.source_logits)[..., None] * np.asarray(outputs.source_features),
            _attention(outputs.target_logits)[..., None] * np.asarray(outputs.target_features)]
  rows = np.concatenate([s.reshape(-1, FEATURES) for s in scaled])
  logits = np.asarray(heads.DomainDiscriminator(hidden_sizes=(HIDDEN, HIDDEN)).apply(
      {"params": aux["center_discriminator"]}, jnp.asarray(rows), train=True,
      rngs={"dropout": center_rng}), np.float64)
  softplus = lambda x: np.logaddexp(0.0, x)
  # Source is domain 1, target 0; each domain's mean, the two averaged.
  expected = 0.5 * (softplus(-logits[:10]).mean() + softplus(logits[10:]).mean())
  np.testing.assert_allclose(terms["center_aware_adversarial"], expected, rtol=1e-5)
  assert not np.isclose(terms["center_aware_adversarial"], terms["domain_adversarial"])


def test_center_aware_reversal_scales_with_its_weight_and_leaves_the_scores_alone():
  outputs, rng = _outputs(), jax.random.PRNGKey(2)

  once, twice = (_gradients(*_epm(weight), outputs, rng) for weight in (1.0, 2.0))
  assert np.abs(once["target_features"]).max() > 0
  for name in ("source_features", "target_features"):
    np.testing.assert_allclose(twice[name], 2 * once[name], rtol=1e-5)
  # The attention weighs; no reversed gradient reaches the class or centre-ness outputs.
  assert not np.asarray(once["source_logits"]).any()
  assert not np.asarray(once["target_logits"]).any()


def test_center_aware_reversal_opposes_its_discriminator():
  method, aux = _epm()  # constant reversal 0.1
  outputs, rng = _outputs(), jax.random.PRNGKey(2)
  reversed_ = _gradients(method, aux, outputs, rng)
  _, center_rng = jax.random.split(rng)
  attention = [detection.center_aware_attention(outputs.source_logits)[..., None],
               detection.center_aware_attention(outputs.target_logits)[..., None]]

  def discriminator_loss(source, target):  # the discriminator's own loss, nothing reversed
    rows = jnp.concatenate([(attention[0] * source).reshape(-1, FEATURES),
                            (attention[1] * target).reshape(-1, FEATURES)])
    logits = heads.DomainDiscriminator(hidden_sizes=(HIDDEN, HIDDEN)).apply(
        {"params": aux["center_discriminator"]}, rows, train=True, rngs={"dropout": center_rng})
    return 0.5 * (jnp.mean(jax.nn.softplus(-logits[:10])) + jnp.mean(jax.nn.softplus(logits[10:])))

  plain = jax.grad(discriminator_loss, argnums=(0, 1))(outputs.source_features,
                                                        outputs.target_features)
  np.testing.assert_allclose(reversed_["source_features"], -0.1 * plain[0], rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(reversed_["target_features"], -0.1 * plain[1], rtol=1e-5, atol=1e-9)


def test_center_aware_weight_scales_the_reversal_not_the_discriminators_loss():
  outputs, rng = _outputs(), jax.random.PRNGKey(2)

  def discriminator_gradients(center_aware_weight):
    method, aux = _epm(center_aware_weight)
    term = lambda a: method.terms(outputs, a, rng, 0)["center_aware_adversarial"]
    return jax.grad(term)(aux)["center_discriminator"]

  once, thrice = discriminator_gradients(1.0), discriminator_gradients(3.0)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(once)) > 0
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), once, thrice)


def test_global_term_is_danns():
  method, aux = _epm()
  outputs, rng = _outputs(), jax.random.PRNGKey(2)
  global_rng, _ = jax.random.split(rng)
  dann = METHODS["dann"](Config(method="dann", discriminator_hidden=HIDDEN, adapt_weight=0.1,
                                adapt_schedule="constant"))
  expected = dann.terms(outputs, {"discriminator": aux["discriminator"]}, global_rng, 0)
  np.testing.assert_allclose(method.terms(outputs, aux, rng, 0)["domain_adversarial"],
                             expected["domain_adversarial"], rtol=1e-6)


@pytest.mark.parametrize("per_level", [False, True])
def test_masked_locations_change_neither_term(per_level):
  method, aux = _per_level("epm") if per_level else _epm()
  outputs, rng = _outputs(), jax.random.PRNGKey(2)
  mask = jnp.array([[True, True, False, True, False], [True, False, True, True, True]])
  outputs = outputs.replace(source_mask=mask, target_mask=mask[::-1])
  changed = outputs.replace(
      source_features=jnp.where(mask[..., None], outputs.source_features, 50.0),
      target_logits=jnp.where(mask[::-1, :, None], outputs.target_logits, 9.0))
  # The same rng and shapes give both calls the same dropout masks.
  before, after = (method.terms(o, aux, rng, 0) for o in (outputs, changed))
  for name in ("domain_adversarial", "center_aware_adversarial"):
    np.testing.assert_allclose(after[name], before[name], rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("flags, task, message", [
    ({"method": "epm"}, "image_classification", "--method=epm aligns a detector"),
    ({"method": "dann", "center_aware_weight": 3.0}, "detection", "--center_aware_weight is for"),
    ({"method": "epm", "center_aware_weight": -1.0}, "detection", "--center_aware_weight=-1"),
])
def test_epm_flags_are_refused_where_they_cannot_act(flags, task, message):
  with pytest.raises(ConfigError, match=message):
    methods.validate_config(Config(**flags), task)


def _per_level(method):
  config = Config(method=method, discriminator_hidden=HIDDEN, adapt_weight=0.1,
                  adapt_schedule="constant", discriminator_per_level=True)
  built = METHODS[method](config)
  return built, built.init_aux(jax.random.PRNGKey(1), FEATURES, NUM_CLASSES)


# The outputs' 5 locations are a 16x16 image's FPN: 2x2 at stride 8, then 1x1 at stride 16.
LEVELS = ((0, 4), (4, 5))


def _per_level_loss(params, source, target, rng):
  """The per-level discriminators' own loss of [B, P, D] rows, nothing reversed: each
  level's domain loss (each domain's mean, the two averaged), the levels averaged."""
  level_losses = []
  for k, ((start, stop), level_rng) in enumerate(zip(LEVELS, jax.random.split(rng, 2))):
    rows = jnp.concatenate([source[:, start:stop].reshape(-1, FEATURES),
                            target[:, start:stop].reshape(-1, FEATURES)])
    logits = heads.DomainDiscriminator(hidden_sizes=(HIDDEN, HIDDEN)).apply(
        {"params": params[f"level_{k}"]}, rows, train=True, rngs={"dropout": level_rng})
    half = rows.shape[0] // 2
    level_losses.append(0.5 * (jnp.mean(jax.nn.softplus(-logits[:half]))
                               + jnp.mean(jax.nn.softplus(logits[half:]))))
  return jnp.mean(jnp.stack(level_losses))


def test_per_level_dann_is_the_mean_of_each_levels_own_discriminator():
  method, aux = _per_level("dann")
  assert set(aux["discriminator"]) == {"level_0", "level_1"}
  outputs, rng = _outputs(), jax.random.PRNGKey(2)
  expected = _per_level_loss(aux["discriminator"], outputs.source_features,
                             outputs.target_features, rng)
  np.testing.assert_allclose(method.terms(outputs, aux, rng, 0)["domain_adversarial"], expected,
                             rtol=1e-5)


def test_per_level_discriminators_learn_from_their_own_level_only():
  method, aux = _per_level("dann")
  outputs, rng = _outputs(), jax.random.PRNGKey(2)
  # Locations 0-3 (stride 8) changed, location 4 (stride 16) kept.
  changed = outputs.replace(source_features=outputs.source_features.at[:, :4].add(3.0),
                            target_features=outputs.target_features.at[:, :4].add(-3.0))

  def gradients(o):
    return jax.grad(lambda a: method.terms(o, a, rng, 0)["domain_adversarial"])(aux)

  before, after = gradients(outputs), gradients(changed)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               before["discriminator"]["level_1"], after["discriminator"]["level_1"])
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                       before["discriminator"]["level_0"], after["discriminator"]["level_0"])
  assert max(jax.tree.leaves(moved)) > 1e-3


def test_per_level_epm_aligns_both_terms_level_by_level():
  method, aux = _per_level("epm")
  assert set(aux["center_discriminator"]) == {"level_0", "level_1"}
  outputs, rng = _outputs(), jax.random.PRNGKey(2)
  terms = method.terms(outputs, aux, rng, 0)
  global_rng, center_rng = jax.random.split(rng)
  source, target = np.asarray(outputs.source_features), np.asarray(outputs.target_features)
  np.testing.assert_allclose(
      terms["domain_adversarial"],
      _per_level_loss(aux["discriminator"], source, target, global_rng), rtol=1e-5)
  np.testing.assert_allclose(
      terms["center_aware_adversarial"],
      _per_level_loss(aux["center_discriminator"],
                      _attention(outputs.source_logits)[..., None] * source,
                      _attention(outputs.target_logits)[..., None] * target, center_rng),
      rtol=1e-5)


def test_per_level_reversal_opposes_the_discriminators():
  method, aux = _per_level("dann")  # constant reversal 0.1
  outputs, rng = _outputs(), jax.random.PRNGKey(2)
  features = (outputs.source_features, outputs.target_features)
  reversed_ = jax.grad(
      lambda s, t: method.terms(outputs.replace(source_features=s, target_features=t), aux,
                                rng, 0)["domain_adversarial"], argnums=(0, 1))(*features)
  own = jax.grad(lambda s, t: _per_level_loss(aux["discriminator"], s, t, rng),
                 argnums=(0, 1))(*features)
  for got, plain in zip(reversed_, own):
    assert np.abs(np.asarray(plain)).max() > 0
    np.testing.assert_allclose(got, -0.1 * plain, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("method", ["dann", "epm"])
def test_per_level_discriminators_are_accepted_for_detections_dann_and_epm(method):
  methods.validate_config(Config(method=method, discriminator_per_level=True), "detection")


@pytest.mark.parametrize("flags, task", [
    ({"method": "source_only"}, "detection"),
    ({"method": "detection_mean_teacher"}, "detection"),
    ({"method": "dann"}, "image_classification"),
    ({"method": "dann"}, "text_classification"),
])
def test_per_level_discriminators_are_refused_outside_detections_dann_and_epm(flags, task):
  with pytest.raises(ConfigError, match="--discriminator_per_level gives each FPN level"):
    methods.validate_config(Config(discriminator_per_level=True, **flags), task)
