"""benchmarks/accuracy.py chains upstream runs per pair and seed and renders its table.

No training: `main.py` is replaced by a stub that writes the files a finished
run leaves (config.json, results.json) and records what it was asked to run.
"""

import json
import os
import types

import pytest

from benchmarks import accuracy
from tests import fake_runs

TRANSFER = os.path.join(accuracy.REPO, "experiments", "transfer")
DIGITS = os.path.join(accuracy.REPO, "experiments", "digits")


@pytest.fixture
def runs(monkeypatch):
  """The runs started, in order, as (flag file stem, {flag: value})."""
  started = []

  def fake_subprocess_run(command, **kwargs):
    del kwargs
    values = fake_runs.start(command)
    started.append((os.path.basename(values["flagfile"])[:-len(".flags")], values))
    results = {"target_test_accuracy": 0.5 + 0.1 * int(values["seed"]),
               "target_test_macro_f1": 0.25}
    if values["flagfile"].endswith("mean_teacher.flags"):  # runs that keep an EMA
      results["ema_target_test_accuracy"] = 0.75
    with open(os.path.join(values["workdir"], "results.json"), "w") as f:
      json.dump(results, f)
    return types.SimpleNamespace(returncode=0)

  monkeypatch.setattr(accuracy, "subprocess", types.SimpleNamespace(run=fake_subprocess_run))
  return started


def _chain(flagfile, pair_dir, seed, task_dir=TRANSFER, **extra):
  source, target = "digits/uci", "digits/mnist"
  overrides = dict(source=source, target=target, seed=seed, steps="4", **extra)
  return accuracy.run_chain(flagfile, overrides, task_dir=task_dir, pair_dir=str(pair_dir))


def test_upstream_runs_per_pair_and_seed_with_the_same_overrides(runs, tmp_path):
  for pair in ("a", "b"):
    for seed in ("0", "1"):
      _, used = _chain(os.path.join(TRANSFER, "finetune_frozen.flags"), tmp_path / pair, seed)
      upstream = str(tmp_path / pair / "upstream" / "digits_source_only" / f"seed{seed}")
      assert used["init_from"] == upstream
      (up_name, up_flags), (name, flags) = runs[-2:]
      assert (up_name, name) == ("source_only", "finetune_frozen")
      assert up_flags["flagfile"] == os.path.join(DIGITS, "source_only.flags")
      assert up_flags["workdir"] == upstream and flags["init_from"] == upstream
      assert flags["workdir"] == str(tmp_path / pair / "finetune_frozen" / f"seed{seed}")
      for flag in ("source", "target", "seed", "steps"):
        assert up_flags[flag] == flags[flag]
      assert "init_from" not in up_flags
  assert len(runs) == 8


def test_an_upstream_in_the_task_folder_runs_in_its_row_workdir(runs, tmp_path):
  _, used = _chain(os.path.join(TRANSFER, "lm_finetune_sentiment.flags"), tmp_path, "2")
  assert [name for name, _ in runs] == ["lm_pretrain_sentiment", "lm_finetune_sentiment"]
  pretrain, finetune = (flags for _, flags in runs)
  assert pretrain["workdir"] == str(tmp_path / "lm_pretrain_sentiment" / "seed2")
  assert finetune["init_from"] == used["init_from"] == pretrain["workdir"]
  assert finetune["workdir"] == str(tmp_path / "lm_finetune_sentiment" / "seed2")

  # The rows themselves, and the chain again, start nothing new.
  results, _ = _chain(os.path.join(TRANSFER, "lm_pretrain_sentiment.flags"), tmp_path, "2")
  _chain(os.path.join(TRANSFER, "lm_finetune_sentiment.flags"), tmp_path, "2")
  assert len(runs) == 2 and results["target_test_accuracy"] == pytest.approx(0.7)


def test_a_teacher_from_another_folder_runs_under_upstream(runs, tmp_path):
  _, used = _chain(os.path.join(TRANSFER, "distill_sentiment.flags"), tmp_path, "1")
  (teacher_name, teacher), (name, distill) = runs
  assert (teacher_name, name) == ("mcc", "distill_sentiment")
  assert teacher["flagfile"] == os.path.join(accuracy.REPO, "experiments", "sentiment",
                                             "mcc.flags")
  assert distill["teacher"] == used["teacher"] == teacher["workdir"] == str(
      tmp_path / "upstream" / "sentiment_mcc" / "seed1")
  assert "init_from" not in distill


