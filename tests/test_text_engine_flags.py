"""Every text flag file runs a few steps and resumes from its checkpoint.

The models are shrunk (sizes, lengths, batch) so that each run takes seconds;
what is tested is that the flag file's method, model and domains go through
the engine: vocabulary, buckets, train step, checkpoint, resume, metrics.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from tests import flagfiles
from xdomain import checkpoint
from xdomain import tasks
from xdomain.data import domains
from xdomain.data import text_corpora
from xdomain.data import text_pipeline
from xdomain.train import Experiment
from xdomain.train import train_and_evaluate
from xdomain.train.writer import read_metrics
from xdomain.train.experiment import validate_config

TINY = dict(flagfiles.SMOKE_OVERRIDES, steps=1, checkpoint_every=1, eval_every=1,
            embed_size=8, hidden_size=8, max_length=16, eval_batch_size=512)

TEXT_FLAG_FILES = [path for task in ("sentiment", "topics", "pos", "ner")
                   for path in flagfiles.flag_files(task)]


def write_conll_fixture(folder) -> str:
  """train.txt and test.txt with every CoNLL-2003 entity type (B- and I-)."""
  lines = []
  for i, kind in enumerate(text_corpora.CONLL2003_TO_WNUT16):
    lines += ["Saw\tO", f"Big{i}\tB-{kind}", f"Thing{i}\tI-{kind}", "today\tO", ""]
  for name in ("train.txt", "test.txt"):
    with open(os.path.join(folder, name), "w") as f:
      f.write("\n".join(lines))
  return f"conll:{folder}"


def test_every_task_has_flag_files():
  for task in ("sentiment", "topics", "pos", "ner"):
    assert len(flagfiles.flag_files(task)) >= 2, task


@pytest.mark.parametrize("flagfile", TEXT_FLAG_FILES)
def test_text_flag_file_runs_and_resumes(flagfile, data_dir, tmp_path):
  overrides = flagfiles.with_upstreams(flagfile, dict(TINY, data_dir=data_dir), tmp_path)
  config = flagfiles.config_from_flagfile(flagfile, **overrides)
  if config.source.startswith("conll:"):
    # The fixture's files replace the flag file's path; its '@...' suffix, which
    # relabels the CoNLL types into the target's tags, is kept.
    fixture = tmp_path / "conll"
    fixture.mkdir()
    _, at, suffix = config.source.partition("@")
    config = dataclasses.replace(
        config, source=write_conll_fixture(str(fixture)) + at + suffix)
  validate_config(config)
  workdir = str(tmp_path / "run")
  results = train_and_evaluate(config, workdir,
                               devices=flagfiles.smoke_devices())
  assert results["step"] == 1
  vocab_path = os.path.join(workdir, text_pipeline.VOCAB_FILE)
  with open(vocab_path) as f:
    vocab = f.read()
  if flagfile.startswith(("experiments/pos", "experiments/ner")):
    assert 0.0 <= results["target_test_token_accuracy"] <= 1.0
    assert 0.0 < results["target_test_oov_token_fraction"] < 1.0
  else:
    assert 0.0 <= results["target_test_macro_f1"] <= 1.0
  if flagfile.startswith("experiments/ner"):
    assert "target_test_span_f1" in results and "target_test_span_f1/person" in results
  # Rerun as it was, the run reads the saved vocabulary (not rebuilt, not
  # rewritten), restores its checkpoint and evaluates the restored model, which
  # must score as the saved one did (resumed training is tested apart:
  # test_a_tagger_on_one_..., tests/test_train_loop.py).
  restored = train_and_evaluate(config, workdir, devices=flagfiles.smoke_devices())
  for name, value in results.items():
    if name.startswith(("target_test_", "source_test_", "ema_")):
      assert restored[name] == value, name
  with open(vocab_path) as f:
    assert f.read() == vocab
  events = read_metrics(workdir)
  assert [e["step"] for e in events if "total" in e] == [1]
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["step"] == 1


def test_a_tagger_on_one_and_eight_devices_agrees(data_dir, tmp_path):
  # Word dropout and the teacher's <unk> reading act on the global batch: the
  # devices' shares must not change what they draw or hide.
  assert jax.device_count() == 8
  config = flagfiles.config_from_flagfile(
      "experiments/pos/mean_teacher.flags", **dict(TINY, steps=3, checkpoint_every=3,
                                                    eval_every=3),
      data_dir=data_dir, word_dropout=0.3, teacher_unseen_as_unk=True)
  one = train_and_evaluate(config, str(tmp_path / "one"), devices=jax.devices()[:1])
  eight = train_and_evaluate(config, str(tmp_path / "eight"))

  def losses(workdir):
    return [e["total"] for e in read_metrics(str(workdir)) if "total" in e]

  np.testing.assert_allclose(losses(tmp_path / "one"), losses(tmp_path / "eight"), rtol=1e-4)
  for name in ("target_test_token_accuracy", "target_test_oov_token_accuracy",
               "ema_target_test_oov_token_accuracy"):
    assert one[name] == pytest.approx(eight[name], abs=0.01), name


def test_entity_taggers_are_validated_by_held_out_span_f1(data_dir, tmp_path):
  config = flagfiles.config_from_flagfile(
      "experiments/ner/wnut16.flags", **dict(TINY, data_dir=data_dir, source_val_fraction=0.1))
  workdir = str(tmp_path / "ner")
  results = train_and_evaluate(config, workdir, devices=flagfiles.smoke_devices())
  assert 0.0 <= results["validator/source_span_f1"] <= 1.0
  assert "validator/source_accuracy" in results
  # The held-out rows' span F1, as the evaluator scores a test split.
  variables = checkpoint.load_variables(workdir)
  evaluator = Experiment(config, workdir,  # reads the run's vocabulary
                         devices=flagfiles.smoke_devices()).evaluator
  held = evaluator._source_val_batches  # pylint: disable=protected-access
  scores = evaluator._task_metrics(  # pylint: disable=protected-access
      held, "source", variables["params"], variables.get("batch_stats", {}))
  assert results["validator/source_span_f1"] == pytest.approx(scores["span_f1"])
  # Part-of-speech tags have no entities: no span F1 to validate by.
  assert tasks.TASKS[("text", "tagging")].source_val_validators(
      domains.domain_info("brown/news").label_names) == ()
