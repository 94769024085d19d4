"""`xdomain.train.Experiment`, used from Python as docs/architecture.md shows."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from xdomain.config import Config
from xdomain.train import Experiment
from xdomain.train import train_and_evaluate


def test_an_experiment_stepped_by_hand_ends_where_a_run_ends(data_dir, tmp_path):
  config = Config(method="mcc", steps=3, batch_size=16, eval_batch_size=64, data_dir=data_dir,
                  log_every=1, eval_every=3, checkpoint_every=3)
  devices = jax.devices()[:1]
  experiment = Experiment(config, str(tmp_path / "by_hand"), devices=devices)
  assert (experiment.task.name, experiment.source_info.name) == (
      "image_classification", "digits/mnist")
  state, loader = experiment.prepare_state(), experiment.training_loader()
  for _ in range(3):
    state, metrics = experiment.train_step(state, experiment.global_batch(next(loader)),
                                           experiment.step_rng)
  assert int(state.step) == 3 and np.isfinite(float(metrics["total"]))
  assert float(metrics["learning_rate"]) == pytest.approx(config.learning_rate)
  scores = experiment.evaluator.evaluate(state)
  results = train_and_evaluate(config, str(tmp_path / "run"), devices=devices)
  for name in ("target_test_accuracy", "source_test_accuracy", "target_test_macro_f1"):
    assert scores[name] == results[name], name
