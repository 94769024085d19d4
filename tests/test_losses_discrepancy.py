"""Tests of xdomain.losses.discrepancy: MMD, joint MMD and CORAL against numpy references.

The references are written here from the papers and the reference code (DAN's and
JAN's `guassian_kernel`: kernel_mul=2, kernel_num=5, bandwidth = mean squared
distance of distinct pooled pairs, kernels summed), with their constants spelled
out, never read from the library.
"""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from xdomain import losses

ESTIMATORS = ("biased", "unbiased", "linear")
# The options that reproduce the values of xdomain before DAN's default (the
# shipped flag files' scale): the median width, the five kernels averaged.
LEGACY = dict(bandwidth_heuristic="median", kernel_reduction="mean")


def jit(fn, **kwargs):
  """jit with the Python-valued keywords closed over: one compilation instead of one per op."""
  return jax.jit(functools.partial(fn, **kwargs))


def jit_estimators(fn=losses.mmd, estimators=ESTIMATORS, **kwargs):
  """One jitted function returning `fn` under every estimator (one compilation for all)."""
  return jax.jit(lambda *args, **kw: tuple(
      fn(*args, estimator=estimator, **kwargs, **kw) for estimator in estimators))


# ---- numpy references -------------------------------------------------------

def np_sq_dists(a, b):
  return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def np_dan_kernel(z, kernel_mul=2.0, kernel_num=5, fix_sigma=None):
  """DAN's/JAN's `guassian_kernel` on the pooled sample z [N, d]: an [N, N] kernel matrix."""
  n = len(z)
  l2 = np_sq_dists(z, z)
  bandwidth = fix_sigma if fix_sigma else l2.sum() / (n * n - n)
  bandwidth /= kernel_mul ** (kernel_num // 2)
  return sum(np.exp(-l2 / (bandwidth * kernel_mul**i)) for i in range(kernel_num))


def np_mmd_from_pooled_kernel(k, n, m, estimator, weights=None):
  """MMD^2 from the [n + m, n + m] kernel matrix of the pooled sample (source rows first)."""
  w = np.ones(n + m) if weights is None else np.concatenate(weights)
  ws, wt = w[:n], w[n:]
  kss, ktt, kst = k[:n, :n], k[n:, n:], k[:n, n:]
  if estimator == "linear":
    p = n // 2
    a, b, c, e = ws[0:2 * p:2], ws[1:2 * p:2], wt[0:2 * p:2], wt[1:2 * p:2]
    i, j = np.arange(p) * 2, np.arange(p) * 2 + 1
    return ((a * b * kss[i, j]).sum() / (a * b).sum() + (c * e * ktt[i, j]).sum() / (c * e).sum()
            - 2 * (a * e * kst[i, j] + b * c * kst[j, i]).sum() / (a * e + b * c).sum())
  pss, ptt, pst = np.outer(ws, ws), np.outer(wt, wt), np.outer(ws, wt)
  if estimator == "unbiased":  # TLlib's index matrix: 1/(n(n-1)) off the diagonal
    np.fill_diagonal(pss, 0.0)
    np.fill_diagonal(ptt, 0.0)
  return ((pss * kss).sum() / pss.sum() + (ptt * ktt).sum() / ptt.sum()
          - 2 * (pst * kst).sum() / pst.sum())


def np_dan_mmd(x, y, estimator, weights=None):
  z = np.concatenate([x, y]).astype(np.float64)
  return np_mmd_from_pooled_kernel(np_dan_kernel(z), len(x), len(y), estimator, weights)


def np_median_width(x, y):
  z = np.concatenate([x, y]).astype(np.float64)
  return np.sqrt(np.median(np_sq_dists(z, z)[np.triu_indices(len(z), 1)]))


def np_gaussian_mean_kernel(z, widths):
  """The mean of Gaussians exp(-d^2 / (2 s^2)) over the widths s: the legacy family."""
  d2 = np_sq_dists(z, z)
  return np.mean([np.exp(-d2 / (2.0 * s * s)) for s in widths], axis=0)


def np_legacy_mmd(x, y, estimator):
  z = np.concatenate([x, y]).astype(np.float64)
  widths = np_median_width(x, y) * np.array([0.5, 2**-0.5, 1.0, 2**0.5, 2.0])
  return np_mmd_from_pooled_kernel(np_gaussian_mean_kernel(z, widths), len(x), len(y), estimator)


def np_fixed_mmd(x, y, widths, estimator):
  z = np.concatenate([x, y]).astype(np.float64)
  d2 = np_sq_dists(z, z)
  k = sum(np.exp(-d2 / (2.0 * s * s)) for s in widths)
  return np_mmd_from_pooled_kernel(k, len(x), len(y), estimator)


def samples(n=12, m=12, d=5, shift=0.5, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, d)).astype(np.float32),
          (rng.normal(size=(m, d)) + shift).astype(np.float32))


