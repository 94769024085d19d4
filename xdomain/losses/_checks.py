"""Argument checks and dtype promotion shared by the loss modules."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def as_float(x: Any) -> jax.Array:
  """Returns `x` as an array in at least float32, so bf16/f16 inputs accumulate in f32."""
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.floating):
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return x.astype(jnp.float32)


def check_ndim(x: jax.Array, ndim: int, name: str, expected: str) -> None:
  """Raises a `ValueError` naming `name` unless `x` has `ndim` dimensions."""
  if x.ndim != ndim:
    raise ValueError(f"{name} must have shape {expected}, got shape {tuple(x.shape)}.")


def check_min_ndim(x: jax.Array, ndim: int, name: str, expected: str) -> None:
  """Raises a `ValueError` naming `name` unless `x` has at least `ndim` dimensions."""
  if x.ndim < ndim:
    raise ValueError(f"{name} must have shape {expected}, got shape {tuple(x.shape)}.")


def check_same_shape(a: jax.Array, b: jax.Array, name_a: str, name_b: str) -> None:
  """Raises a `ValueError` unless `a` and `b` have the same shape."""
  if a.shape != b.shape:
    raise ValueError(
        f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and "
        f"{tuple(b.shape)}.")


def mask(where: Any, shape: tuple[int, ...], name: str) -> jax.Array:
  """Returns `where` as a boolean array of exactly `shape` (all True when None)."""
  if where is None:
    return jnp.ones(shape, dtype=bool)
  where = jnp.asarray(where)
  if where.shape != tuple(shape):
    raise ValueError(
        f"{name} must have shape {tuple(shape)} (one entry per example), got shape "
        f"{tuple(where.shape)}.")
  return where.astype(bool)


def per_example_weights(weights: Any, shape: tuple[int, ...], name: str) -> jax.Array:
  """Returns float weights of exactly `shape` (all ones when None)."""
  if weights is None:
    return jnp.ones(shape, dtype=jnp.float32)
  weights = as_float(weights)
  if weights.shape != tuple(shape):
    raise ValueError(
        f"{name} must have shape {tuple(shape)} (one weight per example), got shape "
        f"{tuple(weights.shape)}.")
  return weights
