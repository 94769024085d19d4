r"""Hyperparameters chosen without target labels: a grid on a selection seed, each
validator's pick, and that pick rerun on fresh seeds.

  python -m benchmarks.selection --task=digits --methods=dann,mcc \
      --pairs=digits/mnist:digits/uci --grid=adapt_weight=0.1,0.3,1,3 \
      --selection_seed=100 --seeds=0,1,2,3,4

  python -m benchmarks.selection --task=detection --methods=dann --metric=target_test_ap50 \
      --pairs=detect/digits:detect/digits_m --grid=adapt_weight=0.03,0.1,0.3,1 --rerun=

For each method and pair, `experiments/<task>/<method>.flags` runs once per
grid value on the selection seed (a seed no table reports; with several,
`--selection_seed=100,101,102`, on each, and every score of a candidate is its
mean over them, so that one seed's noise decides less), holding out
`--source_val_fraction` of the source's training split and evaluating
`--evaluations` times (with few target labels, the held-out rows are part of
them). Every (grid value, evaluation step) is a candidate; each validator
(`xdomain.evaluate.validators`, and the tasks' own scores on source_val, e.g.
NER's span F1, in `metrics.jsonl`) picks the candidate it scores highest, and
the oracle picks the best target test score, `--metric` (shown, marked as
unattainable: it reads target labels). Detection has one validator, source_val
AP50. Behind the source guard (`validators.source_guard`, `--max_source_drop`),
a candidate whose source_val accuracy (detection: AP50) is more than that drop
below the grid's best is not eligible to any validator: the target-only ones
otherwise pick networks whose predictions collapsed, if they gave up the source
too (a collapse of the target alone passes it). Every pick's row shows
its target accuracy on the selection seed; the picks of the `--rerun`
validators (all by default) are then run on the fresh `--seeds` with the same
flags, and their rows add the target accuracy at the picked evaluation step,
mean +- std, to set beside `source_only`'s row of `benchmarks/accuracy.py` on
the same seeds. Under the table, IWV's and DEV's picks are given with the
effective sample size of their importance weights
(`diagnostic/importance_weight_ess`): a pick whose weights rest on a few
source rows is one to distrust. The table is rewritten after each method and pair, so that a
sweep cut short keeps what it finished. Runs go to
`<root>/select/<task>/<pair>/<grid flag>=<value>/<method>/seed<k>` (their
upstream runs, which the grid flag does not reach and which hold out the same
source rows, under `<root>/select/<task>/<pair>/` where `accuracy.workdir_for`
puts them) and finished ones are reused, as in `benchmarks/accuracy.py`.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence

import numpy as np
from absl import app
from absl import flags
from absl import logging

from benchmarks import accuracy
from benchmarks import cli
from xdomain import tasks
from xdomain.evaluate import validators as validators_lib

# Its own registry: benchmarks/accuracy.py, which it imports, defines flags of
# the same names in absl's global one.
_FLAGS = flags.FlagValues()
_TASK = flags.DEFINE_string("task", "digits", "Folder of flag files under experiments/.",
                            flag_values=_FLAGS)
_METHODS = flags.DEFINE_list("methods", ["dann"], "Flag files (method names) to select for.",
                             flag_values=_FLAGS)
_PAIRS = flags.DEFINE_list("pairs", ["digits/mnist:digits/uci"], "source:target pairs.",
                           flag_values=_FLAGS)
_GRID = flags.DEFINE_string(
    "grid", "adapt_weight=0.1,0.3,1,3", "One flag and its values: 'flag=v1,v2,...'.",
    flag_values=_FLAGS)
_METRIC = flags.DEFINE_string(
    "metric", "target_test_accuracy",
    "The target test score of the oracle and the tables (detection: target_test_ap50).",
    flag_values=_FLAGS)
_SELECTION_SEEDS = flags.DEFINE_list(
    "selection_seed", ["100"], "The seed of the grid runs, one that no table reports; several"
    " (comma-separated): each candidate's scores are their mean over them.",
    flag_values=_FLAGS)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Fresh seeds of the picks.",
                           flag_values=_FLAGS)
_EVALUATIONS = flags.DEFINE_integer(
    "evaluations", 4, "Evaluations per run (candidate steps); --eval_every = steps / this.",
    flag_values=_FLAGS)
_SOURCE_VAL = flags.DEFINE_float(
    "source_val_fraction", 0.1, "Held-out share of the source's training split.",
    flag_values=_FLAGS)
_RERUN = flags.DEFINE_list(
    "rerun", ["all"], "Validators (or 'oracle') whose picks run on the fresh --seeds; 'all',"
    " or empty to compare the picks on the selection seed only.", flag_values=_FLAGS)
_MAX_SOURCE_DROP = flags.DEFINE_float(
    "max_source_drop", 0.03, "Source guard: candidates whose source_val score is more than"
    " this below the grid's best are not eligible to the validators (1 turns it off).",
    flag_values=_FLAGS)
_OVERRIDES = flags.DEFINE_multi_string(
    "override", [], "Extra flag for every run, e.g. --override=steps=500 (repeatable).",
    flag_values=_FLAGS)
_ROOT = flags.DEFINE_string("root", "/tmp/xdomain_benchmarks", "Where the runs go.",
                            flag_values=_FLAGS)
_OUT = flags.DEFINE_string(
    "out", None, "Markdown file; default benchmarks/results/selection_<task>.md.",
    flag_values=_FLAGS)

ORACLE = "oracle (target labels)"
# As metrics.jsonl names them: those of class logits, then the tasks' own
# metrics on source_val (`Task.source_val_scores`, `Evaluator.validators`).
_TASK_VALIDATORS = tuple(sorted({f"source_{name}" for task in tasks.TASKS.values()
                                 for name in task.source_val_scores}))
VALIDATORS = (*validators_lib.VALIDATORS, *_TASK_VALIDATORS)
# The held-out source score of each task, which the source guard reads.
SOURCE_SCORES = ("source_accuracy", *_TASK_VALIDATORS)


def parse_grid(text: str) -> tuple[str, list[str]]:
  """'adapt_weight=0.1,0.3' -> ('adapt_weight', ['0.1', '0.3'])."""
  flag, eq, values = text.partition("=")
  values = [v for v in values.split(",") if v]
  if not (eq and flag and values):
    raise ValueError(f"--grid={text!r} must be 'flag=value1,value2,...'")
  return flag, values


def parse_rerun(names: Sequence[str]) -> tuple[str, ...]:
  """--rerun's names -> validator names (and ORACLE), in table order."""
  if list(names) == ["all"]:
    return (*VALIDATORS, ORACLE)
  known = {**{v: v for v in VALIDATORS}, "oracle": ORACLE}
  unknown = [n for n in names if n not in known]
  if unknown:
    raise ValueError(f"--rerun={','.join(names)}: unknown {', '.join(unknown)}; choose from"
                     f" all, {', '.join(known)}")
  return tuple(known[n] for n in names)


