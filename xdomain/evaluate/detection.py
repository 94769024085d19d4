"""Detection evaluation on the host: class-wise NMS and COCO AP (pycocotools).

Boxes are `[ymin, xmin, ymax, xmax]` pixels throughout; pycocotools' `[x, y,
w, h]` appears only inside `coco_metrics`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

SCORE_THRESHOLD = 0.05  # FCOS's candidate threshold (on the class probability)
MAX_CANDIDATES = 100  # best (location, class) pairs per image before NMS
MAX_DETECTIONS = 100  # per image, as COCO
NMS_IOU = 0.6  # FCOS's


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU [n, m] of boxes a [n, 4] and b [m, 4]."""
  low = np.maximum(a[:, None, :2], b[None, :, :2])
  high = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(high - low, 0, None), axis=-1)
  area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=-1)
  union = area(a)[:, None] + area(b)[None, :] - inter
  return inter / np.maximum(union, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, *, iou_threshold: float = NMS_IOU
        ) -> np.ndarray:
  """Greedy non-maximum suppression: indices of the kept boxes, best first."""
  order = np.argsort(-scores, kind="stable")
  overlaps = iou_matrix(boxes[order], boxes[order]) > iou_threshold
  suppressed = np.zeros(len(order), bool)
  keep = []
  for i in range(len(order)):
    if not suppressed[i]:
      keep.append(order[i])
      suppressed |= overlaps[i]
  return np.asarray(keep, np.int64)


def detect(scores: np.ndarray, boxes: np.ndarray, *, score_threshold: float = SCORE_THRESHOLD,
           iou_threshold: float = NMS_IOU, max_candidates: int = MAX_CANDIDATES,
           max_detections: int = MAX_DETECTIONS
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One image's detections from per-location class scores and boxes.

  The `max_candidates` best (location, class) pairs above `score_threshold`
  go through NMS class by class (boxes of different classes never suppress
  each other); the `max_detections` best survivors are kept.

  Args:
    scores: [P, K] per-location, per-class scores in [0, 1].
    boxes: [P, 4] each location's box.

  Returns:
    (boxes [n, 4], scores [n], classes [n]) after class-wise NMS, best first.
  """
  locations, classes = np.nonzero(scores > score_threshold)
  values = scores[locations, classes]
  top = np.argsort(-values, kind="stable")[:max_candidates]
  locations, classes, values = locations[top], classes[top], values[top]
  candidates = boxes[locations]
  # Shifting each class's boxes apart lets one NMS keep the classes separate.
  shift = (np.max(np.abs(candidates)) + 1.0 if len(candidates) else 0.0) * 2.0
  kept = nms(candidates + (classes * shift)[:, None], values, iou_threshold=iou_threshold)
  kept = kept[:max_detections]  # nms returns them best first
  return candidates[kept], values[kept], classes[kept]


def per_image(outputs: Mapping[str, np.ndarray]
              ) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray],
                                  tuple[np.ndarray, np.ndarray, np.ndarray]]]:
  """Each real image of one batch of the detection task's evaluation outputs
  (`scores`, `boxes`, `objects`, `valid`): its index in the batch, its truth
  (boxes [n, 4], classes [n]) and its detections (`detect`'s boxes, scores, classes)."""
  for k in np.flatnonzero(outputs["valid"]):
    objects = np.asarray(outputs["objects"][k])
    real = objects[:, 4] >= 0
    # The model's decoding applied the candidate threshold already: keep every score > 0.
    yield k, (objects[real, :4], objects[real, 4].astype(np.int64)), detect(
        np.asarray(outputs["scores"][k]), np.asarray(outputs["boxes"][k]), score_threshold=0.0)


def coco_metrics(truth: Sequence[tuple[np.ndarray, np.ndarray]],
                 detections: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                 label_names: Sequence[str], image_size: tuple[int, int]) -> dict[str, Any]:
  """COCO box AP of detections against the true boxes, by pycocotools.

  Args:
    truth: per image (boxes [m, 4], classes [m]) of its real objects.
    detections: per image (boxes [n, 4], scores [n], classes [n]).
    label_names: the class names, in id order.
    image_size: (H, W) of the images.

  Returns:
    `ap` (AP@[.5:.95]), `ap50`, `ap75`, and `per_class_ap` / `per_class_ap50`
    (lists in class order, None for a class without true boxes), every AP in
    [0, 1].
  """
  try:
    from pycocotools.coco import COCO  # pylint: disable=g-import-not-at-top
    from pycocotools.cocoeval import COCOeval  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError as e:
    raise ImportError(
        "detection metrics need the package 'pycocotools'; pip install -c constraints.txt"
        " pycocotools (or the [experiments] extra).") from e

  def xywh(box):
    return [float(box[1]), float(box[0]), float(box[3] - box[1]), float(box[2] - box[0])]

  images, annotations, results = [], [], []
  for image_id, ((true_boxes, true_classes), (boxes, scores, classes)) in enumerate(
      zip(truth, detections), start=1):
    images.append({"id": image_id, "height": image_size[0], "width": image_size[1]})
    for box, k in zip(true_boxes, true_classes):
      area = float((box[2] - box[0]) * (box[3] - box[1]))
      annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                          "category_id": int(k) + 1, "bbox": xywh(box), "area": area,
                          "iscrowd": 0})
    for box, score, k in zip(boxes, scores, classes):
      results.append({"image_id": image_id, "category_id": int(k) + 1, "bbox": xywh(box),
                      "score": float(score)})
  num_classes = len(label_names)
  present = np.bincount(np.concatenate([c for _, c in truth] + [np.zeros(0, np.int64)])
                        .astype(np.int64), minlength=num_classes) > 0
  empty = {"ap": 0.0, "ap50": 0.0, "ap75": 0.0,
           "per_class_ap": [0.0 if p else None for p in present],
           "per_class_ap50": [0.0 if p else None for p in present]}
  if not annotations or not results:
    return empty
  with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": k + 1, "name": str(name)}
                                 for k, name in enumerate(label_names)]}
    gt.createIndex()
    evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
    # Only what is reported: all areas, 100 detections per image. COCO's
    # other areas and limits would cost 4x the matching and change nothing here.
    params = evaluation.params
    params.areaRng, params.areaRngLbl, params.maxDets = (
        params.areaRng[:1], params.areaRngLbl[:1], [100])
    evaluation.evaluate()
    evaluation.accumulate()
  # precision [iou thresholds, recall points, classes, areas, max detections]
  precision = evaluation.eval["precision"][:, :, :, 0, -1]

  def mean_ap(values):
    """The mean of the defined entries, as COCOeval.summarize takes it."""
    values = values[values > -1]
    return float(np.mean(values)) if values.size else None

  iou_50, iou_75 = (int(np.flatnonzero(np.isclose(params.iouThrs, t))[0]) for t in (0.5, 0.75))

  per_class_ap = [mean_ap(precision[:, :, k]) if present[k] else None
                  for k in range(num_classes)]
  per_class_ap50 = [mean_ap(precision[iou_50, :, k]) if present[k] else None
                    for k in range(num_classes)]
  return {"ap": mean_ap(precision) or 0.0, "ap50": mean_ap(precision[iou_50]) or 0.0,
          "ap75": mean_ap(precision[iou_75]) or 0.0, "per_class_ap": per_class_ap,
          "per_class_ap50": per_class_ap50}
