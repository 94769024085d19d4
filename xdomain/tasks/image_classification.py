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
