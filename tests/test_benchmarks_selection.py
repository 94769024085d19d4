"""benchmarks/selection.py: each validator's pick on the selection seed, rerun on fresh seeds.

No training: `main.py` is replaced by a stub that writes what a finished run
leaves (config.json, results.json, metrics.jsonl with two evaluations), with
validator values and accuracies made up so that each pick is known.
"""

import json
import os
import types

import pytest

from benchmarks import accuracy
from benchmarks import selection as select
from tests import fake_runs

DIGITS = os.path.join(accuracy.REPO, "experiments", "digits")


def _fake_runs(monkeypatch, source_accuracy=None, detection=False, dev=False):
  """Fake runs; `source_accuracy(weight)`, when given, adds that validator;
  `dev`, DEV (best at weight 0.1, step 2) and its weights' diagnostics.
  Detection runs log target AP50 and their one validator, source_val AP50
  (`source_accuracy(weight)`) instead."""
  started = []

  def fake_subprocess_run(command, **kwargs):
    del kwargs
    values = fake_runs.start(command)
    started.append(values)
    workdir = values["workdir"]
    weight, seed = float(values.get("adapt_weight", 0)), int(values["seed"])
    events = []
    for step in (2, 4):
      # entropy prefers the largest weight at step 4, snd the smallest at step 2;
      # the target accuracy is best at weight 0.3, step 4.
      target = 0.5 - abs(weight - 0.3) + step / 100 + seed / 1000
      if detection:
        events.append({"step": step, "target_test_ap50": target,
                       "validator/source_ap50": source_accuracy(weight) + step / 1000})
        continue
      events.append({"step": step, "target_test_accuracy": target,
                     "validator/entropy": weight + step, "validator/snd": -weight - step})
      if source_accuracy:
        events[-1]["validator/source_accuracy"] = source_accuracy(weight) + step / 1000
      if dev:
        events[-1].update({"validator/dev": -weight - step,
                           "diagnostic/importance_weight_ess": weight / step,
                           "diagnostic/importance_weight_mean": 1 + weight})
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      f.write("".join(json.dumps(e) + "\n" for e in events))
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump({"source": values["source"], "target": values["target"],
                 **{k: v for k, v in events[-1].items() if k.startswith("target_test_")}}, f)
    return types.SimpleNamespace(returncode=0)

  monkeypatch.setattr(accuracy, "subprocess", types.SimpleNamespace(run=fake_subprocess_run))
  return started


@pytest.fixture
def runs(monkeypatch):
  return _fake_runs(monkeypatch)


def test_each_validator_picks_its_best_candidate_and_the_pick_runs_on_fresh_seeds(
    runs, tmp_path):
  selection = select.select(
      os.path.join(DIGITS, "dann.flags"), "digits/mnist:digits/uci",
      grid_flag="adapt_weight", grid_values=["0.1", "0.3", "1"], selection_seeds=["100"],
      seeds=["0", "1"], common={"steps": "4", "eval_every": "2"}, task_dir=DIGITS,
      task_root=str(tmp_path))
  assert selection["picks"] == {"entropy": ["1", 4], "snd": ["0.1", 2],
                                select.ORACLE: ["0.3", 4]}
  assert selection["rows"]["entropy"] == pytest.approx([0.5 - 0.7 + 0.04, 0.5 - 0.7 + 0.041])
  assert selection["rows"][select.ORACLE] == pytest.approx([0.54, 0.541])
  # Three grid runs on the selection seed, then each distinct pick on 2 fresh seeds.
  assert [r["seed"] for r in runs[:3]] == ["100"] * 3
  assert sorted((r["adapt_weight"], r["seed"]) for r in runs[3:]) == [
      ("0.1", "0"), ("0.1", "1"), ("0.3", "0"), ("0.3", "1"), ("1", "0"), ("1", "1")]
  lines = select.markdown({"dann": {"digits/mnist:digits/uci": selection}},
                          grid_flag="adapt_weight", seeds=["0", "1"], command="c", minutes=1)
  rows = {line.split(" | ")[1]: line for line in lines if line.startswith("| dann |")}
  assert rows["entropy"].endswith("(1, 4: -6.0) |") and rows["snd"].endswith("(0.1, 2: 42.0) |")
  assert rows[select.ORACLE].endswith("+- 0.1 (0.3, 4: 64.0) |")
  assert "dev" not in rows  # no run had it


