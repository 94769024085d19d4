"""Tests of xdomain.losses.language_model: the bidirectional LM loss against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from xdomain import losses


def np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def setup(seed=0, batch=3, length=5, hidden=2, vocab=7, embed=4):
  rng = np.random.default_rng(seed)
  features = rng.normal(size=(batch, length, 2 * hidden)).astype(np.float32)
  tokens = rng.integers(1, vocab, size=(batch, length)).astype(np.int32)
  embedding = rng.normal(size=(vocab, embed)).astype(np.float32)
  w_f = rng.normal(size=(hidden, embed)).astype(np.float32)
  w_b = rng.normal(size=(hidden, embed)).astype(np.float32)
  return features, tokens, embedding, w_f, w_b


def test_matches_numpy_per_pair_and_as_a_mean():
  features, tokens, embedding, w_f, w_b = setup()
  lengths = np.array([5, 3, 1])
  real = np.arange(5)[None, :] < lengths[:, None]
  forward, backward = jax.jit(lambda f, e: losses.bidirectional_language_model(
      f, tokens, e, projections=(lambda h: h @ w_f, lambda h: h @ w_b), where=real))(
          features, embedding)
  want_f, want_b = np.zeros((3, 4)), np.zeros((3, 4))
  for i in range(3):
    for t in range(lengths[i] - 1):  # state t predicts token t + 1, state t + 1 token t
      want_f[i, t] = -np_log_softmax(features[i, t, :2] @ w_f @ embedding.T)[tokens[i, t + 1]]
      want_b[i, t] = -np_log_softmax(features[i, t + 1, 2:] @ w_b @ embedding.T)[tokens[i, t]]
  np.testing.assert_allclose(forward, want_f, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(backward, want_b, rtol=1e-5, atol=1e-6)
  # The mean over the predicted tokens, as lm_pretrain reduces it: 4 + 2 + 0 pairs.
  pairs = real[:, :-1] & real[:, 1:]
  np.testing.assert_allclose(forward.sum() / pairs.sum(), want_f[pairs].mean(), rtol=1e-5)


def test_without_projections_the_states_meet_the_embedding():
  features, tokens, embedding, _, _ = setup(hidden=4, embed=4)
  forward, backward = losses.bidirectional_language_model(features, tokens, embedding)
  want_f = -np_log_softmax(features[:, :-1, :4] @ embedding.T)
  want_b = -np_log_softmax(features[:, 1:, 4:] @ embedding.T)
  np.testing.assert_allclose(forward, np.take_along_axis(want_f, tokens[:, 1:, None], -1)[..., 0],
                             rtol=1e-5)
  np.testing.assert_allclose(backward,
                             np.take_along_axis(want_b, tokens[:, :-1, None], -1)[..., 0],
                             rtol=1e-5)


def test_padding_reaches_neither_values_nor_gradients():
  features, tokens, embedding, w_f, w_b = setup(seed=1)
  real = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)  # one empty row
  bad = np.where(real[..., None], features, np.nan).astype(np.float32)

  def total(f, w, where=real):
    forward, backward = losses.bidirectional_language_model(
        f, tokens, embedding, projections=(lambda h: h @ w[0], lambda h: h @ w[1]), where=where)
    return forward.sum() + backward.sum()

  value, (grad_f, grad_w) = jax.jit(jax.value_and_grad(total, argnums=(0, 1)))(
      bad, np.stack([w_f, w_b]))
  clean = jax.jit(total)(np.where(real[..., None], features, 0.0), np.stack([w_f, w_b]))
  np.testing.assert_allclose(value, clean, rtol=1e-6)
  assert np.all(np.isfinite(grad_f)) and np.all(grad_f[~real] == 0)
  assert np.all(np.isfinite(grad_w))
  # Nothing real: 0, zero gradients.
  value, (grad_f, grad_w) = jax.jit(jax.value_and_grad(
      lambda f, w: total(f, w, where=np.zeros_like(real)), argnums=(0, 1)))(
          bad, np.stack([w_f, w_b]))
  assert float(value) == 0.0 and np.all(grad_f == 0) and np.all(grad_w == 0)


def test_gradients():
  with jax.enable_x64(True):
    features, tokens, embedding, w_f, w_b = (
        jnp.asarray(a) if a.dtype == np.int32 else jnp.asarray(a, jnp.float64) for a in setup(2))
    real = jnp.arange(5)[None, :] < jnp.array([5, 4, 2])[:, None]

    def total(f, e, w):
      forward, backward = losses.bidirectional_language_model(
          f, tokens, e, projections=(lambda h: h @ w, lambda h: h @ w_b), where=real)
      return forward.sum() + 2 * backward.sum()

    check_grads(jax.jit(total), (features, embedding, w_f), order=1, modes=("rev",))


@pytest.mark.parametrize("call, message", [
    (lambda f, t, e: losses.bidirectional_language_model(f[0], t, e),
     r"token_features must have shape \[B, L, 2H\]"),
    (lambda f, t, e: losses.bidirectional_language_model(f, t, e[0]),
     r"embedding must have shape \[V, E\]"),
    (lambda f, t, e: losses.bidirectional_language_model(f, t, e),
     "each direction's width H = 2 must equal the embedding width E = 4"),
    (lambda f, t, e: losses.bidirectional_language_model(
        f, t, e, projections=(lambda h: h, lambda h: h), where=np.ones(5, bool)),
     r"where must have shape \(3, 5\)"),
])
def test_errors(call, message):
  features, tokens, embedding, _, _ = setup()
  with pytest.raises(ValueError, match=message):
    call(features, tokens, embedding)


# Skip-gram with negative sampling.


def np_log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def sgns_setup(seed=0, n=6, k=3, e=4):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, e)).astype(np.float32), rng.normal(size=(n, e)).astype(np.float32),
          rng.normal(size=(n, k, e)).astype(np.float32))


def test_skipgram_matches_numpy_and_masks():
  center, context, negatives = sgns_setup()
  expected = -np_log_sigmoid(np.sum(center * context, 1)) - np.sum(
      np_log_sigmoid(-np.einsum("ne,nke->nk", center, negatives)), 1)
  np.testing.assert_allclose(losses.skipgram_negative_sampling(center, context, negatives),
                             expected, rtol=1e-5)
  keep = np.array([True, False, True, True, False, True])
  poisoned = center.copy()
  poisoned[~keep] = np.nan
  masked = jax.jit(losses.skipgram_negative_sampling)(poisoned, context, negatives, where=keep)
  np.testing.assert_allclose(masked, np.where(keep, expected, 0.0), rtol=1e-5)
  grads = jax.grad(lambda c: losses.skipgram_negative_sampling(
      c, context, negatives, where=keep).sum())(poisoned)
  assert np.all(np.isfinite(grads)) and np.all(np.asarray(grads)[~keep] == 0)


def test_skipgram_gradients():
  with jax.enable_x64(True):
    center, context, negatives = (jnp.asarray(a, jnp.float64) for a in sgns_setup(1))
    check_grads(lambda c, o, n: losses.skipgram_negative_sampling(c, o, n).sum(),
                (center, context, negatives), order=1, modes=("rev",))


def test_skipgram_shape_errors():
  center, context, negatives = sgns_setup()
  with pytest.raises(ValueError, match=r"negatives \[n, K, E\] must agree"):
    losses.skipgram_negative_sampling(center, context, negatives[:, :, :2])
