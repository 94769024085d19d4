r"""Training throughput: examples/s (text: tokens/s too) and compile time per method,
batch size and XLA setting.

  python benchmarks/throughput.py --methods=source_only,dann --batch_sizes=64,256 \
      --variants=default,onednn
  python benchmarks/throughput.py --flagfile=experiments/sentiment/source_only.flags \
      --methods=source_only,mcc --batch_sizes=64
  python benchmarks/throughput.py --flagfile=experiments/pos/mean_teacher.flags \
      --methods=source_only,mean_teacher --length_grouping=16
  python benchmarks/throughput.py --flagfile=experiments/detection/dann.flags \
      --methods=dann,detection_mean_teacher --batch_sizes=32 --timings=step,loop

Without `--flagfile` it times `--model` at `--image_size` on the default digits
pair (mean_teacher with augmentation). With `--flagfile=<experiment>.flags` it
times that experiment, any model and modality, as `experiments/main.py` parses
the file, with `--method` and `--batch_size` set per row (`--model` and
`--image_size` then come from the file). Here `--flagfile` names the
experiment: this script's own flags are not read from a file.

Each variant runs in its own process (XLA flags must be set before JAX starts),
once per `--host_memory` setting: `reuse` (the runner's default,
`xdomain.host_memory.reuse_freed_memory`: glibc's malloc keeps freed memory, so
a step does not page-fault its temporary buffers in again) or `malloc` (glibc's
own behaviour, as in a program that imports xdomain).
For every method and batch size (per domain) it reports:
- `compile s`: lowering + compiling the jitted train step;
- `step ex/s`: the step alone, fed the same device-resident batch (the ceiling);
- `loop ex/s`: the step fed by the real cross-domain loader (grain, numpy
  preprocessing and augmentation, host-to-device transfer), as in training;
- `scan8 ex/s`: eight steps fused into one dispatch with `lax.scan`.
`--timings` picks some of the three (on a CPU scan8 compiles the detector for minutes).
Examples are source + target inputs through the model per second (source only:
source inputs). Each rate comes from two run lengths, `--steps` and three times
as many: (examples of the long run - of the short) / (time of the long - of the
short), so that what a run costs once (dispatch, the final sync) cancels out,
pooled over `--repeats` pairs. `--overrides=flag=value,...`
sets Config fields of every row (e.g. `embed_size=128,max_length=40`).

Text batches are cut by the loader to a few bucket lengths (16, 32, ...,
max_length). `step` and `scan8` feed a real batch of the most common length
among the first 16 batches (`length`; `compile s` is its program's); `loop`
feeds the loader's batches as they come, every bucket's program compiled
beforehand, and `loop lengths` counts the lengths it was fed (length:batches).
Text rows also give tokens/s: real (unpadded) tokens through the model.
`--length_grouping=N` times the loader that re-cuts each run of N batches by
length (fewer long buckets in `loop lengths`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from xdomain.config import Config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# XLA CPU settings worth comparing (flags of jaxlib 0.10).
VARIANTS = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "no_ynn_fusion": "--xla_cpu_experimental_ynn_fusion_type=",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    # The older emitters compile the tests' programs 1.4-2.7x faster (tests/conftest.py).
    "no_fusion_emitters": "--xla_cpu_use_fusion_emitters=false",
    "no_ynn_fusion_no_fusion_emitters":
        "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_fusion_emitters=false",
}
TIMINGS = ("step", "loop", "scan8")
# Text: batches drawn to find the most common length.
_PROBE_BATCHES = 16

# A registry of its own, joined to absl's only when run as a script: tests
# import `measure` beside benchmarks/accuracy.py and experiments/main.py, which
# define --methods, --steps and --model too.
_FLAGS = flags.FlagValues()
_METHODS = flags.DEFINE_list("methods", ["source_only", "dann", "dan", "mean_teacher"],
                             "Methods to time.", flag_values=_FLAGS)
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["64", "256"], "Batch sizes per domain.",
                                 flag_values=_FLAGS)
_MODEL = flags.DEFINE_string("model", "seed_cnn", "Model to time (without --flagfile).",
                             flag_values=_FLAGS)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 28, "Image side (without --flagfile).",
                                   flag_values=_FLAGS)
_EXPERIMENT = flags.DEFINE_string(
    "experiment_flagfile", None,
    "Experiment flag file to time; given as --flagfile=experiments/<task>/<method>.flags.",
    flag_values=_FLAGS)
_LENGTH_GROUPING = flags.DEFINE_integer(
    "length_grouping", None, "Text: --length_grouping for the runs (default: the flag file's).",
    flag_values=_FLAGS)
HOST_MEMORY = ("reuse", "malloc")
_HOST_MEMORY = flags.DEFINE_list(
    "host_memory", ["reuse"], "Host allocator settings to compare: reuse (the runner's,"
    " xdomain.host_memory) or malloc (glibc's own).", flag_values=_FLAGS)
_VARIANTS = flags.DEFINE_list("variants", ["default"],
                              "XLA settings to compare: " + ", ".join(VARIANTS) + ".",
                              flag_values=_FLAGS)
_OVERRIDES = flags.DEFINE_list(
    "overrides", [], "Config fields set in every row: flag=value,... (after --flagfile's).",
    flag_values=_FLAGS)
_TIMINGS = flags.DEFINE_list(
    "timings", list(TIMINGS), "Which of " + ", ".join(TIMINGS) + " to time (scan8 compiles"
    " eight steps in one program: minutes for the detector on a CPU).", flag_values=_FLAGS)
_STEPS = flags.DEFINE_integer("steps", 16, "Steps of the short timed run (the long: 3x).",
                              flag_values=_FLAGS)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Pairs of timed runs (pooled).",
                                flag_values=_FLAGS)
_OUT = flags.DEFINE_string("out", None, "Markdown file to write the table to.",
                           flag_values=_FLAGS)
_CHILD = flags.DEFINE_string("child", None, "Internal: run one variant, print JSON.",
                             flag_values=_FLAGS)


def image_config(method: str, batch_size: int, *, model: str, image_size: int) -> Config:
  """The Config of a row without --flagfile."""
  return Config(method=method, model=model, batch_size=batch_size, image_size=image_size,
                augment=method == "mean_teacher")


def experiment_config(flagfile: str) -> Config:
  """The Config that `experiments/main.py --flagfile=<flagfile>` builds.

  main.py defines its flags in absl's global registry, where this script's
  --steps and --model are too when it runs, so the file is parsed by main.py
  in a process of its own.
  """
  parse = ("import runpy, sys; main = runpy.run_path(sys.argv[1]);"
           " main['flags'].FLAGS([sys.argv[1], '--flagfile=' + sys.argv[2],"
           " '--workdir=unused']); print(main['config_from_flags']().to_json())")
  finished = subprocess.run(
      [sys.executable, "-c", parse, os.path.join(REPO, "experiments", "main.py"), flagfile],
      capture_output=True, text=True, check=False, cwd=REPO)  # includes are rooted there
  if finished.returncode:
    last_line = (finished.stderr.strip().splitlines() or [""])[-1]
    raise ValueError(f"--flagfile={flagfile}: {last_line}")
  return Config.from_dict(json.loads(finished.stdout))


def _rates(fn, steps: int, repeats: int) -> tuple[float, float]:
  """(examples/s, tokens/s) from runs of `fn(steps)` and `fn(3 * steps)`, which
  return the examples and tokens they fed: what the long runs fed beyond the
  short ones over the time they took beyond them, pooled over `repeats` pairs."""
  extra_seconds = extra_examples = extra_tokens = 0.0
  for _ in range(repeats):
    for sign, n in ((-1, steps), (1, 3 * steps)):
      started = time.perf_counter()
      examples, tokens = fn(n)
      extra_seconds += sign * (time.perf_counter() - started)
      extra_examples += sign * examples
      extra_tokens += sign * tokens
  if extra_seconds <= 0:
    raise RuntimeError(f"{3 * steps} steps took no longer than {steps}: the timing is noise;"
                       " raise --steps or --repeats.")
  return extra_examples / extra_seconds, extra_tokens / extra_seconds


def measure(config: Config, *, steps: int, repeats: int, devices=None,
            timings: tuple[str, ...] = TIMINGS) -> dict:
  """Times the train step of `config` as the engine builds it: one table row.

  Args:
    config: the run; its method and batch size are the row's.
    steps: steps per timed window.
    repeats: timed windows.
    devices: the mesh (default: every device).
    timings: which of `TIMINGS` to time.

  Returns:
    `method`, `batch_size`, `compile_seconds` and `{timing}_examples_per_sec`
    for each of `timings`; text runs add `{timing}_tokens_per_sec`, `length` (of
    the step and scan8 batch) and `loop_lengths` ({length: batches fed in the
    loop windows}; with `loop` timed).
  """
  if not timings or set(timings) - set(TIMINGS):
    raise ValueError(f"timings must be some of {TIMINGS}, got {timings}")
  import jax
  import numpy as np
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from xdomain.train import Experiment

  with tempfile.TemporaryDirectory() as workdir:  # where a text run builds its vocabulary
    run = Experiment(config, workdir, devices=devices)
    state = run.prepare_state()
  loader = run.training_loader()
  train_step = run.make_train_step()
  jitted = run.train_step
  rng = run.step_rng
  parts = ("source", "target") if run.method.uses_target else ("source",)
  examples = config.batch_size * len(parts)
  text = run.buckets is not None

  def length(local):  # the bucket of a text batch (None: images)
    return local["source"]["tokens"].shape[1] if text else None

  def tokens(local):
    return sum(int(local[p]["lengths"].sum()) for p in parts) if text else 0

  if text:
    probe = [next(loader) for _ in range(_PROBE_BATCHES)]
    common = collections.Counter(map(length, probe)).most_common(1)[0][0]
    local = next(b for b in probe if length(b) == common)
  else:
    local = next(loader)
    common = None
  batch = run.global_batch(local)
  batch_tokens = tokens(local)
  started = time.perf_counter()
  compiled = {common: jitted.lower(state, batch, rng).compile()}
  compile_seconds = time.perf_counter() - started

  def at_length(x, length):  # text arrays are [B] or [B, L, ...]
    shape = x.shape[:1] + (length,) + x.shape[2:] if x.ndim > 1 else x.shape
    return jax.ShapeDtypeStruct(shape, x.dtype)

  for other in set(run.buckets or ()) - {common}:  # the loop meets every bucket
    shapes = jax.tree.map(functools.partial(at_length, length=other), batch)
    compiled[other] = jitted.lower(state, shapes, rng).compile()

  def step_only(steps):
    nonlocal state
    for _ in range(steps):
      state, metrics = compiled[common](state, batch, rng)
    jax.block_until_ready(metrics)
    return steps * examples, steps * batch_tokens

  seen = collections.Counter()

  def with_loader(steps):
    nonlocal state
    fed = 0
    for _ in range(steps):
      local = next(loader)
      seen[length(local)] += 1
      fed += tokens(local)
      state, metrics = compiled[length(local)](state, run.global_batch(local), rng)
    jax.block_until_ready(metrics)
    return steps * examples, fed

  fused = 8

  def scanned(state, batches, rng):
    return jax.lax.scan(lambda s, b: train_step(s, b, rng), state, batches)

  scan_compiled = stacked = None
  if "scan8" in timings:
    stacked = jax.tree.map(lambda x: np.stack([x] * fused), jax.device_get(batch))
    stacked = jax.device_put(stacked, NamedSharding(run.mesh, P(None, "data")))
    scan_compiled = jax.jit(scanned, donate_argnums=0).lower(state, stacked, rng).compile()

  def scan_steps(steps):
    nonlocal state
    dispatches = max(steps // fused, 1)
    for _ in range(dispatches):
      state, metrics = scan_compiled(state, stacked, rng)
    jax.block_until_ready(metrics)
    return dispatches * fused * examples, dispatches * fused * batch_tokens

  timed = {"step": (step_only, steps), "loop": (with_loader, steps),
           "scan8": (scan_steps, max(steps // fused, 1) * fused)}
  for name in timings:  # warm-up: two steps (scan8: one dispatch)
    timed[name][0](fused if name == "scan8" else 2)
  seen.clear()
  row = {"method": config.method, "batch_size": config.batch_size,
         "compile_seconds": compile_seconds}
  for name in timings:
    fn, n = timed[name]
    row[f"{name}_examples_per_sec"], tokens_per_sec = _rates(fn, n, repeats)
    if text:
      row[f"{name}_tokens_per_sec"] = tokens_per_sec
  if text:
    row["length"] = common
    if "loop" in timings:
      row["loop_lengths"] = dict(sorted(seen.items()))
  return row


def with_overrides(config: Config, overrides: list[str]) -> Config:
  """`config` with `flag=value` items set, each value parsed as the field's type."""
  values = dataclasses.asdict(config)
  for item in overrides:
    name, sep, value = item.partition("=")
    if not sep or name not in values:
      raise app.UsageError(f"--overrides: {item!r} is not flag=value for a Config flag.")
    kind = type(values[name]) if values[name] is not None else str
    values[name] = value.lower() in ("1", "true") if kind is bool else kind(value)
  return Config.from_dict(values)


