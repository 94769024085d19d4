"""Tests of xdomain.losses.discrepancy: MMD, joint MMD and CORAL against numpy references."""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from xdomain import losses

ESTIMATORS = ("biased", "unbiased", "linear")


def jit(fn, **kwargs):
  """jit with the Python-valued keywords closed over: one compilation instead of one per op."""
  return jax.jit(functools.partial(fn, **kwargs))


def jit_estimators(fn=losses.mmd, estimators=ESTIMATORS, **kwargs):
  """One jitted function returning `fn` under every estimator (one compilation for all)."""
  return jax.jit(lambda *args, **kw: tuple(
      fn(*args, estimator=estimator, **kwargs, **kw) for estimator in estimators))


# ---- numpy references -------------------------------------------------------

def np_kernel(a, b, sigmas):
  d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
  return np.mean([np.exp(-d2 / (2.0 * s * s)) for s in sigmas], axis=0)


def np_median_bandwidth(x, y):
  z = np.concatenate([x, y]).astype(np.float64)
  d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
  return np.sqrt(np.median(d2[np.triu_indices(len(z), 1)]))


def np_default_sigmas(x, y):
  return np_median_bandwidth(x, y) * np.asarray(losses.DEFAULT_BANDWIDTH_MULTIPLIERS)


def np_mmd_from_kernel(kernel, x_layers, y_layers, estimator):
  n, m = len(x_layers[0]), len(y_layers[0])
  if estimator == "linear":
    total = 0.0
    for i in range(n // 2):
      a, b = 2 * i, 2 * i + 1
      total += (kernel(x_layers, a, x_layers, b) + kernel(y_layers, a, y_layers, b)
                - kernel(x_layers, a, y_layers, b) - kernel(x_layers, b, y_layers, a))
    return total / (n // 2)
  kxx = np.array([[kernel(x_layers, i, x_layers, j) for j in range(n)] for i in range(n)])
  kyy = np.array([[kernel(y_layers, i, y_layers, j) for j in range(m)] for i in range(m)])
  kxy = np.array([[kernel(x_layers, i, y_layers, j) for j in range(m)] for i in range(n)])
  if estimator == "biased":
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()
  return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
          - 2 * kxy.mean())


def np_jmmd(x_layers, y_layers, sigmas_per_layer, estimator):
  x_layers = [np.asarray(x, np.float64) for x in x_layers]
  y_layers = [np.asarray(y, np.float64) for y in y_layers]

  def kernel(a_layers, i, b_layers, j):
    value = 1.0
    for a, b, sigmas in zip(a_layers, b_layers, sigmas_per_layer):
      value *= np_kernel(a[i:i + 1], b[j:j + 1], sigmas)[0, 0]
    return value

  return np_mmd_from_kernel(kernel, x_layers, y_layers, estimator)


def samples(n=12, m=12, d=5, shift=0.5, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, d)).astype(np.float32),
          (rng.normal(size=(m, d)) + shift).astype(np.float32))


# ---- values -----------------------------------------------------------------

@pytest.mark.parametrize("default_bandwidths", [False, True])
def test_mmd_matches_numpy(default_bandwidths):
  x, y = samples(n=12, m=12)
  y9 = y[:9]  # the quadratic estimators with m != n
  if default_bandwidths:
    bandwidths, sigmas, sigmas9 = None, np_default_sigmas(x, y), np_default_sigmas(x, y9)
  else:
    bandwidths = sigmas = sigmas9 = np.array([0.7, 1.5, 3.0])
  got = jit_estimators(bandwidths=bandwidths)(x, y)
  got9 = jit_estimators(estimators=("biased", "unbiased"), bandwidths=bandwidths)(x, y9)
  for estimator, value in zip(ESTIMATORS, got):
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(value, np_jmmd([x], [y], [sigmas], estimator), rtol=1e-4, atol=1e-6)
  for estimator, value in zip(("biased", "unbiased"), got9):
    np.testing.assert_allclose(value, np_jmmd([x], [y9], [sigmas9], estimator), rtol=1e-4,
                               atol=1e-6)


def test_median_bandwidth_matches_numpy():
  x, y = samples(n=7, m=6)  # 13 points, 78 pairs (even count: mean of the middle two)
  np.testing.assert_allclose(jit(losses.median_bandwidth)(x, y), np_median_bandwidth(x, y),
                             rtol=1e-5)