def test_upstreams_of_one_name_in_two_folders_are_two_runs(tmp_path):
  dann = [os.path.join(accuracy.REPO, "experiments", task, "dann.flags")
          for task in ("digits", "sentiment")]
  assert [accuracy.workdir_for(f, TRANSFER, str(tmp_path), "0") for f in dann] == [
      str(tmp_path / "upstream" / "digits_dann" / "seed0"),
      str(tmp_path / "upstream" / "sentiment_dann" / "seed0")]


def test_a_run_made_from_other_upstreams_is_not_reused(runs, tmp_path):
  stale = tmp_path / "finetune_frozen" / "seed0"
  stale.mkdir(parents=True)
  (stale / "config.json").write_text(json.dumps(
      {"init_from": "/tmp/xdomain/transfer/source_only_cnn16"}))
  (stale / "results.json").write_text(json.dumps({"target_test_accuracy": 0.9}))
  with pytest.raises(RuntimeError, match="was run with --init_from=/tmp/xdomain/transfer"):
    _chain(os.path.join(TRANSFER, "finetune_frozen.flags"), tmp_path, "0")
  assert [name for name, _ in runs] == ["source_only"]


def test_a_run_resumed_with_changed_flags_is_not_reused(runs, tmp_path):
  flagfile = tmp_path / "method.flags"
  flagfile.write_text("--method=source_only\n--learning_rate=2e-3\n")
  finished = tmp_path / "pair" / "method" / "seed0"
  finished.mkdir(parents=True)
  (finished / "results.json").write_text(json.dumps({"target_test_accuracy": 0.9}))
  # Its latest flags are the flag file's, but steps 0-100 ran with another rate.
  (finished / "config.json").write_text(json.dumps({
      "method": "source_only", "learning_rate": 2e-3, "source": "digits/uci",
      "target": "digits/mnist", "seed": 0, "config_history": [
          {"step": 100, "changes": {"learning_rate": {"from": 1e-3, "to": 2e-3}}}]}))
  with pytest.raises(RuntimeError, match=r"seed0 was resumed with changed flags"
                     r" \(--learning_rate; see config_history in its config.json\)"):
    accuracy.run_chain(str(flagfile), dict(source="digits/uci", target="digits/mnist",
                                           seed="0"),
                       task_dir=str(tmp_path), pair_dir=str(tmp_path / "pair"))
  assert not runs


def test_a_run_made_with_other_flags_is_not_reused(runs, tmp_path):
  flagfile = tmp_path / "method.flags"
  flagfile.write_text("--method=source_only\n--learning_rate=1e-3\n--char_cnn=true\n")
  finished = tmp_path / "pair" / "method" / "seed0"
  finished.mkdir(parents=True)
  (finished / "results.json").write_text(json.dumps({"target_test_accuracy": 0.9}))
  overrides = dict(source="digits/uci", target="digits/mnist", seed="0")

  def chain():
    return accuracy.run_chain(str(flagfile), overrides, task_dir=str(tmp_path),
                              pair_dir=str(tmp_path / "pair"))

  # The same values in other spellings: reused.
  saved = {"method": "source_only", "learning_rate": 0.001, "char_cnn": True,
           "source": "digits/uci", "target": "digits/mnist", "seed": 0}
  (finished / "config.json").write_text(json.dumps(saved))
  assert chain()[0] == {"target_test_accuracy": 0.9}
  for flag, other in (("char_cnn", False), ("learning_rate", 0.002), ("target", "digits/usps")):
    (finished / "config.json").write_text(json.dumps(dict(saved, **{flag: other})))
    with pytest.raises(RuntimeError, match=f"was run with --{flag}={other}, not"):
      chain()
  # A run made before a flag existed had its default.
  del saved["char_cnn"]
  (finished / "config.json").write_text(json.dumps(saved))
  with pytest.raises(RuntimeError, match="was run with --char_cnn=False, not true"):
    chain()
  flagfile.write_text("--method=source_only\n--learning_rate=1e-3\n--char_cnn=false\n")
  assert chain()[0] == {"target_test_accuracy": 0.9}
  assert not runs


def _write_flags(path, *upstreams):
  path.write_text("".join(f"# upstream: --init_from={u}\n" for u in upstreams)
                  + "--method=source_only\n")


def test_upstream_cycles_fail_with_the_chain(runs, tmp_path):
  a, b, c = (tmp_path / f"{n}.flags" for n in "abc")
  _write_flags(a, b)
  _write_flags(b, c)
  _write_flags(c, a)
  with pytest.raises(ValueError, match=r"upstream cycle: \S*a.flags -> \S*b.flags -> \S*c.flags"
                                       r" -> \S*a.flags"):
    _chain(str(a), tmp_path / "runs", "0", task_dir=str(tmp_path))
  _write_flags(a, a)
  with pytest.raises(ValueError, match=r"upstream cycle: \S*a.flags -> \S*a.flags$"):
    _chain(str(a), tmp_path / "runs", "0", task_dir=str(tmp_path))
  assert not runs


