"""Scan-based LSTM and GRU layers over padded batches, stackable and bidirectional.

Each layer reads `inputs [B, L, D]` with `lengths [B]`. The input projection of
all time steps is one matmul outside the scan, made time-major ([L, B, G*H]) as
the scan reads it, so that only the narrower inputs are transposed; its bias
gradient is a matmul too (`layers.Dense`). The scan only does the recurrent matmul
(the LSTM's with a written-out gradient, `lstm_recurrence`).
At steps t >= length the state is carried unchanged and the output is zero, so
nothing past a sequence's length reaches an output, the final state or anything
computed from them. A backward layer reverses each sequence inside its own
length, runs forward, and reverses the outputs back.

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
from xdomain.models import layers


def _lstm_bias_init(key, shape, dtype=jnp.float32):
  """Zero bias except 1 on the forget gate, so early training keeps memory."""
  del key
  hidden = shape[0] // 4
  return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(1.0)


def _lstm_scan(kernel, projected, mask):
  """The masked LSTM over time-major inputs, keeping what its gradient needs.

  Args:
    kernel: U [H, 4H].
    projected: W x + b, float [L, B, 4H].
    mask: bool [L, B, 1], the valid steps.

  Returns:
    (outputs [L, B, H] zero at invalid steps, final h [B, H], residuals): the
    activated gates, tanh(c') and the state each step read.
  """
  hidden = kernel.shape[0]
  zeros = jnp.zeros((projected.shape[1], hidden), projected.dtype)

  def step(carry, xs):
    c, h = carry
    gates_in, valid = xs
    i, f, g, o = jnp.split(gates_in + h @ kernel, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    new_c = f * c + i * g
    tanh_c = jnp.tanh(new_c)
    new_h = o * tanh_c
    carry = jnp.where(valid, new_c, c), jnp.where(valid, new_h, h)
    return carry, (jnp.where(valid, new_h, 0.0), (i, f, g, o, tanh_c, c, h))

  (_, final), (outputs, residuals) = jax.lax.scan(step, (zeros, zeros), (projected, mask))
  return outputs, final, residuals


@jax.custom_vjp
def lstm_recurrence(kernel, projected, mask):
  """`(outputs [L, B, H], final h [B, H])` of a masked LSTM from zero state.

  At invalid steps the state is carried unchanged and the output is zero. The
  gradient is written out (`_lstm_recurrence_bwd`) rather than left to
  autodiff: its backward scan does one matmul per step, dgates U^T, and dU is
  one matmul over all steps after it, where autodiff accumulates h^T dgates
  step by step. The step is bound by per-step work on a CPU.
  """
  outputs, final, _ = _lstm_scan(kernel, projected, mask)
  return outputs, final


def _lstm_recurrence_fwd(kernel, projected, mask):
  outputs, final, residuals = _lstm_scan(kernel, projected, mask)
  return (outputs, final), (kernel, mask, residuals)


def _lstm_recurrence_bwd(saved, cotangents):
  kernel, mask, (i, f, g, o, tanh_c, c_prev, h_prev) = saved
  d_outputs, d_final = cotangents
  kernel_t = kernel.T

  def step(carry, xs):
    d_c, d_h = carry  # cotangents of the state after this step
    i, f, g, o, tanh_c, c_prev, valid, d_out = xs
    # Invalid steps pass the state through: their cotangent goes to the
    # state before them untouched, and nothing reaches their gates.
    d_h_new = jnp.where(valid, d_h + d_out, 0.0)
    d_c_new = jnp.where(valid, d_c, 0.0) + d_h_new * o * (1.0 - tanh_c * tanh_c)
    d_gates = jnp.concatenate([
        d_c_new * g * i * (1.0 - i), d_c_new * c_prev * f * (1.0 - f),
        d_c_new * i * (1.0 - g * g), d_h_new * tanh_c * o * (1.0 - o)], axis=-1)
    d_h_prev = d_gates @ kernel_t + jnp.where(valid, 0.0, d_h)
    d_c_prev = d_c_new * f + jnp.where(valid, 0.0, d_c)
    return (d_c_prev, d_h_prev), d_gates

  _, d_gates = jax.lax.scan(
      step, (jnp.zeros_like(d_final), d_final),
      (i, f, g, o, tanh_c, c_prev, mask, d_outputs), reverse=True)
  d_kernel = jnp.einsum("lbh,lbg->hg", h_prev, d_gates)
  return d_kernel, d_gates, None


lstm_recurrence.defvjp(_lstm_recurrence_fwd, _lstm_recurrence_bwd)


class _RecurrentKernel(nn.Module):
  """The recurrent kernel U [H, G*H] as a parameter `kernel`."""
  shape: tuple[int, int]

  @nn.compact
  def __call__(self):
    return self.param("kernel", nn.initializers.orthogonal(), self.shape)


class _LSTMCell(nn.Module):
  """Holds U at `cell/hh/kernel`, where a scanned `nn.Dense` would (so
  checkpoints of either layout load), and runs `lstm_recurrence`."""
  hidden_size: int

  @nn.compact
  def __call__(self, projected, mask):
    kernel = _RecurrentKernel((self.hidden_size, 4 * self.hidden_size), name="hh")()
    return lstm_recurrence(kernel, projected, mask)


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
  _num_gates: ClassVar[int]
  _bias_init: ClassVar[Any] = staticmethod(nn.initializers.zeros)

  def _recur(self, projected, mask):
    """(outputs [L, B, H], final [B, H]) from the time-major projected inputs
    [L, B, G*H] and step mask [L, B, 1]; its parameters live in `cell`."""
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
    max_length = inputs.shape[1]
    lengths = jnp.clip(lengths, 0, max_length)
    if self.reverse:
      inputs = inputs_lib.reverse_within_length(inputs, lengths)
    projected = layers.Dense(self._num_gates * self.hidden_size, bias_init=self._bias_init,
                             name="ih")(inputs.swapaxes(0, 1))
    mask = inputs_lib.sequence_mask(lengths, max_length).T[..., None]
    outputs, final = self._recur(projected, mask)
    outputs = outputs.swapaxes(0, 1)
    if self.reverse:
      outputs = inputs_lib.reverse_within_length(outputs, lengths)
    return outputs, final


class LSTM(_RecurrentLayer):
  """LSTM layer over padded sequences: `(inputs, lengths) -> (outputs, final)`.

  Attributes:
    hidden_size: H.
    reverse: read each sequence backwards inside its length.
  """
  _num_gates: ClassVar[int] = 4
  _bias_init: ClassVar[Any] = staticmethod(_lstm_bias_init)

  def _recur(self, projected, mask):
    return _LSTMCell(self.hidden_size, name="cell")(projected, mask)


class GRU(_RecurrentLayer):
  """GRU layer over padded sequences: `(inputs, lengths) -> (outputs, final)`.

  Attributes:
    hidden_size: H.
    reverse: read each sequence backwards inside its length.
  """
  _num_gates: ClassVar[int] = 3

  def _recur(self, projected, mask):
    scan = nn.scan(
        _GRUStep, variable_broadcast="params", split_rngs={"params": False})
    initial = jnp.zeros((projected.shape[1], self.hidden_size), projected.dtype)
    final, outputs = scan(self.hidden_size, name="cell")(initial, (projected, mask))
    return outputs, final


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
