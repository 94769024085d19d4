"""xdomain.data.detection_builders, xdomain.data.coco and DetectionPreprocess."""

import json
import os

import numpy as np
import pytest
from skimage import io

from xdomain import data
from xdomain.data import coco
from xdomain.data import detection_builders as builders
from xdomain.data.preprocess import DetectionPreprocess


def test_canvases_are_deterministic_and_boxes_bound_the_ink():
  from xdomain.data import builders as digit_builders
  digits, labels = digit_builders.mnist_digits()
  images, boxes, classes = builders.digit_canvases(digits[:50], labels[:50], 20, seed=3)
  again = builders.digit_canvases(digits[:50], labels[:50], 20, seed=3)
  for a, b in zip((images, boxes, classes), again):
    np.testing.assert_array_equal(a, b)
  counts = (classes >= 0).sum(1)
  assert counts.min() >= 1 and counts.max() <= builders.MAX_DIGITS
  assert set(classes[classes >= 0]) <= set(labels[:50])
  for image, image_boxes, image_classes in zip(images, boxes, classes):
    ink = image[..., 0] > builders.INK
    covered = np.zeros_like(ink)
    for (y0, x0, y1, x1), k in zip(image_boxes, image_classes):
      if k < 0:
        assert (y0, x0, y1, x1) == (0, 0, 0, 0)
        continue
      assert 0 <= y0 < y1 <= builders.CANVAS and 0 <= x0 < x1 <= builders.CANVAS
      # The box is tight: ink on each of its four edges.
      assert ink[y0, x0:x1].any() and ink[y1 - 1, x0:x1].any()
      assert ink[y0:y1, x0].any() and ink[y0:y1, x1 - 1].any()
      covered[y0:y1, x0:x1] = True
    assert not (ink & ~covered).any()  # every ink pixel is in some box


def test_fog_follows_the_scattering_model():
  clear = np.zeros((3, 16, 16, 3), np.uint8)
  foggy = builders.fog(clear, seed=0)
  # J = 0: I = A (1 - t), brighter far away (top rows) than near (bottom rows).
  assert np.all(foggy[:, 0].mean(axis=(1, 2)) > foggy[:, -1].mean(axis=(1, 2)))
  assert foggy.max() <= 255 * builders.FOG_AIRLIGHT[1] + 1
  white = builders.fog(np.full((1, 16, 16, 3), 255, np.uint8), seed=0)
  assert white.min() >= 255 * builders.FOG_AIRLIGHT[0] - 1  # between J and A


def test_registered_domain_reads_with_its_info(data_dir):
  info = data.domain_info("detect/digits")
  assert (info.modality, info.task, info.image_shape) == ("image", "detection", (64, 64, 1))
  assert info.label_names == tuple(str(d) for d in range(10))
  assert info.label_keys == ("boxes", "classes")
  test = data.load_domain("detect/digits", "test", data_dir=data_dir)
  assert test["image"].shape == (info.split_sizes["test"], 64, 64, 1)
  assert test["boxes"].shape == (info.split_sizes["test"], builders.MAX_BOXES, 4)
  assert data.domain_info("detect/digits_fog").image_shape == (64, 64, 3)


def test_detection_preprocess_scales_boxes_and_packs_objects():
  images = np.zeros((2, 32, 16, 1), np.uint8)
  boxes = np.array([[[4, 2, 8, 6]], [[0, 0, 32, 16]]], np.float32)
  classes = np.array([[7], [-1]], np.int32)
  out = DetectionPreprocess(size=(64, 64), channels=3).prepare(
      {"image": images, "boxes": boxes, "classes": classes})
  assert out["image"].shape == (2, 64, 64, 3) and set(out) == {"image", "objects"}
  np.testing.assert_allclose(out["objects"][0, 0], [8, 8, 16, 24, 7])
  np.testing.assert_allclose(out["objects"][1, 0], [0, 0, 0, 0, -1])  # padding
  # The unlabelled target part has no boxes: images only.
  assert set(DetectionPreprocess(size=(32, 16)).prepare({"image": images})) == {"image"}