# ---- values: DAN's and JAN's code, and the legacy scale ---------------------

def test_default_mmd_is_dans_multi_kernel_mmd():
  x, y = samples(n=12, m=12)
  y9 = y[:9]  # the quadratic estimators with m != n
  got = jit_estimators()(x, y)
  got9 = jit_estimators(estimators=("biased", "unbiased"))(x, y9)
  for estimator, value in zip(ESTIMATORS, got):
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(value, np_dan_mmd(x, y, estimator), rtol=1e-5, atol=1e-7)
  for estimator, value in zip(("biased", "unbiased"), got9):
    np.testing.assert_allclose(value, np_dan_mmd(x, y9, estimator), rtol=1e-5, atol=1e-7)


def test_unbiased_default_equals_tllib_minus_its_constant():
  """TLlib's non-linear MK-MMD adds 2 / (b - 1) and averages gamma over all N^2 pairs."""
  x, y = samples(n=10, m=10, seed=7)
  z = np.concatenate([x, y]).astype(np.float64)
  l2 = np_sq_dists(z, z)
  # alpha = 2^k, k = -3..1, sigma^2 = alpha * mean(l2) over all N^2 entries (zeros included).
  k = sum(np.exp(-l2 / (2 * 2.0**e * l2.mean())) for e in range(-3, 2))
  index = np.full((20, 20), -1.0 / 100)
  index[:10, :10] = index[10:, 10:] = 1.0 / 90
  index[np.arange(20), np.arange(20)] = 0.0
  tllib = (k * index).sum() + 2.0 / 9
  # Its widths sigma = sqrt(alpha mean(l2)) given outright: xdomain sums the kernels
  # and leaves the diagonal out of the within-domain means, as TLlib does.
  widths = np.sqrt(2.0 ** np.arange(-3, 2) * l2.mean())
  np.testing.assert_allclose(jit(losses.mmd)(x, y, bandwidths=widths), tllib - 2.0 / 9,
                             rtol=1e-5)


def test_legacy_options_reproduce_the_old_values():
  x, y = samples(n=12, m=12)
  got = jit_estimators(**LEGACY)(x, y)
  for estimator, value in zip(ESTIMATORS, got):
    np.testing.assert_allclose(value, np_legacy_mmd(x, y, estimator), rtol=1e-5, atol=1e-7)
  # The values the library gave before DAN's family became the default (xdomain at
  # 49ee93d, float32 on CPU), which the dan/jan methods keep.
  np.testing.assert_allclose(got, [0.14261376857757568, 0.07324326038360596,
                                   0.23398280143737793], rtol=1e-5)
  rng = np.random.default_rng(0)
  rng.normal(size=(24, 5))  # the draws of `samples`
  p = np.asarray(jax.nn.softmax(rng.normal(size=(12, 3))))
  q = np.asarray(jax.nn.softmax(rng.normal(size=(12, 3)) + 0.5))
  np.testing.assert_allclose(jit(losses.jmmd, **LEGACY)([x, p], [y, q]), 0.05584663152694702,
                             rtol=1e-5)


def test_default_is_five_times_the_legacy_scale_with_equal_widths():
  """Summing five kernels is five times their mean: the factor between the conventions."""
  x, y = samples()
  width = float(losses.median_bandwidth(x, y))
  mean_reduced = jit(losses.mmd, bandwidth_heuristic="median", kernel_reduction="mean")(x, y)
  summed = jit(losses.mmd, bandwidth_heuristic="median")(x, y)
  np.testing.assert_allclose(summed, 5 * mean_reduced, rtol=1e-5)
  widths = width * np.array([0.5, 2**-0.5, 1.0, 2**0.5, 2.0])
  np.testing.assert_allclose(summed, np_fixed_mmd(x, y, widths, "unbiased"), rtol=1e-5)


