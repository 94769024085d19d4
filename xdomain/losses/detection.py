"""Dense-detection objectives: the sigmoid focal loss and the GIoU loss.

Both are per element (per class score, per box), with `where=` masks, as the
other losses of `xdomain.losses`; a detector reduces them itself (FCOS: the
focal loss summed and divided by the number of positive locations).
Boxes are `[ymin, xmin, ymax, xmax]`, in any unit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xdomain.losses import _checks


def sigmoid_focal_loss(logits: jax.Array, labels: jax.Array, *, alpha: float | None = 0.25,
                       gamma: float = 2.0, where: jax.Array | None = None) -> jax.Array:
  r"""Sigmoid focal loss per element (one binary problem per class score).

  .. math::
    p_t = \begin{cases} \sigma(z) & y = 1 \\ 1 - \sigma(z) & y = 0 \end{cases}, \qquad
    \mathrm{FL} = -\alpha_t (1 - p_t)^\gamma \log p_t

  with :math:`\alpha_t = \alpha` for :math:`y = 1` and :math:`1 - \alpha` for
  :math:`y = 0` (no weighting when `alpha` is None).

  Args:
    logits: [...] scores.
    labels: [...] binary targets (0 or 1; soft targets in [0, 1] also work).
    alpha: weight of the positives; None: unweighted.
    gamma: focusing parameter (0 gives the binary cross-entropy).
    where: optional bool mask of the shape of `logits`; masked elements are 0.

  Returns:
    [...] per-element losses.

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> loss = losses.sigmoid_focal_loss(jnp.array([0.0]), jnp.array([1.0]))
    >>> round(float(loss[0]), 4)  # 0.25 * 0.5**2 * log 2
    0.0433

  References:
    Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
  """
  logits = _checks.as_float(logits)
  labels = _checks.as_float(labels)
  _checks.check_same_shape(logits, labels, "logits", "labels")
  mask = _checks.mask(where, logits.shape, "where")
  logits = jnp.where(mask, logits, 0.0)  # masked NaN/inf reach no gradient
  labels = jnp.where(mask, labels, 0.0)
  p = jax.nn.sigmoid(logits)
  # log(1 + e^{-|z|}) form of the cross-entropy, stable for large |z|.
  ce = jnp.maximum(logits, 0.0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  p_t = p * labels + (1.0 - p) * (1.0 - labels)
  loss = ce * (1.0 - p_t) ** gamma
  if alpha is not None:
    loss = loss * (alpha * labels + (1.0 - alpha) * (1.0 - labels))
  return jnp.where(mask, loss, 0.0)


def box_area(boxes: jax.Array) -> jax.Array:
  """Areas [...] of boxes [..., 4] (`[ymin, xmin, ymax, xmax]`, empty boxes 0)."""
  return (jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
          * jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0))


def giou_loss(boxes: jax.Array, target_boxes: jax.Array, *, eps: float = 1e-7,
              where: jax.Array | None = None) -> jax.Array:
  r"""Generalized-IoU loss per box pair, 1 - GIoU, in [0, 2].

  .. math::
    \mathrm{GIoU} = \frac{|A \cap B|}{|A \cup B|} - \frac{|C| - |A \cup B|}{|C|}

  where :math:`C` is the smallest box enclosing :math:`A` and :math:`B`.

  Args:
    boxes: [..., 4] predicted boxes `[ymin, xmin, ymax, xmax]`.
    target_boxes: [..., 4] true boxes, same shape.
    eps: added to the denominators.
    where: optional bool mask of shape `boxes.shape[:-1]`; masked pairs are 0.

  Returns:
    [...] per-pair losses.

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> a = jnp.array([[0.0, 0.0, 2.0, 2.0]])
    >>> float(losses.giou_loss(a, a)[0])
    0.0

  References:
    Rezatofighi et al., "Generalized Intersection over Union", CVPR 2019.
  """
  boxes = _checks.as_float(boxes)
  target_boxes = _checks.as_float(target_boxes)
  _checks.check_min_ndim(boxes, 1, "boxes", "[..., 4]")
  if boxes.shape[-1] != 4:
    raise ValueError(f"boxes must have shape [..., 4], got shape {tuple(boxes.shape)}.")
  _checks.check_same_shape(boxes, target_boxes, "boxes", "target_boxes")
  mask = _checks.mask(where, boxes.shape[:-1], "where")
  unit = jnp.array([0.0, 0.0, 1.0, 1.0], boxes.dtype)
  boxes = jnp.where(mask[..., None], boxes, unit)
  target_boxes = jnp.where(mask[..., None], target_boxes, unit)
  low = jnp.maximum(boxes[..., :2], target_boxes[..., :2])
  high = jnp.minimum(boxes[..., 2:], target_boxes[..., 2:])
  intersection = jnp.prod(jnp.maximum(high - low, 0.0), axis=-1)
  union = box_area(boxes) + box_area(target_boxes) - intersection
  iou = intersection / (union + eps)
  enclosing = jnp.prod(jnp.maximum(
      jnp.maximum(boxes[..., 2:], target_boxes[..., 2:])
      - jnp.minimum(boxes[..., :2], target_boxes[..., :2]), 0.0), axis=-1)
  giou = iou - (enclosing - union) / (enclosing + eps)
  return jnp.where(mask, 1.0 - giou, 0.0)
