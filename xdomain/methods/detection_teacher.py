"""Mean teacher for detection with confidence-thresholded pseudo-boxes.

The teacher is an exponential moving average of the student (the engine's
`--ema_decay`), as in the Adaptive / Unbiased Mean Teacher: on each target
image it sees one noisy view, its detections whose score exceeds
`--confidence_threshold` (0.5 when unset) survive class-wise NMS as pseudo-boxes
(`models.detection.pseudo_objects`, static shapes), and the student learns them
on another noisy view with the detector's own loss (focal + GIoU +
centre-ness, `models.detection.fcos_loss`). The views differ only in pixel
noise, not in geometry, so a box means the same place in both. Target images
on which the teacher keeps no box are left out of the term: an empty set of
pseudo-boxes says the teacher saw nothing, not that there is nothing, and
scored as background it taught a detector that saw nothing through fog to
see nothing anywhere (docs/results.md, "Detection"). `pseudo_boxes_per_image`
is logged beside the loss (weight 0).

Two ways to trust the teacher less: `--max_pseudo_boxes` keeps only an image's
most confident boxes (through fog the teacher's boxes outgrew the objects
three to one), and `--pseudo_box_regression=false` trains only the
pseudo-boxes' classes (the focal term), not their extents, as Unbiased Teacher
(Liu et al., ICLR 2021) does: a confident class says little about where a
box's edges are. Neither reached source only on the fog pair (docs/results.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xdomain.config import Config
from xdomain.config import check_method_flags
from xdomain.config import check_non_negative
from xdomain.methods import base
from xdomain.models import detection

DEFAULT_THRESHOLD = 0.5  # when --confidence_threshold is unset


def validate_config(config: Config) -> None:
  """Raises `ConfigError` for pseudo-box flags given to another method."""
  check_non_negative(config, "max_pseudo_boxes")
  check_method_flags(config, "detection_mean_teacher", "max_pseudo_boxes", "pseudo_box_regression")


def make_detection_mean_teacher(config: Config) -> base.Method:
  """Pseudo-box distillation from an EMA teacher on the target."""
  threshold = (DEFAULT_THRESHOLD if config.confidence_threshold is None
               else config.confidence_threshold)
  max_boxes = config.max_pseudo_boxes or detection.MAX_PSEUDO_BOXES
  trained = ("focal", "giou", "centerness") if config.pseudo_box_regression else ("focal",)

  def terms(outputs, aux_params, rng, step):
    del aux_params, rng, step
    pseudo = detection.pseudo_objects(jax.lax.stop_gradient(outputs.teacher_target_logits),
                                      threshold=threshold, max_boxes=max_boxes)
    boxes = jnp.sum(pseudo[..., 4] >= 0, axis=1)
    loss = detection.fcos_loss(outputs.target_logits, pseudo, images=boxes > 0)
    # Logged only: pseudo-boxes per target image, against the source's objects
    # per image, tell a teacher that sees nothing from one that sees too much.
    per_image = jnp.mean(boxes.astype(jnp.float32))
    return {"pseudo_boxes": sum(loss[name] for name in trained),
            "pseudo_boxes_per_image": per_image}

  return base.Method(name="detection_mean_teacher", terms=terms,
                     weights={"pseudo_boxes": base.adaptation_weight(config),
                              "pseudo_boxes_per_image": 0.0},
                     ema_decay=config.ema_decay,
                     target_views=lambda task, inputs, rng: task.consistency_views(
                         inputs, rng, config))