def test_median_bandwidth_subsamples_large_batches():
  x, y = samples(n=700, m=600, d=3)
  pooled = np.concatenate([x, y])[:losses.MEDIAN_MAX_POINTS]  # stride 1300 // 1024 = 1
  expected = np_median_bandwidth(pooled[:500], pooled[500:])
  np.testing.assert_allclose(jit(losses.median_bandwidth)(x, y), expected, rtol=1e-5)


def test_jmmd_matches_numpy_product_kernel():
  rng = np.random.default_rng(1)
  xs = [rng.normal(size=(10, 4)), jax.nn.softmax(rng.normal(size=(10, 3)))]
  ys = [rng.normal(size=(10, 4)) + 0.3, jax.nn.softmax(rng.normal(size=(10, 3)) + 0.5)]
  xs = [np.asarray(x, np.float32) for x in xs]
  ys = [np.asarray(y, np.float32) for y in ys]
  sigmas = [np_default_sigmas(xs[0], ys[0]), [1.68]]
  got = jit_estimators(losses.jmmd, bandwidths=[None, 1.68])(xs, ys)
  for estimator, value in zip(ESTIMATORS, got):
    np.testing.assert_allclose(value, np_jmmd(xs, ys, sigmas, estimator), rtol=1e-4, atol=1e-6)


def test_jmmd_with_one_layer_is_mmd():
  x, y = samples()
  np.testing.assert_allclose(jit(losses.jmmd)([x], [y]), jit(losses.mmd)(x, y), rtol=1e-6)


def test_coral_matches_numpy():
  rng = np.random.default_rng(2)
  xs = rng.normal(size=(20, 6)).astype(np.float32)
  xt = (rng.normal(size=(15, 6)) * 2.0 + 1.0).astype(np.float32)
  difference = np.cov(xs, rowvar=False, ddof=1) - np.cov(xt, rowvar=False, ddof=1)
  expected = (difference**2).sum() / (4 * 6**2)
  np.testing.assert_allclose(jit(losses.coral)(xs, xt), expected, rtol=1e-5)


def test_coral_is_stable_far_from_the_origin():
  rng = np.random.default_rng(3)
  xs = rng.normal(size=(64, 3)).astype(np.float32)
  xt = (2.0 * rng.normal(size=(64, 3))).astype(np.float32)
  coral = jit(losses.coral)
  np.testing.assert_allclose(coral(xs + 1e4, xt + 1e4), coral(xs, xt), rtol=1e-3)


# ---- blocked quadratic estimators -------------------------------------------

def test_blocked_equals_dense_with_gradients():
  x, y = samples(n=13, m=10)
  quadratic = ("biased", "unbiased")
  dense = jit_estimators(estimators=quadratic)(x, y)
  blocked = jit_estimators(estimators=quadratic, block_size=4)(x, y)
  np.testing.assert_allclose(blocked, dense, rtol=1e-5, atol=1e-7)
  grad = lambda **kw: jax.jit(jax.grad(functools.partial(losses.mmd, **kw), argnums=(0, 1)))
  grads_dense = grad()(x, y)
  grads_blocked = grad(block_size=4)(x, y)
  for a, b in zip(grads_blocked, grads_dense):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _max_intermediate_size(jaxpr) -> int:
  """The largest array any equation produces, looking inside loops and calls."""
  largest = 0
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      largest = max(largest, int(np.prod(getattr(var.aval, "shape", ()))))
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      largest = max(largest, _max_intermediate_size(sub))
  return largest


@pytest.mark.parametrize("estimator, block_size", [("linear", None), ("unbiased", 256)])
def test_large_batch_estimators_never_form_n_by_n(estimator, block_size):
  n, d = 4096, 8
  x = jnp.zeros((n, d))
  mmd = functools.partial(losses.mmd, estimator=estimator, block_size=block_size)
  for fn in (mmd, jax.grad(mmd)):  # forward, and the backward pass too
    largest = _max_intermediate_size(jax.make_jaxpr(fn)(x, x).jaxpr)
    limit = n * d * 5 if block_size is None else block_size * n * 5
    # The median heuristic's fixed 1024-point subsample is O(1) in n.
    limit = max(limit, losses.MEDIAN_MAX_POINTS ** 2)
    assert largest <= limit < n * n // 2


