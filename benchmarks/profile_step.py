r"""Where a train step's time goes: per-op time from a profiler trace.

  python -m benchmarks.profile_step --experiment=experiments/mnist_m/dann.flags
  python -m benchmarks.profile_step --experiment=experiments/sentiment/source_only.flags \
      --batch_size=64 --overrides=embed_size=128,hidden_size=128,max_length=40

Builds the step as `benchmarks/throughput.py` does (the experiment's Config,
`--method` / `--batch_size` / `--overrides` on top), runs `--steps` compiled
steps on the loader's first batch (text: at that batch's bucket length, not
necessarily the most common one) under `jax.profiler.trace`, and prints the
`--top` XLA ops of the trace by time per step, under their HLO names
(`convolution.1`, `wrapped_reduce-window.10`, ...; the runtime's and Python's
own spans left out). `--hlo=FILE` writes the compiled program's HLO text,
where those names are defined with their shapes. `--variant` is one of
throughput.py's XLA settings (default: the runner's); host memory is the
runner's too (`xdomain.host_memory`). Durations overlap where
ops run in parallel: compare ops with each other, not with the step.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import os
import tempfile

from absl import app
from absl import flags

from benchmarks import cli
from benchmarks import throughput
from xdomain import host_memory

# Its own registry: tests import this module beside experiments/main.py, which
# defines --method and --batch_size in absl's global one.
_FLAGS = flags.FlagValues()
_EXPERIMENT = flags.DEFINE_string("experiment", None, "The experiment's flag file.",
                                  required=True, flag_values=_FLAGS)
_METHOD = flags.DEFINE_string("method", None, "Method (default: the file's).",
                              flag_values=_FLAGS)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None,
                                   "Batch size per domain (default: the file's).",
                                   flag_values=_FLAGS)
_OVERRIDES = flags.DEFINE_list("overrides", [], "Config fields to set: flag=value,...",
                               flag_values=_FLAGS)
_VARIANT = flags.DEFINE_enum("variant", "no_ynn_fusion", list(throughput.VARIANTS),
                             "XLA setting (throughput.VARIANTS; no_ynn_fusion is the runner's).",
                             flag_values=_FLAGS)
_STEPS = flags.DEFINE_integer("steps", 10, "Steps traced.", lower_bound=1, flag_values=_FLAGS)
_TOP = flags.DEFINE_integer("top", 30, "Events printed.", lower_bound=1, flag_values=_FLAGS)
_HLO = flags.DEFINE_string("hlo", None, "File to write the compiled step's HLO text to.",
                           flag_values=_FLAGS)

# Trace events that are not XLA ops: Python frames ($file:line), the
# executor's spans around the whole program, the jit dispatch.
_NOT_OPS = ("$", "ThunkExecutor::", "PjitFunction")


def op_times(config, *, steps: int, devices=None, hlo_path: str | None = None) -> list[dict]:
  """XLA ops of `steps` traced train steps of `config`, longest first.

  Returns:
    [{"name", "ms_per_step", "calls_per_step"}]: total duration of each op's
    trace events divided by `steps` (the runtime's and Python's spans left out).
  """
  if steps < 1:
    raise ValueError(f"steps must be >= 1; got {steps}.")
  import jax

  from xdomain.train import Experiment

  with tempfile.TemporaryDirectory() as workdir:  # where a text run builds its vocabulary
    run = Experiment(config, workdir, devices=devices)
    state = run.prepare_state()
  batch = run.global_batch(next(run.training_loader()))
  compiled = run.train_step.lower(state, batch, run.step_rng).compile()
  if hlo_path:
    with open(hlo_path, "w") as f:
      f.write(compiled.as_text())
  for _ in range(2):  # warm-up outside the trace
    state, metrics = compiled(state, batch, run.step_rng)
  jax.block_until_ready(metrics)
  with tempfile.TemporaryDirectory() as logdir:
    with jax.profiler.trace(logdir):
      for _ in range(steps):
        state, metrics = compiled(state, batch, run.step_rng)
      jax.block_until_ready(metrics)
    (path,) = glob.glob(os.path.join(logdir, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
      events = json.load(f)["traceEvents"]
  duration, calls = collections.Counter(), collections.Counter()
  for event in events:
    # Complete events (durations in microseconds) of ops.
    if event.get("ph") == "X" and "dur" in event and not event["name"].startswith(_NOT_OPS):
      duration[event["name"]] += event["dur"]
      calls[event["name"]] += 1
  return [{"name": name, "ms_per_step": total / steps / 1e3,
           "calls_per_step": calls[name] / steps}
          for name, total in duration.most_common()]


def main(argv):
  del argv
  os.environ["XLA_FLAGS"] = " ".join(
      filter(None, [os.environ.get("XLA_FLAGS", ""), throughput.VARIANTS[_VARIANT.value]]))
  host_memory.reuse_freed_memory()  # the runner's setting, before JAX starts its threads
  config = throughput.experiment_config(_EXPERIMENT.value)
  changes = {k: v for k, v in (("method", _METHOD.value), ("batch_size", _BATCH_SIZE.value))
             if v is not None}
  config = throughput.with_overrides(dataclasses.replace(config, **changes), _OVERRIDES.value)
  rows = op_times(config, steps=_STEPS.value, hlo_path=_HLO.value)
  print(f"{config.method}, batch {config.batch_size}/domain, {_STEPS.value} steps,"
        f" XLA setting {_VARIANT.value}:")
  print("| ms/step | calls/step | event |\n| --- | --- | --- |")
  for row in rows[:_TOP.value]:
    print(f"| {row['ms_per_step']:.2f} | {row['calls_per_step']:g} | {row['name'][:100]} |")


def _parse_flags(argv: list[str]) -> list[str]:
  return cli.parse_own_flags(_FLAGS, argv, __doc__)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
