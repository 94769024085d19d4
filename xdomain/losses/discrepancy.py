"""Statistics-matching discrepancies: MMD (DAN), joint MMD (JAN) and Deep CORAL.

These are batch-level quantities: each returns one scalar for two samples. Every
function takes optional boolean masks (`x_where`, `y_where`) so that padded rows
(e.g. padding tokens of a sequence tagger) are excluded with static shapes; a
masked loss equals the loss on the masked subset.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xdomain.losses import _checks

# Multipliers applied to the median-heuristic bandwidth when `bandwidths=None`:
# five Gaussian kernels whose variances 2 s^2 are spread by factors 2^-2 .. 2^2
# around the median, the multi-kernel family of DAN (Long et al. 2015).
DEFAULT_BANDWIDTH_MULTIPLIERS = (0.5, 2.0**-0.5, 1.0, 2.0**0.5, 2.0)

# Rows of kernel matrix computed at a time by the quadratic estimators by
# default: dense up to this many rows, blocked beyond (on a 2-core CPU blocks
# of 256-1024 rows were also faster than one dense matrix; see benchmarks/).
DEFAULT_BLOCK_SIZE = 1024

# The median heuristic looks at the pairwise distances of at most this many
# pooled points, so it costs O(1) memory in the batch size.
MEDIAN_MAX_POINTS = 1024

_HIGHEST = jax.lax.Precision.HIGHEST

Bandwidths = Any  # None, a float, or a 1-D sequence/array of kernel widths s.


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
  """Pairwise squared Euclidean distances [p, q] between rows of a [p, d] and b [q, d]."""
  aa = jnp.sum(a * a, axis=-1)
  bb = jnp.sum(b * b, axis=-1)
  ab = jnp.matmul(a, b.T, precision=_HIGHEST)
  # Rounding can make the expansion slightly negative; distances are >= 0.
  return jnp.maximum(aa[:, None] + bb[None, :] - 2.0 * ab, 0.0)


@jax.checkpoint
def _multi_gaussian(d2: jax.Array, scales: jax.Array) -> jax.Array:
  """mean_s exp(-d2 * scales[s]) for squared distances d2 of any shape.

  A sum over the (static) number of kernels, not a broadcast over a kernel
  axis, so XLA fuses it into one pass without a [..., K] intermediate; the
  checkpoint makes the backward pass recompute the exponentials from d2
  instead of keeping K of them.
  """
  total = jnp.exp(-d2 * scales[0])
  for s in range(1, scales.shape[0]):
    total = total + jnp.exp(-d2 * scales[s])
  return total / scales.shape[0]


def _gram(a_layers, b_layers, scales) -> jax.Array:
  """Product over layers of the multi-kernel Gaussian Gram matrices, [p, q]."""
  gram = None
  for a, b, c in zip(a_layers, b_layers, scales):
    layer = _multi_gaussian(_sq_dists(a, b), c)
    gram = layer if gram is None else gram * layer
  return gram


def _paired_kernel(a_layers, b_layers, scales) -> jax.Array:
  """Kernel values k(a_i, b_i) of row-aligned pairs, [p]; O(p) memory."""
  values = None
  for a, b, c in zip(a_layers, b_layers, scales):
    layer = _multi_gaussian(jnp.sum(jnp.square(a - b), axis=-1), c)
    values = layer if values is None else values * layer
  return values


def _kernel_sum(a_layers, wa, b_layers, wb, scales, *, exclude_diagonal: bool,
                block_size: int | None) -> jax.Array:
  """sum_{i,j} wa_i wb_j k(a_i, b_j), over i != j when `exclude_diagonal`.

  With `block_size`, rows of `a` are processed `block_size` at a time in a
  sequential loop whose body is rematerialised in the backward pass, so neither
  the forward nor the backward pass holds more than a [block_size, q] kernel.
  """
  p, q = a_layers[0].shape[0], b_layers[0].shape[0]
  if block_size is None or block_size >= p:
    gram = _gram(a_layers, b_layers, scales)
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
    gram = _gram(a_block, b_layers, scales)
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


def _quadratic(xs, mx, ys, my, scales, *, unbiased: bool, block_size: int | None,
               masked: bool) -> jax.Array:
  """The biased (V) or unbiased (U) quadratic-time MMD^2 estimate."""
  del masked  # Masked rows simply get weight 0.
  wx, wy = mx.astype(xs[0].dtype), my.astype(ys[0].dtype)
  nx, ny = jnp.sum(wx), jnp.sum(wy)
  kernel_sum = functools.partial(_kernel_sum, scales=scales, block_size=block_size)
  kxx = kernel_sum(xs, wx, xs, wx, exclude_diagonal=unbiased)
  kyy = kernel_sum(ys, wy, ys, wy, exclude_diagonal=unbiased)
  kxy = kernel_sum(xs, wx, ys, wy, exclude_diagonal=False)
  if unbiased:
    return kxx / (nx * (nx - 1.0)) + kyy / (ny * (ny - 1.0)) - 2.0 * kxy / (nx * ny)
  return kxx / (nx * nx) + kyy / (ny * ny) - 2.0 * kxy / (nx * ny)


def _linear(xs, mx, ys, my, scales, *, block_size: int | None, masked: bool) -> jax.Array:
  """Gretton et al. (2012) linear-time MMD^2 over the pairs (2i, 2i+1); O(n) memory."""
  del block_size  # Already O(n).
  n = xs[0].shape[0]
  num_pairs = n // 2
  if masked:
    xs = [_compact(x, mx) for x in xs]
    ys = [_compact(y, my) for y in ys]
    valid_pairs = jnp.minimum(jnp.sum(mx), jnp.sum(my)) // 2
  else:
    valid_pairs = num_pairs
  x1 = [x[0:2 * num_pairs:2] for x in xs]
  x2 = [x[1:2 * num_pairs:2] for x in xs]
  y1 = [y[0:2 * num_pairs:2] for y in ys]
  y2 = [y[1:2 * num_pairs:2] for y in ys]
  h = (_paired_kernel(x1, x2, scales) + _paired_kernel(y1, y2, scales)
       - _paired_kernel(x1, y2, scales) - _paired_kernel(x2, y1, scales))
  h = jnp.where(jnp.arange(num_pairs) < valid_pairs, h, 0.0)
  return jnp.sum(h) / valid_pairs


_ESTIMATORS = {
    "biased": functools.partial(_quadratic, unbiased=False),
    "unbiased": functools.partial(_quadratic, unbiased=True),
    "linear": _linear,
}


def _median_bandwidths(xs, mx, ys, my, *, masked: bool, max_points: int) -> list[jax.Array]:
  """Median pairwise distance of the pooled valid points, per layer (no gradient)."""
  num_total = xs[0].shape[0] + ys[0].shape[0]
  keep = jnp.concatenate([mx, my])
  pooled = [jnp.concatenate([x, y]) for x, y in zip(xs, ys)]
  if masked:
    pooled = [_compact(z, keep) for z in pooled]
  count = jnp.sum(keep)
  k = min(num_total, max_points)
  # Every point when there are at most k, else k points at an even stride.
  stride = jnp.maximum(count // k, 1)
  index = jnp.arange(k) * stride
  valid = jnp.arange(k) < count
  rows, cols = np.triu_indices(k, 1)
  pair_valid = valid[rows] & valid[cols]
  c = jnp.minimum(count, k)
  num_pairs = c * (c - 1) // 2
  sigmas = []
  for z in pooled:
    d2 = _sq_dists(z[index], z[index])[rows, cols]
    d2 = jnp.sort(jnp.where(pair_valid, d2, jnp.inf))
    median = 0.5 * (d2[(num_pairs - 1) // 2] + d2[num_pairs // 2])
    # All points equal: any width gives the same (zero) discrepancy.
    sigma = jnp.where(median > 0, jnp.sqrt(median), 1.0)
    sigmas.append(jax.lax.stop_gradient(sigma))
  return sigmas


def _prepare_layers(xs_list, ys_list, x_where, y_where, x_name: str, y_name: str, *,
                    layered: bool):
  """Checks shapes, promotes to f32, zeroes masked rows and centres every layer."""
  if isinstance(xs_list, jax.Array | np.ndarray) or isinstance(ys_list, jax.Array | np.ndarray):
    raise ValueError(f"{x_name} and {y_name} must be sequences of arrays (one per layer).")
  xs = [_checks.as_float(x) for x in xs_list]
  ys = [_checks.as_float(y) for y in ys_list]
  if not xs or len(xs) != len(ys):
    raise ValueError(
        f"{x_name} and {y_name} must hold the same, non-zero number of layers, got "
        f"{len(xs)} and {len(ys)}.")
  for layer, (x, y) in enumerate(zip(xs, ys)):
    suffix = f"[{layer}]" if layered else ""
    _checks.check_ndim(x, 2, f"{x_name}{suffix}", "[n, d]")
    _checks.check_ndim(y, 2, f"{y_name}{suffix}", "[m, d]")
    if x.shape[0] != xs[0].shape[0] or y.shape[0] != ys[0].shape[0]:
      raise ValueError(
          f"every layer must have the same number of examples: {x_name}{suffix} has "
          f"shape {tuple(x.shape)} and {y_name}{suffix} has {tuple(y.shape)}, layer 0 "
          f"has {xs[0].shape[0]} and {ys[0].shape[0]}.")
    if x.shape[1] != y.shape[1]:
      raise ValueError(
          f"{x_name}{suffix} and {y_name}{suffix} must have the same feature dimension, "
          f"got shapes {tuple(x.shape)} and {tuple(y.shape)}.")
  masked = x_where is not None or y_where is not None
  mx = _checks.mask(x_where, (xs[0].shape[0],), "x_where")
  my = _checks.mask(y_where, (ys[0].shape[0],), "y_where")
  centred_xs, centred_ys = [], []
  for x, y in zip(xs, ys):
    # Distances are translation invariant; centring on the pooled mean keeps
    # |a|^2 + |b|^2 - 2ab from cancelling catastrophically for far-off data.
    total = jnp.sum(jnp.where(mx[:, None], x, 0.0), 0) + jnp.sum(jnp.where(my[:, None], y, 0.0), 0)
    shift = jax.lax.stop_gradient(total / (jnp.sum(mx) + jnp.sum(my)))
    centred_xs.append(jnp.where(mx[:, None], x - shift, 0.0))
    centred_ys.append(jnp.where(my[:, None], y - shift, 0.0))
  return centred_xs, mx, centred_ys, my, masked


def _check_bandwidths(bandwidths: Bandwidths, name: str) -> jax.Array:
  bandwidths = _checks.as_float(bandwidths)
  if bandwidths.ndim == 0:
    bandwidths = bandwidths[None]
  if bandwidths.ndim != 1 or bandwidths.shape[0] == 0:
    raise ValueError(
        f"{name} must be a float or a non-empty 1-D sequence of kernel widths, got shape "
        f"{tuple(bandwidths.shape)}.")
  return bandwidths


def _mmd_layers(xs_list, ys_list, *, bandwidths, estimator, block_size, x_where, y_where,
                x_name, y_name, layered: bool) -> jax.Array:
  if estimator not in _ESTIMATORS:
    raise ValueError(f"estimator must be one of {sorted(_ESTIMATORS)}, got {estimator!r}.")
  if block_size is not None and (not isinstance(block_size, int) or block_size <= 0):
    raise ValueError(f"block_size must be a positive int or None, got {block_size!r}.")
  xs, mx, ys, my, masked = _prepare_layers(xs_list, ys_list, x_where, y_where, x_name, y_name,
                                           layered=layered)
  if estimator == "linear" and xs[0].shape[0] != ys[0].shape[0]:
    raise ValueError(
        f"the linear estimator needs n == m, got {x_name} with {xs[0].shape[0]} and "
        f"{y_name} with {ys[0].shape[0]} examples.")
  if len(bandwidths) != len(xs):
    raise ValueError(
        f"bandwidths must hold one entry per layer ({len(xs)}), got {len(bandwidths)}.")
  medians = None
  scales = []
  for layer, layer_bandwidths in enumerate(bandwidths):
    if layer_bandwidths is None:
      if medians is None:
        medians = _median_bandwidths(xs, mx, ys, my, masked=masked, max_points=MEDIAN_MAX_POINTS)
      sigmas = medians[layer] * jnp.asarray(DEFAULT_BANDWIDTH_MULTIPLIERS, medians[layer].dtype)
    else:
      name = f"bandwidths[{layer}]" if layered else "bandwidths"
      sigmas = _check_bandwidths(layer_bandwidths, name)
    scales.append((0.5 / jnp.square(sigmas)).astype(xs[layer].dtype))
  return _ESTIMATORS[estimator](xs, mx, ys, my, scales, block_size=block_size, masked=masked)


def median_bandwidth(
    x: jax.Array,
    y: jax.Array,
    *,
    x_where: jax.Array | None = None,
    y_where: jax.Array | None = None,
) -> jax.Array:
  r"""Median heuristic: the median pairwise distance of the pooled sample.

  Returns sqrt(median |a - b|^2) over all pairs of distinct valid points of the
  pooled sample (x and y together), numpy's median (the mean of the two middle
  values for an even number of pairs), i.e. the median distance. Beyond
  `MEDIAN_MAX_POINTS` (1024) pooled points, a fixed subset of 1024 points at an
  even stride is used, so the cost does not grow with the batch. No gradient
  flows through the result (it is a hyperparameter estimate).

  Args:
    x: [n, d] first sample.
    y: [m, d] second sample.
    x_where: optional boolean [n] mask of the valid rows of `x`.
    y_where: optional boolean [m] mask of the valid rows of `y`.

  Returns:
    A scalar, float32 for float32/bf16 inputs (1.0 if all points coincide).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from xdomain import losses
    >>> x = jnp.array([[0.0], [1.0]]); y = jnp.array([[3.0]])
    >>> print(float(jax.jit(losses.median_bandwidth)(x, y)))  # distances 1, 2, 3
    2.0

  References:
    Gretton et al., "A Kernel Two-Sample Test", JMLR 2012.
  """
  xs, mx, ys, my, masked = _prepare_layers([x], [y], x_where, y_where, "x", "y", layered=False)
  return _median_bandwidths(xs, mx, ys, my, masked=masked, max_points=MEDIAN_MAX_POINTS)[0]


def mmd(
    x: jax.Array,
    y: jax.Array,
    *,
    bandwidths: Bandwidths = None,
    estimator: str = "unbiased",
    block_size: int | None = DEFAULT_BLOCK_SIZE,
    x_where: jax.Array | None = None,
    y_where: jax.Array | None = None,
) -> jax.Array:
  r"""Squared maximum mean discrepancy with a multi-kernel Gaussian (DAN).

  The kernel is the mean of Gaussians over the widths s in `bandwidths`:

  .. math::
    k(a, b) = \frac{1}{|S|} \sum_{s \in S} \exp\left(-\frac{|a - b|^2}{2 s^2}\right)

  and the estimators of MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y) are

  - ``"biased"`` (V-statistic):
    :math:`\frac{1}{n^2}\sum_{i,j} k(x_i, x_j) + \frac{1}{m^2}\sum_{i,j} k(y_i, y_j)
    - \frac{2}{nm}\sum_{i,j} k(x_i, y_j)`, always >= 0 (up to rounding), 0 for x == y;
  - ``"unbiased"`` (U-statistic): the same with the diagonals i = j left out of the
    within-sample sums, divided by n(n-1) and m(m-1); can be negative;
  - ``"linear"`` (Gretton et al. 2012, Lemma 14): needs n == m;
    :math:`\frac{1}{P}\sum_{i<P} h_i`, with P = floor(n/2),
    :math:`h_i = k(x_{2i}, x_{2i+1}) + k(y_{2i}, y_{2i+1}) - k(x_{2i}, y_{2i+1})
    - k(x_{2i+1}, y_{2i})`. O(n) time and memory: no n x n matrix is formed.

  The quadratic estimators sum [n, m] kernel matrices `block_size` rows at a
  time (1024 by default; the backward pass recomputes each block), so memory is
  O(block_size * max(n, m)) and batches of tens of thousands fit; with
  `block_size=None`, or n <= block_size, the matrices are formed whole. The
  result is the same up to rounding.

  With `bandwidths=None` the widths are the median heuristic
  (:func:`median_bandwidth` on the pooled sample) times
  `DEFAULT_BANDWIDTH_MULTIPLIERS` = (1/2, 1/sqrt(2), 1, sqrt(2), 2), i.e. five
  kernels whose variances 2s^2 span 2^-2 .. 2^2 times the median, as in DAN.
  The heuristic looks at no more than 1024 pooled points, a cost that does not
  grow with n, and no gradient flows through it.

  Computation is in float32 (or wider) whatever the input dtype. To jit, close
  over the Python-valued keywords (`functools.partial(mmd, estimator="linear")`)
  or mark them static; `bandwidths` and the masks may be traced.

  Args:
    x: [n, d] first sample (e.g. source features).
    y: [m, d] second sample (e.g. target features).
    bandwidths: None for the median heuristic, or a float or 1-D sequence of
      kernel widths s (may be a traced array).
    estimator: "biased", "unbiased" or "linear".
    block_size: rows per block of the quadratic estimators (default 1024), or
      None for whole kernel matrices. Ignored by "linear", which is O(n) already.
    x_where: optional boolean [n] mask; masked rows of x are left out exactly
      as if removed (the linear estimator pairs the valid rows in order and
      uses floor(min(n_valid, m_valid) / 2) pairs).
    y_where: optional boolean [m] mask of the valid rows of y.

  Returns:
    The scalar MMD^2 estimate (float32 for f32/bf16 inputs). It is NaN when a
    sample has fewer valid rows than the estimator needs (2 for "unbiased").

  Raises:
    ValueError: for shapes other than [n, d] and [m, d], mismatched d, an
      unknown estimator, n != m with "linear", or badly shaped masks/bandwidths.

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

  References:
    Gretton et al., "A Kernel Two-Sample Test", JMLR 2012.
    Long et al., "Learning Transferable Features with Deep Adaptation
    Networks", ICML 2015.
  """
  return _mmd_layers([x], [y], bandwidths=[bandwidths], estimator=estimator,
                     block_size=block_size, x_where=x_where, y_where=y_where,
                     x_name="x", y_name="y", layered=False)


def jmmd(
    xs_list: Sequence[jax.Array],
    ys_list: Sequence[jax.Array],
    *,
    bandwidths: Sequence[Bandwidths] | None = None,
    estimator: str = "unbiased",
    block_size: int | None = DEFAULT_BLOCK_SIZE,
    x_where: jax.Array | None = None,
    y_where: jax.Array | None = None,
) -> jax.Array:
  r"""Joint MMD^2 over several layers (JAN): MMD with the product kernel.

  Each example is the tuple of its activations in L layers (e.g. bottleneck
  features and softmax predictions); the joint kernel is the product of one
  multi-kernel Gaussian per layer,

  .. math::
    k(z, z') = \prod_{l=1}^{L} \frac{1}{|S_l|} \sum_{s \in S_l}
      \exp\left(-\frac{|z^l - z'^l|^2}{2 s^2}\right),

  and the estimators are those of :func:`mmd`. With one layer, jmmd == mmd.

  Args:
    xs_list: L arrays [n, d_l], the first sample's activations per layer.
    ys_list: L arrays [m, d_l], the second sample's activations per layer.
    bandwidths: None (median heuristic in every layer), or L entries, each None
      (median heuristic of that layer times `DEFAULT_BANDWIDTH_MULTIPLIERS`) or
      a float / 1-D sequence of widths. JAN's code uses the heuristic for the
      features and a single width 1.68 for the softmax layer:
      `bandwidths=[None, 1.68]`.
    estimator: "biased", "unbiased" or "linear" (see :func:`mmd`).
    block_size: rows per block for the quadratic estimators (see :func:`mmd`).
    x_where: optional boolean [n] mask shared by all layers of the first sample.
    y_where: optional boolean [m] mask for the second sample.

  Returns:
    The scalar joint MMD^2 estimate (float32 for f32/bf16 inputs).

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
    >>> jan = jax.jit(functools.partial(losses.jmmd, bandwidths=[None, 1.68]))
    >>> jan([fs, ps], [ft, pt]).shape
    ()

  References:
    Long et al., "Deep Transfer Learning with Joint Adaptation Networks",
    ICML 2017.
  """
  if bandwidths is None:
    bandwidths = [None] * len(xs_list)
  return _mmd_layers(xs_list, ys_list, bandwidths=list(bandwidths), estimator=estimator,
                     block_size=block_size, x_where=x_where, y_where=y_where,
                     x_name="xs_list", y_name="ys_list", layered=True)


def _covariance(x: jax.Array, keep: jax.Array) -> jax.Array:
  """Unbiased covariance [d, d] of the kept rows of x [n, d] (centred first, for stability)."""
  count = jnp.sum(keep)
  mean = jnp.sum(jnp.where(keep[:, None], x, 0.0), axis=0) / count
  centred = jnp.where(keep[:, None], x - mean, 0.0)
  return jnp.matmul(centred.T, centred, precision=_HIGHEST) / (count - 1.0)


def coral(
    xs: jax.Array,
    xt: jax.Array,
    *,
    x_where: jax.Array | None = None,
    y_where: jax.Array | None = None,
) -> jax.Array:
  r"""Deep CORAL: squared Frobenius distance of source and target covariances.

  .. math::
    \ell = \frac{1}{4 d^2} \lVert C_s - C_t \rVert_F^2, \qquad
    C = \frac{1}{n - 1} (X - \bar X)^\top (X - \bar X)

  with unbiased (n - 1) covariances of the valid rows.

  Args:
    xs: [n, d] source features.
    xt: [m, d] target features.
    x_where: optional boolean [n] mask of the valid rows of `xs`.
    y_where: optional boolean [m] mask of the valid rows of `xt`.

  Returns:
    The scalar loss (float32 for f32/bf16 inputs); NaN if a domain has fewer
    than two valid rows.

  Raises:
    ValueError: for shapes other than [n, d] and [m, d] or mismatched d.

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
  xs, xt = _checks.as_float(xs), _checks.as_float(xt)
  _checks.check_ndim(xs, 2, "xs", "[n, d]")
  _checks.check_ndim(xt, 2, "xt", "[m, d]")
  if xs.shape[1] != xt.shape[1]:
    raise ValueError(
        f"xs and xt must have the same feature dimension, got shapes {tuple(xs.shape)} and "
        f"{tuple(xt.shape)}.")
  keep_s = _checks.mask(x_where, (xs.shape[0],), "x_where")
  keep_t = _checks.mask(y_where, (xt.shape[0],), "y_where")
  xs = jnp.where(keep_s[:, None], xs, 0.0)
  xt = jnp.where(keep_t[:, None], xt, 0.0)
  d = xs.shape[1]
  diff = _covariance(xs, keep_s) - _covariance(xt, keep_t)
  return jnp.sum(jnp.square(diff)) / (4.0 * d * d)