# ---- masks ------------------------------------------------------------------

@pytest.mark.parametrize("estimator, block_size", [
    ("biased", None), ("unbiased", None), ("unbiased", 3), ("linear", None)])
def test_masked_mmd_equals_mmd_on_subset(estimator, block_size):
  x, y = samples(n=11, m=11)
  x_where = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1], bool)
  y_where = np.array([1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1], bool)
  fn = jit(losses.mmd, estimator=estimator, block_size=block_size)
  np.testing.assert_allclose(fn(x, y, x_where=x_where, y_where=y_where),
                             fn(x[x_where], y[y_where]), rtol=1e-5, atol=1e-7)
  if estimator == "linear":  # 9 and 8 valid rows: the first 8 of each, in order
    y_where[-1] = False
    np.testing.assert_allclose(
        fn(x, y, x_where=x_where, y_where=y_where, bandwidths=1.5),
        fn(x[x_where][:8], y[y_where], bandwidths=1.5),
        rtol=1e-5, atol=1e-7)


def test_masked_garbage_rows_do_not_leak():
  x, y = samples(n=8, m=8)
  x_where = np.arange(8) < 6
  x_bad = x.copy()
  x_bad[6:] = np.nan
  value, grad = jax.jit(jax.value_and_grad(lambda a: losses.mmd(a, y, x_where=x_where)))(x_bad)
  np.testing.assert_allclose(value, jit(losses.mmd)(x[:6], y), rtol=1e-5)
  assert np.all(np.isfinite(grad))


def test_masked_median_heuristic_on_large_batch_equals_subset():
  x, y = samples(n=700, m=600, d=3)
  x_where = np.ones(700, bool)
  x_where[::7] = False
  median = jit(losses.median_bandwidth)
  np.testing.assert_allclose(median(x, y, x_where=x_where), median(x[x_where], y), rtol=1e-6)


def test_masked_jmmd_and_coral_equal_subset():
  rng = np.random.default_rng(4)
  xs = [rng.normal(size=(9, 4)).astype(np.float32), rng.normal(size=(9, 2)).astype(np.float32)]
  ys = [rng.normal(size=(7, 4)).astype(np.float32), rng.normal(size=(7, 2)).astype(np.float32)]
  xw = np.array([1, 1, 1, 0, 1, 1, 0, 1, 1], bool)
  yw = np.array([0, 1, 1, 1, 1, 1, 1], bool)
  jmmd, coral = jit(losses.jmmd), jit(losses.coral)
  np.testing.assert_allclose(
      jmmd(xs, ys, x_where=xw, y_where=yw),
      jmmd([x[xw] for x in xs], [y[yw] for y in ys]), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(coral(xs[0], ys[0], x_where=xw, y_where=yw),
                             coral(xs[0][xw], ys[0][yw]), rtol=1e-5, atol=1e-8)


# ---- MMD properties ---------------------------------------------------------

def test_biased_mmd_is_zero_for_identical_samples():
  x, _ = samples(n=16)
  assert abs(float(jit(losses.mmd, estimator="biased")(x, x))) < 1e-6
  assert abs(float(jit(losses.mmd, estimator="biased", block_size=5)(x, x))) < 1e-6


def test_mmd_is_symmetric():
  x, y = samples()
  mmd = jit_estimators()
  np.testing.assert_allclose(mmd(x, y), mmd(y, x), rtol=1e-5, atol=1e-7)


def test_quadratic_mmd_is_permutation_invariant():
  x, y = samples(n=12, m=9)
  rng = np.random.default_rng(5)
  mmd = jit_estimators(estimators=("biased", "unbiased"))
  got = mmd(x[rng.permutation(12)], y[rng.permutation(9)])
  np.testing.assert_allclose(got, mmd(x, y), rtol=1e-5, atol=1e-7)


def test_unbiased_estimators_average_to_zero_on_same_distribution():
  keys = jax.random.split(jax.random.key(0), 400)

  def draw(key):
    kx, ky = jax.random.split(key)
    x, y = jax.random.normal(kx, (10, 2)), jax.random.normal(ky, (10, 2))
    return [losses.mmd(x, y, bandwidths=1.0, estimator=e) for e in ESTIMATORS]

  biased, unbiased, linear = (np.asarray(v) for v in jax.jit(jax.vmap(draw))(keys))
  for values in (unbiased, linear):
    assert abs(values.mean()) < 3 * values.std() / np.sqrt(len(values))
  assert biased.mean() > 10 * biased.std() / np.sqrt(len(biased))  # the V-statistic's bias


def test_mmd_grows_with_the_shift():
  x, y = samples(shift=0.0, n=64, m=64)
  mmd = jit(losses.mmd, bandwidths=[1.0, 2.0])
  values = [float(mmd(x, y + s)) for s in (0.0, 0.5, 1.0, 2.0)]
  assert values == sorted(values)


# ---- gradients, dtypes, jit -------------------------------------------------

def test_mmd_gradients():
  with jax.enable_x64(True):
    x, y = (jnp.asarray(a, jnp.float64) for a in samples(n=6, m=6, d=3))
    check_grads(jit_estimators(bandwidths=[0.8, 2.0]), (x, y), order=1, modes=("rev",))


def test_jmmd_and_coral_gradients():
  with jax.enable_x64(True):
    rng = np.random.default_rng(6)
    xs = [jnp.asarray(rng.normal(size=(6, 3))), jnp.asarray(rng.normal(size=(6, 2)))]
    ys = [jnp.asarray(rng.normal(size=(5, 3))), jnp.asarray(rng.normal(size=(5, 2)))]
    # One check for both (each compilation costs more than the check itself).
    fn = jax.jit(lambda a, b: losses.jmmd(a, b, bandwidths=[1.0, [0.5, 2.0]])
                 + 100.0 * losses.coral(a[0], b[0]))
    check_grads(fn, (xs, ys), order=1, modes=("rev",))


def test_bf16_inputs_accumulate_in_f32():
  x, y = samples(n=16, m=16)
  xb, yb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16)
  fn = jax.jit(lambda a, b: [losses.mmd(a, b, estimator=e) for e in ESTIMATORS]
               + [losses.coral(a, b)])
  got = fn(xb, yb)
  expected = fn(xb.astype(jnp.float32), yb.astype(jnp.float32))
  for value, reference in zip(got, expected):
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(value, reference, rtol=1e-5, atol=1e-7)


