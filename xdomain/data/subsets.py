"""Stratified splits and subsets of a domain, one rule for all of them.

Every domain's fixed train/test split (images, text) and the few target labels
of `--target_labelled_fraction=0.1` (a stratified 10% of the target's labelled
training split, trained on as the *source* stream of the run, while the
unlabelled target stream still holds the whole split without its labels) are
drawn by `stratified_split`. `labelled_rows` says which rows of a labelled
training split train and which the validators hold out (`--source_val_fraction`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from numbers import Number

import numpy as np


def _stratum_order(stratum: Hashable):
  """Numbers in numeric order, anything else by its repr."""
  return (0, stratum, "") if isinstance(stratum, Number) else (1, 0, repr(stratum))


def stratified_split(strata: Sequence[Hashable], fraction: float, *, seed: int,
                     min_per_stratum: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Splits row indices so that every stratum is split alike.

  The strata are taken in sorted order; each one's rows (in index order) are
  shuffled by one generator seeded with `seed`, and its first
  `max(min_per_stratum, round(fraction * n))` rows are chosen.

  Args:
    strata: the stratum (a label, a source file, ...) of each row, length N.
    fraction: share of each stratum chosen, in (0, 1].
    seed: seed of the generator (numpy PCG64, stable across numpy versions).
    min_per_stratum: rows chosen at least from every stratum.

  Returns:
    `(rest, chosen)`: sorted int64 indices, disjoint, covering range(N).
  """
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
  if isinstance(strata, np.ndarray) and strata.ndim != 1:
    raise ValueError(f"strata must have shape [n], got {strata.shape}.")
  groups: dict[Hashable, list[int]] = {}
  for i, stratum in enumerate(np.asarray(strata).tolist()
                              if isinstance(strata, np.ndarray) else strata):
    groups.setdefault(stratum, []).append(i)
  rng = np.random.default_rng(seed)
  rest, chosen = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
  for stratum in sorted(groups, key=_stratum_order):
    rows = rng.permutation(np.asarray(groups[stratum], np.int64))
    count = max(min_per_stratum, int(round(fraction * len(rows))))
    chosen.append(rows[:count])
    rest.append(rows[count:])
  return np.sort(np.concatenate(rest)), np.sort(np.concatenate(chosen))


def stratified_subset(data: Mapping[str, np.ndarray], fraction: float, *, seed: int
                      ) -> np.ndarray:
  """Sorted row indices of a stratified random `fraction` of a domain split.

  Every class keeps `round(fraction * n_c)` of its `n_c` rows, and at least
  one, so a 1% subset of a small split still shows every class. Domains
  without a per-example `label` (taggers) get a plain random subset of
  `max(1, round(fraction * n))` rows. The choice depends only on the labels,
  `fraction` and `seed`.

  Args:
    data: the split's arrays, e.g. `{'image': [n, ...], 'label': int[n]}`.
    fraction: in (0, 1].
    seed: seed of the draw.

  Returns:
    int64 [m] sorted row indices.
  """
  if not data:
    raise ValueError("data must hold at least one array, got an empty mapping.")
  n = len(next(iter(data.values())))
  labels = data.get("label")
  if labels is None or np.ndim(labels) != 1:
    labels = np.zeros(n, np.int64)  # one stratum
  elif len(labels) != n:
    raise ValueError(f"data['label'] has {len(labels)} rows, expected {n}.")
  return stratified_split(labels, fraction, seed=seed, min_per_stratum=1)[1]


# The held-out part of a source split is the same for every run seed, so that
# validator values of runs that differ in their seed are comparable.
SOURCE_VAL_SEED = 0


def source_val_split(data: Mapping[str, np.ndarray], fraction: float
                     ) -> tuple[np.ndarray, np.ndarray]:
  """`(train rows, held-out rows)` of a labelled training split: a stratified
  `fraction` (by label, where examples have one) that never trains and serves
  the validators that need labelled source data (`--source_val_fraction`)."""
  n = len(next(iter(data.values())))
  labels = data.get("label")
  if labels is None or np.ndim(labels) != 1:
    labels = np.zeros(n, np.int64)
  return stratified_split(labels, fraction, seed=SOURCE_VAL_SEED, min_per_stratum=1)


def labelled_rows(data: Mapping[str, np.ndarray], *, fraction: float = 1.0,
                  holdout: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """`(train rows, held-out rows)` of the labelled stream's training split.

  With the whole split (`fraction` 1), the held-out rows are `source_val_split`'s
  and the same for every run seed. With few labels (`fraction` < 1: the
  `stratified_subset` drawn with `seed`), they are held out of that subset, so
  that validation spends labels of the budget and not others (Oliver et al.,
  "Realistic Evaluation of Deep Semi-Supervised Learning Algorithms", 2018).

  Args:
    data: the split's arrays.
    fraction: the labelled share trained on (and validated on), in (0, 1].
    holdout: the share of those rows held out for the validators, in [0, 1).
    seed: the draw of the few-label subset.

  Returns:
    Sorted int64 row indices of the split, disjoint; the held-out ones empty
    without `holdout`.
  """
  rows = (np.arange(len(next(iter(data.values()))), dtype=np.int64) if fraction == 1.0
          else stratified_subset(data, fraction, seed=seed))
  if not holdout:
    return rows, np.zeros(0, np.int64)
  kept, held = source_val_split({k: v[rows] for k, v in data.items()}, holdout)
  return rows[kept], rows[held]
