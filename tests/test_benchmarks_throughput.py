"""benchmarks/throughput.py: a text experiment's row, the image default row, --overrides."""

from __future__ import annotations

import dataclasses
import math

import jax
import pytest
from absl import app

from benchmarks import throughput
from xdomain.config import Config
from tests import flagfiles

SENTIMENT = "experiments/sentiment/source_only.flags"
TIMED = ("step", "loop", "scan8")


def _check_positive(row: dict, kind: str) -> None:
  for name in TIMED:
    value = row[f"{name}_{kind}_per_sec"]
    assert math.isfinite(value) and value > 0, (name, kind, value)


def test_flag_file_is_parsed_as_main_parses_it():
  assert throughput.experiment_config(SENTIMENT) == flagfiles.config_from_flagfile(SENTIMENT)


def test_text_row_counts_examples_and_tokens(data_dir):
  config = flagfiles.config_from_flagfile(
      SENTIMENT, method="mcc", batch_size=8, max_length=20, embed_size=8, hidden_size=8,
      vocab_size=500, data_dir=data_dir)
  row = throughput.measure(config, steps=8, repeats=1, devices=jax.devices()[:1])
  assert set(row) == {"method", "batch_size", "compile_seconds", "length", "loop_lengths",
                      *(f"{n}_{k}_per_sec" for n in TIMED for k in ("examples", "tokens"))}
  assert (row["method"], row["batch_size"]) == ("mcc", 8)
  assert row["compile_seconds"] > 0
  _check_positive(row, "examples")
  _check_positive(row, "tokens")
  # Both domains' rows go through mcc's step: at most max_length real tokens each.
  for name in TIMED:
    assert row[f"{name}_tokens_per_sec"] <= 20 * row[f"{name}_examples_per_sec"]
  assert row["length"] in (16, 20)
  # The loop's timed runs: 8 and 24 steps.
  assert set(row["loop_lengths"]) <= {16, 20} and sum(row["loop_lengths"].values()) == 32


def test_image_default_row(data_dir):
  config = dataclasses.replace(
      throughput.image_config("source_only", 8, model="seed_cnn", image_size=16),
      data_dir=data_dir)
  row = throughput.measure(config, steps=8, repeats=1, devices=jax.devices()[:1])
  assert set(row) == {"method", "batch_size", "compile_seconds",
                      *(f"{n}_examples_per_sec" for n in TIMED)}
  _check_positive(row, "examples")


def test_rows_time_only_the_timings_asked_for(data_dir):
  config = dataclasses.replace(
      throughput.image_config("dann", 8, model="seed_cnn", image_size=16), data_dir=data_dir)
  row = throughput.measure(config, steps=8, repeats=1, devices=jax.devices()[:1],
                           timings=("step", "loop"))
  assert set(row) == {"method", "batch_size", "compile_seconds",
                      "step_examples_per_sec", "loop_examples_per_sec"}
  with pytest.raises(ValueError, match="timings must be some of"):
    throughput.measure(config, steps=8, repeats=1, timings=("scan16",))


def test_overrides_set_typed_config_fields_and_refuse_unknown_ones():
  config = throughput.with_overrides(
      Config(), ["embed_size=96", "max_length=40", "augment=true", "learning_rate=0.01"])
  assert (config.embed_size, config.max_length, config.augment, config.learning_rate) == (
      96, 40, True, 0.01)
  for bad in ("embed_size", "no_such_flag=1"):
    with pytest.raises(app.UsageError, match="--overrides"):
      throughput.with_overrides(Config(), [bad])
