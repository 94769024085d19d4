"""Checks and masks for the inputs every model takes (images, token batches)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def check_images(images, name: str = "images") -> None:
  """Raises ValueError unless `images` is a float array [B, H, W, C]."""
  if getattr(images, "ndim", None) != 4:
    raise ValueError(
        f"{name} must be a float array [B, H, W, C]; got shape "
        f"{getattr(images, 'shape', type(images))}.")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"{name} must be floating point; got dtype {images.dtype}.")


def check_tokens(tokens, lengths) -> None:
  """Raises ValueError unless tokens is int [B, L] and lengths is int [B]."""
  if getattr(tokens, "ndim", None) != 2:
    raise ValueError(
        "tokens must be an int32 array [B, L] (padding id 0); got shape "
        f"{getattr(tokens, 'shape', type(tokens))}.")
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(f"tokens must be integer ids; got dtype {tokens.dtype}.")
  if getattr(lengths, "shape", None) != tokens.shape[:1]:
    raise ValueError(
        f"lengths must be an int32 array [B] = {tokens.shape[:1]} matching "
        f"tokens {tokens.shape}; got shape {getattr(lengths, 'shape', type(lengths))}.")
  if not jnp.issubdtype(lengths.dtype, jnp.integer):
    raise ValueError(f"lengths must be integers; got dtype {lengths.dtype}.")
  # Concrete lengths (outside jit) are checked here; traced ones are clipped
  # by the models to [0, L].
  if not isinstance(lengths, jax.core.Tracer) and lengths.size:
    values = np.asarray(lengths)
    if values.min() < 0 or values.max() > tokens.shape[1]:
      raise ValueError(
          f"lengths must lie in [0, L={tokens.shape[1]}]; got min {values.min()} "
          f"and max {values.max()}.")


def words_to_unk(tokens, rng, rate: float, unk_id: int = 1):
  """Replaces each real token of tokens int [B, L] (padding: id 0) by `unk_id`
  with probability `rate`.

  Returns:
    The new tokens, and bool [B, L]: True where a token was replaced.
  """
  dropped = jax.random.bernoulli(rng, rate, tokens.shape) & (tokens != 0)
  return jnp.where(dropped, unk_id, tokens), dropped


def sequence_mask(lengths, max_length: int):
  """Returns bool [B, L]: True at positions t < lengths[b]."""
  return jnp.arange(max_length)[None, :] < lengths[:, None]


def reverse_within_length(x, lengths):
  """Reverses each sequence of x [B, L, ...] inside its own length.

  Position t < lengths[b] receives position lengths[b] - 1 - t; padded positions
  stay in place. The map is its own inverse.

  Args:
    x: [B, L, ...] array.
    lengths: int [B].

  Returns:
    Array of the same shape as x.
  """
  steps = jnp.arange(x.shape[1])[None, :]
  index = jnp.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
  index = index.reshape(index.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, index, axis=1)