def test_the_grid_value_reaches_only_the_row_and_the_held_out_rows_every_stage(runs, tmp_path):
  task_dir = tmp_path / "transfer"
  task_dir.mkdir()
  flagfile = task_dir / "student.flags"
  flagfile.write_text(f"# upstream: --init_from={os.path.join(DIGITS, 'source_only.flags')}\n"
                      "--method=dann\n--adapt_weight=1\n--steps=4\n")
  select.select(str(flagfile), "digits/mnist:digits/uci", grid_flag="adapt_weight",
                grid_values=["0.1", "0.3"], selection_seeds=["100"], seeds=["0"],
                common={"eval_every": "2"}, task_dir=str(task_dir),
                task_root=str(tmp_path / "runs"), source_val_fraction="0.2",
                rerun=select.parse_rerun(["snd"]))
  upstream = [r for r in runs if r["flagfile"].endswith("source_only.flags")]
  rows = [r for r in runs if r["flagfile"] == str(flagfile)]
  # One upstream run per seed, shared by the grid, which it never sees.
  assert sorted(r["seed"] for r in upstream) == ["0", "100"]
  assert not any("adapt_weight" in r for r in upstream)
  # The source_val rows train in no stage: the upstream holds them out too.
  assert [r.get("source_val_fraction") for r in upstream + rows] == ["0.2"] * 5
  assert sorted((r["adapt_weight"], r["seed"]) for r in rows) == [
      ("0.1", "0"), ("0.1", "100"), ("0.3", "100")]
  shared = {r["seed"]: r["workdir"] for r in upstream}
  assert all(r["init_from"] == shared[r["seed"]] for r in rows)


def test_only_the_rerun_validators_picks_run_on_fresh_seeds(runs, tmp_path):
  selection = select.select(
      os.path.join(DIGITS, "dann.flags"), "digits/mnist:digits/uci",
      grid_flag="adapt_weight", grid_values=["0.1", "0.3", "1"], selection_seeds=["100"],
      seeds=["0", "1"], common={"steps": "4", "eval_every": "2"}, task_dir=DIGITS,
      task_root=str(tmp_path), rerun=select.parse_rerun(["snd"]))
  assert selection["picked"] == pytest.approx({"entropy": -0.06, "snd": 0.42,
                                               select.ORACLE: 0.64})
  assert list(selection["rows"]) == ["snd"]
  assert sorted((r["adapt_weight"], r["seed"]) for r in runs[3:]) == [("0.1", "0"), ("0.1", "1")]
  lines = select.markdown({"dann": {"digits/mnist:digits/uci": selection}},
                          grid_flag="adapt_weight", seeds=["0", "1"], command="c", minutes=1)
  rows = {line.split(" | ")[1]: line for line in lines if line.startswith("| dann |")}
  assert rows["entropy"] == "| dann | entropy | (1, 4: -6.0) |"
  assert rows["snd"].startswith("| dann | snd | 32.") and "+-" in rows["snd"]


def test_a_validator_no_candidate_has_is_left_out_and_bad_grids_are_refused():
  picks = select.pick({"1": [{"step": 2, "target": 0.5, "entropy": float("nan")}]})
  assert picks == {select.ORACLE: ("1", 2)}
  with pytest.raises(ValueError, match="must be 'flag=value1,value2"):
    select.parse_grid("adapt_weight")
  assert select.parse_rerun(["oracle", "snd"]) == (select.ORACLE, "snd")
  with pytest.raises(ValueError, match="unknown sdn; choose from all, "):
    select.parse_rerun(["sdn"])


