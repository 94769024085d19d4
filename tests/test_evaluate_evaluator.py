"""The evaluator: test metrics from one compiled program, and the validators
that runs compute at each evaluation without target labels."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from xdomain import data
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.data import subsets
from xdomain.train import Experiment
from xdomain.train import train_and_evaluate
from xdomain.train.writer import read_metrics

_SOURCE_VALIDATORS = {"source_accuracy", "importance_weighted", "dev"}
_TARGET_VALIDATORS = {"snd", "entropy", "mutual_information"}


def _config(data_dir, **overrides):
  return Config(**dict(dict(method="mcc", steps=2, batch_size=16, eval_batch_size=64,
                            image_size=16, log_every=1, eval_every=1, checkpoint_every=2,
                            data_dir=data_dir), **overrides))


def test_runs_report_every_validator_at_each_evaluation(data_dir, tmp_path):
  config = _config(data_dir, source_val_fraction=0.1)
  results = train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  names = {k[len("validator/"):] for k in results if k.startswith("validator/")}
  assert names == _SOURCE_VALIDATORS | _TARGET_VALIDATORS
  assert all(np.isfinite(results[f"validator/{n}"]) for n in names)
  evaluations = [e for e in read_metrics(str(tmp_path)) if "validator/entropy" in e]
  assert [e["step"] for e in evaluations] == [1, 2]
  # Beside IWV and DEV, how far their importance weights can be trusted.
  for e in (results, *evaluations):
    assert 0 < e["diagnostic/importance_weight_ess"] <= 1
    assert e["diagnostic/importance_weight_mean"] > 0
  # The source validators read the held-out rows: 10% of MNIST's training split.
  experiment = Experiment(config, str(tmp_path / "again"), devices=jax.devices()[:1])
  evaluator = experiment.evaluator
  held = sum(int(np.sum(b["mask"]))
             for b in evaluator._source_val_batches)  # pylint: disable=protected-access
  _, rows = subsets.source_val_split(data.load_domain("digits/mnist", "train",
                                                      data_dir=data_dir), 0.1)
  assert held == len(rows) == 400
  target = evaluator._target_validation_batches  # pylint: disable=protected-access
  assert all("label" not in b for b in target)  # no target label is read


def test_without_a_source_val_split_only_the_target_validators_run(data_dir, tmp_path):
  results = train_and_evaluate(_config(data_dir), str(tmp_path), devices=jax.devices()[:1])
  names = {k[len("validator/"):] for k in results if k.startswith("validator/")}
  assert names == _TARGET_VALIDATORS
  assert not any(k.startswith("diagnostic/") for k in results)


def test_held_out_source_rows_never_train(data_dir):
  def training_rows(holdout):
    loader = data.CrossDomainLoader(
        "digits/uci", "digits/mnist", batch_size=64, seed=3, data_dir=data_dir,
        preprocess=data.ImagePreprocess(size=(8, 8), channels=1), source_holdout=holdout,
        process_index=0, process_count=1)
    seen = set()
    for _ in range(30):  # > one epoch of the 1,438 UCI training images
      seen |= {image.tobytes() for image in next(loader)["source"]["image"]}
    return seen

  images = data.ImagePreprocess(size=(8, 8), channels=1).prepare(
      data.load_domain("digits/uci", "train", data_dir=data_dir))["image"]
  _, held = subsets.source_val_split(data.load_domain("digits/uci", "train",
                                                      data_dir=data_dir), 0.2)
  held_images = {images[i].tobytes() for i in held}
  assert not training_rows(0.2) & held_images
  assert training_rows(0.0) & held_images


def test_with_few_target_labels_the_held_out_rows_are_part_of_them(data_dir, tmp_path):
  config = _config(data_dir, method="source_only", source="digits/mnist", target="digits/uci",
                   target_labelled_fraction=0.1, source_val_fraction=0.2, seed=4)
  experiment = Experiment(config, str(tmp_path), devices=jax.devices()[:1])
  held = experiment.evaluator._source_val_batches  # pylint: disable=protected-access
  uci = data.load_domain("digits/uci", "train", data_dir=data_dir)
  budget = subsets.stratified_subset(uci, 0.1, seed=4)
  train, rows = subsets.labelled_rows(uci, fraction=0.1, holdout=0.2, seed=4)
  assert sum(int(np.sum(b["mask"])) for b in held) == len(rows) == 30
  assert set(rows) < set(budget) and not set(rows) & set(train)
  images = experiment.preprocess.prepare(uci)["image"]
  held_images = {images[i].tobytes() for i in rows}
  loader = experiment.training_loader()
  seen = set()
  for _ in range(10):  # 160 rows: more than an epoch of the training rows left
    seen |= {image.tobytes() for image in next(loader)["source"]["image"]}
  assert len(seen) == len(train) and not seen & held_images


def test_the_source_val_split_is_fixed_stratified_and_refused_out_of_range(data_dir, tmp_path):
  labels = data.load_domain("digits/uci", "train", data_dir=data_dir)["label"]
  _, held = subsets.source_val_split({"label": labels}, 0.1)
  assert set(np.unique(labels[held])) == set(range(10))
  with pytest.raises(ConfigError, match=r"--source_val_fraction=1.0 must be in \[0, 1\)"):
    Experiment(dataclasses.replace(_config(data_dir), source_val_fraction=1.0), str(tmp_path))
