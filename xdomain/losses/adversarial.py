"""Adversarial domain alignment: gradient reversal, the DANN loss and CDAN(+E)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from xdomain.losses import _checks
from xdomain.losses import prediction


@jax.custom_vjp
def _reverse(x: Any, scale: jax.Array) -> Any:
  return x


def _reverse_fwd(x, scale):
  return x, scale


def _reverse_bwd(scale, g):
  reversed_g = jax.tree.map(lambda t: (-scale * t).astype(t.dtype), g)
  return reversed_g, jnp.zeros_like(scale)


_reverse.defvjp(_reverse_fwd, _reverse_bwd)


def gradient_reversal(x: Any, scale: float | jax.Array = 1.0) -> Any:
  r"""Identity in the forward pass; multiplies the gradient by -scale backward.

  .. math::
    R(x) = x, \qquad \frac{\partial R}{\partial x} = -\lambda I

  Placed between a feature extractor and a domain discriminator, it lets one
  minimisation train the discriminator to separate the domains and the
  features to confuse it. No gradient flows to `scale`.

  Args:
    x: an array, or a pytree of arrays.
    scale: lambda, a float or a (possibly traced) scalar, e.g. the value of
      :func:`xdomain.losses.dann_schedule` at the current step.

  Returns:
    `x` unchanged.

  Example:
    >>> import jax
    >>> from xdomain import losses
    >>> float(jax.jit(jax.grad(lambda x: losses.gradient_reversal(x, 0.5) * 3.0))(2.0))
    -1.5

  References:
    Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation",
    ICML 2015.
  """
  scale = jnp.asarray(scale, jnp.float32)
  if scale.ndim != 0:
    raise ValueError(f"scale must be a scalar, got shape {tuple(scale.shape)}.")
  return _reverse(x, scale)


def _discriminator_logits(logits: Any, name: str) -> jax.Array:
  logits = _checks.as_float(logits)
  _checks.check_min_ndim(logits, 1, name, "[n] or [n, 1]")
  if logits.ndim >= 2 and logits.shape[-1] == 1:
    logits = logits[..., 0]
  return logits


def _weighted_mean(values, weights, keep) -> jax.Array:
  return jnp.sum(jnp.where(keep, weights * values, 0.0)) / jnp.sum(keep)


def domain_adversarial(
    source_logits: jax.Array,
    target_logits: jax.Array,
    *,
    source_weights: jax.Array | None = None,
    target_weights: jax.Array | None = None,
    source_where: jax.Array | None = None,
    target_where: jax.Array | None = None,
) -> jax.Array:
  r"""The DANN domain-discriminator loss: binary cross-entropy, source = 1, target = 0.

  The loss of each domain is averaged over that domain's valid examples, and
  the two domain averages are averaged (each domain counts half, whatever the
  batch sizes):

  .. math::
    \ell = \frac{1}{2}\left(\frac{1}{n_s}\sum_{i} w^s_i\,\mathrm{softplus}(-z^s_i)
      + \frac{1}{n_t}\sum_{j} w^t_j\,\mathrm{softplus}(z^t_j)\right)

  where z are the discriminator's raw logits, softplus(-z) = -log sigmoid(z)
  and softplus(z) = -log(1 - sigmoid(z)) are computed stably, n_s and n_t count
  the valid examples, and the weights default to 1 (they are not renormalised
  here; :func:`cdan` normalises its entropy weights before calling this).

  Args:
    source_logits: [n] or [n, 1] discriminator logits on source features (any
      further leading dimensions, e.g. [batch, time], are averaged over too).
    target_logits: [m] or [m, 1] discriminator logits on target features.
    source_weights: optional per-example weights, shaped like the logits
      without the trailing 1.
    target_weights: optional per-example weights for the target.
    source_where: optional boolean mask of valid source examples.
    target_where: optional boolean mask of valid target examples.

  Returns:
    The scalar loss (float32 for f32/bf16 inputs).

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> zero = jnp.zeros(4)  # a discriminator that cannot tell: log 2 each
    >>> print(f"{float(losses.domain_adversarial(zero, zero)):.4f}")
    0.6931

  References:
    Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016.
  """
  source_logits = _discriminator_logits(source_logits, "source_logits")
  target_logits = _discriminator_logits(target_logits, "target_logits")
  ws = _checks.per_example_weights(source_weights, source_logits.shape, "source_weights")
  wt = _checks.per_example_weights(target_weights, target_logits.shape, "target_weights")
  keep_s = _checks.mask(source_where, source_logits.shape, "source_where")
  keep_t = _checks.mask(target_where, target_logits.shape, "target_where")
  source_loss = _weighted_mean(jax.nn.softplus(-source_logits), ws, keep_s)
  target_loss = _weighted_mean(jax.nn.softplus(target_logits), wt, keep_t)
  return 0.5 * (source_loss + target_loss)


class CdanRandomMatrices(NamedTuple):
  """Fixed Gaussian matrices of CDAN's randomized multilinear map."""
  features: jax.Array  # [d, r]
  classes: jax.Array  # [c, r]