def check_selection_seeds(selection_seeds: Sequence[str], seeds: Sequence[str]) -> None:
  """Refuses selection seeds that are not integers or that the fresh seeds reuse."""
  if not selection_seeds or not all(seed.isdigit() for seed in selection_seeds):
    raise ValueError(f"--selection_seed={','.join(selection_seeds)}: give one or more"
                     " non-negative integers, e.g. --selection_seed=100,101,102")
  reused = sorted(set(selection_seeds) & set(seeds))
  if reused:
    raise ValueError(f"--selection_seed and --seeds share {','.join(reused)}: the picks must"
                     " run on seeds that did not choose them")


def candidates(workdir: str, metric: str = "target_test_accuracy") -> list[dict]:
  """The evaluations of a finished run: `{'step', 'target' (its `metric`),
  <validator>..., <diagnostic>...}`."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    events = [json.loads(line) for line in f if line.strip()]
  return [{"step": e["step"], "target": e[metric],
           **{name: e[f"validator/{name}"] for name in VALIDATORS
              if f"validator/{name}" in e},
           **{key[len("diagnostic/"):]: value for key, value in e.items()
              if key.startswith("diagnostic/")}}
          for e in events if metric in e]


def mean_candidates(per_seed: Sequence[Sequence[dict]]) -> list[dict]:
  """The candidates of one grid value, from its run on each selection seed, as
  one list: each score the mean over the seeds. The runs must have evaluated at
  the same steps; a score that not every run has is left out."""
  steps = [[c["step"] for c in runs] for runs in per_seed]
  if any(s != steps[0] for s in steps):
    raise ValueError(f"the selection seeds' runs evaluated at different steps ({steps}):"
                     " rerun them with the same --steps and --evaluations")
  means = []
  for at_step in zip(*per_seed):
    keys = set.intersection(*(set(c) for c in at_step)) - {"step"}
    means.append({"step": at_step[0]["step"],
                  **{k: float(np.mean([c[k] for c in at_step])) for k in sorted(keys)}})
  return means


def guarded_out(grid: Mapping[str, Sequence[dict]],
                max_source_drop: float) -> list[tuple[str, int]] | None:
  """The candidates `validators.source_guard` makes ineligible, as (grid value,
  step); None when no candidate has a source score (`SOURCE_SCORES`; source-free
  runs, or no `source_val`), so that the guard could not judge."""
  scored = [c for runs in grid.values() for c in runs]
  key = next((k for k in SOURCE_SCORES if any(k in c for c in scored)), SOURCE_SCORES[0])
  found = [(value, c["step"], c.get(key, np.nan)) for value, runs in grid.items() for c in runs]
  accuracies = np.asarray([a for _, _, a in found], float)
  if not np.isfinite(accuracies).any():
    return None
  eligible = validators_lib.source_guard(accuracies, max_drop=max_source_drop)
  return [(value, step) for (value, step, _), ok in zip(found, eligible) if not ok]


def pick(grid: Mapping[str, Sequence[dict]],
         excluded: Sequence[tuple[str, int]] = ()) -> dict[str, tuple[str, int]]:
  """What each validator (and the oracle) chooses among the candidates of one
  method and pair: `{validator: (grid value, step)}`, argmax (higher is better
  for every validator; of tied candidates the first in grid order, then in
  evaluation order); a validator that no candidate has is left out. The
  `excluded` (grid value, step) candidates are not eligible to the validators;
  the oracle, the best a validator could do, sees every candidate."""
  excluded = {tuple(e) for e in excluded}
  picks = {}
  for name in (*VALIDATORS, ORACLE):
    key = "target" if name == ORACLE else name
    scored = [(c[key], value, c["step"]) for value, runs in grid.items() for c in runs
              if key in c and np.isfinite(c[key])
              and (name == ORACLE or (value, c["step"]) not in excluded)]
    if scored:
      _, value, step = max(scored, key=lambda s: s[0])
      picks[name] = (value, step)
  return picks


def score_at(workdir: str, step: int, metric: str = "target_test_accuracy") -> float:
  """The target test `metric` of a run at one of its evaluation steps."""
  for candidate in candidates(workdir, metric):
    if candidate["step"] == step:
      return candidate["target"]
  raise KeyError(f"{workdir} has no evaluation at step {step}")


def select(flagfile: str, pair: str, *, grid_flag: str, grid_values: Sequence[str],
           selection_seeds: Sequence[str], seeds: Sequence[str], common: Mapping[str, str],
           task_dir: str, task_root: str, row_flags: Mapping[str, str] | None = None,
           source_val_fraction: str | None = None,
           rerun: Sequence[str] = (*VALIDATORS, ORACLE), max_source_drop: float = 0.03,
           metric: str = "target_test_accuracy") -> dict:
  """Grid on the selection seeds, the picks, and the `rerun` picks on fresh seeds.

  `common` flags reach the file's upstream runs too, and so does
  `source_val_fraction`: the held-out source rows train in no stage of a
  candidate, or a source validator would score rows its upstream learnt.
  `row_flags` (the evaluation steps) and the grid value reach only its own runs.

  Returns:
    `{'picks': {validator: [value, step]}, 'picked': {validator: `metric` on the
    selection seeds, their mean}, 'rows': {validator in rerun: [`metric` per seed]},
    'candidates': {value: [...], means over the selection seeds}, 'guarded_out':
    [[value, step], ...] (None: no candidate had a source score, the guard was off)}`.
  """
  source, target = accuracy.split_pair(pair)
  pair_root = os.path.join(task_root, pair.replace("/", "_"))

  def run(value: str, seed: str) -> str:
    overrides = dict(common, source=source, target=target, seed=seed)
    if source_val_fraction is not None:
      overrides["source_val_fraction"] = source_val_fraction
    grid_dir = os.path.join(pair_root, f"{grid_flag}={value}")
    # The grid value and evaluation steps are the row's alone: its upstream
    # runs (a pretrained network, a teacher) are one for the whole grid.
    results, _ = accuracy.run_chain(
        flagfile, overrides, own={**(row_flags or {}), grid_flag: value}, task_dir=task_dir,
        pair_dir=pair_root, own_dir=grid_dir)
    if (results["source"], results["target"]) != (source, target):
      raise ValueError(f"a run of {pair} reports {results['source']}:{results['target']}:"
                       " selection never mixes pairs")
    return accuracy.workdir_for(flagfile, task_dir, grid_dir, seed)

  grid = {value: mean_candidates([candidates(run(value, str(seed)), metric)
                                   for seed in selection_seeds])
          for value in grid_values}
  excluded = guarded_out(grid, max_source_drop)
  if excluded is None:
    logging.warning("%s on %s: no candidate has a source score; the source guard is off",
                    os.path.basename(flagfile), pair)
  picks = pick(grid, excluded or ())
  picked = {name: next(c["target"] for c in grid[value] if c["step"] == step)
            for name, (value, step) in picks.items()}
  rows = {name: [score_at(run(value, seed), step, metric) for seed in seeds]
          for name, (value, step) in picks.items() if name in rerun}
  return {"picks": {k: list(v) for k, v in picks.items()}, "picked": picked, "rows": rows,
          "candidates": grid,
          "guarded_out": None if excluded is None else [list(e) for e in excluded]}


def markdown(selections: Mapping[str, Mapping[str, dict]], *, grid_flag: str,
             seeds: Sequence[str], command: str, minutes: float,
             max_source_drop: float = 0.03, metric: str = "target_test_accuracy"
             ) -> list[str]:
  """One table: a row per method and validator that picked, a column per pair,
  what the source guard excluded, and the importance weights behind IWV's and
  DEV's picks."""
  pairs = sorted({p for by_pair in selections.values() for p in by_pair})
  lines = [f"{metric} (%), mean +- std over fresh seeds {','.join(seeds)}, of the"
           f" --{grid_flag} and evaluation step each validator picked on the selection seed;"
           " in brackets the pick and its score on the selection seed (with several, their"
           " mean; a pick without fresh seeds was not rerun). The oracle reads target"
           " labels: unattainable in practice.",
           f"Made by `{command}` ({minutes:.0f} min).", "",
           "| method | picked by | " + " | ".join(" -> ".join(accuracy.split_pair(p))
                                                 for p in pairs) + " |",
           "| --- | --- |" + " --- |" * len(pairs)]
  for method, by_pair in selections.items():
    for name in (*VALIDATORS, ORACLE):
      if not any(name in selection.get("picks", {}) for selection in by_pair.values()):
        continue  # no run of this task has it
      cells = []
      for pair in pairs:
        selection = by_pair.get(pair, {})
        if name not in selection.get("picks", {}):
          cells.append("")
          continue
        value, step = selection["picks"][name]
        brackets = f"({value}, {step}: {100 * selection['picked'][name]:.1f})"
        if name in selection["rows"]:
          values = 100 * np.asarray(selection["rows"][name])
          brackets = f"{values.mean():.1f} +- {values.std():.1f} {brackets}"
        cells.append(brackets)
      lines.append(f"| {method} | {name} | " + " | ".join(cells) + " |")
  lines += ["", f"Source guard: candidates more than {100 * max_source_drop:g} points below their"
            " grid's best source_val score were not eligible to the validators (the oracle"
            " sees all):", ""]
  for method, by_pair in selections.items():
    for pair, selection in by_pair.items():
      excluded = selection.get("guarded_out")
      said = ("off: no candidate has a source score" if excluded is None
              else ", ".join(f"{value} at step {step}" for value, step in excluded) or "none")
      lines.append(f"- {method}, {' -> '.join(accuracy.split_pair(pair))}: {said}")
  weighed = [(method, pair, name, selection) for method, by_pair in selections.items()
             for pair, selection in by_pair.items() for name in validators_lib.WEIGHTED
             if name in selection.get("picks", {})]
  if weighed:
    lines += ["", "The importance weights behind IWV's and DEV's picks, on the selection seed"
              " (the mean of several): their effective sample size (Kish, a share of the"
              " source_val rows; the estimate of the target risk rests on that many) and"
              " mean (1 if the domain classifier is calibrated):", ""]
  for method, pair, name, selection in weighed:
    value, step = selection["picks"][name]
    picked = next(c for c in selection["candidates"][value] if c["step"] == step)
    said = (f"ESS {100 * picked['importance_weight_ess']:.2g}%, mean"
            f" {picked['importance_weight_mean']:.3g}" if "importance_weight_ess" in picked
            else "not recorded (runs from before the diagnostic)")
    lines.append(f"- {method}, {' -> '.join(accuracy.split_pair(pair))}, {name}"
                 f" ({value}, {step}): {said}")
  return lines


