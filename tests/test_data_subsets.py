"""One stratified rule for the domains' splits and the few-label subsets."""

import numpy as np
import pytest

from xdomain.data import subsets


def test_stratified_split_is_disjoint_stratified_and_fixed():
  strata = [0] * 70 + [1] * 20 + [2] * 10
  rest, chosen = subsets.stratified_split(strata, 0.3, seed=0)
  assert not set(rest) & set(chosen)
  assert sorted(np.concatenate([rest, chosen]).tolist()) == list(range(100))
  assert np.bincount(np.asarray(strata)[chosen]).tolist() == [21, 6, 3]
  np.testing.assert_array_equal(chosen, subsets.stratified_split(strata, 0.3, seed=0)[1])
  assert not np.array_equal(chosen, subsets.stratified_split(strata, 0.3, seed=1)[1])
  with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
    subsets.stratified_split(strata, 0.0, seed=0)


def test_each_stratum_is_a_seeded_permutation_in_sorted_order():
  # The rule the built domains were split by: strata in sorted order (numbers
  # numerically, names by repr), each shuffled by one generator in turn.
  strata = np.array([3, 1, 3, 1, 1, 3, 2, 2], np.int64)
  rng = np.random.default_rng(7)
  expected = [rng.permutation(np.flatnonzero(strata == s))[:round(0.5 * np.sum(strata == s))]
              for s in (1, 2, 3)]
  np.testing.assert_array_equal(subsets.stratified_split(strata, 0.5, seed=7)[1],
                                np.sort(np.concatenate(expected)))
  names = ["cb02", "ca01", "cb02", "ca01"]
  rng = np.random.default_rng(0)
  first, second = rng.permutation([1, 3])[:1], rng.permutation([0, 2])[:1]
  np.testing.assert_array_equal(subsets.stratified_split(names, 0.5, seed=0)[1],
                                np.sort(np.concatenate([first, second])))


def test_stratified_subset_keeps_every_class_in_proportion():
  labels = np.repeat(np.arange(4), [100, 50, 10, 1]).astype(np.int32)
  data = {"image": np.zeros((len(labels), 2)), "label": labels}
  rows = subsets.stratified_subset(data, 0.1, seed=3)
  counts = np.bincount(labels[rows], minlength=4)
  np.testing.assert_array_equal(counts, [10, 5, 1, 1])
  np.testing.assert_array_equal(rows, subsets.stratified_subset(data, 0.1, seed=3))
  assert not np.array_equal(rows, subsets.stratified_subset(data, 0.1, seed=4))
  with pytest.raises(ValueError, match="fraction must be in"):
    subsets.stratified_subset(data, 0.0, seed=0)
  tagged = {"tokens": np.zeros((20, 3))}  # no per-example label: a plain random subset
  assert len(subsets.stratified_subset(tagged, 0.25, seed=0)) == 5


def test_few_label_validation_rows_come_out_of_the_labelled_budget():
  labels = np.repeat(np.arange(4), [200, 100, 60, 40]).astype(np.int32)
  data = {"image": np.zeros((len(labels), 2)), "label": labels}
  budget = subsets.stratified_subset(data, 0.1, seed=5)
  train, held = subsets.labelled_rows(data, fraction=0.1, holdout=0.25, seed=5)
  assert not set(train) & set(held)
  np.testing.assert_array_equal(np.sort(np.concatenate([train, held])), budget)
  np.testing.assert_array_equal(np.bincount(labels[held], minlength=4), [5, 2, 2, 1])
  # The whole split: the fixed source_val rows, whatever the seed.
  rest, fixed = subsets.source_val_split(data, 0.25)
  for seed in (0, 9):
    train, held = subsets.labelled_rows(data, holdout=0.25, seed=seed)
    np.testing.assert_array_equal(held, fixed)
    np.testing.assert_array_equal(train, rest)
  train, held = subsets.labelled_rows(data, fraction=0.1, seed=5)
  np.testing.assert_array_equal(train, budget)
  assert held.size == 0
