"""Tests of xdomain.losses.norms: stepwise and hard adaptive feature norms."""

import jax
import numpy as np
import pytest
from jax.test_util import check_grads

from xdomain import losses


def features(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_stepwise_value_is_delta_squared_and_gradient_pulls_the_norm_up():
  h = features(0, 5, 4)
  norms = np.linalg.norm(h, axis=1)
  value, grad = jax.jit(jax.value_and_grad(
      lambda a: losses.adaptive_feature_norm(a, delta=0.5).sum()))(h)
  np.testing.assert_allclose(value, 5 * 0.25, rtol=1e-6)
  # d/dh (sg(n) + delta - n)^2 = -2 delta h / n
  np.testing.assert_allclose(grad, -2 * 0.5 * h / norms[:, None], rtol=1e-5)


def test_previous_norms_and_hard_radius_match_numpy():
  h = features(1, 6, 3)
  previous = np.abs(features(2, 6))
  norms = np.linalg.norm(h, axis=1)
  np.testing.assert_allclose(
      jax.jit(lambda a, p: losses.adaptive_feature_norm(a, previous_norms=p))(h, previous),
      (previous + 1.0 - norms) ** 2, rtol=1e-5)
  np.testing.assert_allclose(losses.adaptive_feature_norm(h, radius=25.0),
                             (25.0 - norms) ** 2, rtol=1e-5)


def test_gradients():
  h = features(3, 4, 3)
  check_grads(jax.jit(lambda a: losses.adaptive_feature_norm(a, radius=2.0)), (h,), order=1,
              modes=("rev",), atol=1e-2, rtol=1e-2)
  check_grads(jax.jit(lambda a: losses.adaptive_feature_norm(a, previous_norms=np.ones(4))), (h,),
              order=1, modes=("rev",), atol=1e-2, rtol=1e-2)


def test_mask_equals_subset_and_zero_features_have_finite_gradients():
  h = features(4, 3, 4, 5)  # [batch, time, d]
  h[0, 0] = 0.0
  where = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]], bool)
  bad = np.where(where[..., None], h, np.nan).astype(np.float32)
  for kwargs in ({}, {"radius": 25.0}):
    fn = lambda a: losses.adaptive_feature_norm(a, where=where, **kwargs)
    value, grad = jax.jit(jax.value_and_grad(lambda a: fn(a).sum()))(bad)
    np.testing.assert_allclose(value, losses.adaptive_feature_norm(h[where], **kwargs).sum(),
                               rtol=1e-5)
    assert np.all(np.isfinite(grad)) and np.all(grad[~where] == 0)
    assert np.all(jax.jit(fn)(bad)[~where] == 0)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="exclude"):
    losses.adaptive_feature_norm(np.ones((2, 3)), radius=25.0, previous_norms=np.ones(2))
  with pytest.raises(ValueError, match="previous_norms must have shape"):
    losses.adaptive_feature_norm(np.ones((2, 3)), previous_norms=np.ones(3))
