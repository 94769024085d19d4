"""Validators: model selection without target labels.

Each validator scores one trained model from host arrays of one evaluation
(numpy in, Python float out) and never reads a target label. HIGHER IS BETTER
for every one, so a sweep picks the configuration (or checkpoint) with the
largest value:

- `source_accuracy`: accuracy on the held-out source split (`source_val`).
- `importance_weighted` (IWV) and `dev` (DEV): minus the importance-weighted
  source-validation loss, the weights p_t(x)/p_s(x) coming from a domain
  classifier on features (`importance_weights`).
- `snd`: soft neighbourhood density of the target predictions.
- `entropy`: minus the mean entropy of the target predictions.
- `mutual_information`: H(mean p) - mean H(p) of the target predictions.

For taggers the arrays may be per token (rows = tokens, flattened); the
`where` masks (bool [N]) say which rows are real, and masked rows are ignored
entirely: a validator with a mask equals the validator on the masked subset.

`VALIDATORS` maps each name to a function of one `ValidatorInputs`, so a run
computes all of them from one evaluation (and writes `validator/<name>`);
beside them it writes `ValidatorInputs.weight_diagnostics` (`diagnostic/<name>`:
the importance weights' effective sample size and mean).
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools

import numpy as np

# Rows of the [rows, N] similarity blocks `snd` builds at a time, so that its
# memory stays O(block * N) rather than O(N^2).
_SND_BLOCK = 1024


# ---------------------------------------------------------------------------
# Input checks


def _no_source(validator: str, name: str) -> ValueError:
  return ValueError(
      f"{validator} needs a held-out source split (source_val); this run has "
      f"none ({name} is missing or empty): hold out part of the source train "
      f"split, or use a target-only validator (snd, entropy, "
      f"mutual_information)")


def _array(validator: str, name: str, values, ndim: int, what: str,
           kind: str) -> np.ndarray:
  """`values` as an array of `ndim` dims and dtype `kind` ('float', 'int')."""
  array = np.asarray(values)
  if kind == "int":
    ok = np.issubdtype(array.dtype, np.integer)
  else:  # real numbers, including JAX's bfloat16 (an ml_dtypes type)
    ok = (array.dtype.kind in "fiu"
          or array.dtype.name.startswith(("bfloat16", "float8")))
  if array.ndim != ndim or not ok or (ndim == 2 and array.shape[1] == 0):
    raise ValueError(
        f"{validator}: {name} must be {what}; got shape {array.shape} and "
        f"dtype {array.dtype}")
  return array


def _mask(validator: str, name: str, where, rows: int, of: str) -> np.ndarray:
  """The bool [rows] mask `where` (all True when None)."""
  if where is None:
    return np.ones(rows, bool)
  mask = np.asarray(where)
  if mask.shape != (rows,) or mask.dtype != bool:
    raise ValueError(
        f"{validator}: {name} must be bool [{rows}] (one flag per row of "
        f"{of}); got shape {mask.shape} and dtype {mask.dtype}")
  return mask


def _same_rows(validator: str, first: tuple[str, np.ndarray],
               *others: tuple[str, np.ndarray]) -> None:
  name, array = first
  for other_name, other in others:
    if len(other) != len(array):
      raise ValueError(
          f"{validator}: {other_name} must have one row per row of {name} "
          f"({len(array)}); got shape {other.shape}")


def _finite(validator: str, name: str, array: np.ndarray) -> np.ndarray:
  array = np.asarray(array, np.float64)
  bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
  if bad:
    raise ValueError(
        f"{validator}: {name} has {bad} non-finite values (NaN or inf) in the "
        f"rows it scores; the validators need finite model outputs")
  return array


def _logits(validator: str, name: str, values, where, where_name: str,
            *, min_rows: int = 1) -> np.ndarray:
  """float64 [n, K] logits of the rows `where` keeps."""
  if values is None:
    raise ValueError(f"{validator} needs {name} [N, K]; got None")
  logits = _array(validator, name, values, 2, "logits [N, K]", "float")
  mask = _mask(validator, where_name, where, len(logits), name)
  logits = _finite(validator, name, logits[mask])
  if len(logits) < min_rows:
    raise ValueError(
        f"{validator} needs at least {min_rows} rows of {name}; got "
        f"{len(logits)} after {where_name}")
  return logits


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _entropies(log_probs: np.ndarray) -> np.ndarray:
  """-sum_c p_c log p_c per row, with 0 log 0 = 0."""
  probs = np.exp(log_probs)
  return -np.sum(probs * np.where(probs > 0, log_probs, 0.0), axis=-1)


# ---------------------------------------------------------------------------
# Source validation


def _source_val(validator: str, logits, labels, where
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(logits [N, K], labels [N], mask [N]) of the source_val split, checked."""
  for name, values in (("source_val_logits", logits),
                       ("source_val_labels", labels)):
    if values is None or np.size(values) == 0:
      raise _no_source(validator, name)
  logits = _array(validator, "source_val_logits", logits, 2,
                  "logits [N, K]", "float")
  labels = _array(validator, "source_val_labels", labels, 1,
                  "integer labels [N]", "int")
  _same_rows(validator, ("source_val_logits", logits),
             ("source_val_labels", labels))
  mask = _mask(validator, "source_val_where", where, len(logits),
               "source_val_logits")
  if not mask.any():
    raise ValueError(
        f"{validator}: source_val_where selects none of the {len(mask)} rows "
        f"of source_val_logits; there is nothing to score")
  kept = labels[mask]
  classes = logits.shape[1]
  if kept.min() < 0 or kept.max() >= classes:
    raise ValueError(
        f"{validator}: source_val_labels must lie in [0, {classes}) (the "
        f"classes of source_val_logits {logits.shape}); got values in "
        f"[{kept.min()}, {kept.max()}]")
  return logits, labels, mask


