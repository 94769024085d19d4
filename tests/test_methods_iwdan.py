"""Tests of IWDAN (xdomain.methods.adversarial.make_iwdan): its running
statistics, class weights and terms against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from xdomain import losses
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.methods import METHODS
from xdomain.methods import adversarial
from xdomain.methods import Outputs
from xdomain.methods import validate_config

K = 3


def outputs(seed, *, source=12, target=10):
  rng = np.random.default_rng(seed)
  return Outputs(
      source_logits=jnp.asarray(2 * rng.normal(size=(source, K)), jnp.float32),
      source_features=jnp.asarray(rng.normal(size=(source, 5)), jnp.float32),
      source_labels=jnp.asarray(rng.integers(0, K, source), jnp.int32), source_mask=None,
      target_logits=jnp.asarray(2 * rng.normal(size=(target, K)), jnp.float32),
      target_features=jnp.asarray(rng.normal(size=(target, 5)), jnp.float32))


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_statistics_are_running_sums_of_the_soft_confusion_and_target_prediction():
  method = METHODS["iwdan"](Config(method="iwdan", label_shift_decay=0.9))
  state = method.statistics.init(K)
  np.testing.assert_array_equal(adversarial.class_weights(state), np.ones(K))
  batches = [outputs(seed) for seed in range(3)]
  confusion, count, target, target_count = np.zeros((K, K)), 0.0, np.zeros(K), 0.0
  for out in batches:
    state = jax.jit(method.statistics.update)(state, out)
    ps, pt = softmax(np.asarray(out.source_logits)), softmax(np.asarray(out.target_logits))
    confusion = 0.9 * confusion + ps.T @ np.eye(K)[np.asarray(out.source_labels)]
    count = 0.9 * count + len(ps)
    target = 0.9 * target + pt.sum(0)
    target_count = 0.9 * target_count + len(pt)
  np.testing.assert_allclose(state["confusion"], confusion, rtol=1e-5)
  np.testing.assert_allclose(state["source_count"], count, rtol=1e-6)
  np.testing.assert_allclose(state["target_predictions"], target, rtol=1e-5)
  np.testing.assert_allclose(
      adversarial.class_weights(state),
      losses.class_importance_weights(confusion / count, target / target_count), rtol=1e-4)
  logged = method.statistics.log(state)
  assert sorted(logged) == [f"label_shift/weight_{k}" for k in range(K)]


def test_padding_changes_neither_statistics_nor_terms():
  """Tagger outputs [B, L, ...]: padded positions hold garbage and are masked."""
  method = METHODS["iwdan"](Config(method="iwdan", discriminator_hidden=8))
  rng = np.random.default_rng(1)
  mask = np.array([[True] * 4, [True, True, False, False]] * 2)

  def tokens(shape, garbage, draw=rng.normal):
    x = np.asarray(draw(size=(4, 4) + shape))
    return lambda g: jnp.asarray(np.where(mask.reshape(mask.shape + (1,) * len(shape)), x, g))

  parts = {"source_logits": tokens((K,), 0), "source_features": tokens((5,), 0),
           "target_logits": tokens((K,), 0), "target_features": tokens((5,), 0)}
  labels = jnp.asarray(rng.integers(0, K, (4, 4)), jnp.int32)

  def padded(garbage):
    return Outputs(source_labels=labels, source_mask=jnp.asarray(mask),
                   target_mask=jnp.asarray(mask),
                   **{name: part(garbage) for name, part in parts.items()})

  aux = method.init_aux(jax.random.key(0), 5, K)

  def run(out):
    state = method.statistics.update(method.statistics.init(K), out)
    return state, method.terms(out.replace(statistics=state), aux, jax.random.key(1), 5)

  (state_a, terms_a), (state_b, terms_b) = run(padded(0.0)), run(padded(1e4))
  for name in ("confusion", "source_count"):
    np.testing.assert_allclose(state_a[name], state_b[name], rtol=1e-6)
  np.testing.assert_allclose(adversarial.class_weights(state_a),
                             adversarial.class_weights(state_b), rtol=1e-6)
  assert float(state_a["source_count"]) == 12.0
  for name in terms_a:
    np.testing.assert_allclose(terms_a[name], terms_b[name], rtol=1e-6)


def test_terms_weigh_each_source_example_by_its_class(monkeypatch):
  # Weights given directly instead of through running statistics.
  monkeypatch.setattr(adversarial, "class_weights", lambda statistics: statistics["weights"])
  method = METHODS["iwdan"](Config(method="iwdan", discriminator_hidden=8))
  out = outputs(2)
  weights = jnp.asarray([0.5, 2.0, 1.25])
  out = out.replace(statistics={"weights": weights})
  aux = method.init_aux(jax.random.key(0), 5, K)
  terms = method.terms(out, aux, jax.random.key(1), 5)
  labels = np.asarray(out.source_labels)
  ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(out.source_logits,
                                                                  out.source_labels))
  np.testing.assert_allclose(terms["source_reweighting"],
                             np.mean((np.asarray(weights)[labels] - 1) * ce), rtol=1e-5)
  # The same discriminator draw, weights 1: the weighted source half differs
  # by exactly the example weights.
  plain = method.terms(out.replace(statistics={"weights": jnp.ones(K)}), aux,
                       jax.random.key(1), 5)
  assert terms["domain_adversarial"] != pytest.approx(float(plain["domain_adversarial"]))
  grads = jax.grad(lambda f: method.terms(out.replace(source_features=f), aux,
                                          jax.random.key(1), 5)["domain_adversarial"])(
                                              out.source_features)
  zero = jnp.zeros(K).at[0].set(1.0)  # only class 0 weighs
  grads_zero = jax.grad(lambda f: method.terms(
      out.replace(source_features=f, statistics={"weights": zero}), aux,
      jax.random.key(1), 5)["domain_adversarial"])(out.source_features)
  assert np.all(np.asarray(grads_zero)[labels != 0] == 0)
  assert np.any(np.asarray(grads)[labels != 0] != 0)


@pytest.mark.parametrize("task, model, message", [
    ("detection", "seed_cnn", "detection"),
    ("tagging", "bilstm_crf", "a CRF"),
])
def test_iwdan_refuses_losses_it_cannot_reweigh(task, model, message):
  with pytest.raises(ConfigError, match=message):
    validate_config(Config(method="iwdan", model=model), task)
  with pytest.raises(ConfigError, match="label_shift_decay"):
    validate_config(Config(method="iwdan", label_shift_decay=1.0), "text_classification")
