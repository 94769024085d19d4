r"""Training throughput: examples/s and compile time per method, batch size and XLA setting.

  python benchmarks/throughput.py --methods=source_only,dann --batch_sizes=64,256 \
      --variants=default,onednn

Each variant runs in its own process (XLA flags must be set before JAX starts).
For every method and batch size (per domain) it reports:
- `compile s`: lowering + compiling the jitted train step;
- `step ex/s`: the step alone, fed the same device-resident batch (the ceiling);
- `loop ex/s`: the step fed by the real cross-domain loader (grain, numpy
  preprocessing and augmentation, host-to-device transfer), as in training;
- `scan8 ex/s`: eight steps fused into one dispatch with `lax.scan`.
Examples are source + target images through the model per second (source only:
source images). The median of `--repeats` timed windows is reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

# XLA CPU settings worth comparing (flags of jaxlib 0.10).
VARIANTS = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "no_ynn_fusion": "--xla_cpu_experimental_ynn_fusion_type=",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
}


_METHODS = flags.DEFINE_list("methods", ["source_only", "dann", "dan", "mean_teacher"],
                             "Methods to time.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["64", "256"], "Batch sizes per domain.")
_MODEL = flags.DEFINE_string("model", "seed_cnn", "Model to time.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 28, "Image side.")
_VARIANTS = flags.DEFINE_list("variants", ["default"],
                              "XLA settings to compare: " + ", ".join(VARIANTS) + ".")
_STEPS = flags.DEFINE_integer("steps", 20, "Steps per timed window.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed windows (median reported).")
_OUT = flags.DEFINE_string("out", None, "Markdown file to write the table to.")
_CHILD = flags.DEFINE_string("child", None, "Internal: run one variant, print JSON.")

def _time(fn, steps: int, repeats: int) -> float:
  """Median seconds per call of `fn` over `repeats` windows of `steps` calls."""
  windows = []
  for _ in range(repeats):
    started = time.perf_counter()
    fn(steps)
    windows.append((time.perf_counter() - started) / steps)
  return sorted(windows)[len(windows) // 2]


def _measure(method_name: str, batch_size: int) -> dict:
  import jax
  import numpy as np
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from xdomain import data
  from xdomain import methods
  from xdomain.config import Config
  from xdomain.train import model_zoo
  from xdomain.train import step as step_lib

  config = Config(method=method_name, model=_MODEL.value, batch_size=batch_size,
                  image_size=_IMAGE_SIZE.value, augment=method_name == "mean_teacher")
  devices = jax.devices()
  mesh = jax.sharding.Mesh(np.array(devices), ("data",),
                           axis_types=(jax.sharding.AxisType.Auto,))
  batch_sharding, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  spec = model_zoo.MODELS[config.model]
  method = methods.METHODS[config.method](config)
  model = spec.build(config, 10)
  tx = step_lib.make_optimizer(config)
  preprocess = data.ImagePreprocess(size=(config.image_size,) * 2, augment=config.augment)
  loader = data.CrossDomainLoader(config.source, config.target, batch_size=batch_size,
                                  preprocess=preprocess, seed=0)
  to_device = lambda local: jax.tree.map(  # noqa: E731
      lambda x: jax.make_array_from_process_local_data(batch_sharding, x), local)
  rng = jax.random.key(0)
  sample = {"source": {"image": np.zeros((1, config.image_size, config.image_size, 1),
                                         np.float32)}}
  state = jax.jit(lambda r: step_lib.init_state(model, spec, method, tx, sample, r),
                  out_shardings=replicated)(rng)
  train_step = step_lib.make_train_step(model, spec, method, tx,
                                        step_lib.learning_rate_schedule(config))
  jitted = jax.jit(train_step, in_shardings=(replicated, batch_sharding, replicated),
                   out_shardings=(replicated, replicated), donate_argnums=0)
  batch = to_device(next(loader))
  started = time.perf_counter()
  compiled = jitted.lower(state, batch, rng).compile()
  compile_seconds = time.perf_counter() - started

  def step_only(steps):
    nonlocal state
    for _ in range(steps):
      state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(metrics)

  def with_loader(steps):
    nonlocal state
    for _ in range(steps):
      state, metrics = compiled(state, to_device(next(loader)), rng)
    jax.block_until_ready(metrics)

  fused = 8

  def scanned(state, batches, rng):
    return jax.lax.scan(lambda s, b: train_step(s, b, rng), state, batches)

  stacked = jax.tree.map(lambda x: np.stack([x] * fused), jax.device_get(batch))
  stacked = jax.device_put(stacked, NamedSharding(mesh, P(None, "data")))
  scan_compiled = jax.jit(scanned, donate_argnums=0).lower(state, stacked, rng).compile()

  def scan_steps(steps):
    nonlocal state
    for _ in range(max(steps // fused, 1)):
      state, metrics = scan_compiled(state, stacked, rng)
    jax.block_until_ready(metrics)

  examples = batch_size * (2 if method.uses_target else 1)
  step_only(2)
  with_loader(2)
  scan_steps(fused)
  steps, repeats = _STEPS.value, _REPEATS.value
  return {
      "method": method_name, "batch_size": batch_size,
      "compile_seconds": compile_seconds,
      "step_examples_per_sec": examples / _time(step_only, steps, repeats),
      "loop_examples_per_sec": examples / _time(with_loader, steps, repeats),
      "scan8_examples_per_sec": examples * fused / _time(
          lambda n: scan_steps(n * fused), max(steps // fused, 1), repeats),
  }


def _child() -> None:
  rows = [_measure(m, int(b)) for m in _METHODS.value for b in _BATCH_SIZES.value]
  print("RESULTS " + json.dumps(rows))


def main(argv):
  del argv
  if _CHILD.value is not None:
    _child()
    return
  import jax  # only to report the machine

  lines = [f"Training throughput of `{_MODEL.value}` at {_IMAGE_SIZE.value}x{_IMAGE_SIZE.value},"
           f" {os.cpu_count()} CPUs, jax {jax.__version__}, backend"
           f" {jax.default_backend()} ({jax.devices()[0].device_kind}).",
           "Made by `python benchmarks/throughput.py " + " ".join(sys.argv[1:]) + "`.", "",
           "| variant | method | batch/domain | compile s | step ex/s | loop ex/s | scan8 ex/s |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  for variant in _VARIANTS.value:
    xla_flags = f"{os.environ.get('XLA_FLAGS', '')} {VARIANTS[variant]}".strip()
    env = dict(os.environ, XLA_FLAGS=xla_flags) if xla_flags else dict(os.environ)
    command = [sys.executable, os.path.abspath(__file__), f"--child={variant}"] + [
        a for a in sys.argv[1:] if not a.startswith("--out")]
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    line = next((l for l in finished.stdout.splitlines() if l.startswith("RESULTS ")), None)
    if finished.returncode or line is None:
      lines.append(f"| {variant} | failed: {finished.stderr.strip().splitlines()[-1:]} |")
      continue
    for row in json.loads(line[len("RESULTS "):]):
      lines.append(
          f"| {variant} | {row['method']} | {row['batch_size']} | {row['compile_seconds']:.1f} |"
          f" {row['step_examples_per_sec']:,.0f} | {row['loop_examples_per_sec']:,.0f} |"
          f" {row['scan8_examples_per_sec']:,.0f} |")
    print(lines[-1], flush=True)
  table = "\n".join(lines) + "\n"
  print(table)
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, "w") as f:
      f.write(table)


if __name__ == "__main__":
  app.run(main)
