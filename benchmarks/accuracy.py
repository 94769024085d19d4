r"""Accuracy tables: every flag file of a task over domain pairs and seeds.

  python benchmarks/accuracy.py --task=digits \
      --pairs=digits/mnist:digits/uci,digits/uci:digits/mnist --seeds=0,1,2
  python benchmarks/accuracy.py --task=transfer --pairs= --seeds=0,1,2
  python benchmarks/accuracy.py --task=ner --pairs= --methods=wnut16 \
      --metric=target_test_span_f1

runs `experiments/<task>/<method>.flags` for each pair (overriding --source and
--target; `--pairs=` keeps each flag file's own pair) and seed, each into
`<root>/<task>/<pair>/<method>/seed<k>` (a finished run is reused, so an
interrupted table resumes; one made with other flags, e.g. by an older version
of its flag file, is refused, to be deleted), and writes `benchmarks/results/accuracy_<task>.md`
(`--metric`, mean +- std over seeds, one column per pair that appears) and the
raw results as JSON beside it. A pair splits at ':conll:' when its target is a
`conll:` name, else at its last ':', so with CoNLL-2003 files
`--task=ner --pairs=conll:/data/conll2003@ner/wnut16:ner/wnut16
--methods=conll_dann` runs the CoNLL -> WNUT-16 row.

A flag file that starts from another run names the flag file of that run in a
comment line, relative to the repository (absl skips comments):

  # upstream: --init_from=experiments/digits/source_only.flags

For each pair and seed that run is made first (and its own upstreams before
it) with the same --source, --target, --seed and overrides, into
`<root>/<task>/<pair>/upstream/<folder>_<stem>/seed<k>` (e.g.
`upstream/digits_source_only`), or into its row's workdir when the flag file is
in the task's folder, and the downstream run gets `--init_from=<that workdir>`
in place of the path written in the file. Upstream runs are table rows only
when they are in the task's folder, and pretraining runs (`--method=lm_pretrain`
or `skipgram`) never are (their classifier head is never trained).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import app
from absl import flags
from absl import logging

from xdomain import workdir as workdir_lib
from xdomain.methods import pretrain
from xdomain.config import Config

_TASK = flags.DEFINE_string("task", "digits", "Folder of flag files under experiments/.")
_PAIRS = flags.DEFINE_list(
    "pairs", ["digits/mnist:digits/uci", "digits/uci:digits/mnist"],
    "source:target pairs; empty keeps each flag file's own pair.")
_METHODS = flags.DEFINE_list("methods", [], "Flag files (method names) to run; empty: all.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_METRIC = flags.DEFINE_string(
    "metric", "target_test_accuracy",
    "Key of results.json to tabulate, e.g. target_test_macro_f1,"
    " target_test_token_accuracy, target_test_span_f1.")
_OVERRIDES = flags.DEFINE_multi_string(
    "override", [], "Extra flag for every run, e.g. --override=steps=500 (repeatable).")
_PAIR_OVERRIDES = flags.DEFINE_multi_string(
    "pair_override", [],
    "Extra flag for one pair: 'source:target:flag=value', e.g."
    " 'digits/mnist:digits/mnist_m:channels=3' (repeatable).")
_ROOT = flags.DEFINE_string("root", "/tmp/xdomain_benchmarks", "Where the runs go.")
_OUT = flags.DEFINE_string(
    "out", None, "Markdown file; default benchmarks/results/accuracy_<task>.md.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_UPSTREAM = re.compile(r"#\s*upstream:\s*--(\w+)=(\S+)$")
_CONLL = "conll:"
# Set per pair and seed by `collect`: an override of them would be lost.
_PER_RUN_FLAGS = ("source", "target", "seed")


def split_pair(pair: str) -> tuple[str, str]:
  """'source:target' -> (source, target); a `conll:` name may hold ':' itself.

  Registered domain names hold no ':', so a pair splits at ':conll:' when the
  target is a `conll:` name, else at its last ':' (e.g.
  'conll:/data/conll2003@ner/wnut16:ner/wnut16').

  Raises:
    ValueError: the pair does not give two domain names.
  """
  if ":" + _CONLL in pair:
    source, _, target = pair.partition(":" + _CONLL)
    target = _CONLL + target
  else:
    source, _, target = pair.rpartition(":")
  for name in (source, target):
    if name in ("", _CONLL) or (":" in name and not name.startswith(_CONLL)):
      raise ValueError(
          f"pair {pair!r} is not 'source:target', e.g. digits/mnist:digits/uci or"
          " conll:/data/conll2003@ner/wnut16:ner/wnut16")
  return source, target


def _assignment(text: str, option: str) -> tuple[str, str]:
  """'flag=value' -> (flag, value), refusing the flags set per pair and seed."""
  name, eq, value = text.partition("=")
  if not (eq and name):
    raise ValueError(f"--{option}: {text!r} is not 'flag=value'")
  if name in _PER_RUN_FLAGS:
    raise ValueError(f"--{option}: --{name} is set per pair and seed; choose pairs with"
                     " --pairs and seeds with --seeds")
  return name, value


def parse_overrides(items: list[str]) -> dict[str, str]:
  """--override values ('flag=value') -> {flag: value}."""
  return dict(_assignment(item, "override") for item in items)


def parse_pair_overrides(items: list[str]) -> dict[str, dict[str, str]]:
  """--pair_override values ('source:target:flag=value') -> {pair: {flag: value}}."""
  pair_extra: dict[str, dict[str, str]] = {}
  for item in items:
    pair, _, assignment = item.rpartition(":")
    try:
      source, target = split_pair(pair)
    except ValueError as e:
      raise ValueError(f"--pair_override: {item!r} is not 'source:target:flag=value'"
                       f" ({e})") from e
    name, value = _assignment(assignment, "pair_override")
    pair_extra.setdefault(f"{source}:{target}", {})[name] = value
  return pair_extra


def flag_values(path: str) -> dict[str, str]:
  """The flags a flag file sets, those of the files it includes with
  `--flagfile=` (a path from the repository root, as main.py reads them) first."""
  values = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line.startswith("--"):
        name, _, value = line[2:].partition("=")
        if name == "flagfile":
          values.update(flag_values(os.path.join(REPO, value)))
        else:
          values[name] = value
  return values


def upstreams(flagfile: str) -> dict[str, str]:
  """`{flag: absolute path of the flag file}` from `flagfile`'s `# upstream:` lines."""
  found = {}
  with open(flagfile) as f:
    for number, line in enumerate(f, 1):
      line = line.strip()
      if not re.match(r"#\s*upstream\s*:", line):
        continue
      match = _UPSTREAM.match(line)
      # A line that does not parse would leave the file's hard-coded path in use.
      if not match:
        raise ValueError(f"{flagfile}:{number}: expected '# upstream: --flag=path/to/run.flags',"
                         f" got {line!r}")
      path = os.path.abspath(os.path.join(REPO, match[2]))
      if not os.path.isfile(path):
        raise FileNotFoundError(f"{flagfile}:{number}: upstream {match[2]} does not exist")
      if match[1] in found:
        raise ValueError(f"{flagfile}:{number}: a second upstream line for --{match[1]}")
      found[match[1]] = path
  return found


