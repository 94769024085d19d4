"""Tests of xdomain.losses.prediction and .teacher: entropy, MCC, distillation, consistency,
pseudo-labels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from xdomain import losses


def np_softmax(z):
  p = np.exp(z - z.max(-1, keepdims=True))
  return p / p.sum(-1, keepdims=True)


def np_entropy(z):
  p = np_softmax(z)
  return -(p * np.log(p)).sum(-1)


def np_mcc(z, temperature):
  y = np_softmax(z / temperature)
  w = 1 + np.exp(-(-(y * np.log(y)).sum(-1)))
  w = len(z) * w / w.sum()
  confusion = (y * w[:, None]).T @ y
  confusion = confusion / confusion.sum(1, keepdims=True)
  return (confusion.sum() - np.trace(confusion)) / z.shape[1]


def logits(seed, *shape, scale=2.0):
  return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


# ---- entropy and MCC --------------------------------------------------------

def test_entropy_matches_numpy_and_masks():
  z = logits(0, 3, 4, 5)  # [batch, time, classes]
  where = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
  np.testing.assert_allclose(jax.jit(losses.entropy)(z), np_entropy(z), rtol=1e-5)
  z_bad = np.where(where[..., None], z, np.nan).astype(np.float32)
  value, grad = jax.jit(jax.value_and_grad(lambda a: losses.entropy(a, where=where).sum()))(z_bad)
  np.testing.assert_allclose(value, np_entropy(z[where]).sum(), rtol=1e-5)
  assert np.all(np.isfinite(grad)) and np.all(grad[~where] == 0)


def test_entropy_is_stable_for_extreme_logits():
  h = losses.entropy(jnp.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]]))
  np.testing.assert_allclose(h, [0.0, np.log(3)], atol=1e-6)


def test_mcc_matches_numpy():
  z = logits(1, 12, 4)
  fn = jax.jit(losses.mcc, static_argnames="temperature")
  np.testing.assert_allclose(fn(z), np_mcc(z, 2.5), rtol=1e-5)
  np.testing.assert_allclose(fn(z, temperature=1.0), np_mcc(z, 1.0), rtol=1e-5)


def test_mcc_where_equals_subset_and_flattens_sequences():
  z = logits(2, 3, 5, 4)
  where = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], bool)
  z_bad = np.where(where[..., None], z, np.inf).astype(np.float32)
  fn = jax.jit(losses.mcc)
  np.testing.assert_allclose(fn(z_bad, where=where), np_mcc(z[where], 2.5), rtol=1e-5)
  np.testing.assert_allclose(fn(z.reshape(15, 4)), fn(z), rtol=1e-6)


def test_entropy_gradients():
  with jax.enable_x64(True):
    z = jnp.asarray(logits(3, 6, 4), jnp.float64)
    where = jnp.array([1, 1, 0, 1, 1, 1], bool)
    check_grads(jax.jit(lambda a: losses.entropy(a, where=where).sum()), (z,), order=2,
                modes=("rev",))


def test_mcc_gradient_treats_entropy_weights_as_constants():
  z0 = logits(3, 6, 4).astype(np.float64)
  y0 = np_softmax(z0 / 2.5)
  w0 = 1 + np.exp((y0 * np.log(y0)).sum(-1))
  w0 = len(z0) * w0 / w0.sum()

  def frozen(z):  # MCC with the weights held at their value at z0 (they are detached)
    y = np_softmax(z / 2.5)
    confusion = (y * w0[:, None]).T @ y
    confusion = confusion / confusion.sum(1, keepdims=True)
    return (confusion.sum() - np.trace(confusion)) / z.shape[1]

  eps = 1e-6
  expected = np.zeros_like(z0)
  for index in np.ndindex(z0.shape):
    step = np.zeros_like(z0)
    step[index] = eps
    expected[index] = (frozen(z0 + step) - frozen(z0 - step)) / (2 * eps)
  with jax.enable_x64(True):
    got = jax.jit(jax.grad(losses.mcc))(jnp.asarray(z0))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8)


# ---- teacher losses ---------------------------------------------------------

def test_distillation_matches_numpy_with_t_squared():
  s, t = logits(4, 5, 6), logits(5, 5, 6)
  for temperature in (1.0, 4.0):
    pt, ps = np_softmax(t / temperature), np_softmax(s / temperature)
    expected = temperature**2 * (pt * (np.log(pt) - np.log(ps))).sum(-1)
    np.testing.assert_allclose(losses.distillation(s, t, temperature=temperature), expected,
                               rtol=1e-4, atol=1e-6)


def test_consistency_matches_numpy_with_threshold():
  s, t = logits(6, 8, 3), logits(7, 8, 3, scale=4.0)
  ps, pt = np_softmax(s), np_softmax(t)
  sq = ((ps - pt) ** 2).mean(-1)
  np.testing.assert_allclose(losses.consistency(s, t), sq, rtol=1e-5)
  confident = pt.max(-1) > 0.9
  assert 0 < confident.sum() < 8
  np.testing.assert_allclose(losses.consistency(s, t, confidence_threshold=0.9),
                             np.where(confident, sq, 0.0), rtol=1e-5)


def test_pseudo_label_matches_numpy():
  s, t = logits(8, 10, 4), logits(9, 10, 4, scale=3.0)
  log_ps = np.log(np_softmax(s))
  ce = -log_ps[np.arange(10), t.argmax(-1)]
  loss, mask = losses.pseudo_label(s, t, confidence_threshold=None)
  np.testing.assert_allclose(loss, ce, rtol=1e-5)
  assert mask.dtype == jnp.bool_ and bool(mask.all())
  confident = np_softmax(t).max(-1) >= 0.95
  assert 0 < confident.sum() < 10
  loss, mask = losses.pseudo_label(s, t)
  np.testing.assert_array_equal(mask, confident)
  np.testing.assert_allclose(loss, np.where(confident, ce, 0.0), rtol=1e-5)


def test_teacher_losses_where_mask():
  s, t = logits(10, 2, 4, 3), logits(11, 2, 4, 3, scale=4.0)
  where = np.array([[1, 1, 0, 1], [0, 1, 1, 1]], bool)
  s_bad = np.where(where[..., None], s, np.nan).astype(np.float32)

  def all_losses(a, b, where=None):
    return jnp.stack([
        losses.distillation(a, b, temperature=2.0, where=where).sum(),
        losses.consistency(a, b, confidence_threshold=0.5, where=where).sum(),
        losses.pseudo_label(a, b, where=where)[0].sum()])

  values = jax.jit(lambda a: all_losses(a, t, where))(s_bad)
  grads = jax.jit(jax.jacrev(lambda a: all_losses(a, t, where)))(s_bad)
  np.testing.assert_allclose(values, jax.jit(all_losses)(s[where], t[where]), rtol=1e-5)
  assert np.all(np.isfinite(grads)) and np.all(grads[:, ~where] == 0)
  _, mask = losses.pseudo_label(s, t, where=where, confidence_threshold=None)
  np.testing.assert_array_equal(mask, where)


def test_teacher_gets_no_gradient_and_student_gradients_check():
  with jax.enable_x64(True):
    s, t = jnp.asarray(logits(12, 5, 4), jnp.float64), jnp.asarray(logits(13, 5, 4), jnp.float64)

    def total(a, b):
      return (losses.distillation(a, b, temperature=2.0).sum() + losses.consistency(a, b).sum()
              + losses.pseudo_label(a, b, confidence_threshold=None)[0].sum())

    fn = jax.jit(total)
    assert float(jnp.abs(jax.grad(fn, argnums=1)(s, t)).max()) == 0.0
    check_grads(lambda a: fn(a, t), (s,), order=2, modes=("rev",))


def test_bf16_inputs_give_f32():
  s, t = jnp.asarray(logits(14, 4, 3), jnp.bfloat16), jnp.asarray(logits(15, 4, 3), jnp.bfloat16)
  s32, t32 = s.astype(jnp.float32), t.astype(jnp.float32)
  fn = jax.jit(lambda a, b: [
      losses.distillation(a, b, temperature=2.0), losses.consistency(a, b),
      losses.pseudo_label(a, b)[0], losses.entropy(a), losses.mcc(a)])
  for got, expected in zip(fn(s, t), fn(s32, t32)):
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda: losses.entropy(jnp.ones((3, 4)), where=jnp.ones(4, bool)),
     r"where must have shape \(3,\)"),
    (lambda: losses.mcc(jnp.ones(4)), r"logits must have shape \[n, c\], got shape \(4,\)"),
    (lambda: losses.mcc(jnp.ones((3, 4)), temperature=0.0), "temperature must be positive"),
    (lambda: losses.distillation(jnp.ones((3, 4)), jnp.ones((3, 5))),
     r"student_logits and teacher_logits must have the same shape, got \(3, 4\) and \(3, 5\)"),
    (lambda: losses.distillation(jnp.ones((3, 4)), jnp.ones((3, 4)), temperature=-1.0),
     "temperature must be positive"),
    (lambda: losses.consistency(jnp.ones((3, 4)), jnp.ones((3, 4)), where=jnp.ones((3, 4), bool)),
     r"where must have shape \(3,\)"),
])
def test_errors(call, message):
  with pytest.raises(ValueError, match=message):
    call()