def source_accuracy(source_val_logits, source_val_labels, *,
                    where=None) -> float:
  r"""Accuracy on the held-out source split (`source_val`).

  .. math::
    \mathrm{acc}_{s} = \frac{1}{n} \sum_{i=1}^{n}
      \mathbb{1}\left[\arg\max_c z_{ic} = y_i\right]

  over the n rows of a fixed held-out part of the source train split, which
  never trains. It assumes the source and target share p(y | x), which
  domain shift breaks: it is the baseline the other validators must beat.

  Args:
    source_val_logits: float [N, K] logits of the source_val rows.
    source_val_labels: int [N] labels in [0, K).
    where: optional bool [N]; rows marked False are ignored.

  Returns:
    Accuracy in [0, 1] (higher is better).

  Example:
    >>> import numpy as np
    >>> source_accuracy(np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([0, 0]))
    0.5

  References:
    You, Wang, Long & Jordan, "Towards Accurate Model Selection in Deep
    Unsupervised Domain Adaptation", ICML 2019 (source risk, Sec. 3);
    Musgrave et al., "Unsupervised Domain Adaptation: A Reality Check",
    arXiv:2111.15672, 2021.
  """
  logits, labels, mask = _source_val("source_accuracy", source_val_logits,
                                     source_val_labels, where)
  logits = _finite("source_accuracy", "source_val_logits", logits[mask])
  return float(np.mean(np.argmax(logits, axis=1) == labels[mask]))


# ---------------------------------------------------------------------------
# Importance weighting


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  return -_log_softmax(logits)[np.arange(len(labels)), labels]


def _zero_one(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  return (np.argmax(logits, axis=1) != labels).astype(np.float64)


# Per-row losses of the source_val rows that `importance_weighted` and `dev`
# weight: loss(logits [n, K], labels [n]) -> [n].
LOSSES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "cross_entropy": _cross_entropy,
    "zero_one": _zero_one,
}


def _features(validator: str, name: str, values, where, where_name: str,
              dim: int | None) -> np.ndarray:
  """float64 [n, d] features of the rows `where` keeps."""
  features = _array(validator, name, values, 2, "features [N, d]", "float")
  if dim is not None and features.shape[1] != dim:
    raise ValueError(
        f"{validator}: {name} must have the feature width of "
        f"source_val_features ({dim}); got shape {features.shape}")
  mask = _mask(validator, where_name, where, len(features), name)
  return _finite(validator, name, features[mask])


def _log_ratio(train_source: np.ndarray, train_target: np.ndarray,
               evaluate: np.ndarray, classifier_c: float) -> np.ndarray:
  """log p_t(x)/p_s(x) at `evaluate` from a domain classifier on the rest."""
  from sklearn.linear_model import LogisticRegression
  from sklearn.preprocessing import StandardScaler

  x = np.concatenate([train_source, train_target])
  y = np.concatenate([np.zeros(len(train_source)), np.ones(len(train_target))])
  scaler = StandardScaler().fit(x)
  classifier = LogisticRegression(C=classifier_c, max_iter=1000)
  classifier.fit(scaler.transform(x), y)
  # decision_function = log P(target | x) / P(source | x); the prior odds
  # n_t / n_s of the training sample are divided out.
  log_odds = classifier.decision_function(scaler.transform(evaluate))
  return log_odds + np.log(len(train_source) / len(train_target))