def test_several_selection_seeds_score_each_candidate_by_its_mean(runs, tmp_path):
  selection = select.select(
      os.path.join(DIGITS, "dann.flags"), "digits/mnist:digits/uci",
      grid_flag="adapt_weight", grid_values=["0.1", "0.3"], selection_seeds=["100", "101"],
      seeds=["0"], common={"steps": "4", "eval_every": "2"}, task_dir=DIGITS,
      task_root=str(tmp_path), rerun=())
  assert sorted((r["adapt_weight"], r["seed"]) for r in runs) == [
      ("0.1", "100"), ("0.1", "101"), ("0.3", "100"), ("0.3", "101")]
  # The fake target adds seed / 1000: the mean of seeds 100 and 101 adds 0.1005.
  assert selection["picked"][select.ORACLE] == pytest.approx(0.5 + 0.04 + 0.1005)
  assert selection["candidates"]["0.1"][0] == pytest.approx(
      {"step": 2, "target": 0.5 - 0.2 + 0.02 + 0.1005, "entropy": 2.1, "snd": -2.1})


def test_the_mean_over_selection_seeds_can_overturn_one_seeds_pick():
  seed_a = {"a": [{"step": 2, "target": 0.1, "entropy": 1.0}],
            "b": [{"step": 2, "target": 0.2, "entropy": 0.9, "snd": 3.0}]}
  seed_b = {"a": [{"step": 2, "target": 0.1, "entropy": 0.0}],
            "b": [{"step": 2, "target": 0.2, "entropy": 0.5, "snd": 1.0}]}
  assert select.pick(seed_a)["entropy"] == ("a", 2)
  mean = {value: select.mean_candidates([seed_a[value], seed_b[value]]) for value in seed_a}
  assert select.pick(mean)["entropy"] == ("b", 2)
  assert mean["a"] == [{"step": 2, "target": 0.1, "entropy": 0.5}]  # snd: not every seed's
  assert mean["b"][0]["snd"] == 2.0
  with pytest.raises(ValueError, match="evaluated at different steps"):
    select.mean_candidates([[{"step": 2, "target": 0.1}], [{"step": 3, "target": 0.1}]])
  select.check_selection_seeds(["100", "101"], ["0", "1"])
  with pytest.raises(ValueError, match="share 1: the picks must run on seeds"):
    select.check_selection_seeds(["100", "1"], ["0", "1"])
  with pytest.raises(ValueError, match="non-negative integers"):
    select.check_selection_seeds(["1e2"], ["0"])


def test_the_source_guard_keeps_validators_off_candidates_that_lost_the_source(
    monkeypatch, tmp_path):
  # Weight 1, entropy's favourite, lost 10 points of source accuracy (a collapse).
  _fake_runs(monkeypatch, source_accuracy=lambda weight: 0.85 if weight == 1 else 0.95)
  kwargs = dict(grid_flag="adapt_weight", grid_values=["0.1", "0.3", "1"],
                selection_seeds=["100"],
                seeds=["0"], common={"steps": "4", "eval_every": "2"}, task_dir=DIGITS,
                task_root=str(tmp_path), rerun=())
  flagfile = os.path.join(DIGITS, "dann.flags")
  guarded = select.select(flagfile, "digits/mnist:digits/uci", **kwargs)
  assert guarded["guarded_out"] == [["1", 2], ["1", 4]]
  assert guarded["picks"]["entropy"] == ["0.3", 4]  # not ["1", 4]
  assert guarded["picks"]["source_accuracy"] == ["0.1", 4]  # the first of the best
  # Off (max_source_drop=1), entropy takes the collapsed candidate again.
  unguarded = select.select(flagfile, "digits/mnist:digits/uci", max_source_drop=1.0, **kwargs)
  assert unguarded["guarded_out"] == [] and unguarded["picks"]["entropy"] == ["1", 4]
  lines = select.markdown({"dann": {"digits/mnist:digits/uci": guarded}},
                          grid_flag="adapt_weight", seeds=["0"], command="c", minutes=1)
  assert "- dann, digits/mnist -> digits/uci: 1 at step 2, 1 at step 4" in lines
  assert any(line.startswith("Source guard: candidates more than 3 points") for line in lines)


