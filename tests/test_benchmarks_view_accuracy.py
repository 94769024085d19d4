"""benchmarks/view_accuracy.py: a run's source test accuracy under the consistency views."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import view_accuracy
from tests import flagfiles
from xdomain.train import train_and_evaluate


def test_as_is_is_the_run_s_own_source_test_accuracy_and_views_differ(data_dir, tmp_path):
  config = flagfiles.config_from_flagfile(
      "experiments/digits/source_only.flags",
      **dict(flagfiles.SMOKE_OVERRIDES, steps=20, eval_every=20, checkpoint_every=20),
      data_dir=data_dir)
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir, devices=flagfiles.smoke_devices())
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  accuracies = view_accuracy.view_accuracies(workdir, seed=0)
  assert list(accuracies) == ["as is", "shift and noise", "strong view"]
  assert accuracies["as is"] == pytest.approx(results["source_test_accuracy"], abs=1e-6)
  # The views move the images: a network that reads them scores them differently.
  assert accuracies["as is"] not in (accuracies["shift and noise"], accuracies["strong view"])


def test_a_folder_without_a_run_is_refused(tmp_path):
  with pytest.raises(ValueError, match="no config.json"):
    view_accuracy.view_accuracies(str(tmp_path))