def _child() -> None:
  if _HOST_MEMORY.value == ["reuse"]:  # before JAX starts its threads
    from xdomain import host_memory
    host_memory.reuse_freed_memory()
  experiment = experiment_config(_EXPERIMENT.value) if _EXPERIMENT.value else None
  if experiment and _LENGTH_GROUPING.value is not None:
    experiment = dataclasses.replace(experiment, length_grouping=_LENGTH_GROUPING.value)
  for method in _METHODS.value:
    for batch_size in map(int, _BATCH_SIZES.value):
      if experiment:
        config = dataclasses.replace(experiment, method=method, batch_size=batch_size)
      else:
        config = image_config(method, batch_size, model=_MODEL.value,
                              image_size=_IMAGE_SIZE.value)
      config = with_overrides(config, _OVERRIDES.value)
      row = measure(config, steps=_STEPS.value, repeats=_REPEATS.value,
                    timings=tuple(_TIMINGS.value))
      print("RESULTS " + json.dumps(row), flush=True)  # one line per row: kept if cut short


def _header(config: Config | None, text: bool) -> list[str]:
  """The title line and the table head."""
  if config is None:
    title = (f"Training throughput of `{_MODEL.value}` at"
             f" {_IMAGE_SIZE.value}x{_IMAGE_SIZE.value},")
  else:
    size = (f"max_length {config.max_length}" if text
            else f"{config.image_size}x{config.image_size}")
    title = (f"Training throughput of `{_EXPERIMENT.value}` (`{config.model}`,"
             f" {config.source} -> {config.target}, {size}),")
  import jax  # only to report the machine

  lines = [(f"{title} {os.cpu_count()} CPUs, jax {jax.__version__}, backend"
            f" {jax.default_backend()} ({jax.devices()[0].device_kind})."),
           "Made by `python benchmarks/throughput.py " + " ".join(sys.argv[1:]) + "`"
           + (f" (config overrides: {', '.join(_OVERRIDES.value)})." if _OVERRIDES.value else "."),
           "Rates: (long runs - short runs) / their time difference, pooled over"
           f" {_REPEATS.value} pairs of {_STEPS.value} and {3 * _STEPS.value} steps.", ""]
  if not text:
    return lines + [
        ("| variant | host memory | method | batch/domain | compile s | step ex/s | loop ex/s |"
         " scan8 ex/s |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  return lines + [
      (f"`step` and `scan8` feed a batch of the most common `length` among the first"
       f" {_PROBE_BATCHES} batches; `loop` feeds the loader's batches (`loop lengths`:"
       " length:batches); tok/s counts real (unpadded) tokens."), "",
      ("| variant | host memory | method | batch/domain | compile s | length | step ex/s |"
       " loop ex/s | scan8 ex/s | step tok/s | loop tok/s | scan8 tok/s | loop lengths |"),
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]


def _parse_flags(argv: list[str]) -> list[str]:
  """absl would read --flagfile as this script's flags: here it names the experiment."""
  argv = [f"--experiment_flagfile={a[len('--flagfile='):]}" if a.startswith("--flagfile=")
          else a for a in argv]
  flags.FLAGS.append_flag_values(_FLAGS)
  for name in _FLAGS:
    flags.declare_key_flag(name)  # listed by --help
  argv = app.parse_flags_with_usage(argv)
  _FLAGS.mark_as_parsed()
  return argv


def main(argv):
  del argv
  if _EXPERIMENT.value and (_FLAGS["model"].present or _FLAGS["image_size"].present):
    raise app.UsageError("--model and --image_size come from --flagfile; set them there.")
  if not _HOST_MEMORY.value or set(_HOST_MEMORY.value) - set(HOST_MEMORY):
    raise app.UsageError(f"--host_memory takes some of {', '.join(HOST_MEMORY)};"
                         f" got {','.join(_HOST_MEMORY.value)!r}.")
  if _CHILD.value is not None:
    _child()
    return
  config, text = None, False
  if _EXPERIMENT.value:
    from xdomain import data

    config = experiment_config(_EXPERIMENT.value)
    text = data.domain_info(config.source).modality == "text"
  lines = _header(config, text)
  print("\n".join(lines), flush=True)
  for variant in _VARIANTS.value:
    for memory in _HOST_MEMORY.value:
      for line in _variant_rows(variant, memory, text):
        lines.append(line)
        print(line, flush=True)  # as each row is measured: a run cut short keeps them
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, "w") as f:
      f.write("\n".join(lines) + "\n")