def _weights(validator: str, source_val_features, target_features,
             source_train_features, source_val_where, target_where,
             source_train_where, *, rows: int | None, folds: int,
             classifier_c: float, seed: int) -> np.ndarray:
  """Importance weights [N] of the source_val rows (0 where masked out)."""
  if source_val_features is None or np.size(source_val_features) == 0:
    raise _no_source(validator, "source_val_features")
  val = _array(validator, "source_val_features", source_val_features, 2,
               "features [N, d]", "float")
  if rows is not None and len(val) != rows:
    raise ValueError(
        f"{validator}: source_val_features must have one row per row of "
        f"source_val_logits ({rows}); got shape {val.shape}")
  dim = val.shape[1]
  keep = _mask(validator, "source_val_where", source_val_where, len(val),
               "source_val_features")
  val = _finite(validator, "source_val_features", val[keep])
  if target_features is None or np.size(target_features) == 0:
    raise ValueError(
        f"{validator}: the domain classifier needs two domains, but "
        f"target_features is missing or empty (one class only); pass the "
        f"features of the target rows")
  target = _features(validator, "target_features", target_features,
                     target_where, "target_where", dim)
  parts = [("source_val_where", "source", val),
           ("target_where", "target", target)]
  train = None
  if source_train_features is not None:
    train = _features(validator, "source_train_features",
                      source_train_features, source_train_where,
                      "source_train_where", dim)
    parts.append(("source_train_where", "source", train))
  elif source_train_where is not None:
    raise ValueError(
        f"{validator}: source_train_where is given but source_train_features "
        f"is None")
  for name, domain, part in parts:
    if len(part) == 0:
      raise ValueError(
          f"{validator}: {name} leaves no {domain} rows, so the domain "
          f"classifier would see one class only")
  if not np.isfinite(classifier_c) or classifier_c <= 0:
    raise ValueError(
        f"{validator}: classifier_c must be > 0; got {classifier_c}")
  if train is not None:
    log_w = _log_ratio(train, target, val, classifier_c)
  else:
    # Cross-fitting: each source_val row is weighted by a classifier that did
    # not see it (trained on the other folds and all target rows).
    if folds < 2:
      raise ValueError(f"{validator}: folds must be >= 2; got {folds}")
    if len(val) < 2:
      raise ValueError(
          f"{validator}: without source_train_features the weights are "
          f"cross-fitted over the source_val rows, which needs at least 2 of "
          f"them; got {len(val)}")
    k = min(folds, len(val))
    fold = np.empty(len(val), np.int64)
    fold[np.random.default_rng(seed).permutation(len(val))] = (
        np.arange(len(val)) % k)
    log_w = np.empty(len(val))
    for f in range(k):
      log_w[fold == f] = _log_ratio(val[fold != f], target, val[fold == f],
                                    classifier_c)
  weights = np.zeros(len(keep))
  weights[keep] = np.exp(log_w)
  return weights