def test_bad_upstream_lines_fail(tmp_path):
  path = tmp_path / "a.flags"
  path.write_text("# upstream: --init_from experiments/digits/source_only.flags\n")
  with pytest.raises(ValueError, match="a.flags:1: expected '# upstream: --flag="):
    accuracy.upstreams(str(path))
  path.write_text("# upstream: --teacher=experiments/digits/missing.flags\n")
  with pytest.raises(FileNotFoundError, match="missing.flags does not exist"):
    accuracy.upstreams(str(path))
  _write_flags(path, "experiments/digits/source_only.flags", "experiments/digits/dann.flags")
  with pytest.raises(ValueError, match="a.flags:2: a second upstream line for --init_from"):
    accuracy.upstreams(str(path))


def _transfer_table(tmp_path, metric="target_test_accuracy"):
  files = sorted(os.path.join(TRANSFER, n) for n in os.listdir(TRANSFER))
  return accuracy.collect(files, task_dir=TRANSFER, task_root=str(tmp_path), pairs=[None],
                          seeds=["0", "1"], common={"steps": "4"}, pair_extra={},
                          metric=metric)


def test_transfer_table_with_each_files_own_pair(runs, tmp_path):
  table, raw = _transfer_table(tmp_path)
  names = sorted(n[:-len(".flags")] for n in os.listdir(TRANSFER))
  # The digits and sentiment upstreams are no rows, nor are the pretraining runs
  # (their classifier head is never trained), which still run.
  pretraining = ("lm_pretrain_sentiment", "skipgram_sentiment", "skipgram_sentiment_brown")
  rows = [n for n in names if n not in pretraining]
  assert sorted(table) == rows
  assert set(pretraining) <= {name for name, _ in runs}
  assert not [r for r in raw if r["flagfile"].endswith(tuple(f"{p}.flags" for p in pretraining))]
  # Each upstream once per pair and seed, whichever rows need it.
  assert len(runs) == 2 * (len(names) + 2)
  assert len(raw) == 2 * len(rows)
  lines = accuracy.markdown(table, pairs=[None], metric="target_test_accuracy",
                            seeds=["0", "1"], command="python benchmarks/accuracy.py", minutes=0)
  assert lines[0].startswith("target_test_accuracy (%)")
  assert lines[3] == ("| method | digits/mnist -> digits/uci"
                      " | sentiment/movies -> sentiment/tweets |")
  rows = {line.split(" | ")[0][2:]: line for line in lines[5:]}
  assert rows["finetune_frozen"] == "| finetune_frozen | 55.0 +- 5.0 |  |"
  assert rows["distill_sentiment"] == "| distill_sentiment |  | 55.0 +- 5.0 |"
  # Rows are grouped by pair: every digits row before every sentiment row.
  digits = [i for i, line in enumerate(lines[5:]) if line.endswith("|  |")]
  assert digits == list(range(6))


def test_another_metric_and_a_missing_one(runs, tmp_path):
  table, _ = _transfer_table(tmp_path, metric="target_test_macro_f1")
  assert table["fewlabels_scratch"] == {"digits/mnist:digits/uci": [0.25, 0.25]}
  with pytest.raises(KeyError, match="no target_test_span_f1; its results have"
                                     " target_test_accuracy, target_test_macro_f1"):
    _transfer_table(tmp_path, metric="target_test_span_f1")


def test_the_ema_model_of_a_mean_teacher_is_a_row_of_its_own(runs, tmp_path):
  files = [os.path.join(DIGITS, f"{name}.flags") for name in ("source_only", "mean_teacher")]
  table, _ = accuracy.collect(files, task_dir=DIGITS, task_root=str(tmp_path),
                              pairs=["digits/mnist:digits/uci"], seeds=["0", "1"],
                              common={"steps": "4"}, pair_extra={},
                              metric="target_test_accuracy")
  assert sorted(table) == ["mean_teacher", "mean_teacher (EMA)", "source_only"]
  assert table["mean_teacher"]["digits/mnist:digits/uci"] == [0.5, 0.6]
  assert table["mean_teacher (EMA)"]["digits/mnist:digits/uci"] == [0.75, 0.75]


