"""Spectral penalties of feature matrices: batch spectral penalisation (BSP)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xdomain.losses import _checks


def _top_squared_singular_values(features: jax.Array, keep: jax.Array, k: int) -> jax.Array:
  """sum_{i<=k} sigma_i^2 of the kept rows of features [n, d] (masked rows zeroed)."""
  features = jnp.where(keep[:, None], features, 0.0)
  # Zero rows leave the singular values of the other rows unchanged. The
  # gradient of singular values alone (no vectors) has no 1/(s_i - s_j) terms,
  # so it is finite even for repeated or zero singular values.
  singular_values = jnp.linalg.svd(features, compute_uv=False)
  return jnp.sum(jnp.square(singular_values[:k]))


def batch_spectral_penalty(
    source_features: jax.Array,
    target_features: jax.Array,
    *,
    k: int = 1,
    source_where: jax.Array | None = None,
    target_where: jax.Array | None = None,
) -> jax.Array:
  r"""Batch spectral penalisation: the top-k squared singular values of both feature matrices.

  With :math:`\sigma_{s,i}` and :math:`\sigma_{t,i}` the singular values (in
  decreasing order) of the source and target feature matrices [n, d] of a batch,

  .. math::
    \mathcal{L}_{bsp} = \sum_{i=1}^{k} \left(\sigma_{s,i}^2 + \sigma_{t,i}^2\right)

  Adversarial alignment makes a few eigenfeatures dominate (they transfer
  well but discriminate poorly); penalising the largest singular values lets
  the other directions take part. Added to DANN or CDAN with a small weight
  (1e-4 in the paper).

  Args:
    source_features: [n_s, d] source features of a batch.
    target_features: [n_t, d] target features of a batch (same d).
    k: number of top singular values penalised per domain (1 in the paper).
    source_where: optional boolean mask [n_s] of valid source rows.
    target_where: optional boolean mask [n_t] of valid target rows.

  Returns:
    The scalar penalty (float32 for f32/bf16 inputs); masked rows are left out
    exactly as if removed (they reach neither value nor gradients); 0, with
    zero gradients, for a domain with no valid row.

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> fs = jnp.array([[3.0, 0.0], [0.0, 1.0]]); ft = jnp.array([[0.0, 2.0]])
    >>> float(losses.batch_spectral_penalty(fs, ft))  # 3^2 + 2^2
    13.0

  References:
    Chen et al., "Transferability vs. Discriminability: Batch Spectral
    Penalization for Adversarial Domain Adaptation", ICML 2019.
  """
  source_features = _checks.as_float(source_features)
  target_features = _checks.as_float(target_features)
  _checks.check_ndim(source_features, 2, "source_features", "[n_s, d]")
  _checks.check_ndim(target_features, 2, "target_features", "[n_t, d]")
  if source_features.shape[1] != target_features.shape[1]:
    raise ValueError(
        f"source_features [n_s, d] and target_features [n_t, d] must have the same d, got"
        f" shapes {tuple(source_features.shape)} and {tuple(target_features.shape)}.")
  if not (isinstance(k, int) and k >= 1):
    raise ValueError(f"k must be a positive integer, got {k!r}.")
  keep_s = _checks.mask(source_where, source_features.shape[:1], "source_where")
  keep_t = _checks.mask(target_where, target_features.shape[:1], "target_where")
  return (_top_squared_singular_values(source_features, keep_s, k)
          + _top_squared_singular_values(target_features, keep_t, k))