def importance_weights(source_val_features, target_features, *,
                       source_train_features=None, source_val_where=None,
                       target_where=None, source_train_where=None,
                       folds: int = 5, classifier_c: float = 1.0,
                       seed: int = 0) -> np.ndarray:
  r"""Density ratios w(x) = p_t(x) / p_s(x) at the source_val rows.

  A domain classifier (scikit-learn's L2-regularised `LogisticRegression`
  on features standardised over its training rows) learns
  P(target | x) from source rows (label 0) and target rows (label 1); then

  .. math::
    w(x) = \frac{p_t(x)}{p_s(x)}
         = \frac{P(t \mid x)}{P(s \mid x)} \cdot \frac{n_s}{n_t},

  with n_s, n_t the numbers of source and target rows the classifier was
  trained on (this divides out the prior odds of its training sample).
  As in DEV (You et al. 2019, Algorithm 2) the classifier is trained on
  `source_train_features` (a part of the source train split other than
  source_val) and all target rows, and w is evaluated at the source_val
  features. Without `source_train_features`, the weights are cross-fitted:
  the source_val rows are split into `folds` folds (seeded) and each fold is
  weighted by a classifier trained on the other folds and the target rows,
  so that no row's weight comes from a classifier that saw it.

  The weights are neither self-normalised nor clipped: they are the exp of
  the classifier's log-odds plus log(n_s / n_t), so their source mean is
  near 1 only as far as the classifier is calibrated. (DEV's control
  variate relies on E_s[w] = 1 and would be cancelled by self-normalising.)

  Args:
    source_val_features: float [N, d] features of the source_val rows.
    target_features: float [M, d] features of target rows.
    source_train_features: optional float [P, d] features of other source
      train rows, the source side of the classifier's training set.
    source_val_where, target_where, source_train_where: optional bool masks
      ([N], [M], [P]); rows marked False are ignored.
    folds: number of cross-fitting folds (used without source_train_features).
    classifier_c: inverse L2 strength `C` of the logistic regression.
    seed: seed of the fold assignment.

  Returns:
    float64 [N] weights, 0 at the rows source_val_where leaves out.

  References:
    Sugiyama, Krauledat & Mueller, "Covariate Shift Adaptation by Importance
    Weighted Cross Validation", JMLR 2007; You, Wang, Long & Jordan, "Towards
    Accurate Model Selection in Deep Unsupervised Domain Adaptation", ICML
    2019 (density ratio by a discriminative domain classifier, Sec. 4.1).
  """
  return _weights("importance_weights", source_val_features, target_features,
                  source_train_features, source_val_where, target_where,
                  source_train_where, rows=None, folds=folds,
                  classifier_c=classifier_c, seed=seed)


def effective_sample_size(weights, *, where=None) -> float:
  r"""Kish's effective sample size of importance weights, as a share of the rows.

  .. math::
    \mathrm{ESS} = \frac{\left(\sum_{i=1}^{n} w_i\right)^2}{n \sum_{i=1}^{n} w_i^2}
    \in \left[\tfrac{1}{n}, 1\right]

  over the n kept rows: 1 when the weights are equal, 1/n when one row holds
  all of them. IWV and DEV average n weighted source losses, but their
  estimate of the target risk rests on about ESS * n of the rows, and is as
  noisy as a mean of that many losses; a small ESS says that the domain
  classifier behind the weights finds most source rows unlike the target and
  puts nearly all the weight on a few.
  Not a validator: runs write it beside them
  (`diagnostic/importance_weight_ess`) to say how far IWV's and DEV's values
  can be trusted.

  Args:
    weights: float [N] importance weights, >= 0, not all 0.
    where: optional bool [N]; rows marked False are ignored.

  Returns:
    ESS / n, a float in [1/n, 1].

  Example:
    >>> effective_sample_size([1.0, 1.0, 1.0, 1.0])
    1.0
    >>> effective_sample_size([4.0, 0.0, 0.0, 0.0])
    0.25

  References:
    Kish, "Survey Sampling", Wiley 1965; Owen, "Monte Carlo theory, methods and
    examples", 2013, Sec. 9.3 (ESS of importance sampling weights).
  """
  name = "effective_sample_size"
  w = _array(name, "weights", weights, 1, "float [N]", "float")
  w = _finite(name, "weights", w[_mask(name, "where", where, len(w), "weights")])
  if np.any(w < 0):
    raise ValueError(f"{name}: weights must be >= 0; got min {w.min()}")
  if not np.any(w > 0):
    raise ValueError(f"{name}: no positive weight among the {len(w)} kept rows")
  # Scaled by the largest weight first, so that squares of huge weights stay finite.
  w = w / w.max()
  return float(np.sum(w) ** 2 / (len(w) * np.sum(w * w)))


def _weighted_losses(validator: str, source_val_logits, source_val_labels,
                     source_val_features, target_features, *, weights,
                     source_train_features, loss, source_val_where,
                     target_where, source_train_where, folds, classifier_c,
                     seed) -> tuple[np.ndarray, np.ndarray]:
  """(w [n], loss [n]) of the kept source_val rows."""
  logits, labels, mask = _source_val(validator, source_val_logits,
                                     source_val_labels, source_val_where)
  if loss not in LOSSES:
    raise ValueError(
        f"{validator}: loss must be one of {sorted(LOSSES)}; got {loss!r}")
  if weights is None:
    weights = _weights(validator, source_val_features, target_features,
                       source_train_features, source_val_where, target_where,
                       source_train_where, rows=len(logits), folds=folds,
                       classifier_c=classifier_c, seed=seed)
  else:
    weights = _array(validator, "weights", weights, 1, "float [N]", "float")
    _same_rows(validator, ("source_val_logits", logits), ("weights", weights))
  w = _finite(validator, "weights", weights[mask])
  if np.any(w < 0):
    raise ValueError(f"{validator}: weights must be >= 0; got min {w.min()}")
  kept = _finite(validator, "source_val_logits", logits[mask])
  return w, LOSSES[loss](kept, labels[mask])


