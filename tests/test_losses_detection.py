"""xdomain.losses.detection: sigmoid focal loss and GIoU loss against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util

from xdomain import losses


def focal_reference(z, y, alpha, gamma):
  p = 1 / (1 + np.exp(-z))
  p_t = np.where(y == 1, p, 1 - p)
  a_t = np.where(y == 1, alpha, 1 - alpha)
  return -a_t * (1 - p_t) ** gamma * np.log(p_t)


def giou_reference(a, b):
  out = []
  for p, q in zip(a, b):
    ih = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
    iw = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
    inter = ih * iw
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
    union = area(p) + area(q) - inter
    c = (max(p[2], q[2]) - min(p[0], q[0])) * (max(p[3], q[3]) - min(p[1], q[1]))
    out.append(1 - (inter / union - (c - union) / c))
  return np.array(out)


def random_boxes(rng, n):
  low = rng.uniform(0, 10, (n, 2))
  return np.concatenate([low, low + rng.uniform(0.5, 8, (n, 2))], axis=1)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (0.75, 1.5)])
def test_focal_matches_numpy(alpha, gamma):
  rng = np.random.default_rng(0)
  z = rng.normal(size=(4, 6)) * 3
  y = (rng.uniform(size=(4, 6)) < 0.3).astype(np.float32)
  got = losses.sigmoid_focal_loss(z, y, alpha=alpha, gamma=gamma)
  np.testing.assert_allclose(got, focal_reference(z, y, alpha, gamma), rtol=1e-5, atol=1e-6)


def test_focal_is_stable_for_large_logits_and_unweighted_is_bce():
  z = jnp.array([60.0, -60.0, 0.3])
  y = jnp.array([0.0, 1.0, 1.0])
  got = losses.sigmoid_focal_loss(z, y, alpha=None, gamma=0.0)
  np.testing.assert_allclose(got, [60.0, 60.0, np.log1p(np.exp(-0.3))], rtol=1e-5)


def test_focal_mask_equals_subset_and_blocks_nan():
  rng = np.random.default_rng(1)
  z = rng.normal(size=(10,)).astype(np.float32)
  y = (rng.uniform(size=10) < 0.5).astype(np.float32)
  mask = np.arange(10) % 3 != 0
  z_nan = np.where(mask, z, np.nan)
  full = losses.sigmoid_focal_loss(z_nan, y, where=mask)
  np.testing.assert_allclose(full[mask], losses.sigmoid_focal_loss(z[mask], y[mask]),
                             rtol=1e-6)
  assert np.all(np.asarray(full)[~mask] == 0)
  grad = jax.grad(lambda v: jnp.sum(losses.sigmoid_focal_loss(v, y, where=mask)))(z_nan)
  assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[~mask] == 0)


def test_focal_gradients():
  rng = np.random.default_rng(2)
  z = jnp.asarray(rng.normal(size=(3, 4)))
  y = jnp.asarray((rng.uniform(size=(3, 4)) < 0.5).astype(np.float32))
  test_util.check_grads(lambda v: losses.sigmoid_focal_loss(v, y), (z,), order=1,
                        modes=["rev"], atol=1e-2, rtol=1e-2)


def test_giou_matches_numpy():
  rng = np.random.default_rng(3)
  a, b = random_boxes(rng, 16), random_boxes(rng, 16)
  np.testing.assert_allclose(losses.giou_loss(a, b), giou_reference(a, b), rtol=1e-5,
                             atol=1e-6)


def test_giou_known_values():
  a = jnp.array([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
  b = jnp.array([[0.0, 0.0, 2.0, 2.0], [0.0, 2.0, 1.0, 3.0]])
  # identical: 0; disjoint, enclosing box 3 of which 2 covered: 1 + 1/3.
  np.testing.assert_allclose(losses.giou_loss(a, b), [0.0, 1 + 1 / 3], rtol=1e-5, atol=1e-6)


def test_giou_mask_equals_subset_and_gradients():
  rng = np.random.default_rng(4)
  a, b = random_boxes(rng, 6).astype(np.float32), random_boxes(rng, 6).astype(np.float32)
  mask = np.array([True, False, True, True, False, True])
  bad = np.where(mask[:, None], a, np.nan)
  got = losses.giou_loss(bad, b, where=mask)
  np.testing.assert_allclose(np.asarray(got)[mask], losses.giou_loss(a[mask], b[mask]),
                             rtol=1e-6)
  grad = jax.grad(lambda v: jnp.sum(losses.giou_loss(v, b, where=mask)))(bad)
  assert np.all(np.isfinite(grad))
  # Overlapping boxes (a smooth region of GIoU) for the numerical check.
  near = jnp.asarray(b + rng.uniform(-0.3, 0.3, b.shape))
  test_util.check_grads(lambda v: losses.giou_loss(v, jnp.asarray(b)), (near,), order=1,
                        modes=["rev"], atol=1e-2, rtol=1e-2)


def test_shapes_are_checked():
  with pytest.raises(ValueError, match="boxes must have shape"):
    losses.giou_loss(jnp.zeros((3, 5)), jnp.zeros((3, 5)))
  with pytest.raises(ValueError, match="logits and labels"):
    losses.sigmoid_focal_loss(jnp.zeros((3,)), jnp.zeros((4,)))
