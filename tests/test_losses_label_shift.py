"""Tests of xdomain.losses.class_importance_weights against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from xdomain import losses


def shifted(seed, num_classes=4):
  """A source confusion matrix, true weights and the target's mean prediction."""
  rng = np.random.default_rng(seed)
  source_labels = rng.dirichlet(np.ones(num_classes))
  # p(prediction | class): mostly right, columns sum to 1.
  conditional = 0.6 * np.eye(num_classes) + 0.4 * rng.dirichlet(np.ones(num_classes),
                                                                  num_classes).T
  confusion = conditional * source_labels[None, :]
  weights = rng.uniform(0.2, 3.0, num_classes)
  weights /= source_labels @ weights
  return confusion, weights, confusion @ weights


def np_weights(confusion, target, ridge):
  k = confusion.shape[0]
  gram = confusion.T @ confusion
  strength = ridge * np.trace(gram)
  w = np.linalg.solve(gram + strength * np.eye(k), confusion.T @ target + strength)
  w = np.maximum(w, 0.0)
  return w / (confusion.sum(0) @ w)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_the_true_weights_without_ridge(seed):
  confusion, weights, target = shifted(seed)
  got = losses.class_importance_weights(confusion, target, ridge=0.0)
  np.testing.assert_allclose(got, weights, rtol=1e-4)


@pytest.mark.parametrize("ridge", [1e-3, 0.1, 10.0])
def test_matches_numpy_with_ridge(ridge):
  confusion, _, target = shifted(3)
  got = losses.class_importance_weights(confusion, target, ridge=ridge)
  np.testing.assert_allclose(got, np_weights(confusion, target, ridge), rtol=1e-4, atol=1e-6)
  # The weighted source is a distribution.
  np.testing.assert_allclose(confusion.sum(0) @ np.asarray(got), 1.0, rtol=1e-5)


def test_clips_negative_weights_and_renormalises():
  confusion = np.array([[0.45, 0.05], [0.05, 0.45]])
  target = np.array([1.0, 0.0])  # beyond what any weights >= 0 explain
  got = np.asarray(losses.class_importance_weights(confusion, target, ridge=0.0))
  assert got[1] == 0.0 and got[0] > 0
  np.testing.assert_allclose(confusion.sum(0) @ got, 1.0, rtol=1e-6)
  np.testing.assert_allclose(got, np_weights(confusion, target, 0.0), rtol=1e-5)


def test_an_uninformative_classifier_gives_no_shift():
  # Predictions that ignore the class: C w = mu holds for every w with
  # p_S . w = 1, and the ridge picks the one closest to no shift.
  source_labels = np.array([0.5, 0.3, 0.2])
  confusion = np.outer(np.full(3, 1 / 3), source_labels)
  got = losses.class_importance_weights(confusion, np.full(3, 1 / 3))
  np.testing.assert_allclose(got, np.ones(3), rtol=1e-3)  # float32, conditioning ~1e3


def test_no_source_mass_gives_ones():
  got = losses.class_importance_weights(jnp.zeros((3, 3)), jnp.zeros(3))
  np.testing.assert_array_equal(got, np.ones(3))


def test_jits_and_refuses_bad_shapes():
  confusion, weights, target = shifted(4, num_classes=3)
  jitted = jax.jit(lambda c, t: losses.class_importance_weights(c, t, ridge=0.0))
  np.testing.assert_allclose(jitted(confusion, target), weights, rtol=1e-4)
  with pytest.raises(ValueError, match=r"confusion must be \[K, K\]"):
    losses.class_importance_weights(np.ones((2, 3)), np.ones(2))
  with pytest.raises(ValueError, match=r"target_predictions must be \[3\]"):
    losses.class_importance_weights(confusion, np.ones(2))


def test_gradients_match_finite_differences():
  # Away from the clip at 0 the weights are a smooth function of both inputs.
  confusion, _, target = shifted(5, num_classes=3)
  check_grads(lambda c, t: losses.class_importance_weights(c, t) @ jnp.arange(1.0, 4.0),
              (jnp.asarray(confusion, jnp.float32), jnp.asarray(target, jnp.float32)),
              order=1, modes=("rev",))