def importance_weighted(source_val_logits, source_val_labels,
                        source_val_features=None, target_features=None, *,
                        source_train_features=None, weights=None,
                        loss: str = "cross_entropy", source_val_where=None,
                        target_where=None, source_train_where=None,
                        folds: int = 5, classifier_c: float = 1.0,
                        seed: int = 0) -> float:
  r"""IWV: minus the importance-weighted loss on the held-out source split.

  .. math::
    \mathrm{IWV} = -\frac{1}{n} \sum_{i=1}^{n} w(x_i)\,
      \ell\left(y_i, h(x_i)\right),
    \qquad w(x) = \frac{p_t(x)}{p_s(x)},

  over the n source_val rows: an unbiased estimate of the target risk under
  covariate shift (p(y | x) shared), negated so that higher is better. The
  weights come from `importance_weights` (see there for how the domain
  classifier is trained; they are not normalised or clipped) unless given.

  Args:
    source_val_logits: float [N, K] logits of the source_val rows.
    source_val_labels: int [N] labels in [0, K).
    source_val_features: float [N, d] features of the same rows (not needed
      when `weights` is given).
    target_features: float [M, d] features of target rows (idem).
    source_train_features: optional float [P, d] features of other source
      train rows, for the domain classifier (else cross-fitting).
    weights: optional float [N] precomputed weights, e.g. from
      `importance_weights` (so that IWV and DEV share one classifier).
    loss: the per-row loss, a key of `LOSSES` ('cross_entropy', 'zero_one').
    source_val_where, target_where, source_train_where: optional bool masks;
      rows marked False are ignored.
    folds, classifier_c, seed: see `importance_weights`.

  Returns:
    -mean(w * loss), a float <= 0 (higher is better).

  Example:
    >>> import numpy as np
    >>> logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    >>> importance_weighted(logits, np.array([0, 0]),
    ...                     weights=np.array([0.5, 1.5]), loss="zero_one")
    -0.75

  References:
    Sugiyama, Krauledat & Mueller, "Covariate Shift Adaptation by Importance
    Weighted Cross Validation", JMLR 8, 2007.
  """
  w, losses = _weighted_losses(
      "importance_weighted", source_val_logits, source_val_labels,
      source_val_features, target_features, weights=weights,
      source_train_features=source_train_features, loss=loss,
      source_val_where=source_val_where, target_where=target_where,
      source_train_where=source_train_where, folds=folds,
      classifier_c=classifier_c, seed=seed)
  return float(-np.mean(w * losses))


def dev(source_val_logits, source_val_labels, source_val_features=None,
        target_features=None, *, source_train_features=None, weights=None,
        loss: str = "cross_entropy", source_val_where=None, target_where=None,
        source_train_where=None, folds: int = 5, classifier_c: float = 1.0,
        seed: int = 0) -> float:
  r"""DEV: IWV with a control variate, negated so that higher is better.

  With L_i = w_i \ell_i the weighted losses and W_i = w_i the weights of the
  n source_val rows (E_s[W] = 1, so W is a control variate of L):

  .. math::
    \eta = -\frac{\widehat{\mathrm{Cov}}(L, W)}{\widehat{\mathrm{Var}}(W)},
    \qquad
    \mathrm{DEV} = -\left(\bar{L} + \eta\,\bar{W} - \eta\right),

  with unbiased (n - 1) sample covariance and variance, as in the paper's
  code. The estimate stays unbiased for the target risk and has lower
  variance than IWV's -\bar{L} when L and W are correlated. The weights come
  from `importance_weights` unless given (not normalised or clipped:
  normalising to mean 1 would cancel the control variate).

  Args:
    Those of `importance_weighted`.

  Returns:
    The negated DEV risk, a float (higher is better).

  Example:
    >>> import numpy as np
    >>> # A constant loss is recovered exactly, whatever the weights.
    >>> logits = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    >>> dev(logits, np.array([1, 0, 0]), weights=np.array([0.5, 1.0, 2.0]),
    ...     loss="zero_one")
    -1.0

  References:
    You, Wang, Long & Jordan, "Towards Accurate Model Selection in Deep
    Unsupervised Domain Adaptation", ICML 2019 (Algorithm 1, Eq. 9).
  """
  w, losses = _weighted_losses(
      "dev", source_val_logits, source_val_labels, source_val_features,
      target_features, weights=weights,
      source_train_features=source_train_features, loss=loss,
      source_val_where=source_val_where, target_where=target_where,
      source_train_where=source_train_where, folds=folds,
      classifier_c=classifier_c, seed=seed)
  if len(w) < 2:
    raise ValueError(
        f"dev needs at least 2 source_val rows for its variance; got {len(w)}")
  weighted = w * losses
  var_w = np.var(w, ddof=1)
  # Equal up to rounding (identical rows can differ in the last bits).
  if not np.sqrt(var_w) > 1e-9 * np.mean(w):
    raise ValueError(
        f"dev: the {len(w)} importance weights are all equal (Var(W) = 0 up to "
        f"rounding), so the "
        f"control variate is undefined: the domain classifier is "
        f"degenerate (it cannot tell the domains apart from these features); "
        f"use importance_weighted or source_accuracy")
  cov = np.cov(weighted, w, ddof=1)[0, 1]
  eta = -cov / var_w
  return float(-(np.mean(weighted) + eta * np.mean(w) - eta))


