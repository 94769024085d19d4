"""Image preprocessing: resize, channel matching, normalisation, augmentation.

A preprocessor has three methods, which is all the loader relies on (a text
preprocessor implements the same three for tokens):

- ``prepare(data)``: the deterministic part, applied once to every row of a
  domain when a loader is built (these domains are small); row ``i`` of the
  output depends only on row ``i`` of the input.
- ``sample_augmentation(rng, n)``: per-example random parameters for the
  ``n`` rows of a GLOBAL batch (None when there is no augmentation), so every
  process draws the same values and takes its own rows of them.
- ``apply_augmentation(batch, params)``: applies those parameters to a batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from skimage import transform

# ITU-R 709 luma weights, as skimage.color.rgb2gray.
_LUMA = np.array([0.2125, 0.7154, 0.0721], np.float32)
NORMALIZATIONS = ("unit", "standardize")


@dataclasses.dataclass(frozen=True)
class ImagePreprocess:
  """How images of any domain are brought to a common input.

  Steps, in order: uint8 -> float32 in [0, 1]; with ``crop_to_content``, a
  crop to the square around each image's ink (see below); bilinear resize to
  ``size`` (Gaussian anti-aliasing when shrinking); grey -> RGB by repeating the channel,
  RGB -> grey by ITU-R 709 luma; then ``normalize``:

  - ``'unit'``: keep [0, 1];
  - ``'standardize'``: per image, subtract the mean over all pixels and
    channels and divide by ``max(std, 1 / sqrt(H * W * C))`` (as
    ``tf.image.per_image_standardization``). It needs no statistics of any
    split, so any two domains can be paired.

  ``crop_to_content`` size-normalises digits the way MNIST itself was made:
  the ink is the set of pixels whose grey value (luma for RGB) exceeds
  ``ink_threshold`` times the image's largest grey value; the crop is the
  square, centred on the ink's bounding box, whose side is the box's longer
  side (aspect ratio kept), padded with the image's border pixels where it
  leaves the frame. Digits drawn small in a wide margin (MNIST) and digits that
  fill their frame (UCI) then come out at the same scale. It is applied
  identically to every domain and uses no labels; an image without ink (or a
  textured one whose ink spans the frame) is kept whole.

  ``resolution`` (0: off) first brings every image to ``resolution`` x
  ``resolution`` (after the crop, anti-aliased when shrinking) and only then to
  ``size``: domains drawn at different resolutions (28x28 MNIST, 8x8 UCI) then
  carry the same detail, the coarsest one's.

  With ``augment=True`` every training image is translated by a random
  integer offset in ``[-max_shift, max_shift]`` along each axis, the border
  pixels being repeated into the vacated area. The offsets are drawn from the
  loader's generator for the step, so they are deterministic given the seed and
  the position in the stream. Evaluation batches are never augmented.

  Attributes:
    size: output ``(H, W)``.
    channels: output channels, 1 or 3.
    normalize: ``'unit'`` or ``'standardize'``.
    augment: random translation of training images.
    max_shift: largest translation in pixels.
    crop_to_content: crop each image to the square around its ink first.
    ink_threshold: ink level, a fraction of the image's largest grey value.
    resolution: common resolution every image passes through; 0: none.
  """
  size: tuple[int, int] = (28, 28)
  channels: int = 1
  normalize: str = "unit"
  augment: bool = False
  max_shift: int = 2
  crop_to_content: bool = False
  ink_threshold: float = 0.3
  resolution: int = 0

  def __post_init__(self):
    size = tuple(self.size)
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
      raise ValueError(f"size must be two positive ints (H, W), got {self.size!r}")
    object.__setattr__(self, "size", tuple(int(s) for s in size))
    if self.channels not in (1, 3):
      raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
    if self.normalize not in NORMALIZATIONS:
      raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
    if not 0 <= self.max_shift < min(self.size):
      raise ValueError(f"max_shift must be in [0, {min(self.size)}), got {self.max_shift!r}")
    if not 0.0 < self.ink_threshold < 1.0:
      raise ValueError(f"ink_threshold must be in (0, 1), got {self.ink_threshold!r}")
    if int(self.resolution) != self.resolution or self.resolution < 0:
      raise ValueError(f"resolution must be an int >= 0, got {self.resolution!r}")

  def prepare(self, data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Deterministic preprocessing of a dict holding ``image``.

    Args:
      data: ``image`` uint8[n, h, w, c] (c in 1, 3) and other arrays with
        leading dimension n, passed through.

    Returns:
      The same dict with ``image`` float32[n, H, W, channels].
    """
    if "image" not in data:
      raise ValueError(f"data must hold an 'image' array, got keys {sorted(data)}")
    images = np.asarray(data["image"])
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
      raise ValueError(
          f"data['image'] must be uint8[n, h, w, 1 or 3], got {images.dtype}{list(images.shape)}")
    x = images.astype(np.float32) / 255.0
    sizes = [self.size] if not self.resolution else [(self.resolution,) * 2, self.size]
    if self.crop_to_content:
      x = crop_all_to_ink(x, sizes[0], self.ink_threshold)
    for size in sizes:
      x = _resize(x, size)
    if x.shape[-1] == 1 and self.channels == 3:
      x = np.repeat(x, 3, axis=-1)
    elif x.shape[-1] == 3 and self.channels == 1:
      x = (x @ _LUMA)[..., None]
    if self.normalize == "standardize":
      mean = x.mean(axis=(1, 2, 3), keepdims=True)
      floor = 1.0 / np.sqrt(np.prod(x.shape[1:]))
      x = (x - mean) / np.maximum(x.std(axis=(1, 2, 3), keepdims=True), floor)
    return {**data, "image": np.ascontiguousarray(x, dtype=np.float32)}

  def sample_augmentation(self, rng: np.random.Generator, n: int) -> np.ndarray | None:
    """Per-row translations (dy, dx) for a global batch of ``n``, int[n, 2]."""
    if not self.augment or self.max_shift == 0:
      return None
    return rng.integers(-self.max_shift, self.max_shift + 1, size=(n, 2))

  def apply_augmentation(self, batch: Mapping[str, np.ndarray], params: np.ndarray | None
              ) -> dict[str, np.ndarray]:
    """Translates ``batch['image']`` (float32[b, H, W, C]) row by row.

    Args:
      batch: holds ``image`` float32[b, H, W, C].
      params: int[b, 2] offsets from ``sample_augmentation``, or None.

    Returns:
      The batch with translated images (a new dict).
    """
    if params is None:
      return dict(batch)
    images = batch["image"]
    b, h, w, _ = images.shape
    if params.shape != (b, 2):
      raise ValueError(f"params must have shape [{b}, 2], got {params.shape}")
    m = self.max_shift
    padded = np.pad(images, ((0, 0), (m, m), (m, m), (0, 0)), mode="edge")
    # Content moves by +dy, so output row r reads padded row r + m - dy.
    rows = (m - params[:, 0])[:, None] + np.arange(h)
    cols = (m - params[:, 1])[:, None] + np.arange(w)
    shifted = padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return {**batch, "image": shifted}


