"""Label shift: how much more (or less) of each class the target holds than the source."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xdomain.losses import _checks


def class_importance_weights(
    confusion: jax.Array,
    target_predictions: jax.Array,
    *,
    ridge: float = 1e-3,
) -> jax.Array:
  r"""Class weights w_j ~ p_T(y=j) / p_S(y=j) from a classifier's confusion on the source.

  Under (generalized) label shift the classifier's predictions on the target
  are a mixture of its per-class behaviour on the source, so

  .. math::
    \mu = C w, \qquad C_{ij} = p_S(\hat y = i, y = j), \quad
    \mu_i = p_T(\hat y = i),

  and w is found by least squares (Lipton et al.'s black-box shift estimator;
  IWDAN solves the same system as a quadratic program). Here

  .. math::
    w = \arg\min_w \lVert C w - \mu \rVert^2 + \lambda \lVert w - 1 \rVert^2,
    \qquad \lambda = \mathrm{ridge} \cdot \mathrm{tr}(C^\top C),

  clipped at 0 and rescaled so that :math:`\sum_j p_S(y=j)\, w_j = 1` (the
  weighted source is a distribution). The ridge pulls towards 1 (no shift)
  where C is nearly singular, as for an untrained classifier whose
  predictions do not depend on the class. Equal to the quadratic program's
  solution when C is well conditioned and that solution is non-negative.

  Args:
    confusion: [K, K] joint distribution on the source, predicted class i
      (rows) and true class j (columns); sums to 1. Soft predictions (mean
      softmax per true class) or counts of argmax predictions both work.
    target_predictions: [K] mean prediction on the target; sums to 1.
    ridge: strength of the pull towards w = 1, relative to C's scale; it
      bounds the condition number of the solve by 1 + 1 / ridge.

  Returns:
    [K] float32 weights, >= 0, with sum_j p_S(y=j) w_j = 1 (all ones if no
    class has source mass).

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> confusion = jnp.array([[0.4, 0.1], [0.1, 0.4]])  # 80% right, balanced source
    >>> target = confusion @ jnp.array([1.5, 0.5])  # the target is 75% class 0
    >>> weights = losses.class_importance_weights(confusion, target, ridge=0.0)
    >>> [round(float(w), 3) for w in weights]
    [1.5, 0.5]

  References:
    Lipton et al., "Detecting and Correcting for Label Shift with Black Box
    Predictors", ICML 2018. Tachet des Combes et al., "Domain Adaptation with
    Conditional Distribution Matching and Generalized Label Shift", NeurIPS 2020.
  """
  confusion = _checks.as_float(confusion)
  target_predictions = _checks.as_float(target_predictions)
  if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
    raise ValueError(f"confusion must be [K, K], got shape {tuple(confusion.shape)}.")
  num_classes = confusion.shape[0]
  if target_predictions.shape != (num_classes,):
    raise ValueError(f"target_predictions must be [{num_classes}] to match confusion, got"
                     f" shape {tuple(target_predictions.shape)}.")
  gram = confusion.T @ confusion
  # Relative to the largest eigenvalue's scale, so the solve's condition number
  # stays below 1 + 1 / ridge whatever C is.
  strength = ridge * jnp.trace(gram)
  ones = jnp.ones(num_classes, jnp.float32)
  # Where C is all zero the system is 0 = 0: the tiny floor keeps it solvable (w = 1).
  strength = jnp.maximum(strength, jnp.finfo(jnp.float32).tiny)
  weights = jnp.linalg.solve(gram + strength * jnp.eye(num_classes),
                             confusion.T @ target_predictions + strength * ones)
  weights = jnp.maximum(weights, 0.0)
  source_labels = jnp.sum(confusion, axis=0)
  total = jnp.sum(source_labels * weights)
  return jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), ones)