# ---------------------------------------------------------------------------
# Target predictions only


def entropy(target_logits, *, where=None) -> float:
  r"""Minus the mean entropy of the target predictions.

  .. math::
    -\frac{1}{n} \sum_{i=1}^{n} H(p_i), \qquad
    H(p) = -\sum_c p_c \log p_c, \quad p_i = \mathrm{softmax}(z_i)

  in nats. Confident target predictions score higher; a model that is
  confidently wrong scores high too, which is this validator's known flaw.

  Args:
    target_logits: float [N, K] logits of target rows.
    where: optional bool [N]; rows marked False are ignored.

  Returns:
    A float in [-log K, 0] (higher is better).

  Example:
    >>> import numpy as np
    >>> round(entropy(np.array([[0.0, 0.0], [0.0, 0.0]])), 4)  # -log 2
    -0.6931

  References:
    Morerio, Cavazza & Murino, "Minimal-Entropy Correlation Alignment for
    Unsupervised Deep Domain Adaptation", ICLR 2018 (entropy for validation);
    Grandvalet & Bengio, "Semi-supervised Learning by Entropy Minimization",
    NeurIPS 2004.
  """
  logits = _logits("entropy", "target_logits", target_logits, where, "where")
  return float(-np.mean(_entropies(_log_softmax(logits))))


def mutual_information(target_logits, *, where=None) -> float:
  r"""Mutual information between target inputs and predicted classes.

  .. math::
    I = H\left(\bar{p}\right) - \frac{1}{n} \sum_{i=1}^{n} H(p_i),
    \qquad \bar{p} = \frac{1}{n} \sum_{i=1}^{n} p_i

  in nats: high when each prediction is confident (low H(p_i)) and the
  classes are used evenly (high H(p-bar)), so it does not reward collapsing
  onto one class as `entropy` does.

  Args:
    target_logits: float [N, K] logits of target rows.
    where: optional bool [N]; rows marked False are ignored.

  Returns:
    A float in [0, log K] (higher is better).

  Example:
    >>> import numpy as np
    >>> round(mutual_information(np.array([[9.0, -9.0], [-9.0, 9.0]])), 4)
    0.6931

  References:
    Bridle, Heading & MacKay, "Unsupervised Classifiers, Mutual Information
    and 'Phantom Targets'", NeurIPS 1991; Shi & Sha, "Information-Theoretical
    Learning of Discriminative Clusters for Unsupervised Domain Adaptation",
    ICML 2012; Liang et al., SHOT, ICML 2020 (information maximisation).
  """
  logits = _logits("mutual_information", "target_logits", target_logits,
                   where, "where")
  log_probs = _log_softmax(logits)
  mean_probs = np.mean(np.exp(log_probs), axis=0)
  marginal = -np.sum(np.where(mean_probs > 0,
                              mean_probs * np.log(np.where(mean_probs > 0,
                                                           mean_probs, 1.0)),
                              0.0))
  return float(marginal - np.mean(_entropies(log_probs)))


