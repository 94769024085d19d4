"""Evaluation metrics: accuracy, macro-F1, token accuracy and entity span F1.

All functions take host values (numpy arrays or lists) of a whole evaluation
split and return Python floats, so results are exact rather than means of
per-batch means.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _labels(name: str, values) -> np.ndarray:
  array = np.asarray(values)
  if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
    raise ValueError(
        f"{name} must be integer labels [N]; got shape {array.shape} and dtype "
        f"{array.dtype}")
  return array


def _check_pair(true: np.ndarray, pred: np.ndarray) -> None:
  if true.shape != pred.shape:
    raise ValueError(
        f"true and pred must have the same shape; got {true.shape} and "
        f"{pred.shape}")
  if true.size == 0:
    raise ValueError("true and pred are empty; there is nothing to score")


def accuracy(true, pred) -> float:
  """Share of examples whose predicted label is the true one.

  Args:
    true: int [N] labels.
    pred: int [N] predicted labels.

  Returns:
    Accuracy in [0, 1].
  """
  true, pred = _labels("true", true), _labels("pred", pred)
  _check_pair(true, pred)
  return float(np.mean(true == pred))


def macro_f1(true, pred, num_classes: int) -> float:
  """Unweighted mean of the per-class F1 scores.

  Classes that occur neither in `true` nor in `pred` have no defined F1 and
  are left out of the mean (as scikit-learn's `f1_score(average='macro')`
  does without `labels`); a class that occurs in only one of them scores 0.

  Args:
    true: int [N] labels in [0, num_classes).
    pred: int [N] predicted labels in [0, num_classes).
    num_classes: K.

  Returns:
    Macro-F1 in [0, 1].
  """
  true, pred = _labels("true", true), _labels("pred", pred)
  _check_pair(true, pred)
  for name, values in (("true", true), ("pred", pred)):
    if values.min() < 0 or values.max() >= num_classes:
      raise ValueError(
          f"{name} must lie in [0, num_classes={num_classes}); got values in "
          f"[{values.min()}, {values.max()}]")
  scores = []
  for k in range(num_classes):
    t, p = true == k, pred == k
    if not (t.any() or p.any()):
      continue
    tp = np.sum(t & p)
    scores.append(2.0 * tp / (t.sum() + p.sum()))
  return float(np.mean(scores))


def token_accuracy(true, pred, mask) -> float:
  """Share of real (unmasked) tokens whose predicted tag is the true one.

  Args:
    true: int [N, L] tags.
    pred: int [N, L] predicted tags.
    mask: bool [N, L], True at real tokens (padding is not scored).

  Returns:
    Token accuracy in [0, 1].
  """
  true, pred, mask = np.asarray(true), np.asarray(pred), np.asarray(mask)
  if true.ndim != 2 or pred.shape != true.shape or mask.shape != true.shape:
    raise ValueError(
        f"true, pred and mask must all be [N, L]; got shapes {true.shape}, "
        f"{pred.shape} and {mask.shape}")
  mask = mask.astype(bool)
  if not mask.any():
    raise ValueError("mask selects no tokens; there is nothing to score")
  return float(np.sum((true == pred) & mask) / np.sum(mask))


# ---------------------------------------------------------------------------
# Entity spans, following conlleval's chunk rules

_PREFIXES = ("B", "I", "E", "S")


def _split_tag(tag: str) -> tuple[str, str]:
  """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '')."""
  if tag == "O":
    return "O", ""
  prefix, dash, kind = tag.partition("-")
  if not dash or prefix not in _PREFIXES or not kind:
    raise ValueError(
        f"tag {tag!r} is neither 'O' nor B-/I-/E-/S- followed by a type")
  return prefix, kind


def _chunk_ends(prev: str, prev_type: str, tag: str, kind: str) -> bool:
  """Whether the chunk open at the previous token ends before this token."""
  if prev == "O":
    return False
  if prev in ("E", "S") or prev_type != kind:
    return True
  # prev is B or I of the same type: only B, S or O end it.
  return tag in ("B", "S", "O")


def _chunk_starts(prev: str, prev_type: str, tag: str, kind: str) -> bool:
  """Whether a chunk starts at this token (an I- after O or another type does)."""
  if tag == "O":
    return False
  if tag in ("B", "S") or prev_type != kind:
    return True
  # tag is I or E of the previous token's type: it continues unless that
  # chunk was closed by E or S, or there was none.
  return prev in ("E", "S", "O")


def chunks(tags: Sequence[str]) -> list[tuple[int, int, str]]:
  """The entity spans of one sentence's tags under conlleval's rules.

  Args:
    tags: tag strings ('O', 'B-PER', 'I-PER', also IOBES 'E-', 'S-').

  Returns:
    (start, end, type) per chunk, end exclusive, in order.
  """
  spans = []
  prev, prev_type, start = "O", "", None
  for i, tag in enumerate(tags):
    prefix, kind = _split_tag(tag)
    if start is not None and _chunk_ends(prev, prev_type, prefix, kind):
      spans.append((start, i, prev_type))
      start = None
    if _chunk_starts(prev, prev_type, prefix, kind):
      start = i
    prev, prev_type = prefix, kind
  if start is not None:
    spans.append((start, len(tags), prev_type))
  return spans


def _prf(correct: int, true: int, pred: int) -> dict[str, float]:
  precision = correct / pred if pred else 0.0
  recall = correct / true if true else 0.0
  f1 = (2 * precision * recall / (precision + recall)
        if precision + recall else 0.0)
  return {"precision": precision, "recall": recall, "f1": f1,
          "true_chunks": true, "pred_chunks": pred, "correct_chunks": correct}


def span_f1(true_tags: Sequence[Sequence[str]],
            pred_tags: Sequence[Sequence[str]]) -> dict:
  """Entity-level precision, recall and F1, micro-averaged and per type.

  Chunks follow conlleval: a B- tag, an I- tag after O, and an I- tag after
  a tag of another type each start a chunk; a predicted chunk is correct only
  if its start, end and type all equal those of a true chunk. Each sentence
  is chunked on its own. A score with a zero denominator is 0.

  Args:
    true_tags: N sentences of tag strings.
    pred_tags: N sentences of predicted tag strings, same lengths.

  Returns:
    {'precision', 'recall', 'f1', 'true_chunks', 'pred_chunks',
    'correct_chunks', 'per_type': {type: the same keys but per_type}}, types
    being those seen in either input.
  """
  if len(true_tags) != len(pred_tags):
    raise ValueError(
        f"true_tags and pred_tags must hold the same number of sentences; got "
        f"{len(true_tags)} and {len(pred_tags)}")
  counts: dict[str, list[int]] = {}  # type -> [correct, true, pred]
  for i, (t_seq, p_seq) in enumerate(zip(true_tags, pred_tags)):
    if isinstance(t_seq, str) or isinstance(p_seq, str):
      raise ValueError(
          f"sentence {i}: expected a sequence of tag strings, got one str")
    if len(t_seq) != len(p_seq):
      raise ValueError(
          f"sentence {i}: {len(t_seq)} true tags but {len(p_seq)} predicted")
    t_spans, p_spans = set(chunks(t_seq)), set(chunks(p_seq))
    for span in t_spans:
      counts.setdefault(span[2], [0, 0, 0])[1] += 1
    for span in p_spans:
      counts.setdefault(span[2], [0, 0, 0])[2] += 1
    for span in t_spans & p_spans:
      counts[span[2]][0] += 1
  total = [sum(c[j] for c in counts.values()) for j in range(3)]
  result = _prf(*total)
  result["per_type"] = {kind: _prf(*counts[kind]) for kind in sorted(counts)}
  return result


def tag_names_of(tag_ids, mask, names: Sequence[str]) -> list[list[str]]:
  """Turns padded tag ids into per-sentence tag-name lists (for `span_f1`).

  Args:
    tag_ids: int [N, L].
    mask: bool [N, L], True at real tokens; each row's True run must be a
      prefix (as produced by the encoders).
    names: tag name of each id.

  Returns:
    N lists of tag names, each as long as its row's mask.
  """
  tag_ids, mask = np.asarray(tag_ids), np.asarray(mask).astype(bool)
  if tag_ids.ndim != 2 or mask.shape != tag_ids.shape:
    raise ValueError(
        f"tag_ids and mask must both be [N, L]; got {tag_ids.shape} and "
        f"{mask.shape}")
  if tag_ids.size and (tag_ids.min() < 0 or tag_ids.max() >= len(names)):
    raise ValueError(
        f"tag_ids must lie in [0, {len(names)}); got [{tag_ids.min()}, "
        f"{tag_ids.max()}]")
  return [[names[i] for i in row[m]] for row, m in zip(tag_ids, mask)]


def classification_metrics(true, pred, num_classes: int) -> dict[str, float]:
  """{'accuracy', 'macro_f1'} of one split's predictions."""
  return {"accuracy": accuracy(true, pred),
          "macro_f1": macro_f1(true, pred, num_classes)}