def _resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Bilinear resize of float32[n, h, w, c] to [n, *size, c], anti-aliased when shrinking."""
  if x.shape[1:3] == tuple(size):
    return x
  shrinking = x.shape[1] > size[0] or x.shape[2] > size[1]
  return transform.resize(x, (x.shape[0], *size, x.shape[3]), order=1,
                          anti_aliasing=shrinking, preserve_range=True).astype(np.float32)


def crop_to_ink(image: np.ndarray, size: tuple[int, int], threshold: float) -> np.ndarray:
  """Crops one image to the square around its ink and resizes it to ``size``.

  Args:
    image: float32[h, w, c] in [0, 1], c in 1, 3.
    size: output ``(H, W)``.
    threshold: ink level, a fraction of the image's largest grey value.

  Returns:
    float32[H, W, c]; the image resized whole when it has no ink.
  """
  if image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f"image must be [h, w, 1 or 3], got shape {image.shape}")
  return crop_all_to_ink(image[None], size, threshold)[0]


def crop_all_to_ink(images: np.ndarray, size: tuple[int, int], threshold: float) -> np.ndarray:
  """`crop_to_ink` of every image of float32[n, h, w, c].

  Each image's square (see `ImagePreprocess`) is centred on the box around its
  ink (half pixels round down), its side the box's longer one, and where it
  leaves the frame the border pixels repeat; an image without ink stays whole.
  The boxes are found for the whole stack at once, and the crops of one side
  are gathered and resized together (resizing a stack neither blurs nor
  interpolates across images, whose axis keeps its scale): no step runs once
  per image, which made this most of a digits run's preparation.
  """
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images must be [n, h, w, 1 or 3], got shape {images.shape}")
  n, h, w, c = images.shape
  grey = images[..., 0] if c == 1 else images @ _LUMA
  peak = grey.max(axis=(1, 2))
  ink = (grey > (threshold * peak)[:, None, None]) & (peak > 0)[:, None, None]
  ink_rows, ink_cols = ink.any(axis=2), ink.any(axis=1)
  top, left = ink_rows.argmax(1), ink_cols.argmax(1)
  bottom, right = h - ink_rows[:, ::-1].argmax(1), w - ink_cols[:, ::-1].argmax(1)
  side = np.maximum(bottom - top, right - left)
  has_ink = ink_rows.any(axis=1)
  # Each crop's corner and (height, width); an image without ink is its own crop.
  y0 = np.where(has_ink, (top + bottom - side) // 2, 0)
  x0 = np.where(has_ink, (left + right - side) // 2, 0)
  crop_h, crop_w = np.where(has_ink, side, h), np.where(has_ink, side, w)
  out = np.empty((n, *size, c), np.float32)
  shapes = np.stack([crop_h, crop_w], 1)
  for shape in np.unique(shapes, axis=0):
    rows = np.flatnonzero((shapes == shape).all(axis=1))
    # Clipped indices repeat the border, as edge padding would.
    ys = np.clip(y0[rows, None] + np.arange(shape[0]), 0, h - 1)
    xs = np.clip(x0[rows, None] + np.arange(shape[1]), 0, w - 1)
    out[rows] = _resize(images[rows[:, None, None], ys[:, :, None], xs[:, None, :]], size)
  return out


@dataclasses.dataclass(frozen=True)
class DetectionPreprocess:
  """Detection inputs: images as `ImagePreprocess` makes them (no crop, no
  augmentation), the boxes scaled with them, and the supervision packed.

  ``prepare`` resizes each image whose size differs from ``size`` (a domain of
  images of several sizes gives them as an object array) and scales its boxes
  alike, then brings channels and values to the common input. The ``boxes``
  (``[ymin, xmin, ymax, xmax]`` pixels, [n, M, 4]) and ``classes`` (int [n, M],
  negative for padding) of a labelled split become one float32 array
  ``objects`` [n, M, 5] (the box, then the class; padding rows are zeros with
  class -1), the one label key of detection batches.

  Attributes:
    size: output ``(H, W)``.
    channels: output channels, 1 or 3.
    normalize: as for ``ImagePreprocess``.
  """
  size: tuple[int, int] = (64, 64)
  channels: int = 3
  normalize: str = "unit"

  def prepare(self, data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    images = data["image"]
    boxes = None if "boxes" not in data else np.asarray(data["boxes"], np.float32).copy()
    out = []
    for i, image in enumerate(images):
      image = np.asarray(image)
      if image.ndim == 2:
        image = image[..., None]
      if image.shape[:2] != tuple(self.size):
        if boxes is not None:
          scale = np.array([self.size[0] / image.shape[0], self.size[1] / image.shape[1]] * 2,
                           np.float32)
          boxes[i] *= scale
        image = np.clip(np.round(_resize(image[None].astype(np.float32), self.size)[0]),
                        0, 255).astype(np.uint8)
      out.append(image)
    prepared = ImagePreprocess(size=self.size, channels=self.channels,
                               normalize=self.normalize).prepare({"image": np.stack(out)})
    result = {k: v for k, v in data.items() if k not in ("image", "boxes", "classes")}
    result["image"] = prepared["image"]
    if boxes is not None:
      classes = np.asarray(data["classes"], np.float32)
      result["objects"] = np.concatenate([boxes * (classes >= 0)[..., None], classes[..., None]],
                                         axis=-1).astype(np.float32)
    return result

  def sample_augmentation(self, rng: np.random.Generator, n: int) -> None:
    del rng, n  # no augmentation: it would have to move the boxes too
    return None

  def apply_augmentation(self, batch: Mapping[str, np.ndarray], params: None
                         ) -> dict[str, np.ndarray]:
    del params
    return dict(batch)
