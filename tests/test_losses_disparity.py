"""Tests of xdomain.losses.disparity: MDD against a numpy transcription of TLlib's."""

import jax
import numpy as np
import pytest
from jax.test_util import check_grads

from xdomain import losses


def logits(seed, *shape):
  return (2 * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def np_softmax(z):
  p = np.exp(z - z.max(-1, keepdims=True))
  return p / p.sum(-1, keepdims=True)


def np_mdd(ys, ys_adv, yt, yt_adv, margin):
  """-1 x TLlib's ClassificationMarginDisparityDiscrepancy, per example."""
  ys_adv, yt_adv = ys_adv.astype(np.float64), yt_adv.astype(np.float64)
  ps, pt = ys.argmax(1), yt.argmax(1)
  source = margin * -np.log(np_softmax(ys_adv)[np.arange(len(ps)), ps])
  shifted = np.minimum(1 - np_softmax(yt_adv)[np.arange(len(pt)), pt] + 1e-6, 1.0)
  return source, -np.log(shifted)


def test_matches_numpy():
  ys, ys_adv, yt, yt_adv = logits(0, 6, 4), logits(1, 6, 4), logits(2, 5, 4), logits(3, 5, 4)
  got = jax.jit(lambda *a: losses.margin_disparity_discrepancy(*a, margin=3.0))(
      ys, ys_adv, yt, yt_adv)
  for g, e in zip(got, np_mdd(ys, ys_adv, yt, yt_adv, 3.0)):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_gradients_reach_only_the_adversarial_logits():
  ys, ys_adv, yt, yt_adv = logits(4, 4, 3), logits(5, 4, 3), logits(6, 3, 3), logits(7, 3, 3)
  total = lambda *a: sum(v.sum() for v in losses.margin_disparity_discrepancy(*a))
  check_grads(jax.jit(lambda a, b: total(ys, a, yt, b)), (ys_adv, yt_adv), order=1, modes=("rev",),
              atol=1e-2, rtol=1e-2)
  grads = jax.jit(jax.grad(total, argnums=(0, 2)))(ys, ys_adv, yt, yt_adv)
  assert all(np.all(g == 0) for g in grads)


def test_masks_equal_subsets_and_block_nan():
  ys, ys_adv, yt, yt_adv = logits(8, 6, 4), logits(9, 6, 4), logits(10, 5, 4), logits(11, 5, 4)
  ms = np.array([1, 1, 0, 1, 0, 1], bool)
  mt = np.array([0, 1, 1, 0, 1], bool)
  bad = lambda z, m: np.where(m[:, None], z, np.nan).astype(np.float32)

  def total(a, b):
    s, t = losses.margin_disparity_discrepancy(bad(ys, ms), a, bad(yt, mt), b,
                                               source_where=ms, target_where=mt)
    return s.sum() + t.sum(), (s, t)

  (value, (s, t)), grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1), has_aux=True))(
      bad(ys_adv, ms), bad(yt_adv, mt))
  es, et = np_mdd(ys[ms], ys_adv[ms], yt[mt], yt_adv[mt], 4.0)
  np.testing.assert_allclose(s[ms], es, rtol=1e-5)
  np.testing.assert_allclose(t[mt], et, rtol=1e-5)
  assert np.all(s[~ms] == 0) and np.all(t[~mt] == 0)
  assert all(np.all(np.isfinite(g)) for g in grads)
  assert np.all(grads[0][~ms] == 0) and np.all(grads[1][~mt] == 0)


def test_bad_shapes_are_named():
  with pytest.raises(ValueError, match="target_adversarial_logits"):
    losses.margin_disparity_discrepancy(np.zeros((2, 3)), np.zeros((2, 3)),
                                        np.zeros((2, 3)), np.zeros((2, 4)))