def test_the_source_guard_is_off_and_says_so_without_source_accuracy(runs, tmp_path):
  selection = select.select(
      os.path.join(DIGITS, "dann.flags"), "digits/mnist:digits/uci",
      grid_flag="adapt_weight", grid_values=["0.1", "1"], selection_seeds=["100"], seeds=["0"],
      common={"steps": "4", "eval_every": "2"}, task_dir=DIGITS, task_root=str(tmp_path),
      rerun=())
  assert selection["guarded_out"] is None and selection["picks"]["entropy"] == ["1", 4]
  lines = select.markdown({"dann": {"digits/mnist:digits/uci": selection}},
                          grid_flag="adapt_weight", seeds=["0"], command="c", minutes=1)
  assert "- dann, digits/mnist -> digits/uci: off: no candidate has a source score" in lines


def test_detection_selects_by_source_val_ap50_and_reports_target_ap50(monkeypatch, tmp_path):
  # source_val AP50 falls with the weight; weight 1 lost more than 3 points of it.
  _fake_runs(monkeypatch, source_accuracy=lambda weight: 0.6 - weight / 10, detection=True)
  detection = os.path.join(accuracy.REPO, "experiments", "detection")
  selection = select.select(
      os.path.join(detection, "dann.flags"), "detect/digits:detect/digits_m",
      grid_flag="adapt_weight", grid_values=["0.1", "0.3", "1"], selection_seeds=["100"],
      seeds=["0", "1"], common={"steps": "4", "eval_every": "2"}, task_dir=detection,
      task_root=str(tmp_path), metric="target_test_ap50")
  assert selection["picks"] == {"source_ap50": ["0.1", 4], select.ORACLE: ["0.3", 4]}
  assert selection["guarded_out"] == [["1", 2], ["1", 4]]
  assert selection["rows"]["source_ap50"] == pytest.approx([0.5 - 0.2 + 0.04, 0.5 - 0.2 + 0.041])
  lines = select.markdown({"dann": {"detect/digits:detect/digits_m": selection}},
                          grid_flag="adapt_weight", seeds=["0", "1"], command="c", minutes=1,
                          metric="target_test_ap50")
  assert lines[0].startswith("target_test_ap50 (%)")
  rows = {line.split(" | ")[1]: line for line in lines if line.startswith("| dann |")}
  assert set(rows) == {"source_ap50", select.ORACLE}


def test_iwv_and_dev_picks_are_reported_with_their_weights_effective_sample_size(
    monkeypatch, tmp_path):
  _fake_runs(monkeypatch, dev=True)
  selection = select.select(
      os.path.join(DIGITS, "dann.flags"), "digits/mnist:digits/uci",
      grid_flag="adapt_weight", grid_values=["0.1", "1"], selection_seeds=["100"], seeds=["0"],
      common={"steps": "4", "eval_every": "2"}, task_dir=DIGITS, task_root=str(tmp_path),
      rerun=())
  assert selection["picks"]["dev"] == ["0.1", 2]
  assert selection["candidates"]["0.1"][0]["importance_weight_ess"] == pytest.approx(0.05)
  lines = select.markdown({"dann": {"digits/mnist:digits/uci": selection}},
                          grid_flag="adapt_weight", seeds=["0"], command="c", minutes=1)
  assert "- dann, digits/mnist -> digits/uci, dev (0.1, 2): ESS 5%, mean 1.1" in lines
  # Runs from before the diagnostic: the pick is still named.
  for runs in selection["candidates"].values():
    for candidate in runs:
      del candidate["importance_weight_ess"], candidate["importance_weight_mean"]
  lines = select.markdown({"dann": {"digits/mnist:digits/uci": selection}},
                          grid_flag="adapt_weight", seeds=["0"], command="c", minutes=1)
  assert ("- dann, digits/mnist -> digits/uci, dev (0.1, 2): not recorded (runs from before"
          " the diagnostic)") in lines

