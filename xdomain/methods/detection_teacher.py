"""Mean teacher for detection with confidence-thresholded pseudo-boxes.

The teacher is an exponential moving average of the student (the engine's
`--ema_decay`), as in the Adaptive / Unbiased Mean Teacher: on each target
image it sees one noisy view, its detections whose score exceeds
`--confidence_threshold` (0.5 when unset) survive class-wise NMS as pseudo-boxes
(`models.detection.pseudo_objects`, static shapes), and the student learns them
on another noisy view with the detector's own loss (focal + GIoU +
centre-ness, `models.detection.fcos_loss`). The views differ only in pixel
noise, not in geometry, so a box means the same place in both.
"""

from __future__ import annotations

import jax

from xdomain.config import Config
from xdomain.methods import base
from xdomain.models import detection

DEFAULT_THRESHOLD = 0.5  # when --confidence_threshold is unset


def make_detection_mean_teacher(config: Config) -> base.Method:
  """Pseudo-box distillation from an EMA teacher on the target."""
  threshold = (DEFAULT_THRESHOLD if config.confidence_threshold is None
               else config.confidence_threshold)

  def terms(outputs, aux_params, rng, step):
    del aux_params, rng, step
    pseudo = detection.pseudo_objects(jax.lax.stop_gradient(outputs.teacher_target_logits),
                                      threshold=threshold)
    loss = detection.fcos_loss(outputs.target_logits, pseudo)
    return {"pseudo_boxes": loss["focal"] + loss["giou"] + loss["centerness"]}

  return base.Method(name="detection_mean_teacher", terms=terms,
                     weights={"pseudo_boxes": base.adaptation_weight(config)},
                     ema_decay=config.ema_decay,
                     target_views=lambda task, inputs, rng: task.consistency_views(
                         inputs, rng, config))