def test_jmmd_is_jans_joint_mmd():
  """JAN's code: DAN's family on the features times exp(-d^2 / 1.68) on the softmax."""
  rng = np.random.default_rng(1)
  xs = [rng.normal(size=(10, 4)), jax.nn.softmax(rng.normal(size=(10, 3)))]
  ys = [rng.normal(size=(10, 4)) + 0.3, jax.nn.softmax(rng.normal(size=(10, 3)) + 0.5)]
  xs = [np.asarray(x, np.float32) for x in xs]
  ys = [np.asarray(y, np.float32) for y in ys]
  pooled = [np.concatenate([x, y]).astype(np.float64) for x, y in zip(xs, ys)]
  k = np_dan_kernel(pooled[0]) * np_dan_kernel(pooled[1], kernel_num=1, fix_sigma=1.68)
  got = jit_estimators(losses.jmmd, bandwidths=[None, 0.84**0.5])(xs, ys)
  for estimator, value in zip(ESTIMATORS, got):
    np.testing.assert_allclose(value, np_mmd_from_pooled_kernel(k, 10, 10, estimator),
                               rtol=1e-5, atol=1e-7)
  # One layer: DAN's MMD.
  np.testing.assert_allclose(jit(losses.jmmd)([xs[0]], [ys[0]]),
                             np_dan_mmd(xs[0], ys[0], "unbiased"), rtol=1e-5)


def test_mean_bandwidth_is_dans_mean_squared_distance():
  x, y = samples(n=7, m=6)
  z = np.concatenate([x, y]).astype(np.float64)
  d2 = np_sq_dists(z, z)
  mean_d2 = d2.sum() / (13 * 12)  # distinct ordered pairs
  np.testing.assert_allclose(jit(losses.mean_bandwidth)(x, y), np.sqrt(mean_d2 / 2), rtol=1e-5)
  where = np.array([1, 1, 0, 1, 1, 0], bool)
  np.testing.assert_allclose(jit(losses.mean_bandwidth)(x, y, target_where=where),
                             jit(losses.mean_bandwidth)(x, y[where]), rtol=1e-6)


def test_median_bandwidth_matches_numpy():
  x, y = samples(n=7, m=6)  # 13 points, 78 pairs (even count: mean of the middle two)
  np.testing.assert_allclose(jit(losses.median_bandwidth)(x, y), np_median_width(x, y),
                             rtol=1e-5)


def test_median_bandwidth_of_large_batches_is_close_to_the_exact_median():
  """1,400 pooled points: the 1,024-point subsample must cover the target too.

  Taking the first 1,024 pooled points (all 700 source rows, only 324 target rows)
  gave 3.28 here against an exact median of 3.69.
  """
  rng = np.random.default_rng(0)
  x = rng.normal(size=(700, 3)).astype(np.float32)
  y = (rng.normal(size=(700, 3)) + 3.0).astype(np.float32)
  exact = np_median_width(x, y)
  got = float(jit(losses.median_bandwidth)(x, y))
  assert abs(got / exact - 1) < 0.02, (got, exact)
  # Masked rows are left out before subsampling: the same as the subset.
  where = np.ones(700, bool)
  where[::7] = False
  median = jit(losses.median_bandwidth)
  np.testing.assert_allclose(median(x, y, source_where=where), median(x[where], y), rtol=1e-6)


# ---- weights ----------------------------------------------------------------

def test_weighted_mmd_matches_numpy():
  x, y = samples(n=10, m=10, seed=3)
  rng = np.random.default_rng(3)
  ws = rng.uniform(0.2, 2.0, 10).astype(np.float32)
  wt = rng.uniform(0.2, 2.0, 10).astype(np.float32)
  got = jit_estimators()(x, y, source_weights=ws, target_weights=wt)
  for estimator, value in zip(ESTIMATORS, got):
    np.testing.assert_allclose(value, np_dan_mmd(x, y, estimator, (ws, wt)), rtol=1e-5,
                               atol=1e-7)
  # Weights are relative; unit weights are no weights.
  np.testing.assert_allclose(jit_estimators()(x, y, source_weights=3 * ws, target_weights=wt),
                             got, rtol=1e-5)
  np.testing.assert_allclose(jit_estimators()(x, y, source_weights=np.ones(10, np.float32)),
                             jit_estimators()(x, y), rtol=1e-5, atol=1e-5)


