"""benchmarks/profile_step.py: per-op time of a train step from a profiler trace."""

from __future__ import annotations

import dataclasses

import jax
import pytest

from benchmarks import profile_step
from benchmarks import throughput


def test_op_times_name_the_step_s_xla_ops(data_dir, tmp_path):
  config = dataclasses.replace(
      throughput.image_config("dann", 8, model="seed_cnn", image_size=16), data_dir=data_dir)
  hlo = tmp_path / "step.hlo"
  rows = profile_step.op_times(config, steps=2, devices=jax.devices()[:1], hlo_path=str(hlo))
  times = [row["ms_per_step"] for row in rows]
  assert times == sorted(times, reverse=True) and min(times) >= 0
  names = [row["name"] for row in rows]
  assert not [name for name in names if name.startswith(("$", "ThunkExecutor::"))]
  # The seed CNN's convolutions run in the step, under the names the HLO defines.
  convolutions = [name for name in names if name.startswith("convolution")]
  assert convolutions
  assert all(f"%{name} = " in hlo.read_text() for name in convolutions)


def test_steps_must_be_positive():
  with pytest.raises(ValueError, match="steps must be >= 1; got 0"):
    profile_step.op_times(throughput.image_config("dann", 8, model="seed_cnn", image_size=16),
                          steps=0)
