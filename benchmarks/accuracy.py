r"""Accuracy tables: every flag file of a task over domain pairs and seeds.

  python benchmarks/accuracy.py --task=digits \
      --pairs=digits/mnist:digits/uci,digits/uci:digits/mnist --seeds=0,1,2

runs `experiments/<task>/<method>.flags` for each pair (overriding --source and
--target) and seed, each into `<root>/<task>/<pair>/<method>/seed<k>` (a finished
run is reused, so an interrupted table resumes), and writes
`benchmarks/results/accuracy_<task>.md` (target test accuracy, mean +- std over
seeds, one column per pair) and the raw results as JSON beside it.
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np
from absl import app
from absl import flags
from absl import logging

_TASK = flags.DEFINE_string("task", "digits", "Folder of flag files under experiments/.")
_PAIRS = flags.DEFINE_list(
    "pairs", ["digits/mnist:digits/uci", "digits/uci:digits/mnist"],
    "source:target pairs; empty keeps each flag file's own pair.")
_METHODS = flags.DEFINE_list("methods", [], "Flag files (method names) to run; empty: all.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_OVERRIDES = flags.DEFINE_multi_string(
    "override", [], "Extra flag for every run, e.g. --override=steps=500 (repeatable).")
_PAIR_OVERRIDES = flags.DEFINE_multi_string(
    "pair_override", [],
    "Extra flag for one pair: 'source:target:flag=value', e.g."
    " 'digits/mnist:digits/mnist_m:channels=3' (repeatable).")
_ROOT = flags.DEFINE_string("root", "/tmp/xdomain_benchmarks", "Where the runs go.")
_OUT = flags.DEFINE_string("out", None, "Markdown file; default benchmarks/results/accuracy_<task>.md.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flag_values(path: str) -> dict[str, str]:
  values = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line.startswith("--"):
        name, _, value = line[2:].partition("=")
        values[name] = value
  return values


def _run(flagfile: str, workdir: str, overrides: dict[str, str]) -> dict:
  """Runs `experiments/main.py` as a user would (a finished run is reused)."""
  results_path = os.path.join(workdir, "results.json")
  if not os.path.exists(results_path):
    command = [sys.executable, os.path.join(REPO, "experiments", "main.py"),
               f"--flagfile={flagfile}", f"--workdir={workdir}"]
    command += [f"--{k}={v}" for k, v in overrides.items()]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode:
      raise RuntimeError(f"{shlex.join(command)} failed:\n{finished.stderr[-3000:]}")
  with open(results_path) as f:
    return json.load(f)


def main(argv):
  del argv
  task_dir = os.path.join(REPO, "experiments", _TASK.value)
  files = sorted(glob.glob(os.path.join(task_dir, "*.flags")))
  if _METHODS.value:
    files = [f for f in files if os.path.basename(f)[:-6] in _METHODS.value]
  if not files:
    raise app.UsageError(f"no flag files to run in {task_dir}")
  common = dict(o.split("=", 1) for o in _OVERRIDES.value)
  pair_extra: dict[str, dict[str, str]] = {}
  for item in _PAIR_OVERRIDES.value:
    source, target, assignment = item.split(":", 2)
    name, value = assignment.split("=", 1)
    pair_extra.setdefault(f"{source}:{target}", {})[name] = value
  pairs = _PAIRS.value or [None]
  table: dict[str, dict[str, list[float]]] = {}
  raw = []
  started = time.time()
  for flagfile in files:
    method = os.path.basename(flagfile)[:-6]
    own = _flag_values(flagfile)
    for pair in pairs:
      pair_name = pair or f"{own['source']}:{own['target']}"
      source, target = pair_name.split(":")
      for seed in _SEEDS.value:
        overrides = dict(common, source=source, target=target, seed=seed,
                         **pair_extra.get(pair_name, {}))
        workdir = os.path.join(_ROOT.value, _TASK.value, pair_name.replace("/", "_"),
                               method, f"seed{seed}")
        logging.info("%s %s seed %s", method, pair_name, seed)
        results = _run(flagfile, workdir, overrides)
        raw.append(dict(results, flagfile=os.path.relpath(flagfile, REPO),
                        overrides=overrides))
        table.setdefault(method, {}).setdefault(pair_name, []).append(
            results["target_test_accuracy"])
  out = _OUT.value or os.path.join(REPO, "benchmarks", "results", f"accuracy_{_TASK.value}.md")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  pair_names = sorted({p for row in table.values() for p in row}, key=pairs_order(pairs))
  command = "python benchmarks/accuracy.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  lines = [f"Target test accuracy (%), mean +- std over seeds {','.join(_SEEDS.value)}.",
           f"Made by `{command}` ({(time.time() - started) / 60:.0f} min of new runs).", "",
           "| method | " + " | ".join(p.replace(":", " -> ") for p in pair_names) + " |",
           "| --- |" + " --- |" * len(pair_names)]
  for method, row in table.items():
    cells = []
    for pair_name in pair_names:
      values = 100 * np.asarray(row.get(pair_name, []))
      cells.append(f"{values.mean():.1f} +- {values.std():.1f}" if values.size else "")
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(out[:-3] + ".json", "w") as f:
    json.dump(raw, f, indent=1)
  print("\n".join(lines))


def pairs_order(pairs):
  order = {p: i for i, p in enumerate(pairs) if p}
  return lambda p: order.get(p, len(order))


if __name__ == "__main__":
  app.run(main)
