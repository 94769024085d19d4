"""Transfer and teacher runs end to end: flag files, frozen weights, restored subsets, resume.

One tiny run (2 steps) of experiments/digits/source_only.flags, the upstream
that the digits flag files here name, serves as their `--init_from` and
`--teacher`.
"""

import dataclasses
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdomain import checkpoint
from xdomain import methods
from xdomain.config import Config
from xdomain.methods import Outputs
from xdomain.models import zoo
from xdomain.train import Experiment
from xdomain.train import loop
from tests import flagfiles

FLAG_DIR = os.path.join(flagfiles.EXPERIMENTS, "transfer")
DIGITS_SOURCE_ONLY = os.path.join("experiments", "digits", "source_only.flags")
_TINY = {"steps": 2, "batch_size": 8, "eval_batch_size": 512, "log_every": 1,
         "eval_every": 2, "checkpoint_every": 2, "hidden_size": 8, "source_val_fraction": 0.0}
# The comparisons (same model, no upstream run) of the transfer runs.
_BASELINES = ("fewlabels_scratch.flags", "row_lstm_source_only.flags",
              "textcnn_source_only_sentiment.flags", "bilstm_source_only_sentiment.flags")
_SMOKE_TESTED = ("finetune_frozen.flags", "finetune_l2sp.flags", "distill_digits.flags",
                 "pseudo_label_digits.flags", *_BASELINES,
                 # tests/test_transfer_text.py:
                 "lm_pretrain_sentiment.flags", "lm_finetune_sentiment.flags",
                 "distill_sentiment.flags",
                 # tests/test_methods_skipgram.py (and the sentiment rows it feeds):
                 "skipgram_sentiment.flags", "skipgram_sentiment_brown.flags")


def smoke_config(name: str, data_dir: str, runs: dict[str, str] | None = None) -> Config:
  """The Config of `experiments/transfer/<name>` (parsed as main.py does), made tiny,
  with the flag of each `# upstream:` line set to `runs[<its flag file>]`, the
  workdir of a tiny run of that flag file."""
  path = os.path.join("experiments", "transfer", name)
  chained = {flag: (runs or {})[upstream] for flag, upstream in flagfiles.upstreams(path).items()}
  return flagfiles.config_from_flagfile(path, **_TINY, data_dir=data_dir, **chained)


@pytest.fixture(scope="module")
def pretrained(data_dir, tmp_path_factory):
  """The workdir of experiments/digits/source_only.flags after 2 steps."""
  workdir = str(tmp_path_factory.mktemp("pretrained"))
  config = flagfiles.config_from_flagfile(DIGITS_SOURCE_ONLY, **_TINY, data_dir=data_dir)
  loop.train_and_evaluate(config, workdir, devices=flagfiles.smoke_devices())
  return workdir


def _smoke_config(name: str, pretrained: str, data_dir: str) -> Config:
  return smoke_config(name, data_dir, {DIGITS_SOURCE_ONLY: pretrained})


def test_every_transfer_flag_file_is_smoke_tested():
  names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(FLAG_DIR, "*.flags")))
  assert names == sorted(_SMOKE_TESTED), "add a smoke test for each new flag file"


@pytest.mark.parametrize("name", _SMOKE_TESTED)
def test_upstream_lines_name_every_run_the_file_starts_from(name):
  # A path flag without its upstream line would keep its hard-coded /tmp path
  # in benchmarks/accuracy.py, whatever the pair and seed.
  path = os.path.join("experiments", "transfer", name)
  config = flagfiles.config_from_flagfile(path)
  starts_from = {flag for flag in ("init_from", "teacher") if getattr(config, flag)}
  assert set(flagfiles.upstreams(path)) == starts_from


@pytest.mark.parametrize("name", _BASELINES)
def test_baseline_runs_and_resumes(name, data_dir, tmp_path):
  config = smoke_config(name, data_dir)
  if config.source.startswith("sentiment/"):
    config = dataclasses.replace(config, max_length=16, vocab_size=500)
  results = loop.train_and_evaluate(config, str(tmp_path), devices=flagfiles.smoke_devices())
  assert results["step"] == 2 and results["method"] == "source_only"
  # Rerun as it was: the restored model must score as the saved one did.
  restored = loop.train_and_evaluate(config, str(tmp_path), devices=flagfiles.smoke_devices())
  assert restored["target_test_accuracy"] == results["target_test_accuracy"]