def cdan_random_matrices(
    key: jax.Array,
    feature_dim: int,
    num_classes: int,
    *,
    output_dim: int = 1024,
) -> CdanRandomMatrices:
  """Draws the fixed matrices R_f [d, r] and R_g [c, r] (standard normal) of CDAN.

  Draw them once (e.g. at initialisation, from a fixed key) and keep them for
  the whole run, like any other non-trainable state.

  Args:
    key: a JAX PRNG key.
    feature_dim: d, the feature dimension.
    num_classes: c, the number of classes.
    output_dim: r, the dimension of the randomized map (1024 in the paper).

  Returns:
    A `CdanRandomMatrices(features=[d, r], classes=[c, r])` pytree.

  Example:
    >>> import jax
    >>> from xdomain import losses
    >>> rm = losses.cdan_random_matrices(jax.random.key(0), 256, 10, output_dim=512)
    >>> rm.features.shape, rm.classes.shape
    ((256, 512), (10, 512))

  References:
    Long et al., "Conditional Adversarial Domain Adaptation", NeurIPS 2018.
  """
  for name, value in (("feature_dim", feature_dim), ("num_classes", num_classes),
                      ("output_dim", output_dim)):
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f"{name} must be a positive int, got {value!r}.")
  key_f, key_g = jax.random.split(key)
  return CdanRandomMatrices(
      features=jax.random.normal(key_f, (feature_dim, output_dim), jnp.float32),
      classes=jax.random.normal(key_g, (num_classes, output_dim), jnp.float32))


def cdan_features(
    features: jax.Array,
    probs: jax.Array,
    *,
    random_matrices: CdanRandomMatrices | None = None,
) -> jax.Array:
  r"""CDAN's conditioning of features on predictions, the discriminator's input.

  Without `random_matrices`, the multilinear map: the outer product g f^T
  flattened class-major, :math:`T(f, g)_{c d + k} = g_c f_k`, shape [n, c * d].
  With them, the randomized multilinear map

  .. math::
    T(f, g) = \frac{1}{\sqrt{r}} (f R_f) \odot (g R_g) \in \mathbb{R}^r,

  whose inner products approximate those of the full map for large c * d.

  Gradient flow: as in the reference code, the predictions are detached
  (`stop_gradient`): gradients reach `features` only.

  Args:
    features: [n, d] features f (any leading dimensions, e.g. [batch, time, d]).
    probs: [n, c] class probabilities g (softmax outputs), same leading shape.
    random_matrices: None, or `cdan_random_matrices(key, d, c, output_dim=r)`.

  Returns:
    [n, c * d] (multilinear) or [n, r] (randomized), float32 for f32/bf16.

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> f = jnp.ones((2, 3)); g = jnp.array([[1.0, 0.0], [0.5, 0.5]])
    >>> losses.cdan_features(f, g).tolist()
    [[1.0, 1.0, 1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]]

  References:
    Long et al., "Conditional Adversarial Domain Adaptation", NeurIPS 2018.
  """
  features, probs = _checks.as_float(features), _checks.as_float(probs)
  _checks.check_min_ndim(features, 2, "features", "[n, d]")
  _checks.check_min_ndim(probs, 2, "probs", "[n, c]")
  if features.shape[:-1] != probs.shape[:-1]:
    raise ValueError(
        f"features [n, d] and probs [n, c] must have the same leading shape, got "
        f"{tuple(features.shape)} and {tuple(probs.shape)}.")
  probs = jax.lax.stop_gradient(probs)
  if random_matrices is None:
    outer = probs[..., :, None] * features[..., None, :]
    return outer.reshape(*features.shape[:-1], probs.shape[-1] * features.shape[-1])
  rf, rg = (_checks.as_float(m) for m in random_matrices)
  if (rf.ndim != 2 or rg.ndim != 2 or rf.shape[0] != features.shape[-1]
      or rg.shape[0] != probs.shape[-1] or rf.shape[1] != rg.shape[1]):
    raise ValueError(
        f"random_matrices must be ([d, r], [c, r]) = ([{features.shape[-1]}, r], "
        f"[{probs.shape[-1]}, r]), got {tuple(rf.shape)} and {tuple(rg.shape)}.")
  return (features @ rf) * (probs @ rg) / jnp.sqrt(jnp.float32(rf.shape[1]))


