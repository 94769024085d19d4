"""--plots: what the figures compare, on their own panels."""

from __future__ import annotations

import os

import jax
import pytest

from xdomain import checkpoint
from xdomain import plots
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.train import Experiment
from xdomain.train import train_and_evaluate
from xdomain.train.writer import read_metrics


def test_plots_compare_with_the_baseline_run_and_say_so(data_dir, tmp_path, monkeypatch):
  monkeypatch.setattr(plots, "FEATURES_PER_DOMAIN", 60)  # t-SNE of 120 points
  one = jax.devices()[:1]
  base = Config(method="source_only", steps=2, batch_size=16, eval_batch_size=64,
                image_size=16, log_every=1, eval_every=1, checkpoint_every=2,
                data_dir=data_dir)
  baseline = str(tmp_path / "source_only")
  train_and_evaluate(base, baseline, devices=one)
  adapted = Config(**dict(vars(base), method="dann", discriminator_hidden=16, plots=True,
                          plots_baseline=baseline))
  results = train_and_evaluate(adapted, str(tmp_path / "dann"), devices=one)
  assert {"proxy_a_distance_baseline", "proxy_a_distance_after"} <= set(results)
  for name in ("learning_curves.png", "tsne.png"):
    assert os.path.getsize(tmp_path / "dann" / name) > 10_000
  # The reference model is the baseline's, not a random one: with the baseline's
  # own final model on both panels, the two distances are equal.
  experiment = Experiment(adapted, str(tmp_path / "dann"), devices=one)
  baseline_state = Experiment(base, baseline, devices=one).prepare_state()
  variables = checkpoint.load_variables(baseline)
  baseline_state = baseline_state.replace(
      params=dict(baseline_state.params, model=variables["params"]),
      batch_stats=variables["batch_stats"])
  again = plots.write_plots(experiment, baseline_state, read_metrics(str(tmp_path / "dann")))
  assert again["proxy_a_distance_baseline"] == again["proxy_a_distance_after"]


def test_plots_baseline_needs_plots_and_a_run(data_dir, tmp_path):
  with pytest.raises(ConfigError, match="--plots_baseline"):
    Experiment(Config(plots_baseline=str(tmp_path), data_dir=data_dir), str(tmp_path))