def test_finetune_frozen_keeps_the_backbone_bit_identical(pretrained, data_dir, tmp_path):
  config = _smoke_config("finetune_frozen.flags", pretrained, data_dir)
  results = loop.train_and_evaluate(config, str(tmp_path), devices=flagfiles.smoke_devices())
  assert results["step"] == 2
  before = checkpoint.flatten_paths(checkpoint.load_params(pretrained))
  after = checkpoint.flatten_paths(checkpoint.load_params(str(tmp_path)))
  for path in before:
    if path.startswith("backbone/"):
      np.testing.assert_array_equal(after[path], before[path], err_msg=path)
  assert not np.array_equal(after["head/logits/kernel"], before["head/logits/kernel"])


def test_finetune_l2sp_restores_and_anchors(pretrained, data_dir, tmp_path):
  config = _smoke_config("finetune_l2sp.flags", pretrained, data_dir)
  config = dataclasses.replace(config, restore="backbone/.*")
  run = Experiment(config, str(tmp_path))
  fresh = run.init_state()
  fresh_head = jax.device_get(fresh.params["model"]["head"])
  state = run.prepare_state()
  saved = checkpoint.load_params(pretrained)
  got = checkpoint.flatten_paths(jax.device_get(state.params["model"]))
  for path, value in checkpoint.flatten_paths(saved).items():
    if path.startswith("backbone/"):
      np.testing.assert_array_equal(got[path], value, err_msg=path)
  np.testing.assert_array_equal(got["head/logits/kernel"], fresh_head["logits"]["kernel"])
  anchor = checkpoint.flatten_paths(jax.device_get(state.untrained["anchor"]))
  assert sorted(anchor) == sorted(p for p in got if p.startswith("backbone/"))
  results = loop.train_and_evaluate(config, str(tmp_path), devices=flagfiles.smoke_devices())
  assert results["step"] == 2


def test_distill_digits_runs_and_the_teacher_is_the_checkpoint(pretrained, data_dir, tmp_path):
  config = _smoke_config("distill_digits.flags", pretrained, data_dir)
  method = methods.METHODS["distill"](config)
  teacher_state = method.teacher.init({})
  images = jax.random.uniform(
      jax.random.key(0), (4, config.image_size, config.image_size, config.channels))
  model = zoo.MODELS["seed_cnn"].build(config, 10)
  expected = model.apply({"params": checkpoint.load_params(pretrained)}, images)
  np.testing.assert_allclose(method.teacher.logits(teacher_state, (images,), None), expected,
                             rtol=1e-5, atol=1e-5)
  # With a one-hot teacher at T = 1 the distillation term is the cross-entropy.
  student = jax.random.normal(jax.random.key(1), (4, 10))
  labels = jnp.array([3, 1, 4, 1])
  outputs = Outputs(source_logits=student, source_features=student, source_labels=labels,
                    source_mask=None, target_logits=student, target_features=student,
                    teacher_target_logits=1e4 * jax.nn.one_hot(labels, 10))
  one_hot = methods.METHODS["distill"](dataclasses.replace(config, distill_temperature=1.0))
  term = one_hot.terms(outputs, {}, jax.random.key(0), 0)["distill"]
  log_p = jax.nn.log_softmax(student)
  np.testing.assert_allclose(term, -jnp.mean(log_p[jnp.arange(4), labels]), rtol=1e-5)
  results = loop.train_and_evaluate(config, str(tmp_path), devices=flagfiles.smoke_devices())
  assert results["step"] == 2 and results["model"] == "row_lstm"


def test_pseudo_label_digits_resumes_exactly(pretrained, data_dir, tmp_path):
  config = dataclasses.replace(
      _smoke_config("pseudo_label_digits.flags", pretrained, data_dir),
      teacher_refresh_every=2, confidence_threshold=0.1, checkpoint_every=1, eval_every=3)
  straight = loop.train_and_evaluate(dataclasses.replace(config, steps=3),
                                     str(tmp_path / "straight"), devices=flagfiles.smoke_devices())
  loop.train_and_evaluate(config, str(tmp_path / "resumed"), devices=flagfiles.smoke_devices())
  resumed = loop.train_and_evaluate(
      dataclasses.replace(config, steps=3, allow_config_change=True), str(tmp_path / "resumed"),
      devices=flagfiles.smoke_devices())
  assert resumed["target_test_accuracy"] == straight["target_test_accuracy"]
  jax.tree.map(np.testing.assert_array_equal, checkpoint.load_params(str(tmp_path / "resumed")),
               checkpoint.load_params(str(tmp_path / "straight")))


