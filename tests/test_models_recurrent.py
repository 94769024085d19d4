"""Scan LSTM/GRU layers against a step-by-step numpy reference."""

from absl.testing import parameterized
import jax
from jax.test_util import check_grads
import jax.numpy as jnp
import numpy as np

from xdomain import models
from xdomain.models import recurrent


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _reference(cell, params, x, length):
  """Runs one sequence x [L, D] for `length` steps; returns outputs [L, H], final [H]."""
  w_ih = np.asarray(params["ih"]["kernel"], np.float64)
  b_ih = np.asarray(params["ih"]["bias"], np.float64)
  w_hh = np.asarray(params["cell"]["hh"]["kernel"], np.float64)
  hidden = w_hh.shape[0]
  h, c = np.zeros(hidden), np.zeros(hidden)
  outputs = np.zeros((x.shape[0], hidden))
  for t in range(length):
    gx = x[t] @ w_ih + b_ih
    if cell == "lstm":
      i, f, g, o = np.split(gx + h @ w_hh, 4)
      c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
      h = _sigmoid(o) * np.tanh(c)
    else:
      gh = h @ w_hh + np.asarray(params["cell"]["hh"]["bias"], np.float64)
      (xr, xz, xn), (hr, hz, hn) = np.split(gx, 3), np.split(gh, 3)
      r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
      n = np.tanh(xn + r * hn)
      h = (1 - z) * n + z * h
    outputs[t] = h
  return outputs, h


def _randomize(params, seed):
  """Replaces every parameter with N(0, 0.5) values (biases included)."""
  leaves, tree = jax.tree.flatten(params)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(
      tree, [jnp.asarray(rng.normal(0, 0.5, l.shape), jnp.float32) for l in leaves])


class RecurrentTest(parameterized.TestCase):

  @parameterized.product(cell=["lstm", "gru"], reverse=[False, True])
  def test_layer_matches_numpy_reference(self, cell, reverse):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6, 3)).astype(np.float32)
    lengths = np.array([6, 3, 1, 0], np.int32)
    layer = models.CELLS[cell](hidden_size=5, reverse=reverse)
    params = _randomize(layer.init(jax.random.key(0), x, lengths)["params"], 1)
    outputs, final = layer.apply({"params": params}, x, lengths)
    for b, n in enumerate(lengths):
      seq = x[b, :n][::-1] if reverse else x[b, :n]
      ref_out, ref_final = _reference(cell, params, np.pad(seq, ((0, 6 - n), (0, 0))), n)
      if reverse:  # the backward output at t belongs to position t of the input
        ref_out[:n] = ref_out[:n][::-1]
      np.testing.assert_allclose(outputs[b], ref_out, atol=1e-5)
      np.testing.assert_allclose(final[b], ref_final, atol=1e-5)

  @parameterized.parameters("lstm", "gru")
  def test_bidirectional_stack_with_mixed_lengths(self, cell):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 5, 2)).astype(np.float32)
    lengths = np.array([5, 2, 4], np.int32)
    encoder = models.RNNEncoder(cell, hidden_size=4, num_layers=2,
                                bidirectional=True)
    params = _randomize(encoder.init(jax.random.key(0), x, lengths)["params"], 2)
    outputs, final = encoder.apply({"params": params}, x, lengths)
    self.assertEqual(outputs.shape, (3, 5, 8))
    for b, n in enumerate(lengths):
      layer_in = np.pad(x[b, :n], ((0, 5 - n), (0, 0)))
      for k in range(2):
        fwd, fwd_final = _reference(cell, params[f"fwd_{k}"], layer_in, n)
        bwd_rev, bwd_final = _reference(
            cell, params[f"bwd_{k}"],
            np.pad(layer_in[:n][::-1], ((0, 5 - n), (0, 0))), n)
        bwd = np.zeros_like(bwd_rev)
        bwd[:n] = bwd_rev[:n][::-1]
        layer_in = np.concatenate([fwd, bwd], axis=-1)
      np.testing.assert_allclose(outputs[b], layer_in, atol=1e-5)
      np.testing.assert_allclose(
          final[b], np.concatenate([fwd_final, bwd_final]), atol=1e-5)

  def test_lstm_gradient_matches_autodiff_of_the_plain_scan(self):
    # lstm_recurrence writes its gradient out; autodiff of the same masked
    # recurrence as a plain scan is the reference, padding and length 0 included.
    rng = np.random.default_rng(3)
    steps, batch, hidden = 7, 4, 5
    kernel = jnp.asarray(rng.normal(0, 0.5, (hidden, 4 * hidden)), jnp.float32)
    projected = jnp.asarray(rng.normal(size=(steps, batch, 4 * hidden)), jnp.float32)
    mask = jnp.asarray(np.arange(steps)[:, None] < np.array([7, 3, 1, 0]))[..., None]
    out_weights = jnp.asarray(rng.normal(size=(steps, batch, hidden)), jnp.float32)
    final_weights = jnp.asarray(rng.normal(size=(batch, hidden)), jnp.float32)

    def plain(kernel, projected):
      def step(carry, xs):
        (c, h), (x, valid) = carry, xs
        i, f, g, o = jnp.split(x + h @ kernel, 4, axis=-1)
        new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
        carry = jnp.where(valid, new_c, c), jnp.where(valid, new_h, h)
        return carry, jnp.where(valid, new_h, 0.0)
      zeros = jnp.zeros((batch, hidden))
      (_, final), outputs = jax.lax.scan(step, (zeros, zeros), (projected, mask))
      return outputs, final

    def loss(recurrence, kernel, projected):
      outputs, final = recurrence(kernel, projected)
      return jnp.sum(outputs * out_weights) + jnp.sum(final * final_weights)

    custom = lambda k, p: recurrent.lstm_recurrence(k, p, mask)
    expected = jax.grad(loss, argnums=(1, 2))(plain, kernel, projected)
    got = jax.jit(jax.grad(loss, argnums=(1, 2)), static_argnums=0)(custom, kernel, projected)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(got[1], expected[1], atol=1e-5)
    self.assertTrue(np.all(np.asarray(got[1])[~np.asarray(mask[..., 0])] == 0))
    check_grads(lambda k, p: loss(custom, k, p), (kernel, projected), order=1,
                modes=["rev"], atol=1e-2, rtol=1e-2)

  def test_rejects_bad_lengths_shape(self):
    layer = models.LSTM(hidden_size=3)
    with self.assertRaisesRegex(ValueError, "lengths must be"):
      layer.init(jax.random.key(0), jnp.ones((2, 4, 3)), jnp.ones((3,), jnp.int32))
