"""Feature-norm objectives: adaptive feature norm (AFN), stepwise and hard."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xdomain.losses import _checks


def _safe_norm(x: jax.Array) -> jax.Array:
  """L2 norm over the last axis with a finite gradient (0) at x = 0."""
  squared = jnp.sum(jnp.square(x), axis=-1)
  positive = squared > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def adaptive_feature_norm(
    features: jax.Array,
    *,
    delta: float = 1.0,
    previous_norms: jax.Array | None = None,
    radius: float | None = None,
    where: jax.Array | None = None,
) -> jax.Array:
  r"""Adaptive feature norm, per example: pull each feature norm up by delta (SAFN) or to R (HAFN).

  Stepwise AFN (the default):

  .. math::
    \ell_i = \left(\operatorname{sg}(\|h_i^{prev}\|_2) + \Delta r - \|h_i\|_2\right)^2

  where :math:`\|h_i^{prev}\|_2` is the norm under the previous parameters.
  Without `previous_norms` it is the current norm behind `stop_gradient`,
  which is exactly SAFN's per-step objective (its value is always
  :math:`\Delta r^2`, its gradient :math:`-2 \Delta r \, \nabla\|h_i\|_2`: every
  step enlarges the norms a little). Hard AFN (`radius=R`):
  :math:`\ell_i = (R - \|h_i\|_2)^2`. The paper applies it to the features of
  both domains.

  Args:
    features: [..., d] features (e.g. [n, d]).
    delta: :math:`\Delta r`, the norm increase per step (1.0 in the paper).
    previous_norms: optional [...] norms of the same examples under the
      previous parameters (detached); defaults to the current norms, detached.
    radius: if set, the hard variant with this target norm R (25 in the
      paper) instead of the stepwise one.
    where: optional boolean mask of shape features.shape[:-1]; masked entries
      give 0 with zero gradients, whatever they hold.

  Returns:
    [...] per-example losses (float32 for f32/bf16 inputs).

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> h = jnp.array([[3.0, 4.0]])
    >>> float(losses.adaptive_feature_norm(h)[0]), float(losses.adaptive_feature_norm(h, radius=25.0)[0])
    (1.0, 400.0)

  References:
    Xu et al., "Larger Norm More Transferable: An Adaptive Feature Norm
    Approach for Unsupervised Domain Adaptation", ICCV 2019.
  """
  features = _checks.as_float(features)
  _checks.check_min_ndim(features, 1, "features", "[..., d]")
  if radius is not None and previous_norms is not None:
    raise ValueError("radius (hard AFN) and previous_norms (stepwise AFN) exclude each other.")
  if radius is not None and not radius > 0:
    raise ValueError(f"radius must be positive, got {radius!r}.")
  keep = _checks.mask(where, features.shape[:-1], "where")
  if where is not None:
    features = jnp.where(keep[..., None], features, 0.0)
  norms = _safe_norm(features)
  if radius is not None:
    goal = jnp.float32(radius)
  else:
    if previous_norms is None:
      previous = norms
    else:
      previous = _checks.as_float(previous_norms)
      if previous.shape != norms.shape:
        raise ValueError(
            f"previous_norms must have shape {tuple(norms.shape)} (features.shape[:-1]), got"
            f" shape {tuple(previous.shape)}.")
      previous = jnp.where(keep, previous, 0.0)
    goal = jax.lax.stop_gradient(previous) + delta
  return jnp.where(keep, jnp.square(goal - norms), 0.0)
