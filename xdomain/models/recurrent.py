"""Scan-based LSTM and GRU layers over padded batches, stackable and bidirectional.

Each layer reads `inputs [B, L, D]` with `lengths [B]`. The input projection of
all time steps is one matmul outside the scan; the scan (`nn.scan` with the
parameters broadcast) only does the recurrent matmul. At steps t >= length the
state is carried unchanged and the output is zero, so nothing past a sequence's
length reaches an output, the final state or anything computed from them. A
backward layer reverses each sequence inside its own length, runs forward, and
reverses the outputs back.

Equations (x_t input, h/c state, sigma the logistic function):

LSTM (gate order i, f, g, o in the fused kernels)::

  i, f, g, o = sigma(W_i x + b_i + U_i h), sigma(...), tanh(...), sigma(...)
  c' = f * c + i * g;  h' = o * tanh(c')

GRU (the cuDNN/PyTorch variant, gate order r, z, n)::

  r = sigma(W_r x + b_r + U_r h + d_r);  z = sigma(W_z x + b_z + U_z h + d_z)
  n = tanh(W_n x + b_n + r * (U_n h + d_n));  h' = (1 - z) * n + z * h

Parameters per layer: `ih/kernel [D, G*H]`, `ih/bias [G*H]`, and
`cell/hh/kernel [H, G*H]` (GRU also `cell/hh/bias [3H]`), G = 4 (LSTM) or 3 (GRU).
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from xdomain.models import inputs as inputs_lib


def _lstm_bias_init(key, shape, dtype=jnp.float32):
  """Zero bias except 1 on the forget gate, so early training keeps memory."""
  del key
  hidden = shape[0] // 4
  return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(1.0)


class _LSTMStep(nn.Module):
  """One masked LSTM step; `xs` holds the projected input and the step mask."""
  hidden_size: int

  @nn.compact
  def __call__(self, carry, xs):
    c, h = carry
    projected, mask = xs
    gates = projected + nn.Dense(
        4 * self.hidden_size, use_bias=False,
        kernel_init=nn.initializers.orthogonal(), name="hh")(h)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
    new_c = jnp.where(mask, new_c, c)
    new_h = jnp.where(mask, new_h, h)
    return (new_c, new_h), jnp.where(mask, new_h, 0.0)


class _GRUStep(nn.Module):
  """One masked GRU step; `xs` holds the projected input and the step mask."""
  hidden_size: int

  @nn.compact
  def __call__(self, carry, xs):
    h = carry
    projected, mask = xs
    recurrent = nn.Dense(
        3 * self.hidden_size, kernel_init=nn.initializers.orthogonal(),
        name="hh")(h)
    x_r, x_z, x_n = jnp.split(projected, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(recurrent, 3, axis=-1)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    new_h = jnp.where(mask, (1.0 - z) * n + z * h, h)
    return new_h, jnp.where(mask, new_h, 0.0)


class _RecurrentLayer(nn.Module):
  """Shared driver of the LSTM and GRU layers (see the module docstring)."""
  hidden_size: int
  reverse: bool = False

  # Set by subclasses; ClassVars so they are not dataclass fields.
  _step: ClassVar[Any]
  _num_gates: ClassVar[int]
  _bias_init: ClassVar[Any] = staticmethod(nn.initializers.zeros)

  def _initial_carry(self, batch: int, dtype):
    raise NotImplementedError

  def _final_state(self, carry):
    raise NotImplementedError

  @nn.compact
  def __call__(self, inputs, lengths):
    """Runs the layer over a padded batch.

    Args:
      inputs: float [B, L, D].
      lengths: int [B], valid steps per sequence (clipped to [0, L]).

    Returns:
      (outputs [B, L, H], zero at t >= length; final [B, H], the hidden state
      after the last valid step, i.e. at t = length - 1 going forward and at
      t = 0 going backward; zeros for length 0).
    """
    if inputs.ndim != 3:
      raise ValueError(f"inputs must be [B, L, D]; got shape {inputs.shape}.")
    if lengths.shape != inputs.shape[:1]:
      raise ValueError(
          f"lengths must be [B] = {inputs.shape[:1]}; got shape {lengths.shape}.")
    batch, max_length, _ = inputs.shape
    lengths = jnp.clip(lengths, 0, max_length)
    if self.reverse:
      inputs = inputs_lib.reverse_within_length(inputs, lengths)
    projected = nn.Dense(
        self._num_gates * self.hidden_size, bias_init=self._bias_init,
        name="ih")(inputs)
    mask = inputs_lib.sequence_mask(lengths, max_length)[..., None]
    scan = nn.scan(
        self._step, variable_broadcast="params", split_rngs={"params": False},
        in_axes=1, out_axes=1)
    carry, outputs = scan(self.hidden_size, name="cell")(
        self._initial_carry(batch, projected.dtype), (projected, mask))
    if self.reverse:
      outputs = inputs_lib.reverse_within_length(outputs, lengths)
    return outputs, self._final_state(carry)


class LSTM(_RecurrentLayer):
  """LSTM layer over padded sequences: `(inputs, lengths) -> (outputs, final)`.

  Attributes:
    hidden_size: H.
    reverse: read each sequence backwards inside its length.
  """
  _step: ClassVar[Any] = _LSTMStep
  _num_gates: ClassVar[int] = 4
  _bias_init: ClassVar[Any] = staticmethod(_lstm_bias_init)

  def _initial_carry(self, batch, dtype):
    zeros = jnp.zeros((batch, self.hidden_size), dtype)
    return zeros, zeros

  def _final_state(self, carry):
    return carry[1]


class GRU(_RecurrentLayer):
  """GRU layer over padded sequences: `(inputs, lengths) -> (outputs, final)`.

  Attributes:
    hidden_size: H.
    reverse: read each sequence backwards inside its length.
  """
  _step: ClassVar[Any] = _GRUStep
  _num_gates: ClassVar[int] = 3

  def _initial_carry(self, batch, dtype):
    return jnp.zeros((batch, self.hidden_size), dtype)

  def _final_state(self, carry):
    return carry


CELLS = {"lstm": LSTM, "gru": GRU}


class RNNEncoder(nn.Module):
  """Stacked, optionally bidirectional LSTM/GRU over padded sequences.

  Layer k is `fwd_k` (and `bwd_k` when bidirectional); the directions of a
  layer are concatenated `[forward | backward]` before the next layer.

  Attributes:
    cell: 'lstm' or 'gru'.
    hidden_size: H per direction.
    num_layers: stacked layers.
    bidirectional: add a backward layer at each level.
    dropout_rate: dropout on the outputs between layers (not after the last).
  """
  cell: str = "lstm"
  hidden_size: int = 128
  num_layers: int = 1
  bidirectional: bool = False
  dropout_rate: float = 0.0

  @property
  def output_size(self) -> int:
    return self.hidden_size * (2 if self.bidirectional else 1)

  @nn.compact
  def __call__(self, inputs, lengths, *, train: bool = False):
    """Encodes a padded batch.

    Args:
      inputs: float [B, L, D].
      lengths: int [B].
      train: enables dropout between layers ('dropout' rng).

    Returns:
      (outputs [B, L, D_out] zero past each length, final [B, D_out]) of the
      last layer, D_out = H * (2 if bidirectional else 1); `final` joins the
      forward state after the last valid step and the backward state after
      reading back to step 0.
    """
    if self.cell not in CELLS:
      raise ValueError(f"cell must be one of {sorted(CELLS)}; got {self.cell!r}.")
    if self.num_layers < 1:
      raise ValueError(f"num_layers must be >= 1; got {self.num_layers}.")
    layer_cls = CELLS[self.cell]
    x, final = inputs, None
    for k in range(self.num_layers):
      if k > 0:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      outputs, final = layer_cls(self.hidden_size, name=f"fwd_{k}")(x, lengths)
      if self.bidirectional:
        back_out, back_final = layer_cls(
            self.hidden_size, reverse=True, name=f"bwd_{k}")(x, lengths)
        outputs = jnp.concatenate([outputs, back_out], axis=-1)
        final = jnp.concatenate([final, back_final], axis=-1)
      x = outputs
    return x, final