def test_integer_weights_of_the_biased_mmd_repeat_rows():
  x, y = samples(n=5, m=6, seed=4)
  counts = np.array([1, 3, 1, 2, 1])
  np.testing.assert_allclose(
      jit(losses.mmd, estimator="biased", bandwidths=[0.7, 2.0])(x, y, source_weights=counts),
      jit(losses.mmd, estimator="biased", bandwidths=[0.7, 2.0])(np.repeat(x, counts, 0), y),
      rtol=1e-5)


def test_weighted_coral_and_jmmd():
  rng = np.random.default_rng(5)
  xs, xt = rng.normal(size=(12, 4)).astype(np.float32), rng.normal(size=(9, 4)).astype(np.float32)
  ws, wt = rng.uniform(0.1, 3.0, 12), rng.uniform(0.1, 3.0, 9)
  difference = np.cov(xs, rowvar=False, aweights=ws) - np.cov(xt, rowvar=False, aweights=wt)
  np.testing.assert_allclose(jit(losses.coral)(xs, xt, source_weights=ws, target_weights=wt),
                             (difference**2).sum() / (4 * 4**2), rtol=1e-5)
  p, q = rng.normal(size=(12, 2)).astype(np.float32), rng.normal(size=(9, 2)).astype(np.float32)
  pooled = [np.concatenate([xs, xt]).astype(np.float64), np.concatenate([p, q]).astype(np.float64)]
  k = np_dan_kernel(pooled[0]) * np_dan_kernel(pooled[1])
  np.testing.assert_allclose(
      jit(losses.jmmd)([xs, p], [xt, q], source_weights=ws, target_weights=wt),
      np_mmd_from_pooled_kernel(k, 12, 9, "unbiased", (ws, wt)), rtol=1e-5)


# ---- custom kernels ---------------------------------------------------------

def test_custom_kernel():
  x, y = samples(n=8, m=8, seed=6)
  x = x + 2.0  # the kernel sees the rows as given: centring would change this kernel

  def polynomial(a, b):
    return (a @ b.T / 5.0 + 1.0) ** 2

  z = np.concatenate([x, y]).astype(np.float64)
  k = (z @ z.T / 5.0 + 1.0) ** 2
  got = jit_estimators(kernel=polynomial)(x, y)
  for estimator, value in zip(ESTIMATORS, got):
    np.testing.assert_allclose(value, np_mmd_from_pooled_kernel(k, 8, 8, estimator), rtol=1e-4)
  linear = jit(losses.mmd, kernel=lambda a, b: a @ b.T, estimator="biased")
  np.testing.assert_allclose(linear(x, y), ((x.mean(0) - y.mean(0)) ** 2).sum(), rtol=1e-4)
  where = np.array([1, 1, 0, 1, 1, 1, 0, 1], bool)
  blocked = jit(losses.mmd, kernel=polynomial, block_size=3)
  np.testing.assert_allclose(blocked(x, y, source_where=where), jit(losses.mmd, kernel=polynomial)(
      x[where], y), rtol=1e-5)


# ---- plain numerics ---------------------------------------------------------

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


def test_fixed_bandwidths_sum_the_kernels():
  x, y = samples()
  fn = jax.jit(lambda a, b, s: losses.mmd(a, b, bandwidths=s))  # traced widths
  np.testing.assert_allclose(fn(x, y, jnp.array([1.0, 2.0])),
                             np_fixed_mmd(x, y, [1.0, 2.0], "unbiased"), rtol=1e-5)


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


@pytest.mark.parametrize("estimator, block_size, heuristic", [
    ("linear", None, "mean"), ("unbiased", 256, "mean"), ("unbiased", 256, "median")])
def test_large_batch_estimators_never_form_n_by_n(estimator, block_size, heuristic):
  n, d = 4096, 8
  x = jnp.zeros((n, d))
  mmd = functools.partial(losses.mmd, estimator=estimator, block_size=block_size,
                          bandwidth_heuristic=heuristic)
  for fn in (mmd, jax.grad(mmd)):  # forward, and the backward pass too
    largest = _max_intermediate_size(jax.make_jaxpr(fn)(x, x).jaxpr)
    limit = n * d * 5 if block_size is None else block_size * n * 5
    if heuristic == "median":  # its fixed 1024-point subsample is O(1) in n
      limit = max(limit, 1024**2)
    assert largest <= limit < n * n // 2


# ---- masks ------------------------------------------------------------------

