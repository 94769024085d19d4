"""Heads: the classifier/tagger heads and the DANN domain discriminator."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class ClassifierHead(nn.Module):
  """Classifier head: features [B, D] (or [B, L, D]) -> logits [..., num_classes].

  Attributes:
    num_classes: number of classes (or tags).
    hidden_sizes: optional hidden layers before the output layer.
    dropout_rate: dropout on the head's inputs and hidden layers.
    weight_norm: weight-normalise the output layer (`WeightNormDense`, SHOT's
      source hypothesis).
  """
  num_classes: int
  hidden_sizes: Sequence[int] = ()
  dropout_rate: float = 0.0
  weight_norm: bool = False

  @nn.compact
  def __call__(self, features, *, train: bool = False):
    if features.ndim not in (2, 3):
      raise ValueError(
          f"features must be [B, D] or [B, L, D]; got shape {features.shape}.")
    x = features
    for k, size in enumerate(self.hidden_sizes):
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.relu(nn.Dense(size, name=f"hidden_{k}")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    if self.weight_norm:
      return WeightNormDense(self.num_classes, name="logits")(x)
    return nn.Dense(self.num_classes, name="logits")(x)


class WeightNormDense(nn.Module):
  r"""Dense layer with weight normalisation: each output unit's weight vector
  is a learned length times a unit direction.

  .. math::
    y_k = g_k \frac{v_k^\top x}{\lVert v_k \rVert} + b_k

  Parameters `direction` (v, [D, features]), `scale` (g, [features]; initialised
  to the initial columns' norms, so the layer starts as the Dense layer with
  kernel v) and `bias`. SHOT freezes this layer as the source hypothesis.

  References:
    Salimans & Kingma, "Weight Normalization", NeurIPS 2016.
  """
  features: int

  @nn.compact
  def __call__(self, x):
    direction = self.param("direction", nn.initializers.lecun_normal(),
                           (x.shape[-1], self.features))
    scale = self.param("scale", lambda rng, shape: jnp.linalg.norm(direction, axis=0),
                       (self.features,))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    kernel = direction * (scale / jnp.linalg.norm(direction, axis=0))
    return x @ kernel.astype(x.dtype) + bias


class DomainDiscriminator(nn.Module):
  """Domain classifier of DANN/CDAN: features -> one logit (target vs source).

  The gradient reversal belongs to the method, not to this module. Hidden
  layers are Dense + ReLU + dropout (Ganin et al. 2016 use 1024-1024-1).

  Attributes:
    hidden_sizes: hidden layer sizes.
    dropout_rate: dropout after each hidden layer ('dropout' rng when training).

  References:
    Ganin et al. Domain-Adversarial Training of Neural Networks. JMLR 2016.
  """
  hidden_sizes: Sequence[int] = (1024, 1024)
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, features, *, train: bool = False):
    """Scores features [B, D] -> [B], or token features [B, L, D] -> [B, L]."""
    if features.ndim not in (2, 3):
      raise ValueError(
          f"features must be [B, D] or [B, L, D]; got shape {features.shape}.")
    x = features
    for k, size in enumerate(self.hidden_sizes):
      x = nn.relu(nn.Dense(size, name=f"hidden_{k}")(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return jnp.squeeze(nn.Dense(1, name="logit")(x), axis=-1)
