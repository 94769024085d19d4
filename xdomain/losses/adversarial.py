"""Adversarial domain alignment: gradient reversal, the DANN loss and CDAN(+E).

The losses are per example, one array per domain; `domain_balanced_mean`
is the reduction of DANN and CDAN (each domain's mean, the two averaged).
"""

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


def domain_adversarial(
    source_logits: jax.Array,
    target_logits: jax.Array,
    *,
    source_weights: jax.Array | None = None,
    target_weights: jax.Array | None = None,
    source_where: jax.Array | None = None,
    target_where: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  r"""The DANN domain-discriminator loss per example: binary cross-entropy, source = 1, target = 0.

  .. math::
    \ell^s_i = w^s_i\,\mathrm{softplus}(-z^s_i), \qquad
    \ell^t_j = w^t_j\,\mathrm{softplus}(z^t_j)

  where z are the discriminator's raw logits, softplus(-z) = -log sigmoid(z)
  and softplus(z) = -log(1 - sigmoid(z)) are computed stably, and the weights
  default to 1. DANN's loss is the domain-balanced mean of the two,

  .. math::
    \ell = \frac{1}{2}\left(\frac{1}{n_s}\sum_{i} \ell^s_i
      + \frac{1}{n_t}\sum_{j} \ell^t_j\right)

  (each domain counts half, whatever the batch sizes; n_s and n_t count the
  valid examples): :func:`domain_balanced_mean`.

  Args:
    source_logits: [n] or [n, 1] discriminator logits on source features (any
      further leading dimensions, e.g. [batch, time], are kept).
    target_logits: [m] or [m, 1] discriminator logits on target features.
    source_weights: optional per-example weights, shaped like the logits
      without the trailing 1 (not renormalised here; :func:`cdan` normalises
      its entropy weights).
    target_weights: optional per-example weights for the target.
    source_where: optional boolean mask of valid source examples.
    target_where: optional boolean mask of valid target examples.

  Returns:
    `(source_losses, target_losses)`, shaped like the logits without the
    trailing 1, float32 for f32/bf16 inputs; 0 (with zero gradients, whatever
    the masked logits hold) where masked.

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> zero = jnp.zeros(4)  # a discriminator that cannot tell: log 2 each
    >>> source, target = losses.domain_adversarial(zero, zero)
    >>> print(f"{float(losses.domain_balanced_mean(source, target)):.4f}")
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
  # Masked logits are replaced before softplus, so that NaN or inf there
  # reaches neither the values nor the gradients.
  source_loss = jnp.where(keep_s, ws * jax.nn.softplus(-jnp.where(keep_s, source_logits, 0.0)),
                          0.0)
  target_loss = jnp.where(keep_t, wt * jax.nn.softplus(jnp.where(keep_t, target_logits, 0.0)),
                          0.0)
  return source_loss, target_loss


def domain_balanced_mean(
    source_values: jax.Array,
    target_values: jax.Array,
    *,
    source_where: jax.Array | None = None,
    target_where: jax.Array | None = None,
) -> jax.Array:
  r"""The reduction of the adversarial losses: each domain's mean, the two averaged.

  .. math::
    \frac{1}{2}\left(\frac{1}{n_s}\sum_{i \in \mathrm{valid}_s} v^s_i
      + \frac{1}{n_t}\sum_{j \in \mathrm{valid}_t} v^t_j\right)

  so each domain counts half whatever the batch sizes, as in DANN and CDAN. A
  domain without valid entries contributes 0 (the empty-mask rule), so a
  fully masked batch gives 0 with zero gradients.

  Args:
    source_values: per-example source values of any shape, e.g. the first
      output of :func:`domain_adversarial` or :func:`cdan`.
    target_values: per-example target values of any shape.
    source_where: optional boolean mask shaped like `source_values`.
    target_where: optional boolean mask shaped like `target_values`.

  Returns:
    A float32 scalar.

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> float(losses.domain_balanced_mean(jnp.array([1.0, 3.0]), jnp.array([6.0])))
    4.0
  """
  def mean(values, where, name):
    values = _checks.as_float(values)
    keep = _checks.mask(where, values.shape, name)
    count = jnp.sum(keep)
    total = jnp.sum(jnp.where(keep, values, 0.0))
    return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)

  return 0.5 * (mean(source_values, source_where, "source_where")
                + mean(target_values, target_where, "target_where"))


class CdanRandomMatrices(NamedTuple):
  """Fixed Gaussian matrices of CDAN's randomized multilinear map."""
  features: jax.Array  # [d, r]
  classes: jax.Array  # [c, r]


# CDAN uses the randomized multilinear map when the multilinear map would have
# more than this many dimensions (d * c > 4096, Long et al. 2018, Sec. 3.2).
CDAN_MULTILINEAR_MAX_DIM = 4096


def cdan_random_matrices(
    key: jax.Array,
    feature_dim: int,
    num_classes: int,
    *,
    output_dim: int = 1024,
    multilinear_max_dim: int = CDAN_MULTILINEAR_MAX_DIM,
) -> CdanRandomMatrices | None:
  """The fixed matrices R_f [d, r] and R_g [c, r] of CDAN's randomized map, when it is needed.

  As in the paper, the randomized multilinear map replaces the multilinear one
  when d * c exceeds `multilinear_max_dim` (4096); for smaller maps this
  returns None, which :func:`cdan_features` reads as "the full multilinear
  map". So `cdan_features(f, g, random_matrices=cdan_random_matrices(key, d, c))`
  makes the paper's choice. The matrices are standard normal; draw them once
  (e.g. at initialisation, from a fixed key) and keep them for the whole run,
  like any other non-trainable state.

  Args:
    key: a JAX PRNG key.
    feature_dim: d, the feature dimension.
    num_classes: c, the number of classes.
    output_dim: r, the dimension of the randomized map (1024 in the paper).
    multilinear_max_dim: the largest d * c for which the multilinear map is
      used (4096 in the paper; 0 always draws the matrices).

  Returns:
    None when d * c <= multilinear_max_dim, else a
    `CdanRandomMatrices(features=[d, r], classes=[c, r])` pytree.

  Example:
    >>> import jax
    >>> from xdomain import losses
    >>> rm = losses.cdan_random_matrices(jax.random.key(0), 256, 31, output_dim=512)
    >>> rm.features.shape, rm.classes.shape  # 256 * 31 > 4096: randomized
    ((256, 512), (31, 512))
    >>> print(losses.cdan_random_matrices(jax.random.key(0), 256, 10))  # 2560: multilinear
    None

  References:
    Long et al., "Conditional Adversarial Domain Adaptation", NeurIPS 2018.
  """
  for name, value in (("feature_dim", feature_dim), ("num_classes", num_classes),
                      ("output_dim", output_dim)):
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f"{name} must be a positive int, got {value!r}.")
  if not isinstance(multilinear_max_dim, int) or multilinear_max_dim < 0:
    raise ValueError(
        f"multilinear_max_dim must be a non-negative int, got {multilinear_max_dim!r}.")
  if feature_dim * num_classes <= multilinear_max_dim:
    return None
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
  CDAN uses it when c * d > 4096: pass `random_matrices=cdan_random_matrices(
  key, d, c)`, which is None (the multilinear map) up to 4096 dimensions.

  Gradient flow: as in the reference code, the predictions are detached
  (`stop_gradient`): gradients reach `features` only.

  Args:
    features: [n, d] features f (any leading dimensions, e.g. [batch, time, d]).
    probs: [n, c] class probabilities g (softmax outputs), same leading shape.
    random_matrices: None for the multilinear map, or the matrices of
      `cdan_random_matrices(key, d, c, output_dim=r)` for the randomized one.

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
) -> tuple[jax.Array, jax.Array]:
  r"""The CDAN discriminator loss per example, entropy-weighted (CDAN+E) with class logits.

  `source_logits` / `target_logits` are the discriminator's outputs on
  :func:`cdan_features` (passed through :func:`gradient_reversal`). Without class
  logits this is :func:`domain_adversarial`. With them, each example is
  weighted by :math:`e_i = 1 + \exp(-H(g_i))` (:func:`cdan_entropy_weights`,
  detached), normalised within each domain of the batch as in the paper's code,

  .. math::
    w_i = n \frac{e_i}{\sum_{j} e_j} \quad \text{(over the domain's n valid examples)},

  so that :func:`domain_balanced_mean` of the result averages the two domains'
  e-weighted means :math:`\sum_i e_i \ell_i / \sum_i e_i`: CDAN's loss.

  Args:
    source_logits: [n] or [n, 1] discriminator logits on source examples.
    target_logits: [m] or [m, 1] discriminator logits on target examples.
    source_class_logits: optional [n, c] classifier logits of the source
      examples (CDAN+E); give both or neither.
    target_class_logits: optional [m, c] classifier logits of the target examples.
    source_where: optional boolean mask of valid source examples.
    target_where: optional boolean mask of valid target examples.

  Returns:
    `(source_losses, target_losses)` as :func:`domain_adversarial`: 0, with zero
    gradients, where masked.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from xdomain import losses
    >>> def loss_fn(features, class_logits, w, scale):  # source rows first, then target
    ...   h = losses.cdan_features(features, jax.nn.softmax(class_logits))  # [8, 64]
    ...   d = losses.gradient_reversal(h, scale) @ w  # a linear stand-in discriminator
    ...   source, target = losses.cdan(d[:4], d[4:], source_class_logits=class_logits[:4],
    ...                                target_class_logits=class_logits[4:])
    ...   return losses.domain_balanced_mean(source, target)
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
    class_logits = jnp.where(keep[..., None], class_logits, 0.0)
    weights = jnp.where(keep, cdan_entropy_weights(class_logits), 0.0)
    total = jnp.sum(weights)
    return weights / jnp.where(total > 0, total, 1.0) * jnp.sum(keep)

  ws = normalised_weights(source_class_logits, source_logits, source_where,
                          "source_class_logits", "source_where")
  wt = normalised_weights(target_class_logits, target_logits, target_where,
                          "target_class_logits", "target_where")
  return domain_adversarial(source_logits, target_logits, source_weights=ws, target_weights=wt,
                            source_where=source_where, target_where=target_where)
