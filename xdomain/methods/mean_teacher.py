"""Mean teacher / self-ensembling for domain adaptation (French et al., ICLR 2018).

The teacher is an exponential moving average of the student (kept by the
engine, `--ema_decay`); the student is pulled towards the teacher's class
probabilities on two different random views of each target example (shifted,
noisy images; text with tokens dropped to <unk> for the student), where the
teacher is confident (`--confidence_threshold`, 0 keeps every example).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xdomain import losses
from xdomain.data import text
from xdomain.methods import base
from xdomain.models import inputs as model_inputs
from xdomain.config import Config

MAX_SHIFT = 2  # pixels of random translation per view
NOISE_STDDEV = 0.1  # additive Gaussian noise per view, in input units


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


def drop_tokens(inputs: tuple[jax.Array, ...], rng: jax.Array, rate: float
                ) -> tuple[jax.Array, ...]:
  """Text inputs `(tokens [B, L], lengths[, chars [B, L, W]])` with each real
  token replaced by <unk> with probability `rate`, its characters (if any) by
  padding, so neither the embedding nor the character CNN sees the word;
  padding stays padding."""
  tokens, *rest = inputs
  tokens, dropped = model_inputs.words_to_unk(tokens, rng, rate, text.UNK_ID)
  if len(rest) == 2:  # character ids of a tagger's character CNN
    lengths, chars = rest
    # Character id 0 pads too (`text.encode_chars`).
    return tokens, lengths, jnp.where(dropped[..., None], text.PAD_ID, chars)
  return (tokens, *rest)


def make_views(token_dropout: float):
  """`(inputs, rng) -> (student inputs, teacher inputs)` of the target.

  Images: two independent shifted, noisy views. Text: the student's view loses
  words to <unk> (`token_dropout`; a tagger's character CNN loses their
  characters too), so it must read them from context as it must for words it
  never saw labelled; the teacher sees the text as is. Model dropout makes the
  two views differ further.
  """

  def views(inputs: tuple[jax.Array, ...], rng: jax.Array):
    student_key, teacher_key = jax.random.split(rng)
    first = inputs[0]
    if first.ndim == 4 and jnp.issubdtype(first.dtype, jnp.floating):
      return ((translate_and_noise(first, student_key),),
              (translate_and_noise(first, teacher_key),))
    if token_dropout:
      return drop_tokens(inputs, student_key, token_dropout), inputs
    return inputs, inputs

  return views


def make_mean_teacher(config: Config) -> base.Method:
  """Confidence-thresholded squared-probability consistency to an EMA teacher."""
  threshold = config.confidence_threshold or None

  def terms(outputs, aux_params, rng, step):
    del aux_params, rng, step
    student, mask = base.flatten_tokens(outputs.target_logits, outputs.target_mask)
    teacher, _ = base.flatten_tokens(outputs.teacher_target_logits, outputs.target_mask)
    per_example = losses.consistency(student, jax.lax.stop_gradient(teacher),
                                     confidence_threshold=threshold, where=mask)
    return {"consistency": base.masked_mean(per_example, mask)}

  return base.Method(name="mean_teacher", terms=terms,
                     weights={"consistency": base.adaptation_weight(config)},
                     ema_decay=config.ema_decay,
                     target_views=make_views(config.token_dropout))