def cdan_entropy_weights(logits: jax.Array) -> jax.Array:
  r"""CDAN+E's per-example weights w = 1 + exp(-H(g)), H the prediction entropy.

  Confident predictions (low entropy) get weights near 2, uncertain ones near
  1 + 1/c. The logits are detached: no gradient flows through the weights.

  Args:
    logits: [n, c] classifier logits (any leading dimensions).

  Returns:
    [n] weights, float32 for f32/bf16 inputs.

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> losses.cdan_entropy_weights(jnp.array([[0.0, 0.0], [100.0, 0.0]])).tolist()
    [1.5, 2.0]

  References:
    Long et al., "Conditional Adversarial Domain Adaptation", NeurIPS 2018.
  """
  return 1.0 + jnp.exp(-prediction.entropy(jax.lax.stop_gradient(logits)))


def cdan(
    source_logits: jax.Array,
    target_logits: jax.Array,
    *,
    source_class_logits: jax.Array | None = None,
    target_class_logits: jax.Array | None = None,
    source_where: jax.Array | None = None,
    target_where: jax.Array | None = None,
) -> jax.Array:
  r"""The CDAN discriminator loss, entropy-weighted (CDAN+E) when class logits are given.

  `source_logits` / `target_logits` are the discriminator's outputs on
  :func:`cdan_features` (passed through :func:`gradient_reversal`). Without class
  logits this is :func:`domain_adversarial`. With them, each example is
  weighted by :math:`e_i = 1 + \exp(-H(g_i))` (:func:`cdan_entropy_weights`,
  detached), normalised within each domain as in the paper's code,

  .. math::
    w_i = n \frac{e_i}{\sum_{j} e_j} \quad \text{(over the domain's n valid examples)},

  so each domain's term is the e-weighted average
  :math:`\sum_i e_i \ell_i / \sum_i e_i`, and the two are averaged as in
  :func:`domain_adversarial`.

  Args:
    source_logits: [n] or [n, 1] discriminator logits on source examples.
    target_logits: [m] or [m, 1] discriminator logits on target examples.
    source_class_logits: optional [n, c] classifier logits of the source
      examples (CDAN+E); give both or neither.
    target_class_logits: optional [m, c] classifier logits of the target examples.
    source_where: optional boolean mask of valid source examples.
    target_where: optional boolean mask of valid target examples.

  Returns:
    The scalar loss (float32 for f32/bf16 inputs).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from xdomain import losses
    >>> def loss_fn(features, class_logits, w, scale):  # source rows first, then target
    ...   h = losses.cdan_features(features, jax.nn.softmax(class_logits))  # [8, 64]
    ...   d = losses.gradient_reversal(h, scale) @ w  # a linear stand-in discriminator
    ...   return losses.cdan(d[:4], d[4:], source_class_logits=class_logits[:4],
    ...                      target_class_logits=class_logits[4:])
    >>> ks = jax.random.split(jax.random.key(0), 3)
    >>> f = jax.random.normal(ks[0], (8, 16)); cls = jax.random.normal(ks[1], (8, 4))
    >>> jax.jit(loss_fn)(f, cls, jax.random.normal(ks[2], (64,)) / 8.0, 1.0).shape
    ()

  References:
    Long et al., "Conditional Adversarial Domain Adaptation", NeurIPS 2018.
  """
  if (source_class_logits is None) != (target_class_logits is None):
    raise ValueError(
        "give both source_class_logits and target_class_logits (CDAN+E) or neither (CDAN).")
  if source_class_logits is None:
    return domain_adversarial(source_logits, target_logits, source_where=source_where,
                              target_where=target_where)
  source_logits = _discriminator_logits(source_logits, "source_logits")
  target_logits = _discriminator_logits(target_logits, "target_logits")

  def normalised_weights(class_logits, logits, where, name, where_name):
    class_logits = _checks.as_float(class_logits)
    if class_logits.ndim < 2 or class_logits.shape[:-1] != logits.shape:
      raise ValueError(
          f"{name} must have shape {tuple(logits.shape) + ('c',)} (one row per "
          f"discriminator logit), got shape {tuple(class_logits.shape)}.")
    keep = _checks.mask(where, logits.shape, where_name)
    weights = jnp.where(keep, cdan_entropy_weights(class_logits), 0.0)
    return weights / jnp.sum(weights) * jnp.sum(keep)

  ws = normalised_weights(source_class_logits, source_logits, source_where,
                          "source_class_logits", "source_where")
  wt = normalised_weights(target_class_logits, target_logits, target_where,
                          "target_class_logits", "target_where")
  return domain_adversarial(source_logits, target_logits, source_weights=ws, target_weights=wt,
                            source_where=source_where, target_where=target_where)
