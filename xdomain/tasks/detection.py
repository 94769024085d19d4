"""Object detection: images [B, H, W, C] -> boxes and classes (FCOS outputs).

Batches hold `image` and, in labelled parts, `objects` float32 [B, M, 5]
(`[ymin, xmin, ymax, xmax]` pixels, then the class; -1 for padding rows), made
by `xdomain.data.preprocess.DetectionPreprocess`. The model
(`xdomain.models.detection.FCOS`) gives outputs [B, P, K + 5] per location;
the loss assigns targets on the device (FCOS: focal + GIoU + centre-ness),
evaluation decodes on the device and runs NMS and pycocotools on the host.

Every location is a real position (`mask` is all True): per-location methods
(DANN's discriminator on the FPN features) see every location of every level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.data.preprocess import DetectionPreprocess
from xdomain.evaluate import detection as detection_eval
from xdomain.models import detection as fcos
from xdomain.tasks import base

# Methods whose terms make sense on dense detection outputs: the baselines,
# DANN on the per-location FPN features (DA-Faster's image-level term), EPM
# (DANN plus center-aware alignment) and the mean teacher with pseudo-boxes.
METHODS = ("source_only", "target_only", "dann", "epm", "detection_mean_teacher")
NOISE_STDDEV = 0.1  # Gaussian pixel noise of each consistency view, in input units
MAX_BOXES = 8  # objects rows of the sample batch (any M works)


class Detection(base.Task):
  """Detection of objects of the domains' classes, at a square input size
  (`--image_size`, a multiple of the coarsest stride)."""

  name = "detection"
  label_key = "objects"
  headline = "ap50"
  has_validators = False  # no class logits: its validator is source_val AP50
  source_val_scores = ("ap50",)

  def validate_config(self, config: Config) -> None:
    coarsest = max(fcos.STRIDES)
    if config.image_size % coarsest:
      raise ConfigError(
          f"--image_size={config.image_size}: detection needs a multiple of {coarsest}"
          f" (the detector's coarsest stride), e.g. 64.")
    for flag in ("augment", "crop_to_content"):
      if getattr(config, flag):
        raise ConfigError(f"--{flag} is for classification: it would move the objects"
                          " without their boxes; leave it off for detection.")
    if config.resolution:
      raise ConfigError("--resolution is for classification; leave it 0 for detection.")
    if config.method not in METHODS:
      raise ConfigError(
          f"--method={config.method} does not do detection yet; choose one of"
          f" {', '.join(METHODS)}.")

  def make_preprocess(self, config: Config, workdir: str, *, write: bool
                      ) -> DetectionPreprocess:
    del workdir, write
    return DetectionPreprocess(size=(config.image_size, config.image_size),
                               channels=config.channels, normalize=config.normalize)

  def check_teacher(self, teacher: Config, student: Config, teacher_workdir: str) -> None:
    del teacher, student
    raise ConfigError(f"detection runs take no teacher (--teacher={teacher_workdir}).")

  def sample_part(self, config: Config) -> dict[str, np.ndarray]:
    objects = np.zeros((1, MAX_BOXES, 5), np.float32)
    objects[..., 4] = -1
    return {"image": np.zeros((1, config.image_size, config.image_size, config.channels),
                              np.float32),
            "objects": objects}

  def model_inputs(self, part: base.Part) -> base.Inputs:
    return (part["image"],)

  def consistency_views(self, inputs: base.Inputs, rng: jax.Array, config: Config
                        ) -> tuple[base.Inputs, base.Inputs]:
    """Two views with independent pixel noise and the same geometry (so that
    the teacher's boxes hold for the student's view)."""
    del config
    student_key, teacher_key = jax.random.split(rng)
    images = inputs[0]
    return tuple((images + NOISE_STDDEV * jax.random.normal(key, images.shape, images.dtype),)
                 for key in (student_key, teacher_key))

  def mask(self, part: base.Part) -> jax.Array:
    """All True [B, P]: every location of every level is real."""
    images = part["image"]
    num_locations = sum(h * w for h, w in fcos.level_shapes(images.shape[1:3]))
    return jnp.ones((images.shape[0], num_locations), bool)

  def supervised_loss(self, spec, model, variables, logits: jax.Array, labels: jax.Array,
                      mask: jax.Array | None, *, label_smoothing: float = 0.0):
    """(focal + GIoU + centre-ness, correctly classified positives, positives);
    `label_smoothing` is 0 (`zoo.validate_config`)."""
    del spec, model, variables, mask, label_smoothing
    terms = fcos.fcos_loss(logits, labels)
    return (terms["focal"] + terms["giou"] + terms["centerness"], terms["correct"],
            terms["positives"])

  def eval_sums(self, spec, model, variables, logits: jax.Array, batch: base.Part,
                num_classes: int) -> dict[str, jax.Array]:
    """Decoded scores and boxes, with the true objects, for `metrics`."""
    del spec, model, variables, num_classes
    scores, boxes = fcos.decode(logits, min_probability=detection_eval.SCORE_THRESHOLD)
    return {"scores": scores, "boxes": boxes, "objects": batch["objects"],
            "valid": batch["mask"]}

  def metrics(self, confusion: np.ndarray | None, outputs: Sequence[Mapping[str, np.ndarray]],
              label_names: Sequence[str], *, source_vocabulary: np.ndarray | None
              ) -> dict[str, Any]:
    """COCO `ap`, `ap50`, `ap75` and per-class AP (`evaluate.detection.coco_metrics`)."""
    del confusion, source_vocabulary
    truth, detections, side = [], [], None
    for batch in outputs:
      side = fcos.image_size_of(batch["scores"].shape[1])
      for _, true, found in detection_eval.per_image(batch):
        truth.append(true)
        detections.append(found)
    return detection_eval.coco_metrics(truth, detections, label_names, (side, side))
