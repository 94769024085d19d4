r"""Runs one xdomain experiment: flags -> `xdomain.train.train_and_evaluate`.

  python experiments/main.py --flagfile=experiments/digits/dann.flags \
      --workdir=/tmp/xdomain/dann [--steps=... any flag overrides the file]

Rerunning with the same --workdir resumes from its latest checkpoint.
Exit status: 0 done, 2 bad input (flags, workdir, checkpoints; one line
`error: ...` on stderr), 1 other failures, 143 stopped by SIGTERM (saved).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging

from xdomain import host_memory
from xdomain.config import Config
from xdomain.config import ConfigError

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
           float: flags.DEFINE_float, str: flags.DEFINE_string}
_TYPES = {"bool": bool, "int": int, "float": float, "str": str,
          "str | None": str, "int | None": int, "float | None": float}

for _field in dataclasses.fields(Config):
  _DEFINE[_TYPES[_field.type]](_field.name, _field.default, _field.metadata["help"])
flags.DEFINE_string("workdir", None, "Directory of checkpoints, metrics and results.")
flags.mark_flag_as_required("workdir")
flags.DEFINE_bool(
    "cpu_xla_defaults", True,
    "Add the runner's XLA:CPU settings (CPU_XLA_FLAGS: YNNPACK fusion off) to XLA_FLAGS,"
    " except those XLA_FLAGS sets itself; false leaves XLA_FLAGS as it is.")
flags.DEFINE_bool(
    "reuse_host_memory", True,
    "Have glibc's malloc keep freed memory and reuse it (xdomain.host_memory), so that"
    " XLA:CPU does not page-fault each step's temporary buffers in again; false leaves"
    " malloc as it is. Linux (glibc) only; elsewhere nothing changes.")

# XLA:CPU settings the runner adds by default: with YNNPACK's fusions off the
# seed CNN's DANN step ran 1.26x (batch 64) and 1.52x (256) faster on a 2-core
# CPU (benchmarks/results/throughput_cpu.md; 1.04x at batch 64 when measured
# again, docs/results.md); the test suite checks that a step gives the same
# numbers either way. A GPU ignores them: the CUDA plugin accepts them (H200,
# jax 0.11.2), though it aborts on some other XLA:CPU flags (tests/conftest.py).
CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)
# XLA aborts on a flag it does not know; jaxlib 0.10 to 0.12 know these.
_FIRST_JAXLIB_WITH_CPU_XLA_FLAGS = (0, 10)


def with_cpu_xla_defaults(xla_flags: str, jaxlib_version: str) -> str:
  """`xla_flags` plus each of CPU_XLA_FLAGS that it does not set itself."""
  release = tuple(int(part) for part in jaxlib_version.split(".")[:2])
  if release < _FIRST_JAXLIB_WITH_CPU_XLA_FLAGS:
    return xla_flags
  missing = [flag for flag in CPU_XLA_FLAGS if flag.split("=")[0] + "=" not in xla_flags]
  return " ".join([xla_flags, *missing]).strip()


class _QuietLibraries(std_logging.Filter):
  """Keeps the console to xdomain's progress: Orbax, tfds and grain log a lot at INFO."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    noisy = ("/orbax/", "/tensorflow_datasets/", "/grain/", "/etils/")
    return record.levelno >= std_logging.WARNING or not any(
        part in record.pathname for part in noisy)


def config_from_flags() -> Config:
  return Config(**{f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(Config)})


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, but a bad flag is one line and exit status 2
  (absl prints the usage of every flag and exits 1)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {str(e).rstrip('.')}; see --helpfull.", file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected arguments: {' '.join(argv[1:])} (flags are --name=value).",
          file=sys.stderr)
    return 2
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if flags.FLAGS.cpu_xla_defaults:  # before JAX starts, which reads XLA_FLAGS once
    os.environ["XLA_FLAGS"] = with_cpu_xla_defaults(
        os.environ.get("XLA_FLAGS", ""), importlib.metadata.version("jaxlib"))
  if flags.FLAGS.reuse_host_memory:  # before JAX starts its threads
    host_memory.reuse_freed_memory()
  # Imported after flag parsing so that `--help` stays fast.
  from xdomain import checkpoint
  from xdomain import train
  from xdomain import workdir

  # Bad input: flags, the workdir (busy, unusable, resumed with other flags,
  # damaged metrics), a checkpoint of another run, or a damaged one named by
  # --init_from or --teacher (the workdir's own are set aside, not errors).
  bad_input = (ConfigError, workdir.WorkdirError, checkpoint.CheckpointMismatchError,
               checkpoint.CheckpointDamagedError, FileNotFoundError)
  try:
    results = train.train_and_evaluate(config_from_flags(), flags.FLAGS.workdir)
  except (*bad_input, train.NonFiniteLossError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2 if isinstance(e, bad_input) else 1
  if results.get("interrupted"):
    return 128 + 15  # stopped by SIGTERM after saving a checkpoint
  headline = "ap50" if "target_test_ap50" in results else "accuracy"  # detection: AP50
  scores = ", ".join(f"{part} test {headline} {results[f'{part}_test_{headline}']:.4f}"
                     for part in ("target", "source") if f"{part}_test_{headline}" in results)
  print(f"{scores} after {results['step']} steps; results in"
        f" {flags.FLAGS.workdir}/results.json")  # no source scores in a source-free run
  return 0


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main, flags_parser=parse_flags)
