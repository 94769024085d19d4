"""A dense layer whose bias gradient is a matmul.

Autodiff of `y = x W + b` sums the cotangent of y over every leading axis
for b's gradient, and XLA:CPU splits so large a sum into a tree of
reduce-windows, some twenty times slower than a matmul by a vector of ones:
2.0-2.2 ms against 0.1 ms for a [40, 64, 512] projection of the BiLSTM step,
whose largest op it was on a 2-core CPU (`python -m benchmarks.profile_step`). `Dense` is
`nn.Dense` (same parameter names, shapes and initial values) with that
gradient; the sum is the same in another order, so results agree to float
rounding. (The seed CNN's convolutions keep `nn.Conv`: the same change
measured no faster there.)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@jax.custom_vjp
def add_bias(x, bias):
  """`x [..., F] + bias [F]`; bias's gradient is (ones @ cotangent rows)."""
  return x + bias


def _add_bias_fwd(x, bias):
  return x + bias, None


def _add_bias_bwd(_, cotangent):
  rows = cotangent.reshape(-1, cotangent.shape[-1])
  return cotangent, jnp.ones(rows.shape[0], rows.dtype) @ rows


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


class Dense(nn.Module):
  """`nn.Dense` (kernel [D, features], bias [features]) with `add_bias`."""
  features: int
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (x.shape[-1], self.features))
    bias = self.param("bias", self.bias_init, (self.features,))
    return add_bias(x @ kernel, bias)