def _run(flagfile: str, workdir: str, overrides: dict[str, str]) -> dict:
  """Runs `experiments/main.py` as a user would (a finished run is reused)."""
  results_path = os.path.join(workdir, "results.json")
  if not os.path.exists(results_path):
    command = [sys.executable, os.path.join(REPO, "experiments", "main.py"),
               f"--flagfile={flagfile}", f"--workdir={workdir}"]
    command += [f"--{k}={v}" for k, v in overrides.items()]
    # From the repository root, where flag files' --flagfile= includes are rooted.
    finished = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if finished.returncode:
      raise RuntimeError(f"{shlex.join(command)} failed:\n{finished.stderr[-3000:]}")
  with open(results_path) as f:
    return json.load(f)


def workdir_for(flagfile: str, task_dir: str, pair_dir: str, seed: str) -> str:
  """Where `flagfile` runs for one pair (`pair_dir`) and seed: its row's workdir when
  it is in the task's folder (so a row and an upstream are one run), else
  `upstream/<folder>_<stem>` (files of one name in two folders are two runs)."""
  stem = os.path.basename(flagfile)[:-len(".flags")]
  folder = os.path.dirname(os.path.abspath(flagfile))
  if folder == os.path.abspath(task_dir):
    return os.path.join(pair_dir, stem, f"seed{seed}")
  return os.path.join(pair_dir, "upstream", f"{os.path.basename(folder)}_{stem}",
                      f"seed{seed}")


_CONFIG_DEFAULTS = {field.name: field.default for field in dataclasses.fields(Config)}


def _same_value(saved: Any, wanted: str) -> bool:
  """Whether a flag given as the string `wanted` has the value `saved` (from a
  run's config.json), in whatever spelling (1e-3 and 0.001, true and True)."""
  if isinstance(saved, bool):
    return wanted.lower() in (("true", "1", "") if saved else ("false", "0"))
  if saved is None:
    return wanted in ("", "None")
  if isinstance(saved, (int, float)):
    try:
      return float(wanted) == float(saved)
    except ValueError:
      return False
  return str(saved) == wanted


