"""Tests of xdomain.losses.adversarial: gradient reversal, DANN and CDAN(+E) losses."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from xdomain import losses


def np_softplus(z):
  return np.logaddexp(0.0, z)


def np_entropy(logits):
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return -(p * np.log(p)).sum(-1)


def np_dann_per_example(zs, zt, ws=None, wt=None):
  ws = np.ones_like(zs) if ws is None else ws
  wt = np.ones_like(zt) if wt is None else wt
  return ws * -np.log(1 / (1 + np.exp(-zs))), wt * -np.log(1 - 1 / (1 + np.exp(-zt)))


def np_dann(zs, zt, ws=None, wt=None):
  """The DANN loss as the methods computed it before the per-example API."""
  source, target = np_dann_per_example(zs, zt, ws, wt)
  return 0.5 * (source.mean() + target.mean())


def dann(*args, **kwargs):
  """The domain-balanced mean of the per-example DANN losses: the scalar the methods log."""
  masks = {k: v for k, v in kwargs.items() if k.endswith("_where")}
  return losses.domain_balanced_mean(*losses.domain_adversarial(*args, **kwargs), **masks)


def cdan(*args, **kwargs):
  masks = {k: v for k, v in kwargs.items() if k.endswith("_where")}
  return losses.domain_balanced_mean(*losses.cdan(*args, **kwargs), **masks)


def logits(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_gradient_reversal_is_identity_forward_and_reverses_backward():
  x = {"a": jnp.arange(3.0), "b": jnp.ones((2, 2), jnp.bfloat16)}
  out = losses.gradient_reversal(x, 0.3)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), out, x))

  def loss(x, scale):
    y = losses.gradient_reversal(x, scale)
    return jnp.sum(y["a"] * jnp.array([1.0, 2.0, 3.0])) + jnp.sum(y["b"].astype(jnp.float32))

  grads, grad_scale = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, jnp.float32(0.3))
  np.testing.assert_allclose(grads["a"], [-0.3, -0.6, -0.9], rtol=1e-6)
  assert grads["b"].dtype == jnp.bfloat16
  np.testing.assert_allclose(grads["b"].astype(np.float32), np.full((2, 2), -0.3), rtol=1e-2)
  assert float(grad_scale) == 0.0


def test_gradient_reversal_rejects_non_scalar_scale():
  with pytest.raises(ValueError, match=r"scale must be a scalar, got shape \(2,\)"):
    losses.gradient_reversal(jnp.ones(3), jnp.ones(2))


def test_domain_adversarial_matches_numpy():
  zs, zt = logits(0, 6), logits(1, 4)
  ws, wt = np.abs(logits(2, 6)), np.abs(logits(3, 4))
  per_example = jax.jit(losses.domain_adversarial)(zs[:, None], zt[:, None], source_weights=ws,
                                                   target_weights=wt)
  for got, want in zip(per_example, np_dann_per_example(zs, zt, ws, wt)):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5)
  # The reduced value is the one the methods had before the per-example API.
  fn = jax.jit(dann)
  np.testing.assert_allclose(fn(zs, zt), np_dann(zs, zt), rtol=1e-5)
  np.testing.assert_allclose(fn(zs[:, None], zt[:, None], source_weights=ws, target_weights=wt),
                             np_dann(zs, zt, ws, wt), rtol=1e-5)


def test_domain_adversarial_is_stable_for_large_logits():
  zs, zt = jnp.array([-1e4, 1e4]), jnp.array([1e4, -1e4])
  value, grads = jax.jit(jax.value_and_grad(dann, argnums=(0, 1)))(zs, zt)
  np.testing.assert_allclose(value, 0.5 * (1e4 / 2 + 1e4 / 2), rtol=1e-6)
  np.testing.assert_allclose(grads[0], [-0.25, 0.0])
  np.testing.assert_allclose(grads[1], [0.25, 0.0])


def test_domain_adversarial_where_equals_subset_with_zero_gradients():
  zs, zt = logits(4, 7), logits(5, 5)
  ws = np.abs(logits(6, 7))
  sw, tw = np.array([1, 0, 1, 1, 0, 1, 1], bool), np.array([1, 1, 0, 1, 1], bool)
  zs_bad = np.where(sw, zs, np.nan).astype(np.float32)
  zt_bad = np.where(tw, zt, np.inf).astype(np.float32)
  masked = jax.jit(lambda a, b: dann(a, b, source_weights=ws, source_where=sw, target_where=tw))
  np.testing.assert_allclose(masked(zs_bad, zt_bad), jax.jit(dann)(zs[sw], zt[tw],
                                                                   source_weights=ws[sw]),
                             rtol=1e-6)
  source, target = losses.domain_adversarial(zs_bad, zt_bad, source_where=sw, target_where=tw)
  np.testing.assert_array_equal(source[~sw], 0.0)
  np.testing.assert_array_equal(target[~tw], 0.0)
  grads = jax.jit(jax.grad(masked, argnums=(0, 1)))(zs_bad, zt_bad)
  for grad, where in zip(grads, (sw, tw)):
    assert np.all(np.isfinite(grad)) and np.all(grad[~where] == 0) and np.all(grad[where] != 0)


def test_cdan_features_multilinear_and_randomized():
  f, g = logits(7, 5, 3), jax.nn.softmax(logits(8, 5, 4))
  np.testing.assert_allclose(losses.cdan_features(f, g),
                             np.einsum("nc,nd->ncd", g, f).reshape(5, 12), rtol=1e-6)
  rm = losses.cdan_random_matrices(jax.random.key(0), 3, 4, output_dim=16, multilinear_max_dim=0)
  assert rm.features.shape == (3, 16) and rm.classes.shape == (4, 16)
  expected = (f @ np.asarray(rm.features)) * (np.asarray(g) @ np.asarray(rm.classes)) / 4.0
  np.testing.assert_allclose(losses.cdan_features(f, g, random_matrices=rm), expected,
                             rtol=1e-5, atol=1e-6)
  # Sequence features [batch, time, d] map position-wise.
  np.testing.assert_allclose(
      losses.cdan_features(f.reshape(5, 1, 3), g.reshape(5, 1, 4)).reshape(5, 12),
      losses.cdan_features(f, g), rtol=1e-6)


def test_cdan_features_detach_the_predictions():
  f, g = jnp.asarray(logits(9, 4, 3)), jax.nn.softmax(logits(10, 4, 2))
  grad_f, grad_g = jax.grad(lambda a, b: jnp.sum(losses.cdan_features(a, b) ** 2),
                            argnums=(0, 1))(f, g)
  assert float(jnp.abs(grad_g).max()) == 0.0
  np.testing.assert_allclose(grad_f, 2 * f * jnp.sum(g**2, -1, keepdims=True), rtol=1e-5)


def test_cdan_entropy_weights_match_numpy():
  z = logits(11, 6, 5) * 3
  np.testing.assert_allclose(losses.cdan_entropy_weights(z), 1 + np.exp(-np_entropy(z)), rtol=1e-5)
  assert float(jnp.abs(jax.grad(lambda a: losses.cdan_entropy_weights(a).sum())(z)).max()) == 0.0


def test_cdan_plus_e_matches_paper_weighting():
  zs, zt = logits(12, 6), logits(13, 4)
  cs, ct = logits(14, 6, 3) * 2, logits(15, 4, 3) * 2
  es, et = 1 + np.exp(-np_entropy(cs)), 1 + np.exp(-np_entropy(ct))
  expected = 0.5 * ((es * np_softplus(-zs)).sum() / es.sum()
                    + (et * np_softplus(zt)).sum() / et.sum())
  fn = jax.jit(cdan)
  np.testing.assert_allclose(fn(zs, zt, source_class_logits=cs, target_class_logits=ct),
                             expected, rtol=1e-5)
  # Per example: n e_i / sum(e) times the example's cross-entropy.
  source, target = losses.cdan(zs, zt, source_class_logits=cs, target_class_logits=ct)
  np.testing.assert_allclose(source, 6 * es / es.sum() * np_softplus(-zs), rtol=1e-5)
  np.testing.assert_allclose(target, 4 * et / et.sum() * np_softplus(zt), rtol=1e-5)
  np.testing.assert_allclose(fn(zs, zt), np_dann(zs, zt), rtol=1e-5)  # CDAN without +E
  sw, tw = np.array([1, 1, 0, 1, 0, 1], bool), np.array([0, 1, 1, 1], bool)
  zs_bad = np.where(sw, zs, np.nan).astype(np.float32)
  cs_bad = np.where(sw[:, None], cs, np.nan).astype(np.float32)
  masked = jax.jit(lambda a, c: cdan(a, zt, source_class_logits=c, target_class_logits=ct,
                                     source_where=sw, target_where=tw))
  np.testing.assert_allclose(
      masked(zs_bad, cs_bad),
      fn(zs[sw], zt[tw], source_class_logits=cs[sw], target_class_logits=ct[tw]), rtol=1e-6)
  grad = jax.jit(jax.grad(masked))(zs_bad, cs_bad)
  assert np.all(np.isfinite(grad)) and np.all(grad[~sw] == 0) and np.all(grad[sw] != 0)


def test_cdan_uses_the_randomized_map_above_4096_dimensions():
  """Long et al. 2018: the randomized multilinear map when d_f x d_g > 4096."""
  key = jax.random.key(0)
  assert losses.cdan_random_matrices(key, 1024, 4) is None  # 4096: the multilinear map
  rm = losses.cdan_random_matrices(key, 1025, 4)  # 4100: randomized, r = 1024
  assert rm.features.shape == (1025, 1024) and rm.classes.shape == (4, 1024)
  f, g = logits(22, 2, 1025), jax.nn.softmax(logits(23, 2, 4))
  assert losses.cdan_features(f, g, random_matrices=rm).shape == (2, 1024)
  small = losses.cdan_random_matrices(key, 16, 4)
  assert losses.cdan_features(f[:, :16], g, random_matrices=small).shape == (2, 64)


def test_domain_balanced_mean_matches_numpy():
  vs, vt = logits(24, 6), logits(25, 3)
  sw, tw = np.array([1, 1, 0, 1, 0, 1], bool), np.array([0, 1, 1], bool)
  np.testing.assert_allclose(
      losses.domain_balanced_mean(vs, vt, source_where=sw, target_where=tw),
      0.5 * (vs[sw].sum() / 4 + vt[tw].sum() / 2), rtol=1e-6)
  np.testing.assert_allclose(losses.domain_balanced_mean(vs.reshape(2, 3), vt),
                             0.5 * (vs.mean() + vt.mean()), rtol=1e-6)


def test_empty_masks_give_zero_and_zero_gradients():
  """optax's rule: a domain without valid examples adds 0; nothing valid gives 0, no NaN."""
  zs, zt = logits(26, 5), logits(27, 4)
  cs, ct = logits(28, 5, 3), logits(29, 4, 3)
  none_s, none_t = np.zeros(5, bool), np.zeros(4, bool)
  tw = np.array([1, 1, 0, 1], bool)

  def all_losses(a, b, c, sw, tw):
    masks = dict(source_where=sw, target_where=tw)
    return jnp.stack([dann(a, b, **masks), cdan(a, b, **masks),
                      cdan(a, b, source_class_logits=c, target_class_logits=ct, **masks)])

  def weighted_sum(a, b, c, sw, tw):
    values = all_losses(a, b, c, sw, tw)
    return values @ jnp.arange(1.0, 4.0), values

  fn = jax.jit(jax.value_and_grad(weighted_sum, argnums=(0, 1, 2), has_aux=True))
  (_, values), grads = fn(zs, zt, cs, none_s, none_t)
  np.testing.assert_array_equal(values, 0.0)
  for grad in grads:
    np.testing.assert_array_equal(grad, 0.0)
  # Only the source empty: half the target's mean.
  (_, values), (grad_s, grad_t, _) = fn(zs, zt, cs, none_s, tw)
  np.testing.assert_allclose(values[0], 0.5 * np_softplus(zt[tw]).mean(), rtol=1e-6)
  np.testing.assert_array_equal(grad_s, 0.0)
  assert np.all(np.isfinite(grad_t)) and np.all(grad_t[~tw] == 0)


