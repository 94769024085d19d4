"""Statistics-matching discrepancies: MMD (DAN), joint MMD (JAN) and Deep CORAL.

These are batch-level quantities: each returns one scalar for two samples. Every
function takes optional boolean masks (`source_where`, `target_where`) so that
padded rows (e.g. padding tokens of a sequence tagger) are excluded with static
shapes (a masked loss equals the loss on the masked subset), and optional
non-negative per-row weights (`source_weights`, `target_weights`) for
importance-weighted alignment. A sample with too few valid rows for the
estimate (none, or one for the unbiased estimators) gives 0 and zero gradients.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xdomain.losses import _checks

# Widths of the multi-kernel family relative to the heuristic's base width s0
# (`bandwidths=None`): five Gaussian kernels whose variances 2 s^2 are
# 2^-2 .. 2^2 times 2 s0^2, the family of DAN's and JAN's code (kernel_mul=2,
# kernel_num=5).
DEFAULT_BANDWIDTH_MULTIPLIERS = (0.5, 2.0**-0.5, 1.0, 2.0**0.5, 2.0)

# How the base width s0 is estimated from the pooled sample when `bandwidths=None`.
BANDWIDTH_HEURISTICS = ("mean", "median")

# How the kernels of a family are combined: summed (DAN's and JAN's code,
# TLlib) or averaged.
KERNEL_REDUCTIONS = ("sum", "mean")

# Rows of kernel matrix computed at a time by the quadratic estimators by
# default: dense up to this many rows, blocked beyond (on a 2-core CPU blocks
# of 256-1024 rows were also faster than one dense matrix; see benchmarks/).
DEFAULT_BLOCK_SIZE = 1024

# The median heuristic looks at the pairwise distances of at most this many
# pooled points, evenly spaced over both samples, so it costs O(1) memory in
# the batch size. (The mean heuristic is exact and O(n d).)
MEDIAN_MAX_POINTS = 1024

_HIGHEST = jax.lax.Precision.HIGHEST

Bandwidths = Any  # None, a float, or a 1-D sequence/array of kernel widths s.
Kernel = Callable[[jax.Array, jax.Array], jax.Array]  # ([p, d], [q, d]) -> [p, q]


def _nonzero(denominator: jax.Array, ok: jax.Array) -> jax.Array:
  """`denominator` where `ok`, else 1: a division that cannot make NaN values or gradients."""
  return jnp.where(ok, denominator, 1.0)


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
  """Pairwise squared Euclidean distances [p, q] between rows of a [p, d] and b [q, d]."""
  aa = jnp.sum(a * a, axis=-1)
  bb = jnp.sum(b * b, axis=-1)
  ab = jnp.matmul(a, b.T, precision=_HIGHEST)
  # Rounding can make the expansion slightly negative; distances are >= 0.
  return jnp.maximum(aa[:, None] + bb[None, :] - 2.0 * ab, 0.0)


@functools.partial(jax.checkpoint, static_argnums=(2,))
def _multi_gaussian(d2: jax.Array, scales: jax.Array, reduction: str) -> jax.Array:
  """sum_s (or mean_s) exp(-d2 * scales[s]) for squared distances d2 of any shape.

  A sum over the (static) number of kernels, not a broadcast over a kernel
  axis, so XLA fuses it into one pass without a [..., K] intermediate; the
  checkpoint makes the backward pass recompute the exponentials from d2
  instead of keeping K of them.
  """
  total = jnp.exp(-d2 * scales[0])
  for s in range(1, scales.shape[0]):
    total = total + jnp.exp(-d2 * scales[s])
  return total if reduction == "sum" else total / scales.shape[0]


class _LayerKernel:
  """One layer's kernel: its Gram matrix [p, q] and its values on row-aligned pairs [p]."""

  def __init__(self, gram: Kernel, paired: Callable[[jax.Array, jax.Array], jax.Array]):
    self.gram = gram
    self.paired = paired


def _gaussian_layer(scales: jax.Array, reduction: str) -> _LayerKernel:
  return _LayerKernel(
      gram=lambda a, b: _multi_gaussian(_sq_dists(a, b), scales, reduction),
      paired=lambda a, b: _multi_gaussian(jnp.sum(jnp.square(a - b), axis=-1), scales,
                                          reduction))


def _custom_layer(kernel: Kernel) -> _LayerKernel:
  def gram(a, b):
    k = _checks.as_float(kernel(a, b))
    if k.shape != (a.shape[0], b.shape[0]):
      raise ValueError(
          f"kernel must map arrays [p, d] and [q, d] to a [p, q] matrix, got shape "
          f"{tuple(k.shape)} for inputs {tuple(a.shape)} and {tuple(b.shape)}.")
    return k

  return _LayerKernel(
      gram=gram, paired=jax.vmap(lambda u, v: gram(u[None], v[None])[0, 0]))


def _gram(a_layers, b_layers, kernels) -> jax.Array:
  """Product over layers of the layers' Gram matrices, [p, q]."""
  gram = None
  for a, b, kernel in zip(a_layers, b_layers, kernels):
    layer = kernel.gram(a, b)
    gram = layer if gram is None else gram * layer
  return gram


