"""An anchor-free one-stage detector (FCOS) and its target assignment.

`FCOS` maps images float32 [B, H, W, C] (H and W multiples of the coarsest
stride) to one row of outputs per feature-map location of every FPN level,
levels one after the other (`locations` lists them in the same order):

    outputs [B, P, K + 5] = class logits (K) | l, t, r, b distances in pixels
                            (4, positive) | centre-ness logit (1)

A single array keeps the engine's contract of one output array per batch
(`xdomain.tasks.detection` splits it). `return_features=True` also returns the
FPN maps as per-location rows [B, P, D] (same order, each map scaled to unit
root mean square per image: `alignment_features`), what image-level
adversarial alignment discriminates (`split_levels` gives the maps back).
`fcos_loss` is FCOS's training loss of the outputs against objects [B, M, 5]
(`[ymin, xmin, ymax, xmax, class]`, class -1 for padding), `decode` turns
outputs into scores and boxes, and `pseudo_objects` keeps a teacher's confident
boxes as objects (static shapes, device-side NMS); evaluation's NMS and AP run
on the host (`xdomain.evaluate.detection`).

Boxes are `[ymin, xmin, ymax, xmax]` in pixels (continuous coordinates: a box
covering pixel rows 3..5 is [3, ., 6, .]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from xdomain import losses

STRIDES = (8, 16)
# FCOS's per-level size ranges scaled to 64x64 canvases: a location of level
# i may regress a box whose largest distance max(l, t, r, b) lies in
# [SCALE_RANGES[i][0], SCALE_RANGES[i][1]].
SCALE_RANGES = ((0.0, 16.0), (16.0, math.inf))
CENTER_RADIUS = 1.5  # FCOS centre sampling, in strides
CANDIDATE_THRESHOLD = 0.05  # FCOS's class probability of a candidate detection
MAX_PSEUDO_BOXES = 8  # per image, a teacher's pseudo-boxes (static shapes)


def level_shapes(image_shape: Sequence[int], strides: Sequence[int] = STRIDES
                 ) -> list[tuple[int, int]]:
  """(h, w) of each level's feature map for images of `image_shape` (H, W, ...)."""
  height, width = int(image_shape[0]), int(image_shape[1])
  for stride in strides:
    if height % stride or width % stride:
      raise ValueError(
          f"image size {height}x{width} must be a multiple of every stride {tuple(strides)}.")
  return [(height // s, width // s) for s in strides]


def locations(image_shape: Sequence[int], strides: Sequence[int] = STRIDES,
              scale_ranges: Sequence[tuple[float, float]] = SCALE_RANGES
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Every location of every level, in the order of the model's outputs.

  Returns:
    points: float32 [P, 2], the (y, x) pixel each location stands for
      (`stride // 2 + i * stride`, as FCOS);
    strides: float32 [P], each location's stride;
    ranges: float32 [P, 2], each location's size range.
  """
  if len(scale_ranges) != len(strides):
    raise ValueError(f"need one scale range per stride, got {scale_ranges} for {strides}")
  points, point_strides, ranges = [], [], []
  for (h, w), stride, size_range in zip(level_shapes(image_shape, strides), strides,
                                         scale_ranges):
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    points.append(np.stack([ys, xs], -1).reshape(-1, 2) * stride + stride // 2)
    point_strides.append(np.full(h * w, stride))
    ranges.append(np.tile(np.asarray(size_range, np.float32), (h * w, 1)))
  return (np.concatenate(points).astype(np.float32),
          np.concatenate(point_strides).astype(np.float32),
          np.concatenate(ranges).astype(np.float32))


def level_bounds(image_shape: Sequence[int], strides: Sequence[int] = STRIDES
                 ) -> list[tuple[int, int]]:
  """[start, stop) of each level's locations among the per-location rows."""
  bounds, start = [], 0
  for h, w in level_shapes(image_shape, strides):
    bounds.append((start, start + h * w))
    start += h * w
  return bounds


def split_levels(rows: jax.Array, image_shape: Sequence[int],
                 strides: Sequence[int] = STRIDES) -> list[jax.Array]:
  """Per-location rows [B, P, D] -> one map [B, h, w, D] per level."""
  return [rows[:, start:stop].reshape(rows.shape[0], h, w, rows.shape[-1])
          for (start, stop), (h, w) in zip(level_bounds(image_shape, strides),
                                           level_shapes(image_shape, strides))]


def assign_targets(boxes: jax.Array, classes: jax.Array, points: jax.Array,
                   strides: jax.Array, ranges: jax.Array, *,
                   center_radius: float = CENTER_RADIUS
                   ) -> tuple[jax.Array, jax.Array]:
  """FCOS target assignment of one image (pure, static shapes; vmap for a batch).

  A location is positive for a box when it lies inside the box, within
  `center_radius` strides of the box's centre (centre sampling), and the
  box's largest distance max(l, t, r, b) from it lies in the location's size
  range; among several such boxes it takes the smallest.

  Args:
    boxes: [M, 4] `[ymin, xmin, ymax, xmax]` pixels, padded.
    classes: int [M], the class of each box; negative for padding (boxes of
      zero area count as padding too).
    points, strides, ranges: from `locations`.
    center_radius: centre-sampling radius in strides.

  Returns:
    class_targets: int32 [P], the class of each location's box, -1 for
      background;
    box_targets: float32 [P, 4], the distances (l, t, r, b) from the location
      to its box's sides (meaningless for the background).
  """
  if boxes.ndim != 2 or boxes.shape[-1] != 4:
    raise ValueError(f"boxes must have shape [M, 4], got {boxes.shape}")
  if classes.shape != boxes.shape[:1]:
    raise ValueError(f"classes must have shape [{boxes.shape[0]}], got {classes.shape}")
  boxes = boxes.astype(jnp.float32)
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  valid = (classes >= 0) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
  y, x = points[:, 0:1], points[:, 1:2]  # [P, 1]
  ltrb = jnp.stack([x - boxes[None, :, 1], y - boxes[None, :, 0],
                    boxes[None, :, 3] - x, boxes[None, :, 2] - y], axis=-1)  # [P, M, 4]
  inside = jnp.min(ltrb, axis=-1) > 0
  radius = center_radius * strides[:, None]
  center_y = (boxes[None, :, 0] + boxes[None, :, 2]) / 2
  center_x = (boxes[None, :, 1] + boxes[None, :, 3]) / 2
  near_center = (jnp.abs(y - center_y) < radius) & (jnp.abs(x - center_x) < radius)
  largest = jnp.max(ltrb, axis=-1)
  in_range = (largest >= ranges[:, 0:1]) & (largest <= ranges[:, 1:2])
  candidate = inside & near_center & in_range & valid[None, :]
  best = jnp.argmin(jnp.where(candidate, area[None, :], jnp.inf), axis=1)
  positive = jnp.any(candidate, axis=1)
  class_targets = jnp.where(positive, classes[best], -1).astype(jnp.int32)
  box_targets = jnp.take_along_axis(ltrb, best[:, None, None], axis=1)[:, 0]
  return class_targets, box_targets


def centerness(ltrb: jax.Array) -> jax.Array:
  """FCOS centre-ness sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)), [...]."""
  l, t, r, b = (ltrb[..., i] for i in range(4))
  ratio = (jnp.minimum(l, r) / jnp.maximum(jnp.maximum(l, r), 1e-6)
           * jnp.minimum(t, b) / jnp.maximum(jnp.maximum(t, b), 1e-6))
  return jnp.sqrt(jnp.clip(ratio, 0.0, 1.0))


def decode_boxes(ltrb: jax.Array, points: jax.Array) -> jax.Array:
  """Distances [..., P, 4] (l, t, r, b) from points [P, 2] -> boxes [..., P, 4]."""
  y, x = points[:, 0], points[:, 1]
  return jnp.stack([y - ltrb[..., 1], x - ltrb[..., 0], y + ltrb[..., 3],
                    x + ltrb[..., 2]], axis=-1)


def image_size_of(num_locations: int, strides: Sequence[int] = STRIDES) -> int:
  """The side S of the square images whose FPN has `num_locations` locations."""
  per_pixel = sum(1.0 / s ** 2 for s in strides)
  side = int(round((num_locations / per_pixel) ** 0.5))
  if sum((side // s) ** 2 for s in strides) != num_locations:
    raise ValueError(f"{num_locations} locations are no square image's FPN levels {strides}")
  return side


def _locations(num_locations: int):
  side = image_size_of(num_locations)
  return tuple(jnp.asarray(a) for a in locations((side, side)))


def fcos_loss(outputs: jax.Array, objects: jax.Array, *,
              images: jax.Array | None = None) -> dict[str, jax.Array]:
  """FCOS's loss terms of outputs [B, P, K + 5] against objects [B, M, 5].

  `focal`: sigmoid focal loss summed over locations and classes, divided by
  the number of positive locations (at least 1); `giou`: 1 - GIoU of the
  positives' boxes weighted by their centre-ness targets; `centerness`: binary
  cross-entropy of the centre-ness logits of the positives. Also
  `positives` (their count) and `correct` (positives whose top class is right).
  `images` [B] (bool), when given, keeps only those images in every term.
  """
  num_classes = outputs.shape[-1] - 5
  outputs = outputs.astype(jnp.float32)
  logits, distances, center_logits = (outputs[..., :num_classes],
                                      outputs[..., num_classes:num_classes + 4],
                                      outputs[..., -1])
  points, strides, ranges = _locations(outputs.shape[1])
  class_targets, box_targets = jax.vmap(
      assign_targets, in_axes=(0, 0, None, None, None))(
          objects[..., :4], objects[..., 4].astype(jnp.int32), points, strides, ranges)
  kept = (jnp.ones(outputs.shape[:2], bool) if images is None
          else jnp.broadcast_to(images[:, None], outputs.shape[:2]))
  positive = (class_targets >= 0) & kept
  positives = jnp.sum(positive.astype(jnp.float32))
  normaliser = jnp.maximum(positives, 1.0)
  one_hot = jax.nn.one_hot(class_targets, num_classes)  # -1 -> zeros
  focal = jnp.sum(losses.sigmoid_focal_loss(
      logits, one_hot, where=jnp.broadcast_to(kept[..., None], logits.shape))) / normaliser
  center_targets = jnp.where(positive, centerness(jnp.maximum(box_targets, 1e-3)), 0.0)

  def relative(ltrb):  # distances -> a box around the origin
    return jnp.stack([-ltrb[..., 1], -ltrb[..., 0], ltrb[..., 3], ltrb[..., 2]], axis=-1)

  giou = losses.giou_loss(relative(distances), relative(box_targets), where=positive)
  giou = jnp.sum(giou * center_targets) / jnp.maximum(jnp.sum(center_targets), 1e-6)
  center = optax.sigmoid_binary_cross_entropy(center_logits, center_targets)
  center = jnp.sum(jnp.where(positive, center, 0.0)) / normaliser
  correct = jnp.sum(positive & (jnp.argmax(logits, -1) == class_targets))
  return {"focal": focal, "giou": giou, "centerness": center, "positives": positives,
          "correct": correct.astype(jnp.float32)}


def decode(outputs: jax.Array, *, min_probability: float = CANDIDATE_THRESHOLD
           ) -> tuple[jax.Array, jax.Array]:
  """Outputs [B, P, K + 5] -> (scores [B, P, K], boxes [B, P, 4] clipped to the image).

  Scores are FCOS's sqrt(class probability * centre-ness), 0 where the class
  probability is at most `min_probability` (FCOS's candidate threshold,
  applied before the centre-ness)."""
  num_classes = outputs.shape[-1] - 5
  outputs = outputs.astype(jnp.float32)
  points, _, _ = _locations(outputs.shape[1])
  side = image_size_of(outputs.shape[1])
  probabilities = jax.nn.sigmoid(outputs[..., :num_classes])
  scores = jnp.sqrt(probabilities * jax.nn.sigmoid(outputs[..., -1:]))
  scores = jnp.where(probabilities > min_probability, scores, 0.0)
  boxes = decode_boxes(outputs[..., num_classes:num_classes + 4], points)
  return scores, jnp.clip(boxes, 0.0, float(side))


CENTER_AWARE_SHARPNESS = 20.0  # EPM's released configurations


def center_aware_attention(outputs: jax.Array) -> jax.Array:
  """EPM's center-aware attention [...] of outputs [..., K + 5]:
  sigmoid(20 * max_k sigmoid(class logit k) * sigmoid(centre-ness logit)),
  between 0.5 (background) and sigmoid(20) (a sure object centre)."""
  num_classes = outputs.shape[-1] - 5
  outputs = outputs.astype(jnp.float32)
  objectness = jnp.max(jax.nn.sigmoid(outputs[..., :num_classes]), axis=-1)
  return jax.nn.sigmoid(CENTER_AWARE_SHARPNESS * objectness * jax.nn.sigmoid(outputs[..., -1]))


def pseudo_objects(outputs: jax.Array, *, threshold: float,
                   max_boxes: int = MAX_PSEUDO_BOXES, iou_threshold: float = 0.6,
                   candidates: int = 32) -> jax.Array:
  """Confident detections of outputs [B, P, K + 5] as objects [B, max_boxes, 5]
  (a teacher's pseudo-boxes: `[ymin, xmin, ymax, xmax, class]`, class -1 for
  the unused rows), with static shapes for the train step.

  Each location proposes its best class; the `candidates` best proposals
  whose score (`decode`'s) exceeds `threshold` go through greedy class-wise NMS
  on the device, and the best `max_boxes` survivors are kept.
  """
  scores, boxes = decode(outputs, min_probability=0.0)

  def one_image(scores, boxes):
    best = jnp.max(scores, axis=-1)
    classes = jnp.argmax(scores, axis=-1)
    top, index = jax.lax.top_k(best, min(candidates, best.shape[0]))
    boxes, classes = boxes[index], classes[index]
    low = jnp.maximum(boxes[:, None, :2], boxes[None, :, :2])
    high = jnp.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = jnp.prod(jnp.maximum(high - low, 0.0), axis=-1)
    area = jnp.prod(jnp.maximum(boxes[:, 2:] - boxes[:, :2], 0.0), axis=-1)
    iou = inter / jnp.maximum(area[:, None] + area[None, :] - inter, 1e-6)
    clash = (iou > iou_threshold) & (classes[:, None] == classes[None, :])
    later = jnp.arange(len(top))[None, :] > jnp.arange(len(top))[:, None]

    def suppress(i, keep):  # top is sorted: box i suppresses the later ones
      return keep & ~(keep[i] & clash[i] & later[i])

    keep = jax.lax.fori_loop(0, len(top), suppress,
                             (top > threshold) & (area > 0))
    order = jnp.argsort(~keep, stable=True)[:max_boxes]  # kept ones first, best first
    kept = keep[order]
    return jnp.concatenate([jnp.where(kept[:, None], boxes[order], 0.0),
                            jnp.where(kept, classes[order], -1)[:, None].astype(jnp.float32)],
                           axis=-1)

  return jax.vmap(one_image)(scores, boxes)


class DetectionBackbone(nn.Module):
  """A small CNN (stride-2 stages) plus a top-down FPN of `len(strides)` levels.

  Returns one map [B, H / s, W / s, fpn_width] per stride s.
  """
  # Few distinct kernel shapes: compiling the parameter initialisation costs
  # about a second per distinct shape on a CPU.
  widths: Sequence[int] = (32, 32, 64, 64)  # strides 2, 4, 8, 16
  fpn_width: int = 64
  strides: Sequence[int] = STRIDES

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    del train  # no dropout or batch norm
    x = images
    stages = {}
    for k, width in enumerate(self.widths):
      x = nn.relu(nn.Conv(width, (3, 3), strides=(2, 2), name=f"stage_{k}")(x))
      x = nn.relu(nn.Conv(width, (3, 3), name=f"stage_{k}_b")(x))
      stages[2 ** (k + 1)] = x
    maps, top = [], None
    for stride in sorted(self.strides, reverse=True):  # top-down
      lateral = nn.Conv(self.fpn_width, (1, 1), name=f"lateral_{stride}")(stages[stride])
      if top is not None:
        factor = lateral.shape[1] // top.shape[1]
        lateral = lateral + jnp.repeat(jnp.repeat(top, factor, axis=1), factor, axis=2)
      top = lateral
      maps.append(nn.Conv(self.fpn_width, (3, 3), name=f"output_{stride}")(lateral))
    return maps[::-1]


class FCOSHead(nn.Module):
  """The head shared by every level: a class tower and a box tower of 3x3
  convolutions with group norm; class logits from the first, distances and
  centre-ness from the second (FCOS's centre-ness on the regression branch)."""
  num_classes: int
  strides: Sequence[int] = STRIDES
  tower_depth: int = 2
  prior: float = 0.01  # initial foreground probability of the class logits

  @nn.compact
  def __call__(self, maps: Sequence[jax.Array]) -> jax.Array:
    width = maps[0].shape[-1]
    towers = {name: [nn.Conv(width, (3, 3), name=f"{name}_conv_{k}")
                     for k in range(self.tower_depth)] for name in ("class", "box")}
    norms = {name: [nn.GroupNorm(num_groups=8, name=f"{name}_norm_{k}")
                    for k in range(self.tower_depth)] for name in ("class", "box")}
    bias = -math.log((1 - self.prior) / self.prior)
    class_out = nn.Conv(self.num_classes, (3, 3), name="class_logits",
                        bias_init=nn.initializers.constant(bias))
    box_out = nn.Conv(5, (3, 3), name="distances_centerness")
    scales = self.param("scales", nn.initializers.ones, (len(maps),))
    rows = []
    for level, (features, stride) in enumerate(zip(maps, self.strides)):
      branches = {}
      for name in ("class", "box"):
        x = features
        for conv, norm in zip(towers[name], norms[name]):
          x = nn.relu(norm(conv(x)))
        branches[name] = x
      logits = class_out(branches["class"])
      box = box_out(branches["box"])
      # exp(s * x) * stride, the exponent clipped so that no step overflows.
      distances = jnp.exp(jnp.minimum(scales[level] * box[..., :4], 8.0)) * stride
      center = box[..., 4:]
      out = jnp.concatenate([logits, distances, center], axis=-1)
      rows.append(out.reshape(out.shape[0], -1, out.shape[-1]))
    return jnp.concatenate(rows, axis=1)


class FCOS(nn.Module):
  """FCOS (Tian et al., ICCV 2019) on a small CNN with a two-level FPN.

  Attributes:
    num_classes: K object classes (no background class: sigmoid scores).
    fpn_width: channels of the FPN maps and of the head.
    strides: the FPN levels' strides.
  """
  num_classes: int
  fpn_width: int = 64
  strides: Sequence[int] = STRIDES

  def setup(self):
    self.backbone = DetectionBackbone(fpn_width=self.fpn_width, strides=self.strides)
    self.head = FCOSHead(self.num_classes, strides=self.strides)

  def __call__(self, images, *, train: bool = False, return_features: bool = False):
    """Outputs [B, P, K + 5] (and per-location FPN features [B, P, D])."""
    if images.ndim != 4:
      raise ValueError(f"images must have shape [B, H, W, C], got shape {images.shape}")
    level_shapes(images.shape[1:3], self.strides)  # checks the size
    maps = self.backbone(images, train=train)
    outputs = self.head(maps)
    if not return_features:
      return outputs
    return outputs, alignment_features(maps)


def alignment_features(maps: Sequence[jax.Array]) -> jax.Array:
  """Per-location rows [B, P, D] of the FPN maps [B, H, W, D], each map divided
  by its root mean square over the image.

  The head reads each map through a convolution and group norm, so it cannot
  see a map's overall scale; an adversary behind gradient reversal could grow
  that scale for free until the discriminator's loss overflows (DANN's domain
  loss reached 4e9 by step 200 on the raw maps). Aligned after this division,
  the maps can only fool the discriminator by what the detector sees.
  """
  rows = []
  for m in maps:
    rms = jnp.sqrt(jnp.mean(jnp.square(m), axis=(1, 2, 3), keepdims=True) + 1e-12)
    rows.append((m / rms).reshape(m.shape[0], -1, m.shape[-1]))
  return jnp.concatenate(rows, axis=1)