def write_coco(folder, *, images=None, annotations=None, categories=None, skip_file=None):
  """A tiny COCO file over PNGs of 20x30 pixels (image 2: 24x24)."""
  os.makedirs(folder / "images", exist_ok=True)
  if images is None:
    images = [{"id": i, "file_name": f"im{i}.png", "height": 20, "width": 30}
              for i in range(1, 6)]
    images[1].update(height=24, width=24)
  for image in images:
    if image["file_name"] != skip_file:
      pixels = np.random.default_rng(image["id"]).integers(
          0, 255, (image["height"], image["width"], 3), dtype=np.uint8)
      io.imsave(folder / "images" / image["file_name"], pixels, check_contrast=False)
  if annotations is None:
    annotations = [{"id": 10 + i, "image_id": i, "category_id": 3 if i % 2 else 8,
                    "bbox": [2, 3, 10, 5], "area": 50, "iscrowd": 0} for i in range(1, 6)]
    annotations.append({"id": 99, "image_id": 1, "category_id": 8, "bbox": [0, 0, 4, 4],
                        "area": 16, "iscrowd": 0})
  categories = categories or [{"id": 8, "name": "car"}, {"id": 3, "name": "bus"}]
  path = folder / "ann.json"
  path.write_text(json.dumps({"images": images, "annotations": annotations,
                              "categories": categories}))
  return f"coco:{path}@{folder / 'images'}"


def test_coco_domain_reads_splits_boxes_and_categories(tmp_path):
  name = write_coco(tmp_path)
  info = data.domain_info(name)
  assert info.task == "detection" and info.label_names == ("bus", "car")  # id order
  assert info.split_sizes == {"train": 4, "test": 1}
  train = data.load_domain(name, "train")
  assert train["image"].dtype == object and train["image"][0].shape == (20, 30, 3)
  assert train["boxes"].shape == (4, 2, 4)
  # Image 1: bbox [x=2, y=3, w=10, h=5] -> [3, 2, 8, 12], bus (id 3 -> class 0).
  np.testing.assert_allclose(train["boxes"][0], [[3, 2, 8, 12], [0, 0, 4, 4]])
  np.testing.assert_array_equal(train["classes"][0], [0, 1])
  np.testing.assert_array_equal(train["classes"][1], [1, -1])
  prepared = DetectionPreprocess(size=(40, 60), channels=3).prepare(train)
  np.testing.assert_allclose(prepared["objects"][0, 0], [6, 4, 16, 24, 0])


@pytest.mark.parametrize("change,message", [
    (dict(images=[]), "lists no images"),
    (dict(annotations=[{"id": 5, "image_id": 1, "category_id": 3, "bbox": [25, 0, 10, 5]}]),
     "annotation id 5 has bbox \\[25, 0, 10, 5\\] outside its image id 1 \\(30x20\\)"),
    (dict(annotations=[{"id": 6, "image_id": 2, "category_id": 3, "bbox": [1, 1, 0, 5]}]),
     "annotation id 6 has a box of zero area"),
    (dict(annotations=[{"id": 7, "image_id": 2, "category_id": 42, "bbox": [1, 1, 2, 2]}]),
     "annotation id 7 has unknown category id 42"),
    (dict(skip_file="im3.png"), "image id 3 \\('im3.png'\\) is missing from"),
])
def test_coco_bad_input_names_file_and_entry(tmp_path, change, message):
  name = write_coco(tmp_path, **change)
  with pytest.raises(coco.CocoFormatError, match=message) as error:
    data.domain_info(name)
  assert str(tmp_path / "ann.json") in str(error.value) and "\n" not in str(error.value)


def test_loader_and_eval_batches_carry_objects_of_coco_images(tmp_path):
  name = write_coco(tmp_path)
  preprocess = DetectionPreprocess(size=(32, 32), channels=3)
  loader = data.CrossDomainLoader(name, name, batch_size=4, preprocess=preprocess, seed=0,
                                  process_index=0, process_count=1)
  batch = next(loader)
  assert batch["source"]["image"].shape == (4, 32, 32, 3)
  assert batch["source"]["objects"].shape == (4, 2, 5)
  assert set(batch["target"]) == {"image"}  # the target's boxes never reach training
  (only,) = list(data.eval_batches(name, "test", batch_size=2, preprocess=preprocess,
                                   process_index=0, process_count=1))
  np.testing.assert_array_equal(only["mask"], [True, False])
  assert only["objects"].shape == (2, 2, 5) and only["objects"][0, 0, 4] == 0
