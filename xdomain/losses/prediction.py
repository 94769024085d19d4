"""Losses on the structure of target predictions: entropy minimisation and MCC."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xdomain.losses import _checks


def _entropy_from_logits(logits: jax.Array) -> jax.Array:
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  probs = jnp.exp(log_probs)
  # 0 log 0 = 0 for classes whose probability is 0 (a -inf logit) or underflows;
  # the log is clipped to a finite value first, so the gradient is finite too.
  log_probs = jnp.maximum(log_probs, jnp.finfo(log_probs.dtype).min)
  return -jnp.sum(jnp.where(probs > 0, probs * log_probs, 0.0), axis=-1)


def entropy(logits: jax.Array, *, where: jax.Array | None = None) -> jax.Array:
  r"""Per-example entropy of the softmax prediction.

  .. math::
    H(p) = -\sum_c p_c \log p_c, \qquad p = \mathrm{softmax}(z)

  computed from `log_softmax` (stable for large logits), in nats; a -inf logit
  (a class ruled out) counts 0 log 0 = 0, with finite gradients.

  Args:
    logits: [..., c] logits, e.g. [n, c] or [batch, time, c].
    where: optional boolean mask of shape logits.shape[:-1]; masked entries
      give 0 with zero gradients (whatever the padded logits hold).

  Returns:
    [...] entropies (logits.shape[:-1]), float32 for f32/bf16 inputs.

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> h = losses.entropy(jnp.array([[0.0, 0.0], [50.0, 0.0]]))
    >>> [round(v, 4) for v in h.tolist()]  # log 2, then ~0
    [0.6931, 0.0]

  References:
    Grandvalet & Bengio, "Semi-supervised Learning by Entropy Minimization",
    NeurIPS 2004.
  """
  logits = _checks.as_float(logits)
  _checks.check_min_ndim(logits, 1, "logits", "[..., c]")
  if where is None:
    return _entropy_from_logits(logits)
  keep = _checks.mask(where, logits.shape[:-1], "where")
  logits = jnp.where(keep[..., None], logits, 0.0)
  return jnp.where(keep, _entropy_from_logits(logits), 0.0)


def mcc(
    logits: jax.Array,
    *,
    temperature: float = 2.5,
    where: jax.Array | None = None,
) -> jax.Array:
  r"""Minimum class confusion: the mean off-diagonal class confusion of a batch.

  With :math:`\hat Y = \mathrm{softmax}(z / T)` [n, c], the entropy weights
  :math:`e_i = 1 + \exp(-H(\hat Y_i))` (detached) normalised to
  :math:`W_{ii} = n e_i / \sum_j e_j`,

  .. math::
    C = \hat Y^\top W \hat Y, \qquad
    \tilde C_{jk} = \frac{C_{jk}}{\sum_{k'} C_{jk'}}, \qquad
    \ell = \frac{1}{c} \sum_{j} \sum_{k \neq j} \tilde C_{jk}.

  Args:
    logits: [n, c] classifier logits on target examples (or [..., c], flattened).
    temperature: T, the probability rescaling temperature (2.5 in the paper).
    where: optional boolean mask of shape logits.shape[:-1]; masked rows are
      left out exactly as if removed.

  Returns:
    The scalar loss (float32 for f32/bf16 inputs), in [0, (c - 1) / c]; 0, with
    zero gradients, when no row is valid. A class that gets zero probability in
    every row (its row of C is zero) adds no confusion.

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> confident = jnp.array([[20.0, 0.0], [0.0, 20.0]])
    >>> print(f"{float(losses.mcc(confident, temperature=1.0)):.4f}")
    0.0000
    >>> print(f"{float(losses.mcc(jnp.zeros((4, 2)))):.4f}")  # uniform predictions
    0.5000

  References:
    Jin et al., "Minimum Class Confusion for Versatile Domain Adaptation",
    ECCV 2020.
  """
  logits = _checks.as_float(logits)
  _checks.check_min_ndim(logits, 2, "logits", "[n, c]")
  if not temperature > 0:
    raise ValueError(f"temperature must be positive, got {temperature!r}.")
  keep = _checks.mask(where, logits.shape[:-1], "where")
  num_classes = logits.shape[-1]
  logits = jnp.where(keep[..., None], logits, 0.0).reshape(-1, num_classes)
  keep = keep.reshape(-1)
  scaled = logits / temperature
  probs = jax.nn.softmax(scaled, axis=-1)
  weights = 1.0 + jnp.exp(-_entropy_from_logits(jax.lax.stop_gradient(scaled)))
  weights = jnp.where(keep, weights, 0.0)
  total = jnp.sum(weights)
  weights = weights * jnp.sum(keep) / jnp.where(total > 0, total, 1.0)
  confusion = jnp.matmul((probs * weights[:, None]).T, probs,
                         precision=jax.lax.Precision.HIGHEST)
  # A class no example gives any probability has a zero row: it confuses nothing.
  row = jnp.sum(confusion, axis=1, keepdims=True)
  confusion = confusion / jnp.where(row > 0, row, 1.0)
  value = (jnp.sum(confusion) - jnp.trace(confusion)) / num_classes
  return jnp.where(jnp.any(keep), value, 0.0)
