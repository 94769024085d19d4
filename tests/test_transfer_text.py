"""Language-model pretraining: the sentiment flag files (the loss: test_losses_language_model.py)."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from xdomain import checkpoint
from xdomain.config import ConfigError
from xdomain.train import Experiment
from xdomain.train import loop
from tests import flagfiles
from tests import test_transfer_flags as flags_test


def test_lm_pretrain_then_finetune_and_distill_sentiment(data_dir, tmp_path):
  def smoke(name, runs=None):
    config = flags_test.smoke_config(name + ".flags", data_dir, runs)
    return dataclasses.replace(config, max_length=16, vocab_size=500)

  def flag_file(name):
    return os.path.join("experiments", "transfer", name + ".flags")

  # The chains that the upstream lines name: lm_pretrain -> lm_finetune, mcc -> distill.
  lm_dir, ft_dir, student_dir = (str(tmp_path / n) for n in ("lm", "ft", "student"))
  config = smoke("lm_pretrain_sentiment")
  results = loop.train_and_evaluate(config, lm_dir, devices=flagfiles.smoke_devices())
  assert results["step"] == 2

  config = smoke("lm_finetune_sentiment", {flag_file("lm_pretrain_sentiment"): lm_dir})
  os.makedirs(ft_dir)
  run = Experiment(config, ft_dir, devices=flagfiles.smoke_devices())
  fresh = run.init_state()
  fresh_embedding = np.asarray(fresh.params["model"]["backbone"]["embed"]["embedding"])
  state = run.prepare_state()
  lm = checkpoint.flatten_paths(checkpoint.load_params(lm_dir))
  restored = checkpoint.flatten_paths(jax.device_get(state.params["model"]))
  # The language model trained the embeddings, and the fine-tuning run starts from them.
  assert not np.array_equal(lm["backbone/embed/embedding"], fresh_embedding)
  np.testing.assert_array_equal(restored["backbone/embed/embedding"],
                                lm["backbone/embed/embedding"])
  assert loop.train_and_evaluate(config, ft_dir, devices=flagfiles.smoke_devices())["step"] == 2

  # distill_sentiment's teacher: a (tiny) run of experiments/sentiment/mcc.flags.
  mcc_flags = os.path.join("experiments", "sentiment", "mcc.flags")
  teacher = flagfiles.config_from_flagfile(mcc_flags, **flags_test._TINY, data_dir=data_dir)
  teacher_dir = str(tmp_path / "teacher")
  loop.train_and_evaluate(dataclasses.replace(teacher, max_length=16, vocab_size=500),
                          teacher_dir, devices=flagfiles.smoke_devices())
  config = smoke("distill_sentiment", {mcc_flags: teacher_dir})
  assert loop.train_and_evaluate(config, student_dir, devices=flagfiles.smoke_devices())["model"] == "textcnn"
  # A text teacher reads the student's token ids: another vocabulary is an error.
  with pytest.raises(ConfigError, match="was trained with another vocabulary"):
    loop.train_and_evaluate(dataclasses.replace(config, vocab_size=300),
                            str(tmp_path / "student_other_vocab"), devices=flagfiles.smoke_devices())

  # A run with another vocabulary may not restore the pretrained embeddings.
  other = dataclasses.replace(config, method="source_only", teacher=None, init_from=lm_dir,
                              vocab_size=300)
  with pytest.raises(ConfigError, match="another vocabulary"):
    loop.train_and_evaluate(other, str(tmp_path / "other"), devices=flagfiles.smoke_devices())
