"""ImagePreprocess's crop to the ink and common resolution."""

import numpy as np
import pytest
from skimage import transform

from xdomain.data import preprocess


def _blob(size, top, left, height, width, value=200):
  image = np.zeros((1, size, size, 1), np.uint8)
  image[0, top:top + height, left:left + width] = value
  return image


def test_crop_to_ink_takes_the_square_around_the_ink():
  # A 6 (tall) x 4 (wide) box at rows 10..15, cols 3..6 of a 28x28 frame: the
  # crop is the 6x6 square centred on it, rows 10..15, cols 2..7.
  image = _blob(28, 10, 3, 6, 4).astype(np.float32) / 255
  image[0, 12, 4] = 0.05  # below the threshold: not ink, kept inside the crop
  out = preprocess.crop_to_ink(image[0], (6, 6), 0.3)
  np.testing.assert_array_equal(out, image[0, 10:16, 2:8])


def test_crop_to_ink_pads_with_the_border_where_the_square_leaves_the_frame():
  # A 1x5 stroke on the top row: the 5x5 square reaches 2 rows above the frame.
  image = np.zeros((8, 8, 1), np.float32)
  image[0, 1:6] = 1.0
  out = preprocess.crop_to_ink(image, (5, 5), 0.5)
  expected = np.zeros((5, 5, 1), np.float32)
  expected[:3] = 1.0  # two border copies of row 0, then row 0 itself
  np.testing.assert_array_equal(out, expected)


def _reference_crop(image, size, threshold):
  """One image's crop, written out as the docstring says (edge padding)."""
  h, w, c = image.shape
  grey = image[..., 0] if c == 1 else image @ np.array([0.2125, 0.7154, 0.0721], np.float32)
  ink = grey > threshold * grey.max() if grey.max() > 0 else np.zeros_like(grey, bool)
  if not ink.any():
    square = image
  else:
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = max(bottom - top, right - left)
    y0, x0 = (top + bottom - side) // 2, (left + right - side) // 2
    pad = max(0, -y0, -x0, y0 + side - h, x0 + side - w)
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    square = padded[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
  shrinking = square.shape[0] > size[0] or square.shape[1] > size[1]
  if square.shape[:2] == tuple(size):
    return square
  return transform.resize(square, (*size, c), order=1, anti_aliasing=shrinking,
                          preserve_range=True).astype(np.float32)


@pytest.mark.parametrize("channels", [1, 3])
def test_cropping_a_stack_gives_each_image_its_own_crop(channels):
  # Blobs of several sizes (so crops of several sides), a stroke on the top row
  # (its square leaves the frame: padded), one filling the frame, an image
  # without ink: each crop of the stack equals the image cropped by the
  # written-out rule and resized alone.
  rng = np.random.default_rng(0)
  images = np.zeros((12, 20, 20, channels), np.float32)
  for i, image in enumerate(images[3:]):
    top, left = rng.integers(0, 14, size=2)
    image[top:top + 2 + i % 5, left:left + 1 + i % 3] = rng.uniform(0.5, 1.0, channels)
  images[1, 0, 5:10] = 0.9
  images[2, 0, 0] = images[2, 19, 19] = 0.8
  images += rng.uniform(0, 0.1, images.shape).astype(np.float32) * (images > 0)
  stacked = preprocess.crop_all_to_ink(images, (7, 7), 0.3)
  expected = [_reference_crop(image, (7, 7), 0.3) for image in images]
  np.testing.assert_array_equal(stacked, np.stack(expected))
  np.testing.assert_array_equal(stacked[0], 0.0)


def test_crop_to_ink_keeps_an_image_without_ink_whole():
  image = np.zeros((12, 12, 3), np.float32)
  out = preprocess.crop_to_ink(image, (6, 6), 0.3)
  assert out.shape == (6, 6, 3) and not out.any()


def test_small_and_frame_filling_digits_come_out_alike():
  # The same 8x8 box drawn small in a wide margin and filling its own frame.
  small = _blob(28, 10, 10, 8, 8)
  full = _blob(8, 0, 0, 8, 8)
  prep = preprocess.ImagePreprocess(size=(16, 16), crop_to_content=True)
  np.testing.assert_allclose(prep.prepare({"image": small})["image"],
                             prep.prepare({"image": full})["image"], atol=1e-6)
  plain = preprocess.ImagePreprocess(size=(16, 16))
  assert np.abs(plain.prepare({"image": small})["image"]
                - plain.prepare({"image": full})["image"]).max() > 0.5


def test_resolution_passes_through_the_common_size():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
  out = preprocess.ImagePreprocess(size=(16, 16), resolution=8).prepare(
      {"image": images, "label": np.arange(3)})
  x = images.astype(np.float32) / 255
  x = transform.resize(x, (3, 8, 8, 1), order=1, anti_aliasing=True, preserve_range=True)
  x = transform.resize(x, (3, 16, 16, 1), order=1, anti_aliasing=False, preserve_range=True)
  np.testing.assert_allclose(out["image"], x, atol=1e-6)
  np.testing.assert_array_equal(out["label"], np.arange(3))
  # At the resolution already, only the final resize acts.
  low = images[:, :8, :8]
  direct = preprocess.ImagePreprocess(size=(16, 16)).prepare({"image": low})["image"]
  via = preprocess.ImagePreprocess(size=(16, 16), resolution=8).prepare({"image": low})["image"]
  np.testing.assert_array_equal(direct, via)


@pytest.mark.parametrize("kwargs, message", [
    ({"ink_threshold": 1.0}, "ink_threshold"),
    ({"resolution": -1}, "resolution"),
    ({"resolution": 2.5}, "resolution"),
])
def test_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    preprocess.ImagePreprocess(**kwargs)


def test_crop_to_ink_checks_its_image():
  with pytest.raises(ValueError, match=r"image must be \[h, w, 1 or 3\]"):
    preprocess.crop_to_ink(np.zeros((4, 4), np.float32), (4, 4), 0.3)
  with pytest.raises(ValueError, match=r"images must be \[n, h, w, 1 or 3\]"):
    preprocess.crop_all_to_ink(np.zeros((2, 4, 4, 2), np.float32), (4, 4), 0.3)