def test_adversarial_gradients():
  with jax.enable_x64(True):
    zs, zt = jnp.asarray(logits(16, 5), jnp.float64), jnp.asarray(logits(17, 3), jnp.float64)
    cs, ct = jnp.asarray(logits(18, 5, 3), jnp.float64), jnp.asarray(logits(19, 3, 3), jnp.float64)
    ws = jnp.abs(zs)
    fn = jax.jit(lambda a, b: dann(a, b, source_weights=ws)
                 + cdan(a, b, source_class_logits=cs, target_class_logits=ct))
    check_grads(fn, (zs, zt), order=2, modes=("rev",))


def test_bf16_inputs_give_f32():
  zs, zt = jnp.asarray(logits(20, 4), jnp.bfloat16), jnp.asarray(logits(21, 4), jnp.bfloat16)
  got = dann(zs, zt)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, np_dann(np.float32(zs), np.float32(zt)), rtol=1e-5)


@pytest.mark.parametrize("call, message", [
    (functools.partial(losses.domain_adversarial, jnp.ones(3), jnp.ones(3),
                       source_weights=jnp.ones(4)), r"source_weights must have shape \(3,\)"),
    (functools.partial(losses.domain_adversarial, jnp.ones(3), jnp.ones(3),
                       target_where=jnp.ones(2, bool)), r"target_where must have shape \(3,\)"),
    (functools.partial(losses.domain_adversarial, jnp.float32(1.0), jnp.ones(3)),
     r"source_logits must have shape \[n\] or \[n, 1\]"),
    (functools.partial(losses.cdan_features, jnp.ones((3, 2)), jnp.ones((4, 5))),
     "same leading shape"),
    (functools.partial(losses.cdan_features, jnp.ones((3, 2)), jnp.ones((3, 5)),
                       random_matrices=(jnp.ones((2, 8)), jnp.ones((4, 8)))),
     r"random_matrices must be \(\[d, r\], \[c, r\]\)"),
    (functools.partial(losses.cdan, jnp.ones(3), jnp.ones(3), source_class_logits=jnp.ones((3, 2))),
     "give both"),
    (functools.partial(losses.cdan, jnp.ones(3), jnp.ones(3), source_class_logits=jnp.ones((2, 2)),
                       target_class_logits=jnp.ones((3, 2))),
     r"source_class_logits must have shape \(3, 'c'\)"),
    (functools.partial(losses.cdan_random_matrices, jax.random.key(0), 0, 3), "feature_dim"),
    (functools.partial(losses.cdan_random_matrices, jax.random.key(0), 2, 3,
                       multilinear_max_dim=-1), "multilinear_max_dim"),
    (functools.partial(losses.domain_balanced_mean, jnp.ones(3), jnp.ones(2),
                       target_where=jnp.ones(3, bool)), r"target_where must have shape \(2,\)"),
])
def test_errors(call, message):
  with pytest.raises(ValueError, match=message):
    call()
