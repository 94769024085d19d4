"""Labelled subsets of a domain: a few target labels for fine-tuning.

`--target_labelled_fraction=0.1` trains on a stratified 10% of the target's
labelled training split (as the *source* stream of the run), while the
unlabelled target stream still holds the whole split without its labels.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


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
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
  if not data:
    raise ValueError("data must hold at least one array, got an empty mapping.")
  n = len(next(iter(data.values())))
  rng = np.random.default_rng(seed)
  labels = data.get("label")
  if labels is None or np.ndim(labels) != 1:
    count = max(1, int(round(fraction * n)))
    return np.sort(rng.permutation(n)[:count])
  if len(labels) != n:
    raise ValueError(f"data['label'] has {len(labels)} rows, expected {n}.")
  chosen = []
  for label in np.unique(labels):
    rows = np.flatnonzero(labels == label)
    count = max(1, int(round(fraction * len(rows))))
    chosen.append(rng.permutation(rows)[:count])
  return np.sort(np.concatenate(chosen))
