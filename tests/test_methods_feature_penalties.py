"""Tests of xdomain.methods.feature_penalties: BSP (alone and on DANN) and AFN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.methods import METHODS
from xdomain.methods import Outputs
from xdomain.methods import validate_config


def outputs(seed=0):
  rng = np.random.default_rng(seed)
  return Outputs(
      source_logits=jnp.asarray(rng.normal(size=(6, 3)), jnp.float32),
      source_features=jnp.asarray(rng.normal(size=(6, 5)), jnp.float32),
      source_labels=jnp.zeros(6, jnp.int32), source_mask=None,
      target_logits=jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
      target_features=jnp.asarray(rng.normal(size=(4, 5)), jnp.float32))


def np_top_sv2(f):
  return np.linalg.svd(np.asarray(f, np.float64), compute_uv=False)[0] ** 2


@pytest.mark.parametrize("name", ["dann", "cdan", "bsp"])
def test_bsp_adds_its_term_to_the_adversarial_methods(name):
  config = Config(method=name, bsp_weight=1e-3, discriminator_hidden=8)
  method = METHODS[name](config)
  out = outputs()
  aux = method.init_aux(jax.random.key(0), 5, 3)
  values = jax.jit(lambda o, a: method.terms(o, a, jax.random.key(1), 0))(out, aux)
  assert method.weights["bsp"] == 1e-3
  assert len(values) == 2  # the adversarial term and the penalty
  np.testing.assert_allclose(values["bsp"], np_top_sv2(out.source_features)
                             + np_top_sv2(out.target_features), rtol=1e-5)
  plain = METHODS[name](Config(method=name, discriminator_hidden=8))
  if name == "bsp":
    assert plain.weights["bsp"] == 1e-4  # the paper's weight when the flag is 0
  else:
    assert "bsp" not in plain.weights
    shapes = jax.eval_shape(lambda o, a: plain.terms(o, a, jax.random.key(1), 0), out, aux)
    assert set(shapes) == set(values) - {"bsp"}


def test_bsp_weight_is_refused_for_other_methods():
  with pytest.raises(ConfigError, match="--bsp_weight"):
    validate_config(Config(method="entropy", bsp_weight=1e-4), "image_classification")


def test_afn_terms_match_numpy():
  out = outputs(1)
  norms = [np.linalg.norm(np.asarray(f), axis=1)
           for f in (out.source_features, out.target_features)]

  def term(config, features):
    o = out.replace(source_features=features)
    return METHODS["afn"](config).terms(o, {}, jax.random.key(0), 0)["afn"]

  step = Config(method="afn", afn_delta=0.5)
  value, grad = jax.jit(jax.value_and_grad(lambda f: term(step, f)))(out.source_features)
  np.testing.assert_allclose(value, 2 * 0.25, rtol=1e-6)  # delta^2 per domain
  np.testing.assert_allclose(grad, -2 * 0.5 * np.asarray(out.source_features)
                             / norms[0][:, None] / 6, rtol=1e-5)
  hard = Config(method="afn", afn_radius=25.0)
  np.testing.assert_allclose(term(hard, out.source_features),
                             np.mean((25 - norms[0]) ** 2) + np.mean((25 - norms[1]) ** 2),
                             rtol=1e-5)
