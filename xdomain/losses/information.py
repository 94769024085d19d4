"""Source-free self-supervision of SHOT: information maximisation and centroid pseudo-labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xdomain.losses import _checks
from xdomain.losses import prediction


def information_maximization(logits: jax.Array, *, where: jax.Array | None = None) -> jax.Array:
  r"""Information maximisation of a batch: mean entropy minus the entropy of the mean prediction.

  With :math:`p_i = \mathrm{softmax}(z_i)` and :math:`\bar p = \frac{1}{n}\sum_i p_i`,

  .. math::
    \mathcal{L}_{IM} = \frac{1}{n}\sum_i H(p_i) - H(\bar p), \qquad
    H(p) = -\sum_c p_c \log p_c

  Minimising it makes each prediction confident (first term) and the
  predictions of the batch diverse (second term, SHOT's diversity), so it
  does not collapse onto one class. Exact entropies (0 log 0 = 0); SHOT's
  code adds 1e-5 inside the logs.

  Args:
    logits: [n, c] logits (or [..., c], flattened).
    where: optional boolean mask of shape logits.shape[:-1]; masked rows are
      left out exactly as if removed.

  Returns:
    The scalar loss (float32 for f32/bf16 inputs), in [-log c, log c]; 0, with
    zero gradients, when no row is valid.

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> confident_and_diverse = jnp.array([[30.0, 0.0], [0.0, 30.0]])
    >>> round(float(losses.information_maximization(confident_and_diverse)), 4)  # -log 2
    -0.6931

  References:
    Liang et al., "Do We Really Need to Access the Source Data? Source
    Hypothesis Transfer for Unsupervised Domain Adaptation", ICML 2020.
  """
  logits = _checks.as_float(logits)
  _checks.check_min_ndim(logits, 2, "logits", "[n, c]")
  keep = _checks.mask(where, logits.shape[:-1], "where")
  num_classes = logits.shape[-1]
  logits = jnp.where(keep[..., None], logits, 0.0).reshape(-1, num_classes)
  keep = keep.reshape(-1)
  count = jnp.maximum(jnp.sum(keep), 1)
  mean_entropy = jnp.sum(prediction.entropy(logits, where=keep)) / count
  probs = jnp.where(keep[:, None], jax.nn.softmax(logits, axis=-1), 0.0)
  mean_probs = jnp.sum(probs, axis=0) / count
  positive = mean_probs > 0
  log_mean = jnp.log(jnp.where(positive, mean_probs, 1.0))
  entropy_of_mean = -jnp.sum(jnp.where(positive, mean_probs * log_mean, 0.0))
  return jnp.where(jnp.any(keep), mean_entropy - entropy_of_mean, 0.0)


def _cosine_distances(features: jax.Array, centroids: jax.Array) -> jax.Array:
  """1 - cos between unit rows [n, d] and centroids [c, d]; a zero centroid is at distance 1."""
  norms = jnp.linalg.norm(centroids, axis=-1, keepdims=True)
  unit = centroids / jnp.where(norms > 0, norms, 1.0)
  return 1.0 - jnp.matmul(features, unit.T, precision=jax.lax.Precision.HIGHEST)


def centroid_pseudo_labels(
    features: jax.Array,
    probabilities: jax.Array,
    *,
    rounds: int = 1,
    where: jax.Array | None = None,
) -> jax.Array:
  r"""SHOT's self-supervised pseudo-labels: nearest class centroid by cosine distance.

  The features get a constant 1 appended and are L2-normalised (SHOT's
  cosine set-up). The initial centroids are weighted by the predicted
  probabilities; then `rounds` times, the centroids are recomputed from the
  hard labels:

  .. math::
    c_k^{(0)} = \frac{\sum_i p_{ik} \hat f_i}{\sum_i p_{ik}}, \qquad
    \hat y_i = \arg\min_{k \in K} \left(1 - \cos(\hat f_i, c_k)\right), \qquad
    c_k^{(r+1)} = \frac{\sum_i [\hat y_i = k] \hat f_i}{\sum_i [\hat y_i = k]}

  where K, the candidate classes, are those that are the argmax prediction
  of at least one valid example (SHOT's `labelset` with threshold 0). No
  gradient flows: the labels are targets.

  Args:
    features: [n, d] features of the (whole) target set.
    probabilities: [n, c] predicted class probabilities of the same examples.
    rounds: refinement rounds with hard centroids (1, as SHOT).
    where: optional boolean mask [n] of valid rows; only they shape the
      centroids (the labels of masked rows are computed but meaningless).

  Returns:
    int32 labels [n].

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> f = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> p = jnp.array([[0.6, 0.4], [0.4, 0.6], [0.3, 0.7]])  # the second one misread
    >>> losses.centroid_pseudo_labels(f, p).tolist()
    [0, 0, 1]

  References:
    Liang et al., "Do We Really Need to Access the Source Data? Source
    Hypothesis Transfer for Unsupervised Domain Adaptation", ICML 2020.
  """
  features = jax.lax.stop_gradient(_checks.as_float(features))
  probabilities = jax.lax.stop_gradient(_checks.as_float(probabilities))
  _checks.check_ndim(features, 2, "features", "[n, d]")
  _checks.check_ndim(probabilities, 2, "probabilities", "[n, c]")
  if probabilities.shape[0] != features.shape[0]:
    raise ValueError(
        f"features [n, d] and probabilities [n, c] must have the same n, got shapes"
        f" {tuple(features.shape)} and {tuple(probabilities.shape)}.")
  if not (isinstance(rounds, int) and rounds >= 0):
    raise ValueError(f"rounds must be a non-negative integer, got {rounds!r}.")
  keep = _checks.mask(where, features.shape[:1], "where")
  num_classes = probabilities.shape[1]
  features = jnp.concatenate([features, jnp.ones_like(features[:, :1])], axis=1)
  features = features / jnp.linalg.norm(features, axis=1, keepdims=True)
  weights = jnp.where(keep[:, None], probabilities, 0.0)
  predicted = jax.nn.one_hot(jnp.argmax(probabilities, axis=1), num_classes) * keep[:, None]
  candidates = jnp.sum(predicted, axis=0) > 0

  def assign(weights):
    centroids = jnp.matmul(weights.T, features, precision=jax.lax.Precision.HIGHEST)
    centroids = centroids / (1e-8 + jnp.sum(weights, axis=0)[:, None])
    distances = _cosine_distances(features, centroids)
    return jnp.argmin(jnp.where(candidates[None, :], distances, jnp.inf), axis=1)

  labels = assign(weights)
  for _ in range(rounds):
    labels = assign(jax.nn.one_hot(labels, num_classes) * keep[:, None])
  return labels.astype(jnp.int32)