def _paired_kernel(a_layers, b_layers, kernels) -> jax.Array:
  """Kernel values k(a_i, b_i) of row-aligned pairs, [p]; O(p) memory."""
  values = None
  for a, b, kernel in zip(a_layers, b_layers, kernels):
    layer = kernel.paired(a, b)
    values = layer if values is None else values * layer
  return values


def _kernel_sum(a_layers, wa, b_layers, wb, kernels, *, exclude_diagonal: bool,
                block_size: int | None) -> jax.Array:
  """sum_{i,j} wa_i wb_j k(a_i, b_j), over i != j when `exclude_diagonal`.

  With `block_size`, rows of `a` are processed `block_size` at a time in a
  sequential loop whose body is rematerialised in the backward pass, so neither
  the forward nor the backward pass holds more than a [block_size, q] kernel.
  """
  p, q = a_layers[0].shape[0], b_layers[0].shape[0]
  if block_size is None or block_size >= p:
    gram = _gram(a_layers, b_layers, kernels)
    if exclude_diagonal:
      gram = jnp.where(jnp.eye(p, q, dtype=bool), 0.0, gram)
    return jnp.sum(gram * wa[:, None] * wb[None, :])

  num_blocks = -(-p // block_size)
  pad = num_blocks * block_size - p
  a_blocks = [jnp.pad(a, ((0, pad), (0, 0))).reshape(num_blocks, block_size, a.shape[1])
              for a in a_layers]
  wa_blocks = jnp.pad(wa, (0, pad)).reshape(num_blocks, block_size)
  offsets = jnp.arange(num_blocks) * block_size

  @jax.checkpoint
  def block_sum(args):
    a_block, wa_block, offset = args
    gram = _gram(a_block, b_layers, kernels)
    if exclude_diagonal:
      rows = offset + jnp.arange(block_size)
      gram = jnp.where(rows[:, None] == jnp.arange(q)[None, :], 0.0, gram)
    return jnp.sum(gram * wa_block[:, None] * wb[None, :])

  return jnp.sum(jax.lax.map(block_sum, (a_blocks, wa_blocks, offsets)))


def _compact(x: jax.Array, keep: jax.Array) -> jax.Array:
  """Moves the kept rows of x to the front, in order (zeros after); O(n), static shape."""
  positions = jnp.cumsum(keep) - 1
  index = jnp.where(keep, positions, x.shape[0])
  return jnp.zeros_like(x).at[index].set(x, mode="drop")


def _quadratic(xs, wx, mx, ys, wy, my, kernels, *, unbiased: bool, block_size: int | None,
               masked: bool, weighted: bool) -> jax.Array:
  """The biased (V) or unbiased (U) quadratic-time MMD^2 estimate, weighted by wx, wy."""
  del mx, my, masked  # Masked rows simply get weight 0.
  nx, ny = jnp.sum(wx), jnp.sum(wy)
  kernel_sum = functools.partial(_kernel_sum, kernels=kernels, block_size=block_size)
  kxx = kernel_sum(xs, wx, xs, wx, exclude_diagonal=unbiased)
  kyy = kernel_sum(ys, wy, ys, wy, exclude_diagonal=unbiased)
  kxy = kernel_sum(xs, wx, ys, wy, exclude_diagonal=False)
  if not unbiased:
    dx, dy = nx * nx, ny * ny
  elif weighted:  # sum_{i != j} w_i w_j
    dx, dy = nx * nx - jnp.sum(wx * wx), ny * ny - jnp.sum(wy * wy)
  else:
    dx, dy = nx * (nx - 1.0), ny * (ny - 1.0)
  ok = (dx > 0) & (dy > 0)
  value = (kxx / _nonzero(dx, ok) + kyy / _nonzero(dy, ok)
           - 2.0 * kxy / _nonzero(nx * ny, ok))
  return jnp.where(ok, value, 0.0)


def _linear(xs, wx, mx, ys, wy, my, kernels, *, block_size: int | None, masked: bool,
            weighted: bool) -> jax.Array:
  """Gretton et al. (2012) linear-time MMD^2 over the pairs (2i, 2i+1); O(n) memory."""
  del block_size  # Already O(n).
  n = xs[0].shape[0]
  num_pairs = n // 2
  if masked:
    xs = [_compact(x, mx) for x in xs]
    ys = [_compact(y, my) for y in ys]
    wx, wy = _compact(wx, mx), _compact(wy, my)
    valid_pairs = jnp.minimum(jnp.sum(mx), jnp.sum(my)) // 2
  else:
    valid_pairs = num_pairs
  x1 = [x[0:2 * num_pairs:2] for x in xs]
  x2 = [x[1:2 * num_pairs:2] for x in xs]
  y1 = [y[0:2 * num_pairs:2] for y in ys]
  y2 = [y[1:2 * num_pairs:2] for y in ys]
  in_pairs = jnp.arange(num_pairs) < valid_pairs
  kxx, kyy = _paired_kernel(x1, x2, kernels), _paired_kernel(y1, y2, kernels)
  kx1y2, kx2y1 = _paired_kernel(x1, y2, kernels), _paired_kernel(x2, y1, kernels)
  if not weighted:
    h = jnp.where(in_pairs, kxx + kyy - kx1y2 - kx2y1, 0.0)
    ok = jnp.asarray(valid_pairs > 0)
    return jnp.where(ok, jnp.sum(h) / _nonzero(valid_pairs, ok), 0.0)
  # Each term is a weighted average over the pairs, a pair weighing the product
  # of its two rows' weights; unit weights give the unweighted estimate.
  a, b = wx[0:2 * num_pairs:2], wx[1:2 * num_pairs:2]
  c, e = wy[0:2 * num_pairs:2], wy[1:2 * num_pairs:2]
  a, b, c, e = (jnp.where(in_pairs, w, 0.0) for w in (a, b, c, e))
  dxx, dyy, dxy = jnp.sum(a * b), jnp.sum(c * e), jnp.sum(a * e + b * c)
  ok = (dxx > 0) & (dyy > 0) & (dxy > 0)
  value = (jnp.sum(a * b * kxx) / _nonzero(dxx, ok) + jnp.sum(c * e * kyy) / _nonzero(dyy, ok)
           - 2.0 * jnp.sum(a * e * kx1y2 + b * c * kx2y1) / _nonzero(dxy, ok))
  return jnp.where(ok, value, 0.0)


_ESTIMATORS = {
    "biased": functools.partial(_quadratic, unbiased=False),
    "unbiased": functools.partial(_quadratic, unbiased=True),
    "linear": _linear,
}


def _median_widths(xs, mx, ys, my, *, masked: bool, max_points: int) -> list[jax.Array]:
  """Median pairwise distance of the pooled valid points, per layer (no gradient)."""
  num_total = xs[0].shape[0] + ys[0].shape[0]
  keep = jnp.concatenate([mx, my])
  pooled = [jnp.concatenate([x, y]) for x, y in zip(xs, ys)]
  if masked:
    pooled = [_compact(z, keep) for z in pooled]
  count = jnp.sum(keep)
  k = min(num_total, max_points)
  i = jnp.arange(k)
  if num_total <= max_points:
    index = i
  else:
    # k points evenly spaced over the `count` valid ones, floor(i * count / k),
    # so both samples are represented in proportion (as i * q + i * r // k,
    # count = q k + r, which cannot overflow int32); every point when count <= k.
    q, r = count // k, count % k
    index = jnp.where(count > k, i * q + (i * r) // k, i)
  valid = i < count
  rows, cols = np.triu_indices(k, 1)
  pair_valid = valid[rows] & valid[cols]
  c = jnp.minimum(count, k)
  num_pairs = c * (c - 1) // 2
  widths = []
  for z in pooled:
    d2 = _sq_dists(z[index], z[index])[rows, cols]
    d2 = jnp.sort(jnp.where(pair_valid, d2, jnp.inf))
    median = 0.5 * (d2[(num_pairs - 1) // 2] + d2[num_pairs // 2])
    # All points equal (or fewer than two): any width gives the same discrepancy.
    width = jnp.where((median > 0) & (num_pairs > 0), jnp.sqrt(median), 1.0)
    widths.append(jax.lax.stop_gradient(width))
  return widths


def _mean_widths(xs, mx, ys, my) -> list[jax.Array]:
  """sqrt(mean squared distance of distinct pooled valid points / 2), per layer (no gradient).

  sum_{i != j} |z_i - z_j|^2 = 2 N sum_i |z_i|^2 - 2 |sum_i z_i|^2 over the N
  valid points: exact in O(N d), no pairwise matrix. Masked rows are zero.
  """
  count = (jnp.sum(mx) + jnp.sum(my)).astype(jnp.float32)
  widths = []
  for x, y in zip(xs, ys):
    total = jnp.sum(x, axis=0) + jnp.sum(y, axis=0)
    squares = jnp.sum(jnp.square(x)) + jnp.sum(jnp.square(y))
    ok = count > 1
    pair_sum = 2.0 * count * squares - 2.0 * jnp.sum(jnp.square(total))
    mean = pair_sum / _nonzero(count * (count - 1.0), ok)
    ok = ok & (mean > 0)
    width = jnp.where(ok, jnp.sqrt(0.5 * _nonzero(mean, ok)), 1.0)
    widths.append(jax.lax.stop_gradient(width))
  return widths


def _prepare_layers(source_list, target_list, source_where, target_where, source_weights,
                    target_weights, source_name: str, target_name: str, *, layered: bool,
                    centre: bool = True):
  """Checks shapes, promotes to f32, zeroes masked rows and (by default) centres every layer.

  Returns (xs, wx, mx, ys, wy, my, masked, weighted): the layers, the per-row
  weights (0 on masked rows; the mask as floats when no weights are given) and
  the boolean masks of both samples.
  """
  if (isinstance(source_list, jax.Array | np.ndarray)
      or isinstance(target_list, jax.Array | np.ndarray)):
    raise ValueError(
        f"{source_name} and {target_name} must be sequences of arrays (one per layer).")
  xs = [_checks.as_float(x) for x in source_list]
  ys = [_checks.as_float(y) for y in target_list]
  if not xs or len(xs) != len(ys):
    raise ValueError(
        f"{source_name} and {target_name} must hold the same, non-zero number of layers, "
        f"got {len(xs)} and {len(ys)}.")
  for layer, (x, y) in enumerate(zip(xs, ys)):
    suffix = f"[{layer}]" if layered else ""
    _checks.check_ndim(x, 2, f"{source_name}{suffix}", "[n, d]")
    _checks.check_ndim(y, 2, f"{target_name}{suffix}", "[m, d]")
    if x.shape[0] != xs[0].shape[0] or y.shape[0] != ys[0].shape[0]:
      raise ValueError(
          f"every layer must have the same number of examples: {source_name}{suffix} has "
          f"shape {tuple(x.shape)} and {target_name}{suffix} has {tuple(y.shape)}, layer 0 "
          f"has {xs[0].shape[0]} and {ys[0].shape[0]}.")
    if x.shape[1] != y.shape[1]:
      raise ValueError(
          f"{source_name}{suffix} and {target_name}{suffix} must have the same feature "
          f"dimension, got shapes {tuple(x.shape)} and {tuple(y.shape)}.")
  n, m = xs[0].shape[0], ys[0].shape[0]
  masked = source_where is not None or target_where is not None
  weighted = source_weights is not None or target_weights is not None
  mx = _checks.mask(source_where, (n,), "source_where")
  my = _checks.mask(target_where, (m,), "target_where")
  if weighted:
    wx = jnp.where(mx, _checks.per_example_weights(source_weights, (n,), "source_weights"), 0.0)
    wy = jnp.where(my, _checks.per_example_weights(target_weights, (m,), "target_weights"), 0.0)
  else:
    wx, wy = mx.astype(xs[0].dtype), my.astype(ys[0].dtype)
  prepared_xs, prepared_ys = [], []
  for x, y in zip(xs, ys):
    if centre:
      # Distances are translation invariant; centring on the pooled mean keeps
      # |a|^2 + |b|^2 - 2ab from cancelling catastrophically for far-off data.
      total = (jnp.sum(jnp.where(mx[:, None], x, 0.0), 0)
               + jnp.sum(jnp.where(my[:, None], y, 0.0), 0))
      shift = jax.lax.stop_gradient(total / jnp.maximum(jnp.sum(mx) + jnp.sum(my), 1))
      x, y = x - shift, y - shift
    prepared_xs.append(jnp.where(mx[:, None], x, 0.0))
    prepared_ys.append(jnp.where(my[:, None], y, 0.0))
  return prepared_xs, wx, mx, prepared_ys, wy, my, masked, weighted


def _check_widths(bandwidths: Bandwidths, name: str) -> jax.Array:
  bandwidths = _checks.as_float(bandwidths)
  if bandwidths.ndim == 0:
    bandwidths = bandwidths[None]
  if bandwidths.ndim != 1 or bandwidths.shape[0] == 0:
    raise ValueError(
        f"{name} must be a float or a non-empty 1-D sequence of kernel widths, got shape "
        f"{tuple(bandwidths.shape)}.")
  return bandwidths


def _check_options(estimator, block_size, bandwidth_heuristic, kernel_reduction) -> None:
  if estimator not in _ESTIMATORS:
    raise ValueError(f"estimator must be one of {sorted(_ESTIMATORS)}, got {estimator!r}.")
  if block_size is not None and (not isinstance(block_size, int) or block_size <= 0):
    raise ValueError(f"block_size must be a positive int or None, got {block_size!r}.")
  if bandwidth_heuristic not in BANDWIDTH_HEURISTICS:
    raise ValueError(
        f"bandwidth_heuristic must be one of {BANDWIDTH_HEURISTICS}, got "
        f"{bandwidth_heuristic!r}.")
  if kernel_reduction not in KERNEL_REDUCTIONS:
    raise ValueError(
        f"kernel_reduction must be one of {KERNEL_REDUCTIONS}, got {kernel_reduction!r}.")


def _mmd_layers(source_list, target_list, *, bandwidths, bandwidth_heuristic,
                bandwidth_multipliers, kernel_reduction, kernel, estimator, block_size,
                source_weights, target_weights, source_where, target_where, source_name,
                target_name, layered: bool) -> jax.Array:
  _check_options(estimator, block_size, bandwidth_heuristic, kernel_reduction)
  xs, wx, mx, ys, wy, my, masked, weighted = _prepare_layers(
      source_list, target_list, source_where, target_where, source_weights, target_weights,
      source_name, target_name, layered=layered, centre=kernel is None)
  if estimator == "linear" and xs[0].shape[0] != ys[0].shape[0]:
    raise ValueError(
        f"the linear estimator needs n == m, got {source_name} with {xs[0].shape[0]} and "
        f"{target_name} with {ys[0].shape[0]} examples.")
  if len(bandwidths) != len(xs):
    raise ValueError(
        f"bandwidths must hold one entry per layer ({len(xs)}), got {len(bandwidths)}.")
  kernels = []
  if kernel is not None:
    kernels = [_custom_layer(kernel)]
  else:
    multipliers = _check_widths(bandwidth_multipliers, "bandwidth_multipliers")
    base_widths = None
    for layer, layer_bandwidths in enumerate(bandwidths):
      if layer_bandwidths is None:
        if base_widths is None:
          if bandwidth_heuristic == "median":
            base_widths = _median_widths(xs, mx, ys, my, masked=masked,
                                         max_points=MEDIAN_MAX_POINTS)
          else:
            base_widths = _mean_widths(xs, mx, ys, my)
        widths = base_widths[layer] * multipliers.astype(base_widths[layer].dtype)
      else:
        name = f"bandwidths[{layer}]" if layered else "bandwidths"
        widths = _check_widths(layer_bandwidths, name)
      scales = (0.5 / jnp.square(widths)).astype(xs[layer].dtype)
      kernels.append(_gaussian_layer(scales, kernel_reduction))
  return _ESTIMATORS[estimator](xs, wx, mx, ys, wy, my, kernels, block_size=block_size,
                                masked=masked, weighted=weighted)


def median_bandwidth(
    source: jax.Array,
    target: jax.Array,
    *,
    source_where: jax.Array | None = None,
    target_where: jax.Array | None = None,
) -> jax.Array:
  r"""Median heuristic: the median pairwise distance of the pooled sample.

  Returns sqrt(median |a - b|^2) over all pairs of distinct valid points of the
  pooled sample (source and target together), numpy's median (the mean of the
  two middle values for an even number of pairs), i.e. the median distance.
  Beyond `MEDIAN_MAX_POINTS` (1024) pooled points, 1024 points evenly spaced
  over the pooled valid points (point floor(i N / 1024) of N, so both samples
  in proportion) are used, so the cost does not grow with the batch. No
  gradient flows through the result (it is a hyperparameter estimate).

  Args:
    source: [n, d] first sample.
    target: [m, d] second sample.
    source_where: optional boolean [n] mask of the valid rows of `source`.
    target_where: optional boolean [m] mask of the valid rows of `target`.

  Returns:
    A scalar, float32 for float32/bf16 inputs (1.0 if all points coincide or
    fewer than two are valid).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from xdomain import losses
    >>> x = jnp.array([[0.0], [1.0]]); y = jnp.array([[3.0]])
    >>> print(float(jax.jit(losses.median_bandwidth)(x, y)))  # distances 1, 2, 3
    2.0

  References:
    Gretton et al., "A Kernel Two-Sample Test", JMLR 2012.
  """
  xs, _, mx, ys, _, my, masked, _ = _prepare_layers(
      [source], [target], source_where, target_where, None, None, "source", "target",
      layered=False)
  return _median_widths(xs, mx, ys, my, masked=masked, max_points=MEDIAN_MAX_POINTS)[0]


def mean_bandwidth(
    source: jax.Array,
    target: jax.Array,
    *,
    source_where: jax.Array | None = None,
    target_where: jax.Array | None = None,
) -> jax.Array:
  r"""DAN's heuristic: the width s0 with 2 s0^2 = the mean squared pairwise distance.

  .. math::
    2 s_0^2 = \frac{1}{N (N - 1)} \sum_{i \neq j} \lVert z_i - z_j \rVert^2

  over the N valid points z of the pooled sample (source and target together),
  so the Gaussian of width s0 is exp(-|a - b|^2 / mean), the middle kernel of
  DAN's and JAN's code. Exact and O(N d) (no pairwise matrix). No gradient
  flows through the result.

  Args:
    source: [n, d] first sample.
    target: [m, d] second sample.
    source_where: optional boolean [n] mask of the valid rows of `source`.
    target_where: optional boolean [m] mask of the valid rows of `target`.

  Returns:
    A scalar, float32 for float32/bf16 inputs (1.0 if all points coincide or
    fewer than two are valid).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from xdomain import losses
    >>> x = jnp.array([[0.0], [1.0]]); y = jnp.array([[3.0]])
    >>> print(f"{float(jax.jit(losses.mean_bandwidth)(x, y)) ** 2:.4f}")  # (1 + 4 + 9) / 3 / 2
    2.3333

  References:
    Long et al., "Learning Transferable Features with Deep Adaptation
    Networks", ICML 2015 (and its released code).
  """
  xs, _, mx, ys, _, my, _, _ = _prepare_layers(
      [source], [target], source_where, target_where, None, None, "source", "target",
      layered=False)
  return _mean_widths(xs, mx, ys, my)[0]


def mmd(
    source: jax.Array,
    target: jax.Array,
    *,
    bandwidths: Bandwidths = None,
    bandwidth_heuristic: str = "mean",
    bandwidth_multipliers: Sequence[float] = DEFAULT_BANDWIDTH_MULTIPLIERS,
    kernel_reduction: str = "sum",
    kernel: Kernel | None = None,
    estimator: str = "unbiased",
    block_size: int | None = DEFAULT_BLOCK_SIZE,
    source_weights: jax.Array | None = None,
    target_weights: jax.Array | None = None,
    source_where: jax.Array | None = None,
    target_where: jax.Array | None = None,
) -> jax.Array:
  r"""Squared maximum mean discrepancy with DAN's multi-kernel Gaussian.

  By default the kernel is the sum of five Gaussians,

  .. math::
    k(a, b) = \sum_{u=1}^{5} \exp\left(-\frac{|a - b|^2}{2 s_u^2}\right), \qquad
    2 s_u^2 = 2^{u - 3} \gamma, \qquad
    \gamma = \frac{1}{N(N-1)} \sum_{i \neq j} |z_i - z_j|^2,

  over the N pooled points z of both samples, exactly the multi-kernel MMD of
  DAN's and JAN's code (`kernel_mul=2, kernel_num=5`; TLlib's `GaussianKernel(
  alpha=2 ** k) for k in range(-3, 2)` is the same family with gamma averaged over
  all N^2 pairs, zeros included, i.e. (N-1)/N times this gamma). Other
  conventions are options: `bandwidth_heuristic="median"` takes the base width
  s0 = median pairwise distance (Gretton et al.'s median heuristic) instead of
  s0 = sqrt(gamma / 2); `bandwidth_multipliers` sets the widths s_u = s0 * mult_u
  (default (1/2, 1/sqrt(2), 1, sqrt(2), 2), i.e. variances 2^-2..2^2 times 2 s0^2);
  `kernel_reduction="mean"` averages the kernels instead of summing them (a
  value |S| times smaller); `bandwidths` gives the widths s_u outright; and
  `kernel` replaces the Gaussian family by any kernel.

  The estimators of MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y) are

  - ``"biased"`` (V-statistic):
    :math:`\frac{1}{n^2}\sum_{i,j} k(x_i, x_j) + \frac{1}{m^2}\sum_{i,j} k(y_i, y_j)
    - \frac{2}{nm}\sum_{i,j} k(x_i, y_j)`, always >= 0 (up to rounding), 0 for x == y;
  - ``"unbiased"`` (U-statistic): the same with the diagonals i = j left out of the
    within-sample sums, divided by n(n-1) and m(m-1); can be negative;
  - ``"linear"`` (Gretton et al. 2012, Lemma 14): needs n == m;
    :math:`\frac{1}{P}\sum_{i<P} h_i`, with P = floor(n/2),
    :math:`h_i = k(x_{2i}, x_{2i+1}) + k(y_{2i}, y_{2i+1}) - k(x_{2i}, y_{2i+1})
    - k(x_{2i+1}, y_{2i})`. O(n) time and memory: no n x n matrix is formed.

  With per-row weights w (importance-weighted alignment), every average becomes
  a w-weighted one: :math:`\sum_{i,j} w_i w_j k(x_i, x_j) / \sum_{i,j} w_i w_j`
  (over i != j for "unbiased"; over the pairs, a pair weighing the product of
  its rows' weights, for "linear"); weights are relative (scaling them all
  changes nothing) and must be >= 0; they do not change the bandwidth heuristic.

  The quadratic estimators sum [n, m] kernel matrices `block_size` rows at a
  time (1024 by default; the backward pass recomputes each block), so memory is
  O(block_size * max(n, m)) and batches of tens of thousands fit; with
  `block_size=None`, or n <= block_size, the matrices are formed whole. The
  result is the same up to rounding. The mean heuristic is exact in O(N d); the
  median heuristic looks at no more than 1024 pooled points, evenly spaced
  over both samples. No gradient flows through either.

  Computation is in float32 (or wider) whatever the input dtype. To jit, close
  over the Python-valued keywords (`functools.partial(mmd, estimator="linear")`)
  or mark them static; `bandwidths`, the weights and the masks may be traced.

  Args:
    source: [n, d] first sample (e.g. source features).
    target: [m, d] second sample (e.g. target features).
    bandwidths: None for the heuristic, or a float or 1-D sequence of kernel
      widths s (may be a traced array).
    bandwidth_heuristic: "mean" (DAN's code, the default) or "median".
    bandwidth_multipliers: the widths of the family relative to the heuristic's
      base width (used when `bandwidths` is None).
    kernel_reduction: "sum" (DAN's code, the default) or "mean" of the kernels.
    kernel: optional callable `(a [p, d], b [q, d]) -> [p, q]` Gram matrix used
      instead of the Gaussian family (then leave `bandwidths` None). It sees the
      rows as given (masked rows as zeros, which get weight 0).
    estimator: "biased", "unbiased" or "linear".
    block_size: rows per block of the quadratic estimators (default 1024), or
      None for whole kernel matrices. Ignored by "linear", which is O(n) already.
    source_weights: optional non-negative [n] per-row weights of `source`.
    target_weights: optional non-negative [m] per-row weights of `target`.
    source_where: optional boolean [n] mask; masked rows are left out exactly
      as if removed (the linear estimator pairs the valid rows in order and
      uses floor(min(n_valid, m_valid) / 2) pairs).
    target_where: optional boolean [m] mask of the valid rows of `target`.

  Returns:
    The scalar MMD^2 estimate (float32 for f32/bf16 inputs); 0, with zero
    gradients, when a sample has fewer valid rows than the estimator needs
    (1 for "biased", 2 for "unbiased", one pair for "linear").

  Raises:
    ValueError: for shapes other than [n, d] and [m, d], mismatched d, an
      unknown estimator, heuristic or reduction, n != m with "linear", both
      `kernel` and `bandwidths`, or badly shaped masks/weights/bandwidths.

  Example:
    >>> import functools, jax, jax.numpy as jnp
    >>> from xdomain import losses
    >>> kx, ky = jax.random.split(jax.random.key(0))
    >>> x = jax.random.normal(kx, (64, 8)); y = jax.random.normal(ky, (64, 8)) + 1.0
    >>> mmd = jax.jit(losses.mmd)
    >>> bool(mmd(x, y) > mmd(x, x + 0.01))
    True
    >>> biased = jax.jit(functools.partial(losses.mmd, estimator="biased"))
    >>> bool(jnp.abs(biased(x, x)) < 1e-6)
    True
    >>> linear_kernel = lambda a, b: a @ b.T  # MMD^2 = |mean(x) - mean(y)|^2 (biased)
    >>> value = losses.mmd(x, y, kernel=linear_kernel, estimator="biased")
    >>> bool(jnp.allclose(value, jnp.sum((x.mean(0) - y.mean(0)) ** 2), rtol=1e-4))
    True

  References:
    Gretton et al., "A Kernel Two-Sample Test", JMLR 2012.
    Long et al., "Learning Transferable Features with Deep Adaptation
    Networks", ICML 2015.
  """
  if kernel is not None and bandwidths is not None:
    raise ValueError("give kernel or bandwidths, not both: bandwidths set the Gaussian kernels.")
  return _mmd_layers([source], [target], bandwidths=[bandwidths],
                     bandwidth_heuristic=bandwidth_heuristic,
                     bandwidth_multipliers=bandwidth_multipliers,
                     kernel_reduction=kernel_reduction, kernel=kernel, estimator=estimator,
                     block_size=block_size, source_weights=source_weights,
                     target_weights=target_weights, source_where=source_where,
                     target_where=target_where, source_name="source", target_name="target",
                     layered=False)


def jmmd(
    source_layers: Sequence[jax.Array],
    target_layers: Sequence[jax.Array],
    *,
    bandwidths: Sequence[Bandwidths] | None = None,
    bandwidth_heuristic: str = "mean",
    bandwidth_multipliers: Sequence[float] = DEFAULT_BANDWIDTH_MULTIPLIERS,
    kernel_reduction: str = "sum",
    estimator: str = "unbiased",
    block_size: int | None = DEFAULT_BLOCK_SIZE,
    source_weights: jax.Array | None = None,
    target_weights: jax.Array | None = None,
    source_where: jax.Array | None = None,
    target_where: jax.Array | None = None,
) -> jax.Array:
  r"""Joint MMD^2 over several layers (JAN): MMD with the product kernel.

  Each example is the tuple of its activations in L layers (e.g. bottleneck
  features and softmax predictions); the joint kernel is the product of one
  multi-kernel Gaussian per layer,

  .. math::
    k(z, z') = \prod_{l=1}^{L} \sum_{s \in S_l}
      \exp\left(-\frac{|z^l - z'^l|^2}{2 s^2}\right),

  and the estimators, weights and masks are those of :func:`mmd`, whose
  bandwidth options apply to every layer. With one layer, jmmd == mmd.

  JAN's code uses DAN's family for the features and a single Gaussian with
  2 s^2 = 1.68 (`fix_sigma=1.68`) for the softmax layer:
  `bandwidths=[None, 0.84 ** 0.5]` (TLlib uses s = 0.92).

  Args:
    source_layers: L arrays [n, d_l], the first sample's activations per layer.
    target_layers: L arrays [m, d_l], the second sample's activations per layer.
    bandwidths: None (the heuristic in every layer), or L entries, each None
      (that layer's heuristic base width times `bandwidth_multipliers`) or a
      float / 1-D sequence of widths s.
    bandwidth_heuristic: "mean" (DAN's and JAN's code) or "median" (see :func:`mmd`).
    bandwidth_multipliers: widths relative to the heuristic's base width.
    kernel_reduction: "sum" (JAN's code) or "mean" of each layer's kernels.
    estimator: "biased", "unbiased" or "linear" (see :func:`mmd`).
    block_size: rows per block for the quadratic estimators (see :func:`mmd`).
    source_weights: optional non-negative [n] per-row weights of the first sample.
    target_weights: optional non-negative [m] per-row weights of the second sample.
    source_where: optional boolean [n] mask shared by all layers of the first sample.
    target_where: optional boolean [m] mask for the second sample.

  Returns:
    The scalar joint MMD^2 estimate (float32 for f32/bf16 inputs); 0, with
    zero gradients, when a sample has too few valid rows (see :func:`mmd`).

  Raises:
    ValueError: for different numbers of layers, inconsistent example counts,
      mismatched feature dimensions or a `bandwidths` of the wrong length.

  Example:
    >>> import functools, jax, jax.numpy as jnp
    >>> from xdomain import losses
    >>> k = jax.random.split(jax.random.key(0), 4)
    >>> fs, ft = jax.random.normal(k[0], (32, 16)), jax.random.normal(k[1], (32, 16))
    >>> ps = jax.nn.softmax(jax.random.normal(k[2], (32, 4)))
    >>> pt = jax.nn.softmax(jax.random.normal(k[3], (32, 4)))
    >>> jan = jax.jit(functools.partial(losses.jmmd, bandwidths=[None, 0.84 ** 0.5]))
    >>> jan([fs, ps], [ft, pt]).shape
    ()

  References:
    Long et al., "Deep Transfer Learning with Joint Adaptation Networks",
    ICML 2017.
  """
  if bandwidths is None:
    bandwidths = [None] * len(source_layers)
  return _mmd_layers(source_layers, target_layers, bandwidths=list(bandwidths),
                     bandwidth_heuristic=bandwidth_heuristic,
                     bandwidth_multipliers=bandwidth_multipliers,
                     kernel_reduction=kernel_reduction, kernel=None, estimator=estimator,
                     block_size=block_size, source_weights=source_weights,
                     target_weights=target_weights, source_where=source_where,
                     target_where=target_where, source_name="source_layers",
                     target_name="target_layers", layered=True)


def _covariance(x: jax.Array, keep: jax.Array, weights: jax.Array | None):
  """Unbiased covariance [d, d] of the kept rows of x [n, d], and whether it is defined.

  Without weights: (X - mean)^T (X - mean) / (n - 1). With weights (reliability
  weights, numpy's `np.cov(x, aweights=w, ddof=1)`):
  sum_i w_i (x_i - m)(x_i - m)^T / (W - sum_i w_i^2 / W), W = sum_i w_i, m the
  weighted mean. Centred first, for stability.
  """
  if weights is None:
    count = jnp.sum(keep)
    mean = jnp.sum(jnp.where(keep[:, None], x, 0.0), axis=0) / jnp.maximum(count, 1)
    centred = jnp.where(keep[:, None], x - mean, 0.0)
    norm = count - 1.0
    ok = norm > 0
    return jnp.matmul(centred.T, centred, precision=_HIGHEST) / _nonzero(norm, ok), ok
  w = jnp.where(keep, weights, 0.0)
  total = jnp.sum(w)
  has_weight = total > 0
  mean = jnp.sum(w[:, None] * x, axis=0) / _nonzero(total, has_weight)
  centred = jnp.where(keep[:, None], x - mean, 0.0)
  norm = total - jnp.sum(w * w) / _nonzero(total, has_weight)
  ok = has_weight & (norm > 0)
  return jnp.matmul((w[:, None] * centred).T, centred, precision=_HIGHEST) / _nonzero(norm, ok), ok


def coral(
    source: jax.Array,
    target: jax.Array,
    *,
    source_weights: jax.Array | None = None,
    target_weights: jax.Array | None = None,
    source_where: jax.Array | None = None,
    target_where: jax.Array | None = None,
) -> jax.Array:
  r"""Deep CORAL: squared Frobenius distance of source and target covariances.

  .. math::
    \ell = \frac{1}{4 d^2} \lVert C_s - C_t \rVert_F^2, \qquad
    C = \frac{1}{n - 1} (X - \bar X)^\top (X - \bar X)

  with unbiased (n - 1) covariances of the valid rows. With per-row weights
  (importance-weighted alignment), the covariances are the weighted ones with
  reliability weights, :math:`C = \sum_i w_i (x_i - \bar x_w)(x_i - \bar x_w)^\top
  / (W - \sum_i w_i^2 / W)`, W = sum_i w_i (numpy's `np.cov(x, aweights=w,
  ddof=1)`); scaling all weights changes nothing.

  Args:
    source: [n, d] source features.
    target: [m, d] target features.
    source_weights: optional non-negative [n] per-row weights of `source`.
    target_weights: optional non-negative [m] per-row weights of `target`.
    source_where: optional boolean [n] mask of the valid rows of `source`.
    target_where: optional boolean [m] mask of the valid rows of `target`.

  Returns:
    The scalar loss (float32 for f32/bf16 inputs); 0, with zero gradients, if
    a domain has fewer than two valid rows (no covariance to match).

  Raises:
    ValueError: for shapes other than [n, d] and [m, d], mismatched d, or badly
      shaped masks or weights.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from xdomain import losses
    >>> coral = jax.jit(losses.coral)
    >>> xs = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # C_s = 2/3 I
    >>> print(f"{float(coral(xs, 2.0 * xs)):.4f}")  # C_t = 8/3 I: 4 * 2^2 / 16
    0.5000
    >>> bool(coral(xs, xs + 3.0) < 1e-9)  # translation does not matter
    True

  References:
    Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain
    Adaptation", ECCV 2016 workshops.
  """
  xs, xt = _checks.as_float(source), _checks.as_float(target)
  _checks.check_ndim(xs, 2, "source", "[n, d]")
  _checks.check_ndim(xt, 2, "target", "[m, d]")
  if xs.shape[1] != xt.shape[1]:
    raise ValueError(
        f"source and target must have the same feature dimension, got shapes "
        f"{tuple(xs.shape)} and {tuple(xt.shape)}.")
  keep_s = _checks.mask(source_where, (xs.shape[0],), "source_where")
  keep_t = _checks.mask(target_where, (xt.shape[0],), "target_where")
  ws = (None if source_weights is None and target_weights is None else
        _checks.per_example_weights(source_weights, (xs.shape[0],), "source_weights"))
  wt = (None if ws is None else
        _checks.per_example_weights(target_weights, (xt.shape[0],), "target_weights"))
  xs = jnp.where(keep_s[:, None], xs, 0.0)
  xt = jnp.where(keep_t[:, None], xt, 0.0)
  d = xs.shape[1]
  cov_s, ok_s = _covariance(xs, keep_s, ws)
  cov_t, ok_t = _covariance(xt, keep_t, wt)
  ok = ok_s & ok_t
  return jnp.where(ok, jnp.sum(jnp.square(cov_s - cov_t)) / (4.0 * d * d), 0.0)
