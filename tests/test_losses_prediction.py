"""Tests of xdomain.losses.prediction: entropy and MCC against numpy references."""

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


def test_entropy_of_a_ruled_out_class_has_finite_gradients():
  """A -inf logit is a class of probability 0: 0 log 0 = 0, and dH/dz = -p (log p + H)."""
  z = np.array([[1.0, -np.inf, 0.5, -1.0], [0.0, 2.0, -np.inf, -np.inf]], np.float32)
  value, grad = jax.jit(jax.value_and_grad(lambda a: losses.entropy(a).sum()))(z)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  logp = np.log(np.where(p > 0, p, 1.0))
  h = -(p * logp).sum(-1)
  np.testing.assert_allclose(value, h.sum(), rtol=1e-6)
  np.testing.assert_allclose(grad, -p * (logp + h[:, None]), rtol=1e-5, atol=1e-7)
  assert np.all(grad[np.isinf(z)] == 0)


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


def test_mcc_with_a_class_no_row_predicts():
  """A class with probability 0 everywhere (a -inf logit) has a zero confusion row: no NaN."""
  z = logits(30, 8, 4)
  z[:, 3] = -np.inf
  value, grad = jax.jit(jax.value_and_grad(losses.mcc))(z)
  y = np_softmax(z[:, :3] / 2.5)  # the class is absent: the other three are the whole story
  w = 1 + np.exp((y * np.log(y)).sum(-1))
  w = 8 * w / w.sum()
  confusion = (y * w[:, None]).T @ y
  confusion = confusion / confusion.sum(1, keepdims=True)
  np.testing.assert_allclose(value, (confusion.sum() - np.trace(confusion)) / 4, rtol=1e-5)
  assert np.all(np.isfinite(grad))


def test_empty_masks_give_zero_and_zero_gradients():
  z = logits(31, 5, 3)
  none = np.zeros(5, bool)
  fn = jax.jit(jax.value_and_grad(
      lambda a: losses.mcc(a, where=none) + 2 * losses.entropy(a, where=none).sum()))
  value, grad = fn(z)
  assert float(value) == 0.0
  np.testing.assert_array_equal(grad, 0.0)


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


def test_bf16_inputs_give_f32():
  s, t = jnp.asarray(logits(14, 4, 3), jnp.bfloat16), jnp.asarray(logits(15, 4, 3), jnp.bfloat16)
  s32, t32 = s.astype(jnp.float32), t.astype(jnp.float32)
  fn = jax.jit(lambda a, b: [losses.entropy(a), losses.mcc(a)])
  for got, expected in zip(fn(s, t), fn(s32, t32)):
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda: losses.entropy(jnp.ones((3, 4)), where=jnp.ones(4, bool)),
     r"where must have shape \(3,\)"),
    (lambda: losses.mcc(jnp.ones(4)), r"logits must have shape \[n, c\], got shape \(4,\)"),
    (lambda: losses.mcc(jnp.ones((3, 4)), temperature=0.0), "temperature must be positive"),
])
def test_errors(call, message):
  with pytest.raises(ValueError, match=message):
    call()
