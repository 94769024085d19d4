"""A stand-in for `experiments/main.py` in the benchmark runners' tests: no training."""

from __future__ import annotations

import json
import os

from benchmarks import accuracy


def start(command: list[str]) -> dict[str, str]:
  """Does what a run does before training, for a `main.py` command line: makes
  its workdir and writes config.json (every flag it ran with, its flag file's
  included). Returns the command's flags; the caller writes the results."""
  values = dict(arg[2:].split("=", 1) for arg in command[2:])
  os.makedirs(values["workdir"])
  config = dict(accuracy.flag_values(values["flagfile"]), init_from=None, teacher=None)
  config.update((k, v) for k, v in values.items() if k not in ("flagfile", "workdir"))
  with open(os.path.join(values["workdir"], "config.json"), "w") as f:
    json.dump(config, f)
  return values