@pytest.mark.parametrize("estimator, block_size", [
    ("biased", None), ("unbiased", None), ("unbiased", 3), ("linear", None)])
def test_masked_mmd_equals_mmd_on_subset(estimator, block_size):
  x, y = samples(n=11, m=11)
  source_where = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1], bool)
  target_where = np.array([1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1], bool)
  fn = jit(losses.mmd, estimator=estimator, block_size=block_size)
  np.testing.assert_allclose(fn(x, y, source_where=source_where, target_where=target_where),
                             fn(x[source_where], y[target_where]), rtol=1e-5, atol=1e-7)
  if estimator == "linear":  # 9 and 8 valid rows: the first 8 of each, in order
    target_where[-1] = False
    np.testing.assert_allclose(
        fn(x, y, source_where=source_where, target_where=target_where, bandwidths=1.5),
        fn(x[source_where][:8], y[target_where], bandwidths=1.5),
        rtol=1e-5, atol=1e-7)


def test_masked_garbage_rows_reach_neither_values_nor_gradients():
  x, y = samples(n=8, m=8)
  rng = np.random.default_rng(8)
  p, q = rng.normal(size=(8, 2)).astype(np.float32), rng.normal(size=(8, 2)).astype(np.float32)
  where = np.arange(8) < 6
  x_bad, p_bad = x.copy(), p.copy()
  x_bad[6:] = np.nan
  p_bad[6:] = np.inf

  def all_losses(a, b, where=None):
    w = {} if where is None else {"source_where": where}
    return jnp.stack([
        losses.mmd(a, y, **w), losses.mmd(a, y, estimator="linear", bandwidths=1.5, **w),
        losses.jmmd([a, b], [y, q], **w), losses.coral(a, y, **w)])

  def weighted_sum(a, b):  # distinct coefficients: no cancelling gradients
    values = all_losses(a, b, where)
    return values @ jnp.arange(1.0, 5.0), values

  (_, values), grads = jax.jit(jax.value_and_grad(weighted_sum, argnums=(0, 1), has_aux=True))(
      x_bad, p_bad)
  expected = jax.jit(lambda a, b: [
      losses.mmd(a, y), losses.mmd(a, y[:6], estimator="linear", bandwidths=1.5),
      losses.jmmd([a, b], [y, q]), losses.coral(a, y)])(x[:6], p[:6])
  np.testing.assert_allclose(values, expected, rtol=1e-5)
  for grad in grads:
    assert np.all(np.isfinite(grad)) and np.all(grad[6:] == 0) and np.any(grad[:6] != 0)