def snd(target_logits, *, temperature: float = 0.05, where=None) -> float:
  r"""Soft neighbourhood density of the target predictions.

  With p_i = softmax(z_i) the n target predictions, L2-normalised to
  \hat{p}_i = p_i / \lVert p_i \rVert, each row's similarities to the other
  rows (the diagonal excluded) are turned into a neighbour distribution:

  .. math::
    P_{ij} = \frac{\exp(\hat{p}_i^\top \hat{p}_j / \tau)}
                  {\sum_{k \ne i} \exp(\hat{p}_i^\top \hat{p}_k / \tau)}
      \quad (j \ne i),
    \qquad
    \mathrm{SND} = -\frac{1}{n} \sum_{i=1}^{n} \sum_{j \ne i}
      P_{ij} \log P_{ij}

  in nats, tau = 0.05 as in the paper. It is high when each prediction has
  many close neighbours (dense, well-clustered target predictions) and at
  most log(n - 1), reached when all predictions are equal. The reference
  code fills the diagonal with -1/tau and adds 1e-5 inside the log; here the
  diagonal is excluded exactly. Cost O(n^2 K) time and O(1024 n) memory.

  Args:
    target_logits: float [N, K] logits of target rows (N >= 2).
    temperature: tau > 0.
    where: optional bool [N]; rows marked False are ignored.

  Returns:
    A float in [0, log(n - 1)] (higher is better).

  Example:
    >>> import numpy as np
    >>> round(snd(np.zeros((3, 4))), 4)  # all equal: log(3 - 1)
    0.6931

  References:
    Saito, Kim, Teterwak, Sclaroff, Darrell & Saenko, "Tune it the Right
    Way: Unsupervised Validation of Domain Adaptation via Soft Neighborhood
    Density", ICCV 2021 (Eq. 1-3).
  """
  if not (np.isfinite(temperature) and temperature > 0):
    raise ValueError(f"snd: temperature must be > 0; got {temperature}")
  logits = _logits("snd", "target_logits", target_logits, where, "where",
                   min_rows=2)
  probs = np.exp(_log_softmax(logits))
  unit = probs / np.linalg.norm(probs, axis=1, keepdims=True)
  n = len(unit)
  total = 0.0
  for start in range(0, n, _SND_BLOCK):
    block = unit[start:start + _SND_BLOCK]
    rows = np.arange(len(block))
    sims = block @ unit.T / temperature
    sims[rows, start + rows] = -np.inf
    log_q = _log_softmax(sims)
    total += float(np.sum(_entropies(log_q)))
  return total / n


# ---------------------------------------------------------------------------
# One evaluation, every validator


@dataclasses.dataclass(frozen=True, eq=False)
class ValidatorInputs:
  """Host arrays of one evaluation, all the validators read.

  Every field is optional; a validator whose arrays are missing says so
  (e.g. a run without a `source_val` split gets a one-line ValueError from
  `source_accuracy`, `importance_weighted` and `dev`). Target labels are not
  a field: no validator may read them.

  Attributes:
    source_val_logits: float [N, K] logits of the held-out source rows.
    source_val_labels: int [N] their labels.
    source_val_features: float [N, d] their features.
    target_logits: float [M, K] logits of target rows.
    target_features: float [M, d] features of the same target rows.
    source_train_features: float [P, d] features of source train rows other
      than source_val (the source side of the domain classifier; without
      them the weights are cross-fitted on source_val).
    source_val_where: bool [N], True at real rows (e.g. tokens).
    target_where: bool [M], the same for target_logits and target_features.
    source_train_where: bool [P], the same for source_train_features.
    seed: seed of anything random in a validator (the cross-fitting folds).
  """

  source_val_logits: np.ndarray | None = None
  source_val_labels: np.ndarray | None = None
  source_val_features: np.ndarray | None = None
  target_logits: np.ndarray | None = None
  target_features: np.ndarray | None = None
  source_train_features: np.ndarray | None = None
  source_val_where: np.ndarray | None = None
  target_where: np.ndarray | None = None
  source_train_where: np.ndarray | None = None
  seed: int = 0

  @functools.cached_property
  def weights(self) -> np.ndarray:
    """`importance_weights` of the source_val rows, fitted once for both
    `importance_weighted` and `dev`."""
    return importance_weights(
        self.source_val_features, self.target_features,
        source_train_features=self.source_train_features,
        source_val_where=self.source_val_where, target_where=self.target_where,
        source_train_where=self.source_train_where, seed=self.seed)

  def weight_diagnostics(self) -> dict[str, float]:
    """How far IWV's and DEV's shared weights can be trusted (not validators):
    `importance_weight_ess`, their `effective_sample_size`, and
    `importance_weight_mean`, their source mean (1 for a calibrated domain
    classifier: the weights are neither normalised nor clipped)."""
    kept = _mask("importance_weights", "source_val_where", self.source_val_where,
                 len(self.weights), "source_val_features")
    return {"importance_weight_ess": effective_sample_size(self.weights, where=kept),
            "importance_weight_mean": float(np.mean(self.weights[kept]))}


