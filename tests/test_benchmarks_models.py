"""benchmarks/models.py: forward+backward of each model on random inputs."""

from __future__ import annotations

from benchmarks import models as models_benchmark


def test_the_bilstm_layer_row_times_the_layer_and_a_head_only():
  compile_seconds, examples_per_second, num_params = models_benchmark.run_case(
      models_benchmark.CASES["bilstm_layer"], min_seconds=0.0)
  hidden, inputs = 128, 128
  per_direction = inputs * 4 * hidden + 4 * hidden + hidden * 4 * hidden  # W, b, U
  assert num_params == 2 * per_direction + (2 * hidden * 2 + 2)  # and the head
  assert compile_seconds > 0 and examples_per_second > 0