def test_traced_bandwidths_under_jit():
  x, y = samples()
  fn = jax.jit(lambda a, b, s: losses.mmd(a, b, bandwidths=s))
  np.testing.assert_allclose(fn(x, y, jnp.array([1.0, 2.0])),
                             np_jmmd([x], [y], [[1.0, 2.0]], "unbiased"), rtol=1e-5)


# ---- errors -----------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda x, y: losses.mmd(x[0], y), r"x must have shape \[n, d\], got shape \(5,\)"),
    (lambda x, y: losses.mmd(x, y[:, :3]), r"same feature dimension.*\(12, 5\).*\(12, 3\)"),
    (lambda x, y: losses.mmd(x, y[:7], estimator="linear"), "linear estimator needs n == m"),
    (lambda x, y: losses.mmd(x, y, estimator="quadratic"), "estimator must be one of"),
    (lambda x, y: losses.mmd(x, y, block_size=0), "block_size must be a positive int"),
    (lambda x, y: losses.mmd(x, y, x_where=np.ones(5, bool)), r"x_where must have shape \(12,\)"),
    (lambda x, y: losses.mmd(x, y, bandwidths=np.ones((2, 2))), "bandwidths must be a float"),
    (lambda x, y: losses.jmmd([x, x], [y]), "same, non-zero number of layers"),
    (lambda x, y: losses.jmmd([x, x[:3]], [y, y]), "same number of examples"),
    (lambda x, y: losses.jmmd([x], [y], bandwidths=[1.0, 2.0]), "one entry per layer"),
    (lambda x, y: losses.jmmd(x, y), "sequences of arrays"),
    (lambda x, y: losses.coral(x, y[:, :2]), r"xs and xt must have the same feature dimension"),
    (lambda x, y: losses.coral(x[None], y), r"xs must have shape \[n, d\]"),
])
def test_shape_errors(call, message):
  x, y = samples()
  with pytest.raises(ValueError, match=message):
    jax.jit(call)(x, y)  # raised while tracing: shapes are static
