"""xdomain.models.layers: Dense is nn.Dense (parameters, values, gradients) with its
bias gradient as a matmul; add_bias against numpy."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from xdomain.models import layers


def test_add_bias_value_and_bias_gradient_against_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 5, 4)).astype(np.float32)
  bias = rng.normal(size=4).astype(np.float32)
  cotangent = rng.normal(size=(3, 5, 4)).astype(np.float32)
  value, vjp = jax.vjp(layers.add_bias, jnp.asarray(x), jnp.asarray(bias))
  np.testing.assert_allclose(value, x + bias, rtol=1e-6)
  d_x, d_bias = vjp(jnp.asarray(cotangent))
  np.testing.assert_allclose(d_x, cotangent, rtol=1e-6)
  np.testing.assert_allclose(d_bias, cotangent.sum(axis=(0, 1)), rtol=1e-5, atol=1e-6)
  check_grads(layers.add_bias, (jnp.asarray(x), jnp.asarray(bias)), order=1, modes=["rev"])


class _Pair(nn.Module):
  """layers.Dense and nn.Dense under the same name, in two scopes with the same rng."""
  use_layers: bool

  @nn.compact
  def __call__(self, x):
    bias_init = nn.initializers.normal(0.3)  # a bias that is not zero tells initialisers apart
    if self.use_layers:
      return layers.Dense(6, bias_init=bias_init, name="ih")(x)
    return nn.Dense(6, bias_init=bias_init, name="ih")(x)


def test_dense_is_nn_dense_with_the_same_parameters_values_and_gradients():
  x = jax.random.normal(jax.random.key(1), (4, 7, 5))
  ours, flax_dense = _Pair(True), _Pair(False)
  params = ours.init(jax.random.key(0), x)
  flax_params = flax_dense.init(jax.random.key(0), x)
  assert jax.tree.structure(params) == jax.tree.structure(flax_params)
  for got, expected in zip(jax.tree.leaves(params), jax.tree.leaves(flax_params)):
    np.testing.assert_array_equal(got, expected)
  np.testing.assert_allclose(ours.apply(params, x), flax_dense.apply(params, x), rtol=1e-6)

  def loss(model, p, x):
    return jnp.sum(jnp.sin(model.apply(p, x)))

  got = jax.grad(loss, argnums=(1, 2))(ours, params, x)
  expected = jax.grad(loss, argnums=(1, 2))(flax_dense, params, x)
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