def test_masked_jmmd_and_coral_equal_subset():
  rng = np.random.default_rng(4)
  xs = [rng.normal(size=(9, 4)).astype(np.float32), rng.normal(size=(9, 2)).astype(np.float32)]
  ys = [rng.normal(size=(7, 4)).astype(np.float32), rng.normal(size=(7, 2)).astype(np.float32)]
  sw = np.array([1, 1, 1, 0, 1, 1, 0, 1, 1], bool)
  tw = np.array([0, 1, 1, 1, 1, 1, 1], bool)
  jmmd, coral = jit(losses.jmmd), jit(losses.coral)
  np.testing.assert_allclose(
      jmmd(xs, ys, source_where=sw, target_where=tw),
      jmmd([x[sw] for x in xs], [y[tw] for y in ys]), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(coral(xs[0], ys[0], source_where=sw, target_where=tw),
                             coral(xs[0][sw], ys[0][tw]), rtol=1e-5, atol=1e-8)


def test_too_few_valid_rows_give_zero_and_zero_gradients():
  """The empty-mask rule: 0 and zero gradients, not NaN (one row: no unbiased estimate)."""
  x, y = samples(n=6, m=6)

  def all_losses(a, b, sw, tw):
    return jnp.stack(
        [losses.mmd(a, b, estimator=e, source_where=sw, target_where=tw)
         for e in ("unbiased", "linear", "biased")]
        + [losses.mmd(a, b, source_where=sw, target_where=tw, **LEGACY),
           losses.mmd(a, b, source_where=sw, target_where=tw, source_weights=jnp.ones(6)),
           losses.jmmd([a, a], [b, b], source_where=sw, target_where=tw),
           losses.coral(a, b, source_where=sw, target_where=tw),
           losses.coral(a, b, source_where=sw, target_where=tw, target_weights=jnp.ones(6))])

  def checked(a, b, sw, tw, check):  # distinct coefficients: no cancelling gradients
    values = all_losses(a, b, sw, tw)
    return jnp.sum(jnp.where(check, values * jnp.arange(1.0, 9.0), 0.0)), values

  value_and_grads = jax.jit(jax.value_and_grad(checked, argnums=(0, 1), has_aux=True))
  for num_source, num_target in [(0, 0), (0, 5), (1, 5)]:  # both empty, one empty, one row
    sw, tw = np.arange(6) < num_source, np.arange(6) < num_target
    # The biased estimator (index 2) is defined for a single row.
    check = np.array([not (num_source == 1 and i == 2) for i in range(8)])
    (_, values), grads = value_and_grads(x, y, sw, tw, check)
    np.testing.assert_array_equal(values[check], 0.0)
    for grad in grads:
      np.testing.assert_array_equal(grad, 0.0)


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
    w = jnp.linspace(0.5, 2.0, 6)
    check_grads(jit_estimators(bandwidths=[0.8, 2.0], source_weights=w), (x, y), order=1,
                modes=("rev",))


def test_jmmd_and_coral_gradients():
  with jax.enable_x64(True):
    rng = np.random.default_rng(6)
    xs = [jnp.asarray(rng.normal(size=(6, 3))), jnp.asarray(rng.normal(size=(6, 2)))]
    ys = [jnp.asarray(rng.normal(size=(5, 3))), jnp.asarray(rng.normal(size=(5, 2)))]
    w = jnp.linspace(0.5, 2.0, 5)
    # One check for all (each compilation costs more than the check itself).
    fn = jax.jit(lambda a, b: losses.jmmd(a, b, bandwidths=[1.0, [0.5, 2.0]])
                 + 100.0 * losses.coral(a[0], b[0])
                 + 100.0 * losses.coral(a[0], b[0], target_weights=w))
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


# ---- errors -----------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda x, y: losses.mmd(x[0], y), r"source must have shape \[n, d\], got shape \(5,\)"),
    (lambda x, y: losses.mmd(x, y[:, :3]), r"same feature dimension.*\(12, 5\).*\(12, 3\)"),
    (lambda x, y: losses.mmd(x, y[:7], estimator="linear"), "linear estimator needs n == m"),
    (lambda x, y: losses.mmd(x, y, estimator="quadratic"), "estimator must be one of"),
    (lambda x, y: losses.mmd(x, y, block_size=0), "block_size must be a positive int"),
    (lambda x, y: losses.mmd(x, y, bandwidth_heuristic="mode"), "bandwidth_heuristic must be"),
    (lambda x, y: losses.mmd(x, y, kernel_reduction="max"), "kernel_reduction must be"),
    (lambda x, y: losses.mmd(x, y, kernel=lambda a, b: a @ b.T, bandwidths=1.0),
     "give kernel or bandwidths, not both"),
    (lambda x, y: losses.mmd(x, y, kernel=lambda a, b: a.sum(1)), r"kernel must map.*\[p, q\]"),
    (lambda x, y: losses.mmd(x, y, source_where=np.ones(5, bool)),
     r"source_where must have shape \(12,\)"),
    (lambda x, y: losses.mmd(x, y, target_weights=np.ones(5)),
     r"target_weights must have shape \(12,\)"),
    (lambda x, y: losses.mmd(x, y, bandwidths=np.ones((2, 2))), "bandwidths must be a float"),
    (lambda x, y: losses.jmmd([x, x], [y]), "same, non-zero number of layers"),
    (lambda x, y: losses.jmmd([x, x[:3]], [y, y]), "same number of examples"),
    (lambda x, y: losses.jmmd([x], [y], bandwidths=[1.0, 2.0]), "one entry per layer"),
    (lambda x, y: losses.jmmd(x, y), "sequences of arrays"),
    (lambda x, y: losses.coral(x, y[:, :2]), r"source and target must have the same feature"),
    (lambda x, y: losses.coral(x[None], y), r"source must have shape \[n, d\]"),
    (lambda x, y: losses.coral(x, y, source_weights=np.ones(3)),
     r"source_weights must have shape \(12,\)"),
])
def test_shape_errors(call, message):
  x, y = samples()
  with pytest.raises(ValueError, match=message):
    jax.jit(call)(x, y)  # raised while tracing: shapes are static
