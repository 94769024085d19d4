"""Image classification: images [B, H, W, C] -> one class per image."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.data.preprocess import ImagePreprocess
from xdomain.tasks import base

MAX_SHIFT = 2  # pixels of random translation per consistency view
NOISE_STDDEV = 0.1  # additive Gaussian noise per consistency view, in input units
# Flags that shape the inputs: a teacher reads the student's batches, so they
# must agree between the two runs.
_INPUT_FLAGS = ("image_size", "channels", "crop_to_content", "resolution", "normalize")


def translate_and_noise(images: jax.Array, rng: jax.Array) -> jax.Array:
  """One random view of images [B, H, W, C]: a shift of up to MAX_SHIFT pixels
  (edges padded with zeros) plus Gaussian noise."""
  shift_key, noise_key = jax.random.split(rng)
  shifts = jax.random.randint(shift_key, (images.shape[0], 2), -MAX_SHIFT, MAX_SHIFT + 1)
  padded = jnp.pad(images, ((0, 0), (MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT), (0, 0)))
  height, width = images.shape[1:3]

  def crop(image, shift):
    start = (MAX_SHIFT + shift[0], MAX_SHIFT + shift[1], 0)
    return jax.lax.dynamic_slice(image, start, (height, width, image.shape[-1]))

  shifted = jax.vmap(crop)(padded, shifts)
  return shifted + NOISE_STDDEV * jax.random.normal(noise_key, images.shape, images.dtype)


# RandAugment-style strong augmentation (FixMatch's student view), ops that
# suit digits (no flips: they change a digit's identity). Each image gets
# STRONG_NUM_OPS of the ops, drawn without replacement, each with a uniform
# random magnitude up to its maximum, then a cutout.
STRONG_OPS = ("translate", "rotate", "shear_x", "shear_y", "contrast", "brightness")
STRONG_NUM_OPS = 2
MAX_TRANSLATE = 0.25  # fraction of the image size, each axis
MAX_ROTATE_DEGREES = 30.0
MAX_SHEAR = 0.3
MAX_CONTRAST = 0.5  # contrast factor in [1 - x, 1 + x]
MAX_BRIGHTNESS = 0.3  # shift, as a fraction of the image's value range
MAX_CUTOUT = 0.5  # side of the square cut out, fraction of the image size


def _border_mean(image: jax.Array) -> jax.Array:
  """Per-channel mean of the outermost pixels of image [H, W, C]: the fill of
  what a geometric op or a cutout leaves empty (the background of a digit)."""
  border = jnp.concatenate([image[0], image[-1], image[:, 0], image[:, -1]], axis=0)
  return jnp.mean(border, axis=0)


def warp_affine(image: jax.Array, matrix: jax.Array, translation: jax.Array,
                fill: jax.Array) -> jax.Array:
  """image [H, W, C] moved by the affine map p -> matrix (p - c) + c + translation
  about its centre c ((row, column) pixel coordinates), bilinear; pixels that
  come from outside the frame get `fill` [C]: content moved out of the frame is
  clipped away, never wrapped round."""
  height, width, _ = image.shape
  centre = jnp.array([(height - 1) / 2, (width - 1) / 2], jnp.float32)
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                            jnp.arange(width, dtype=jnp.float32), indexing="ij")
  out = jnp.stack([rows.ravel(), cols.ravel()])  # [2, H*W]
  source = jnp.linalg.inv(matrix) @ (out - centre[:, None] - translation[:, None]) + centre[:, None]
  inside = ((source[0] >= -0.5) & (source[0] <= height - 0.5)
            & (source[1] >= -0.5) & (source[1] <= width - 0.5))

  def channel(values, fill_value):
    sampled = jax.scipy.ndimage.map_coordinates(values, list(source), order=1, mode="nearest")
    return jnp.where(inside, sampled, fill_value).reshape(height, width)

  return jax.vmap(channel, in_axes=(-1, 0), out_axes=-1)(image, fill)


def _strong_augment_one(image: jax.Array, rng: jax.Array) -> jax.Array:
  height, width, _ = image.shape
  ops_key, magnitude_key, cutout_key = jax.random.split(rng, 3)
  chosen = jax.random.permutation(ops_key, len(STRONG_OPS))[:STRONG_NUM_OPS]
  on = dict(zip(STRONG_OPS, jnp.zeros(len(STRONG_OPS)).at[chosen].set(1.0)))
  u = jax.random.uniform(magnitude_key, (7,), minval=-1.0, maxval=1.0)
  fill = _border_mean(image)
  angle = jnp.deg2rad(MAX_ROTATE_DEGREES) * u[0] * on["rotate"]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  rotation = jnp.array([[cos, -sin], [sin, cos]])
  shear = jnp.array([[1.0, MAX_SHEAR * u[1] * on["shear_y"]],
                     [MAX_SHEAR * u[2] * on["shear_x"], 1.0]])
  translation = MAX_TRANSLATE * jnp.array([height, width]) * u[3:5] * on["translate"]
  image = warp_affine(image, rotation @ shear, translation, fill)
  mean = jnp.mean(image, axis=(0, 1))
  image = mean + (1.0 + MAX_CONTRAST * u[5] * on["contrast"]) * (image - mean)
  value_range = jnp.max(image) - jnp.min(image)
  image = image + MAX_BRIGHTNESS * u[6] * on["brightness"] * value_range
  # Cutout (always, as FixMatch's RandAugment): a square of random side and centre.
  size_key, centre_key = jax.random.split(cutout_key)
  half = jax.random.uniform(size_key, (), maxval=MAX_CUTOUT / 2) * jnp.array([height, width])
  centre = jax.random.uniform(centre_key, (2,)) * jnp.array([height, width])
  rows, cols = jnp.arange(height)[:, None] + 0.5, jnp.arange(width)[None, :] + 0.5
  cut = (jnp.abs(rows - centre[0]) < half[0]) & (jnp.abs(cols - centre[1]) < half[1])
  return jnp.where(cut[..., None], fill, image)


def strong_augment(images: jax.Array, rng: jax.Array) -> jax.Array:
  """A RandAugment-style strong view of images [B, H, W, C], one draw per image.

  Each image gets STRONG_NUM_OPS ops of STRONG_OPS (translate, rotate,
  shear_x, shear_y, contrast, brightness; no flips), drawn without replacement
  with uniform random magnitudes up to their maxima, then a cutout of up to
  MAX_CUTOUT of the size; what a geometric op moves out of the frame is lost
  and what it leaves empty, like the cutout, takes the mean of the image's
  border. Seeded and jittable: the same key gives the same view.

  References:
    Cubuk et al., "RandAugment", CVPR workshops 2020; Sohn et al., "FixMatch",
    NeurIPS 2020 (RandAugment with random magnitudes, plus cutout).
  """
  if images.ndim != 4:
    raise ValueError(f"images must have shape [B, H, W, C], got shape {tuple(images.shape)}.")
  keys = jax.random.split(rng, images.shape[0])
  return jax.vmap(_strong_augment_one)(images, keys).astype(images.dtype)


class ImageClassification(base.Task):
  """Images of any size, resized and normalised alike for every domain."""

  name = "image_classification"

  def make_preprocess(self, config: Config, workdir: str, *, write: bool) -> ImagePreprocess:
    del workdir, write
    return ImagePreprocess(
        size=(config.image_size, config.image_size), channels=config.channels,
        normalize=config.normalize, augment=config.augment,
        crop_to_content=config.crop_to_content, resolution=config.resolution)

  def check_teacher(self, teacher: Config, student: Config, teacher_workdir: str) -> None:
    differ = [f"--{n}: teacher {getattr(teacher, n)!r}, student {getattr(student, n)!r}"
              for n in _INPUT_FLAGS if getattr(teacher, n) != getattr(student, n)]
    if differ:
      raise ConfigError(
          f"the teacher in {teacher_workdir} was trained on other inputs"
          f" ({'; '.join(differ)}); run the student with the teacher's preprocessing flags.")

  def sample_part(self, config: Config) -> dict[str, np.ndarray]:
    return {"image": np.zeros((1, config.image_size, config.image_size, config.channels),
                              np.float32),
            "label": np.zeros((1,), np.int32)}

  def model_inputs(self, part: base.Part) -> base.Inputs:
    return (part["image"],)

  def consistency_views(self, inputs: base.Inputs, rng: jax.Array, config: Config
                        ) -> tuple[base.Inputs, base.Inputs]:
    """Two independent shifted, noisy views."""
    del config
    student_key, teacher_key = jax.random.split(rng)
    return ((translate_and_noise(inputs[0], student_key),),
            (translate_and_noise(inputs[0], teacher_key),))

  def strong_view(self, inputs: base.Inputs, rng: jax.Array, config: Config) -> base.Inputs:
    """`strong_augment`: RandAugment-style ops for digits and a cutout."""
    del config
    return (strong_augment(inputs[0], rng),)