def main(argv):
  del argv
  task_dir = os.path.join(accuracy.REPO, "experiments", _TASK.value)
  try:  # before any run, so that a typo does not stop a sweep hours in
    grid_flag, grid_values = parse_grid(_GRID.value)
    for pair in _PAIRS.value:
      accuracy.split_pair(pair)
    common = accuracy.parse_overrides(_OVERRIDES.value)
    rerun = parse_rerun(_RERUN.value)
    check_selection_seeds(_SELECTION_SEEDS.value, _SEEDS.value)
    if not 0 <= _MAX_SOURCE_DROP.value <= 1:
      raise ValueError(f"--max_source_drop={_MAX_SOURCE_DROP.value} must lie in [0, 1] (an"
                       " accuracy drop; 1 turns the guard off)")
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  files = {method: os.path.join(task_dir, f"{method}.flags") for method in _METHODS.value}
  missing = [f for f in files.values() if not os.path.isfile(f)]
  if missing:
    raise app.UsageError(f"no such flag files: {', '.join(missing)}")

  def row_flags(flagfile: str) -> dict[str, str]:
    steps = int(common.get("steps") or accuracy.flag_values(flagfile)["steps"])
    return {"eval_every": str(max(steps // _EVALUATIONS.value, 1))}

  out = _OUT.value or os.path.join(accuracy.REPO, "benchmarks", "results",
                                   f"selection_{_TASK.value}.md")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  command = "python -m benchmarks.selection " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  started = time.time()
  selections = {}
  for method, flagfile in files.items():
    for pair in _PAIRS.value:
      logging.info("selecting --%s for %s on %s", grid_flag, method, pair)
      selections.setdefault(method, {})[pair] = select(
          flagfile, pair, grid_flag=grid_flag, grid_values=grid_values,
          selection_seeds=_SELECTION_SEEDS.value, seeds=_SEEDS.value, common=common,
          task_dir=task_dir, task_root=os.path.join(_ROOT.value, "select", _TASK.value),
          row_flags=row_flags(flagfile), source_val_fraction=str(_SOURCE_VAL.value),
          rerun=rerun, max_source_drop=_MAX_SOURCE_DROP.value, metric=_METRIC.value)
      lines = markdown(selections, grid_flag=grid_flag, seeds=_SEEDS.value, command=command,
                       minutes=(time.time() - started) / 60,
                       max_source_drop=_MAX_SOURCE_DROP.value, metric=_METRIC.value)
      with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
      with open(out[:-3] + ".json", "w") as f:
        json.dump(selections, f, indent=1)
  print("\n".join(lines))


def _parse_flags(argv: list[str]) -> list[str]:
  return cli.parse_own_flags(_FLAGS, argv, __doc__)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
