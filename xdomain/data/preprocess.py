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

  Steps, in order: uint8 -> float32 in [0, 1]; bilinear resize to ``size``
  (Gaussian anti-aliasing when shrinking); grey -> RGB by repeating the channel,
  RGB -> grey by ITU-R 709 luma; then ``normalize``:

  - ``'unit'``: keep [0, 1];
  - ``'standardize'``: per image, subtract the mean over all pixels and
    channels and divide by ``max(std, 1 / sqrt(H * W * C))`` (as
    ``tf.image.per_image_standardization``). It needs no statistics of any
    split, so any two domains can be paired.

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
  """
  size: tuple[int, int] = (28, 28)
  channels: int = 1
  normalize: str = "unit"
  augment: bool = False
  max_shift: int = 2

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
    if x.shape[1:3] != self.size:
      shrinking = x.shape[1] > self.size[0] or x.shape[2] > self.size[1]
      x = transform.resize(x, (x.shape[0], *self.size, x.shape[3]), order=1,
                           anti_aliasing=shrinking, preserve_range=True).astype(np.float32)
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