def _with_shared_weights(validator: Callable[..., float], name: str,
                         inputs: ValidatorInputs) -> float:
  """`validator` (IWV or DEV) with the weights fitted once per `inputs`."""
  _source_val(name, inputs.source_val_logits, inputs.source_val_labels,
              inputs.source_val_where)  # names the validator when source_val is missing
  return validator(inputs.source_val_logits, inputs.source_val_labels,
                   weights=inputs.weights, source_val_where=inputs.source_val_where)


# The validators that read the importance weights (and so `weight_diagnostics`).
WEIGHTED = ("importance_weighted", "dev")

VALIDATORS: dict[str, Callable[[ValidatorInputs], float]] = {
    "source_accuracy": lambda inputs: source_accuracy(
        inputs.source_val_logits, inputs.source_val_labels,
        where=inputs.source_val_where),
    "importance_weighted": lambda inputs: _with_shared_weights(
        importance_weighted, "importance_weighted", inputs),
    "dev": lambda inputs: _with_shared_weights(dev, "dev", inputs),
    "snd": lambda inputs: snd(inputs.target_logits, where=inputs.target_where),
    "entropy": lambda inputs: entropy(inputs.target_logits,
                                      where=inputs.target_where),
    "mutual_information": lambda inputs: mutual_information(
        inputs.target_logits, where=inputs.target_where),
}


# ---------------------------------------------------------------------------
# Selection


def source_guard(source_accuracies, *, max_drop: float = 0.03) -> np.ndarray:
  r"""Which candidates of a sweep a validator may pick: those that still
  classify the source.

  .. math::
    \mathrm{eligible}_m = \mathrm{acc}_s(m) \ge \max_{m'} \mathrm{acc}_s(m') - \delta

  over the candidates m (configurations, checkpoints) of one method and pair,
  with acc_s their `source_accuracy` and delta = `max_drop`. The target-only
  validators (`snd`, `entropy`, `mutual_information`) reward predictions that
  are confident and clustered, and a network whose target predictions
  collapse onto a few classes is both; where it has also given up the source,
  which the adaptation loss was never meant to cost, the guard excludes it. A
  network that tells the domains apart can collapse the target alone and pass
  (self-training on MNIST -> MNIST-M; `mutual_information` scores that low).
  Within max_drop of the best, source accuracy differs by noise (one binomial
  standard error is 1.1 points at 95% on 400 rows; 0.03 is about three), so
  the guard leaves the choice among sound candidates to the validator.
  `source_accuracy` itself picks the same with or without it.

  Args:
    source_accuracies: float [M], each candidate's `source_accuracy`; a
      non-finite value (a run that diverged) is never eligible.
    max_drop: delta >= 0, in accuracy (0.03 = 3 points); 1 admits all.

  Returns:
    bool [M]: True where the candidate may be picked. At least the best one is.

  Example:
    >>> source_guard([0.95, 0.94, 0.84], max_drop=0.03).tolist()
    [True, True, False]
  """
  accuracies = _array("source_guard", "source_accuracies", source_accuracies, 1,
                      "float [M], one source_accuracy per candidate", "float")
  if accuracies.size == 0:
    raise ValueError("source_guard: no candidates (source_accuracies is empty)")
  if not 0 <= max_drop <= 1:
    raise ValueError(f"source_guard: max_drop must lie in [0, 1] (an accuracy drop); got"
                     f" {max_drop}")
  finite = np.isfinite(accuracies)
  if not finite.any():
    raise ValueError(
        "source_guard: no candidate has a finite source_accuracy; the guard needs the "
        "held-out source split (--source_val_fraction > 0), which source-free runs lack")
  best = accuracies[finite].max()
  # Inclusive to rounding: a drop of exactly max_drop (3 of 100 rows) is eligible.
  return finite & (accuracies >= best - max_drop - 1e-9)
