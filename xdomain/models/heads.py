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
  """
  num_classes: int
  hidden_sizes: Sequence[int] = ()
  dropout_rate: float = 0.0

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
    return nn.Dense(self.num_classes, name="logits")(x)


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
