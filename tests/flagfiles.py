"""Runs experiment flag files in-process, as `experiments/main.py` would parse them."""

from __future__ import annotations

import glob
import importlib.util
import os

from benchmarks import accuracy
from xdomain.config import Config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(REPO, "experiments")

# Small enough for a test, large enough to log, evaluate and checkpoint. No
# source_val split: the validators that need one (source_accuracy, IWV, DEV) fit
# domain classifiers that cost more than the rest of a smoke run's evaluation;
# runs that compute them are tested in test_evaluate_evaluator.py.
SMOKE_OVERRIDES = {
    "steps": 2, "batch_size": 16, "eval_batch_size": 64, "log_every": 1,
    "eval_every": 2, "checkpoint_every": 2, "discriminator_hidden": 32,
    "cdan_random_dim": 64, "source_val_fraction": 0.0,
}


def smoke_devices():
  """Smoke runs use one device: compiling for the 8 fake devices costs several
  times more, and device-count independence has tests of its own."""
  import jax
  return jax.devices()[:1]


def xla_flags(devices: int) -> str:
  """This session's XLA_FLAGS (tests/conftest.py) for a subprocess of `devices`
  fake devices: the rest unchanged, so that it compiles as this process does."""
  kept = [f for f in os.environ.get("XLA_FLAGS", "").split()
          if not f.startswith("--xla_force_host_platform_device_count")]
  return " ".join([*kept, f"--xla_force_host_platform_device_count={devices}"])


def _main_module():
  spec = importlib.util.spec_from_file_location(
      "xdomain_experiments_main", os.path.join(EXPERIMENTS, "main.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


_MAIN = None


def flag_files(task: str) -> list[str]:
  """The flag files of `experiments/<task>/`, relative to the repository."""
  return sorted(os.path.relpath(p, REPO)
                for p in glob.glob(os.path.join(EXPERIMENTS, task, "*.flags")))


def upstreams(path: str) -> dict[str, str]:
  """`{flag: flag file}` of the runs that `path`'s `# upstream:` lines name, read as
  benchmarks/accuracy.py reads them (paths relative to the repository)."""
  return {flag: os.path.relpath(upstream, REPO)
          for flag, upstream in accuracy.upstreams(os.path.join(REPO, path)).items()}


def main_module():
  """experiments/main.py as a module (loaded once)."""
  global _MAIN
  if _MAIN is None:
    _MAIN = _main_module()
  return _MAIN


def config_from_flagfile(path: str, **overrides) -> Config:
  """The Config that `main.py --flagfile=path --k=v ...` would build."""
  main_module()
  argv = ["main.py", f"--flagfile={os.path.join(REPO, path)}", "--workdir=unused"]
  argv += [f"--{k}={v}" for k, v in overrides.items()]
  _MAIN.flags.FLAGS.unparse_flags()
  _MAIN.flags.FLAGS(argv)
  return _MAIN.config_from_flags()


def with_upstreams(flagfile: str, overrides: dict, folder) -> dict:
  """`overrides` plus `--<flag>=<workdir>` for each run that `flagfile`'s
  `# upstream:` lines name (e.g. SHOT's source stage), each made first, with
  the same overrides, in `<folder>/upstream/<flag>`."""
  from xdomain.train import train_and_evaluate
  overrides = dict(overrides)
  for flag, upstream in upstreams(flagfile).items():
    workdir = os.path.join(str(folder), "upstream", flag)
    train_and_evaluate(config_from_flagfile(upstream, **overrides), workdir,
                       devices=smoke_devices())
    overrides[flag] = workdir
  return overrides