def _variant_rows(variant: str, memory: str, text: bool):
  """Runs one XLA variant with one host memory setting in a child process; yields its
  table rows as they come."""
  xla_flags = f"{os.environ.get('XLA_FLAGS', '')} {VARIANTS[variant]}".strip()
  env = dict(os.environ, XLA_FLAGS=xla_flags) if xla_flags else dict(os.environ)
  command = [sys.executable, os.path.abspath(__file__), f"--child={variant}"] + [
      a for a in sys.argv[1:] if not a.startswith("--out")] + [f"--host_memory={memory}"]
  with tempfile.TemporaryFile("w+") as stderr, subprocess.Popen(
      command, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True) as child:
    for line in child.stdout:
      if not line.startswith("RESULTS "):
        continue
      row = json.loads(line[len("RESULTS "):])
      cells = [variant, memory, row["method"], row["batch_size"],
               f"{row['compile_seconds']:.1f}"]
      if text:
        cells.append(row["length"])
      rate = lambda key: f"{row[key]:,.0f}" if key in row else "-"  # not timed
      cells += [rate(f"{name}_examples_per_sec") for name in ("step", "loop", "scan8")]
      if text:
        cells += [rate(f"{name}_tokens_per_sec") for name in ("step", "loop", "scan8")]
        cells.append(" ".join(f"{k}:{v}" for k, v in row.get("loop_lengths", {}).items()))
      yield "| " + " | ".join(map(str, cells)) + " |"
    if child.wait():
      stderr.seek(0)
      yield f"| {variant} | {memory} | failed: {stderr.read().strip().splitlines()[-1:]} |"


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