def _check_same_flags(workdir: str, flags: dict[str, str], chained: dict[str, str]) -> None:
  """A run made earlier with other flags (another version of its flag file) or
  from other upstream runs may not be reused or resumed: its results would be
  filed under flags, a pair or a seed that did not make them. Nor may a run
  resumed with changed flags (`--allow_config_change`, in its `config_history`):
  no one set of flags made it."""
  config = workdir_lib.read_config(workdir, with_history=True)
  if config is None:
    return
  history = config.pop(workdir_lib.HISTORY_KEY, None)
  if history:
    changed = sorted({flag for change in history for flag in change.get("changes", {})})
    raise RuntimeError(
        f"{workdir} was resumed with changed flags (--{', --'.join(changed)}; see"
        f" {workdir_lib.HISTORY_KEY} in its config.json), so no one set of flags made"
        " its results; delete it to run it again.")
  for flag, path in chained.items():
    if os.path.abspath(config.get(flag) or "") != os.path.abspath(path):
      raise RuntimeError(f"{workdir} was run with --{flag}={config.get(flag)}, not {path};"
                         " delete it to run it again.")
  # A flag that its config.json lacks is newer than the run, which had its default.
  config = {**_CONFIG_DEFAULTS, **config}
  for flag, wanted in flags.items():
    if flag not in chained and flag in config and not _same_value(config[flag], wanted):
      raise RuntimeError(f"{workdir} was run with --{flag}={config[flag]}, not {wanted};"
                         " delete it to run it again.")


def run_chain(flagfile: str, overrides: dict[str, str], *, task_dir: str, pair_dir: str,
              own: Mapping[str, str] | None = None, own_dir: str | None = None,
              _chain: tuple[str, ...] = ()) -> tuple[dict, dict[str, str]]:
  """Runs `flagfile` after the runs its `# upstream:` lines name (recursively).

  Args:
    flagfile: the flag file.
    overrides: flags for it and for its upstream runs alike (--source, --target,
      --seed and the table's overrides).
    task_dir: the folder of the table's flag files.
    pair_dir: `<root>/<task>/<pair>`, where the runs of this pair go.
    own: flags for this file's run only, not its upstreams' (a grid value of
      `benchmarks/selection.py`: the upstream runs stay one for the grid).
    own_dir: where this file's run goes instead of `pair_dir` (its upstreams
      stay in `pair_dir`).

  Returns:
    The run's results and the flags given to it: `overrides` plus one
    `<flag>: <upstream workdir>` per upstream line.

  Raises:
    ValueError: the upstream lines form a cycle.
  """
  flagfile = os.path.abspath(flagfile)
  chain = _chain + (flagfile,)
  if flagfile in _chain:
    raise ValueError("upstream cycle: " + " -> ".join(os.path.relpath(f, REPO) for f in chain))
  chained = {}
  for flag, upstream in upstreams(flagfile).items():
    run_chain(upstream, overrides, task_dir=task_dir, pair_dir=pair_dir, _chain=chain)
    chained[flag] = workdir_for(upstream, task_dir, pair_dir, overrides["seed"])
  workdir = workdir_for(flagfile, task_dir, own_dir or pair_dir, overrides["seed"])
  used = dict(overrides, **(own or {}), **chained)
  _check_same_flags(workdir, dict(flag_values(flagfile), **used), chained)
  return _run(flagfile, workdir, used), used


