"""A user's COCO-format detection files as a domain: ``coco:`` names.

    coco:<annotations.json>@<images dir>
    coco:<train.json>,<test.json>@<images dir>

With one file, the images sorted by id are split 80/20: every fifth image
(positions 4, 9, 14, ...) is ``test``, the others ``train``. With two files,
each is its split. Real benchmarks (Cityscapes -> Foggy Cityscapes, Sim10k ->
Cityscapes) come in this way, exported to COCO json.

The class names are the categories' names in category-id order (with two
files, the train file's; the test file must have the same categories), so two
domains pair when their category sets are equal. Each split reads as
``image`` (uint8 [n, H, W, C] when all images share a size, else an object
array of uint8 [h, w, C] images), ``boxes`` float32 [n, M, 4] ``[ymin, xmin,
ymax, xmax]`` pixels and ``classes`` int32 [n, M] (-1 for padding), M the most
boxes of any image of the files. Crowd annotations (``iscrowd: 1``) are left
out, as COCO's evaluation ignores them.

Bad input stops the reading with one line naming the file and the first
offending entry: a file without images, an annotation whose box has no area or
leaves its image, an unknown category or image id, an image file missing from
the folder.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import numpy as np

from xdomain.data.info import DomainInfo

COCO_PREFIX = "coco:"
TEST_EVERY = 5  # one file: every fifth image (sorted by id) is test


class CocoFormatError(ValueError):
  """A COCO file that cannot be read as a detection domain (one line: the file,
  the first offending entry, what is wrong)."""


def coco_paths(name: str) -> tuple[list[str], str]:
  """The annotation files and the images folder of a ``coco:`` name."""
  if not name.startswith(COCO_PREFIX) or "@" not in name:
    raise CocoFormatError(
        f"{name!r} is no COCO domain name: use coco:<annotations.json>@<images dir>"
        " (or coco:<train.json>,<test.json>@<images dir>)")
  files, _, images_dir = name[len(COCO_PREFIX):].rpartition("@")
  paths = [os.path.expanduser(p) for p in files.split(",")]
  if len(paths) > 2 or not all(paths) or not images_dir:
    raise CocoFormatError(
        f"{name!r}: expected coco:<annotations.json>@<images dir> or"
        " coco:<train.json>,<test.json>@<images dir>")
  for path in paths:
    if not os.path.isfile(path):
      raise CocoFormatError(f"{path}: no such annotation file (from {name!r})")
  if not os.path.isdir(os.path.expanduser(images_dir)):
    raise CocoFormatError(f"{images_dir}: no such images folder (from {name!r})")
  return paths, os.path.expanduser(images_dir)


def _read_image(path: str) -> np.ndarray:
  from skimage import io  # pylint: disable=g-import-not-at-top
  image = np.asarray(io.imread(path))
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 4:  # RGBA -> RGB
    image = image[..., :3]
  if image.dtype != np.uint8:
    image = np.clip(image, 0, 255).astype(np.uint8)
  return image


def _parse(path: str, images_dir: str, categories: list[int] | None
           ) -> tuple[list[dict[str, Any]], list[int], dict[int, str], dict[int, list]]:
  """(images sorted by id, category ids, names, boxes per image id) of one file."""
  try:
    with open(path) as f:
      content = json.load(f)
  except json.JSONDecodeError as e:
    raise CocoFormatError(f"{path}: not valid JSON ({e})") from e
  images = sorted(content.get("images") or [], key=lambda im: im["id"])
  if not images:
    raise CocoFormatError(f"{path}: the file lists no images ('images' is empty or missing)")
  names = {int(c["id"]): str(c["name"]) for c in content.get("categories") or []}
  if not names:
    raise CocoFormatError(f"{path}: the file lists no categories")
  if categories is not None and sorted(names) != categories:
    raise CocoFormatError(
        f"{path}: categories {sorted(names)} differ from the train file's {categories}")
  by_id = {}
  for image in images:
    file = os.path.join(images_dir, image["file_name"])
    if not os.path.isfile(file):
      raise CocoFormatError(
          f"{path}: image id {image['id']} ({image['file_name']!r}) is missing from"
          f" {images_dir}")
    by_id[image["id"]] = image
  boxes = {image["id"]: [] for image in images}
  for annotation in content.get("annotations") or []:
    if annotation.get("iscrowd", 0):
      continue
    entry = f"annotation id {annotation.get('id')}"
    image = by_id.get(annotation.get("image_id"))
    if image is None:
      raise CocoFormatError(f"{path}: {entry} refers to unknown image id"
                            f" {annotation.get('image_id')}")
    if annotation.get("category_id") not in names:
      raise CocoFormatError(
          f"{path}: {entry} has unknown category id {annotation.get('category_id')}"
          f" (categories: {sorted(names)})")
    x, y, w, h = (float(v) for v in annotation["bbox"])
    if w <= 0 or h <= 0:
      raise CocoFormatError(f"{path}: {entry} has a box of zero area, bbox {annotation['bbox']}")
    if x < 0 or y < 0 or x + w > image["width"] or y + h > image["height"]:
      raise CocoFormatError(
          f"{path}: {entry} has bbox {annotation['bbox']} outside its image id {image['id']}"
          f" ({image['width']}x{image['height']})")
    boxes[image["id"]].append(([y, x, y + h, x + w], annotation["category_id"]))
  return images, sorted(names), names, boxes


def _rows(images, boxes, category_ids, images_dir, max_boxes) -> dict[str, np.ndarray]:
  index = {c: k for k, c in enumerate(category_ids)}
  pictures = [_read_image(os.path.join(images_dir, im["file_name"])) for im in images]
  box_array = np.zeros((len(images), max_boxes, 4), np.float32)
  classes = np.full((len(images), max_boxes), -1, np.int32)
  for i, image in enumerate(images):
    for j, (box, category) in enumerate(boxes[image["id"]]):
      box_array[i, j], classes[i, j] = box, index[category]
  if len({p.shape for p in pictures}) == 1:
    image_array = np.stack(pictures)
  else:
    image_array = np.empty(len(pictures), dtype=object)
    image_array[:] = pictures
  return {"image": image_array, "boxes": box_array, "classes": classes}


@functools.lru_cache(maxsize=8)
def _read(name: str, stats: tuple) -> tuple[DomainInfo, dict[str, dict[str, np.ndarray]]]:
  del stats  # part of the cache key: a changed file is read again
  paths, images_dir = coco_paths(name)
  images, category_ids, names, boxes = _parse(paths[0], images_dir, None)
  if len(paths) == 2:
    test_images, _, _, test_boxes = _parse(paths[1], images_dir, category_ids)
    parts = {"train": (images, boxes), "test": (test_images, {**boxes, **test_boxes})}
  else:
    test = [im for k, im in enumerate(images) if k % TEST_EVERY == TEST_EVERY - 1]
    train = [im for k, im in enumerate(images) if k % TEST_EVERY != TEST_EVERY - 1]
    if not test or not train:
      raise CocoFormatError(
          f"{paths[0]}: {len(images)} images are too few to split 80/20 into train and"
          " test; give at least 5, or a train and a test file.")
    parts = {"train": (train, boxes), "test": (test, boxes)}
  max_boxes = max(1, max(len(b) for _, part_boxes in parts.values()
                         for b in part_boxes.values()))
  splits = {split: _rows(part_images, part_boxes, category_ids, images_dir, max_boxes)
            for split, (part_images, part_boxes) in parts.items()}
  shapes = {im.shape for split in splits.values() for im in split["image"]}
  info = DomainInfo(
      name=name, modality="image", task="detection",
      label_names=tuple(names[c] for c in category_ids),
      split_sizes={split: len(rows["classes"]) for split, rows in splits.items()},
      image_shape=next(iter(shapes)) if len(shapes) == 1 else None,
      description=f"COCO-format detection files {', '.join(paths)} with images in {images_dir}")
  return info, splits


def read_coco_domain(name: str) -> tuple[DomainInfo, dict[str, dict[str, np.ndarray]]]:
  """(info, {split: {'image', 'boxes', 'classes'}}) of a ``coco:`` name, read
  once while its files are unchanged.

  Raises:
    CocoFormatError: bad input (one line, see the module docstring).
  """
  paths, _ = coco_paths(name)
  stats = tuple((os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths)
  return _read(name, stats)