def tagging_metrics(true, pred, mask,
                    names: Sequence[str] | None = None) -> dict[str, float]:
  """Token accuracy, plus span scores when `names` are BIO tags (NER).

  Args:
    true: int [N, L] tags.
    pred: int [N, L] predicted tags.
    mask: bool [N, L], True at real tokens.
    names: tag names; if given and they are BIO/IOBES tags ('O' among them),
      span precision/recall/F1 are added, micro ('span_f1') and per type
      ('span_f1/<type>').

  Returns:
    A flat dict of floats, e.g. {'token_accuracy', 'span_precision',
    'span_recall', 'span_f1', 'span_f1/person', ...}.
  """
  out = {"token_accuracy": token_accuracy(true, pred, mask)}
  if names is not None and "O" in names:
    spans = span_f1(tag_names_of(true, mask, names),
                    tag_names_of(pred, mask, names))
    out.update({f"span_{k}": float(spans[k])
                for k in ("precision", "recall", "f1")})
    for kind, scores in spans["per_type"].items():
      out[f"span_f1/{kind}"] = float(scores["f1"])
  return out


def proxy_a_distance(source_features, target_features, *, seed: int = 0) -> float:
  """Proxy A-distance 2 (1 - 2 err) between two feature samples.

  A linear classifier is trained to tell source from target on half of each
  sample (balanced) and `err` is its error on the other half. 0 means the
  domains are indistinguishable in feature space, 2 perfectly separable.

  Args:
    source_features: [n, d] source features.
    target_features: [m, d] target features.
    seed: seed of the half/half split.

  Returns:
    The proxy A-distance, a float in [-2, 2] (clipped below at 0 in practice
    by chance-level errors near 0.5).

  References:
    Ben-David et al., "Analysis of Representations for Domain Adaptation",
    NeurIPS 2006; Ganin et al., JMLR 2016 (section 6.1.3).
  """
  from sklearn.linear_model import LogisticRegression
  from sklearn.preprocessing import StandardScaler

  source = np.asarray(source_features, np.float64)
  target = np.asarray(target_features, np.float64)
  if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
    raise ValueError(
        f"source_features and target_features must be [n, d] and [m, d]; got "
        f"{source.shape} and {target.shape}")
  n = min(len(source), len(target))
  if n < 4:
    raise ValueError(f"need at least 4 examples per domain; got {n}")
  rng = np.random.default_rng(seed)
  source = source[rng.permutation(len(source))[:n]]
  target = target[rng.permutation(len(target))[:n]]
  half = n // 2
  x_train = np.concatenate([source[:half], target[:half]])
  y_train = np.concatenate([np.ones(half), np.zeros(half)])
  x_test = np.concatenate([source[half:], target[half:]])
  y_test = np.concatenate([np.ones(n - half), np.zeros(n - half)])
  scaler = StandardScaler().fit(x_train)
  classifier = LogisticRegression(max_iter=1000).fit(scaler.transform(x_train), y_train)
  error = 1.0 - classifier.score(scaler.transform(x_test), y_test)
  return 2.0 * (1.0 - 2.0 * error)