def collect(files: list[str], *, task_dir: str, task_root: str, pairs: list[str | None],
            seeds: list[str], common: dict[str, str],
            pair_extra: dict[str, dict[str, str]], metric: str
            ) -> tuple[dict[str, dict[str, list[float]]], list[dict]]:
  """Runs every flag file (with its upstreams) for each pair and seed.

  Args:
    files: the flag files, the rows (a pretraining file, lm_pretrain or skipgram,
      runs but is no row: its classifier head is never trained).
    task_dir: their folder (upstream flag files in it run in their row's workdir).
    task_root: `<root>/<task>`, where the runs go.
    pairs: `source:target` pairs (see `split_pair`); None for each flag file's own
      pair.
    seeds: the seeds.
    common: flags for every run, upstream runs included.
    pair_extra: flags for the runs of one pair.
    metric: the key of results.json to tabulate.

  Returns:
    `{method: {pair: [metric per seed]}}` (rows `<method> (EMA)` for the EMA
    model of methods that keep one) and the raw results of each row run.

  Raises:
    KeyError: a row's results lack `metric`.
  """
  table: dict[str, dict[str, list[float]]] = {}
  raw = []
  for flagfile in files:
    method = os.path.basename(flagfile)[:-len(".flags")]
    own = flag_values(flagfile)
    for pair in pairs:
      source, target = split_pair(pair) if pair else (own["source"], own["target"])
      pair_name = f"{source}:{target}"
      pair_dir = os.path.join(task_root, pair_name.replace("/", "_"))
      for seed in seeds:
        overrides = dict(common, source=source, target=target, seed=seed,
                         **pair_extra.get(pair_name, {}))
        logging.info("%s %s seed %s", method, pair_name, seed)
        results, used = run_chain(flagfile, overrides, task_dir=task_dir, pair_dir=pair_dir)
        if own.get("method") in pretrain.PRETRAINED_MODELS:  # no classifier trained
          continue
        if metric not in results:
          raise KeyError(f"{method} ({pair_name}, seed {seed}) has no {metric}; its results"
                         f" have {', '.join(k for k in results if k.startswith('target_test_'))}")
        raw.append(dict(results, flagfile=os.path.relpath(flagfile, REPO), overrides=used))
        table.setdefault(method, {}).setdefault(pair_name, []).append(results[metric])
        if f"ema_{metric}" in results:  # the mean teacher's EMA model, its own row
          table.setdefault(f"{method} (EMA)", {}).setdefault(pair_name, []).append(
              results[f"ema_{metric}"])
  return table, raw


def markdown(table: dict[str, dict[str, list[float]]], *, pairs: list[str | None], metric: str,
             seeds: list[str], command: str, minutes: float) -> list[str]:
  """The table's lines: one column per pair that appears (those of `pairs` first, in
  order), rows grouped by their first pair."""
  order = {p: i for i, p in enumerate(pairs) if p}
  pair_names = sorted({p for row in table.values() for p in row},
                      key=lambda p: (order.get(p, len(order)), p))
  methods = sorted(table, key=lambda m: min(pair_names.index(p) for p in table[m]))
  # Over several pairs that every row covers, a last column averages the pairs
  # (the std is over seeds of each seed's mean over pairs).
  with_mean = len(pair_names) > 1 and all(
      len(table[m].get(p, [])) == len(seeds) for m in methods for p in pair_names)
  columns = [" -> ".join(split_pair(p)) for p in pair_names] + (["mean"] if with_mean else [])
  lines = [f"{metric} (%), mean +- std over seeds {','.join(seeds)}.",
           f"Made by `{command}` ({minutes:.0f} min of new runs).", "",
           "| method | " + " | ".join(columns) + " |",
           "| --- |" + " --- |" * len(columns)]
  for method in methods:
    cells = []
    for pair_name in pair_names:
      values = 100 * np.asarray(table[method].get(pair_name, []))
      cells.append(f"{values.mean():.1f} +- {values.std():.1f}" if values.size else "")
    if with_mean:
      per_seed = 100 * np.mean([table[method][p] for p in pair_names], axis=0)
      cells.append(f"**{per_seed.mean():.1f} +- {per_seed.std():.1f}**")
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  return lines


def main(argv):
  del argv
  task_dir = os.path.join(REPO, "experiments", _TASK.value)
  files = sorted(glob.glob(os.path.join(task_dir, "*.flags")))
  if _METHODS.value:
    files = [f for f in files if os.path.basename(f)[:-6] in _METHODS.value]
  if not files:
    raise app.UsageError(f"no flag files to run in {task_dir}")
  try:  # before any run, so that a typo does not stop a table hours in
    common = parse_overrides(_OVERRIDES.value)
    pair_extra = parse_pair_overrides(_PAIR_OVERRIDES.value)
    for pair in _PAIRS.value:
      split_pair(pair)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  pairs = _PAIRS.value or [None]
  started = time.time()
  table, raw = collect(files, task_dir=task_dir,
                       task_root=os.path.join(_ROOT.value, _TASK.value), pairs=pairs,
                       seeds=_SEEDS.value, common=common, pair_extra=pair_extra,
                       metric=_METRIC.value)
  out = _OUT.value or os.path.join(REPO, "benchmarks", "results", f"accuracy_{_TASK.value}.md")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  command = "python benchmarks/accuracy.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  lines = markdown(table, pairs=pairs, metric=_METRIC.value, seeds=_SEEDS.value,
                   command=command, minutes=(time.time() - started) / 60)
  with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(out[:-3] + ".json", "w") as f:
    json.dump(raw, f, indent=1)
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
