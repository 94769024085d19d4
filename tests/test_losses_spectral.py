"""Tests of xdomain.losses.spectral: batch spectral penalisation against numpy."""

import jax
import numpy as np
import pytest

from xdomain import losses


def features(seed, n, d):
  return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def np_bsp(fs, ft, k):
  top = lambda f: np.sum(np.linalg.svd(f.astype(np.float64), compute_uv=False)[:k] ** 2)
  return top(fs) + top(ft)


@pytest.mark.parametrize("k", [1, 3])
def test_matches_numpy(k):
  fs, ft = features(0, 8, 5), features(1, 6, 5)
  np.testing.assert_allclose(jax.jit(lambda a, b: losses.batch_spectral_penalty(a, b, k=k))(fs, ft),
                             np_bsp(fs, ft, k), rtol=1e-5)


def np_bsp_gradient(f, k):
  """d sum_{i<k} sigma_i^2 / dF = sum_{i<k} 2 sigma_i u_i v_i^T, in float64."""
  u, s, vt = np.linalg.svd(f.astype(np.float64), full_matrices=False)
  return 2 * (u[:, :k] * s[:k]) @ vt[:k]


def test_gradients_match_the_analytic_gradient():
  # Against the closed form rather than finite differences: float32 finite
  # differences of an SVD miss by 2% on a GPU (cuSOLVER), beyond any fair tolerance.
  fs, ft = features(2, 6, 4), features(3, 5, 4)
  gs, gt = jax.jit(jax.grad(lambda a, b: losses.batch_spectral_penalty(a, b, k=2),
                            argnums=(0, 1)))(fs, ft)
  np.testing.assert_allclose(gs, np_bsp_gradient(fs, 2), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(gt, np_bsp_gradient(ft, 2), rtol=1e-4, atol=1e-5)


def test_mask_equals_subset_and_blocks_nan():
  fs, ft = features(4, 8, 5), features(5, 7, 5)
  ms = np.array([1, 0, 1, 1, 0, 1, 1, 1], bool)
  mt = np.array([0, 1, 1, 1, 1, 0, 1], bool)
  bad_s = np.where(ms[:, None], fs, np.nan).astype(np.float32)
  bad_t = np.where(mt[:, None], ft, np.inf).astype(np.float32)
  fn = lambda a, b: losses.batch_spectral_penalty(a, b, source_where=ms, target_where=mt)
  value, (gs, gt) = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(bad_s, bad_t)
  np.testing.assert_allclose(value, np_bsp(fs[ms], ft[mt], 1), rtol=1e-5)
  assert np.all(np.isfinite(gs)) and np.all(gs[~ms] == 0) and np.all(gt[~mt] == 0)


def test_empty_masks_give_zero_with_zero_gradients():
  fs, ft = features(6, 4, 3), features(7, 4, 3)
  none = np.zeros(4, bool)
  fn = lambda a, b: losses.batch_spectral_penalty(a, b, source_where=none, target_where=none)
  value, grads = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(fs, ft)
  assert value == 0.0 and all(np.all(g == 0) for g in grads)


def test_bad_shapes_are_named():
  with pytest.raises(ValueError, match="same d"):
    losses.batch_spectral_penalty(np.zeros((2, 3)), np.zeros((2, 4)))
  with pytest.raises(ValueError, match="source_features"):
    losses.batch_spectral_penalty(np.zeros((2, 3, 1)), np.zeros((2, 3)))