def test_a_mean_column_over_pairs_that_every_row_covers():
  table = {"source_only": {"a:b": [0.5, 0.7], "b:a": [0.6, 0.6]},
           "mcc": {"a:b": [0.8, 0.6], "b:a": [0.7, 0.9]}}
  lines = accuracy.markdown(table, pairs=["a:b", "b:a"], metric="target_test_accuracy",
                            seeds=["0", "1"], command="c", minutes=0)
  assert lines[3] == "| method | a -> b | b -> a | mean |"
  # Seed means over pairs: source_only 55, 65; mcc 75, 75.
  assert lines[5] == "| source_only | 60.0 +- 10.0 | 60.0 +- 0.0 | **60.0 +- 5.0** |"
  assert lines[6] == "| mcc | 70.0 +- 10.0 | 80.0 +- 10.0 | **75.0 +- 0.0** |"
  del table["mcc"]["b:a"]
  lines = accuracy.markdown(table, pairs=["a:b", "b:a"], metric="target_test_accuracy",
                            seeds=["0", "1"], command="c", minutes=0)
  assert lines[3] == "| method | a -> b | b -> a |"


NER = os.path.join(accuracy.REPO, "experiments", "ner")


@pytest.mark.parametrize("pair, expected", [
    ("digits/mnist:digits/uci", ("digits/mnist", "digits/uci")),
    ("conll:/data/conll2003@ner/wnut16:ner/wnut16",
     ("conll:/data/conll2003@ner/wnut16", "ner/wnut16")),
    ("ner/wnut16:conll:/x", ("ner/wnut16", "conll:/x")),
    ("conll:/a/train.txt,/a/test.txt:conll:/b@ner/wnut16",
     ("conll:/a/train.txt,/a/test.txt", "conll:/b@ner/wnut16")),
])
def test_split_pair(pair, expected):
  assert accuracy.split_pair(pair) == expected


@pytest.mark.parametrize("pair", [
    "digits/mnist", ":digits/uci", "digits/mnist:", "ner/wnut16:conll:", "a:b:c"])
def test_split_pair_needs_two_names(pair):
  with pytest.raises(ValueError, match=r"is not 'source:target', e.g. digits/mnist:digits/uci"):
    accuracy.split_pair(pair)


def test_conll_pairs_run_and_tabulate(runs, tmp_path):
  files = [os.path.join(NER, "conll_dann.flags")]
  pair = "conll:/data/conll2003@ner/wnut16:ner/wnut16"
  for pairs, source in (([None], "conll:/path/to/conll@ner/wnut16"),
                        ([pair], "conll:/data/conll2003@ner/wnut16")):
    table, _ = accuracy.collect(files, task_dir=NER, task_root=str(tmp_path), pairs=pairs,
                                seeds=["0"], common={}, pair_extra={},
                                metric="target_test_accuracy")
    assert (runs[-1][1]["source"], runs[-1][1]["target"]) == (source, "ner/wnut16")
    assert list(table["conll_dann"]) == [f"{source}:ner/wnut16"]
  lines = accuracy.markdown(table, pairs=[pair], metric="target_test_accuracy", seeds=["0"],
                            command="c", minutes=0)
  assert lines[3] == "| method | conll:/data/conll2003@ner/wnut16 -> ner/wnut16 |"


def test_overrides_parse_conll_pairs_and_refuse_per_run_flags():
  assert accuracy.parse_pair_overrides([
      "conll:/d@ner/wnut16:ner/wnut16:steps=5", "ner/wnut16:conll:/x:char_cnn=false",
      "digits/mnist:digits/mnist_m:channels=3"]) == {
          "conll:/d@ner/wnut16:ner/wnut16": {"steps": "5"},
          "ner/wnut16:conll:/x": {"char_cnn": "false"},
          "digits/mnist:digits/mnist_m": {"channels": "3"}}
  assert accuracy.parse_overrides(["steps=500", "init_from=/a=b"]) == {
      "steps": "500", "init_from": "/a=b"}
  for flag in ("source", "target", "seed"):
    with pytest.raises(ValueError, match=f"--override: --{flag} is set per pair and seed"):
      accuracy.parse_overrides([f"{flag}=1"])
  with pytest.raises(ValueError, match="--pair_override: --seed is set per pair"):
    accuracy.parse_pair_overrides(["a:b:seed=1"])
  with pytest.raises(ValueError, match="'steps=5' is not 'source:target:flag=value'"):
    accuracy.parse_pair_overrides(["steps=5"])
  with pytest.raises(ValueError, match="--override: 'steps' is not 'flag=value'"):
    accuracy.parse_overrides(["steps"])


def test_flag_values_read_the_included_file_first():
  values = accuracy.flag_values(os.path.join(DIGITS, "dann.flags"))
  assert "flagfile" not in values
  assert (values["steps"], values["method"], values["image_size"]) == ("600", "dann", "16")
