"""Language-model pretraining: its loss against numpy, and the sentiment flag files."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from xdomain import checkpoint
from xdomain import transfer
from xdomain.config import ConfigError
from xdomain.methods import pretrain
from xdomain.train import Experiment
from xdomain.train import loop
from tests import flagfiles
from tests import test_transfer_flags as flags_test


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_language_model_loss_against_numpy():
  rng = np.random.default_rng(0)
  batch, length, hidden, vocab, embed = 3, 5, 2, 7, 4
  features = rng.normal(size=(batch, length, 2 * hidden)).astype(np.float32)
  tokens = rng.integers(1, vocab, size=(batch, length)).astype(np.int32)
  lengths = np.array([5, 3, 1], np.int32)
  embedding = rng.normal(size=(vocab, embed)).astype(np.float32)
  w_f = rng.normal(size=(hidden, embed)).astype(np.float32)
  w_b = rng.normal(size=(hidden, embed)).astype(np.float32)
  forward, backward = pretrain.language_model_loss(
      features, tokens, lengths, embedding, (lambda h: h @ w_f, lambda h: h @ w_b))
  want_f, want_b = [], []
  for i in range(batch):
    for t in range(lengths[i] - 1):
      want_f.append(-_log_softmax(features[i, t, :hidden] @ w_f @ embedding.T)[tokens[i, t + 1]])
      want_b.append(-_log_softmax(features[i, t + 1, hidden:] @ w_b @ embedding.T)[tokens[i, t]])
  np.testing.assert_allclose(forward, np.mean(want_f), rtol=1e-5)
  np.testing.assert_allclose(backward, np.mean(want_b), rtol=1e-5)


def test_lm_pretrain_then_finetune_and_distill_sentiment(data_dir, tmp_path):
  def smoke(name, runs=None):
    config = flags_test.smoke_config(name + ".flags", data_dir, runs)
    return dataclasses.replace(config, max_length=16, vocab_size=500)

  def flag_file(name):
    return os.path.join("experiments", "transfer", name + ".flags")

  # The chains that the upstream lines name: lm_pretrain -> lm_finetune, mcc -> distill.
  lm_dir, ft_dir, student_dir = (str(tmp_path / n) for n in ("lm", "ft", "student"))
  config = smoke("lm_pretrain_sentiment")
  results = loop.train_and_evaluate(config, lm_dir)
  assert results["step"] == 2

  config = smoke("lm_finetune_sentiment", {flag_file("lm_pretrain_sentiment"): lm_dir})
  os.makedirs(ft_dir)
  run = Experiment(config, ft_dir)
  fresh = run.init_state()
  fresh_embedding = np.asarray(fresh.params["model"]["backbone"]["embed"]["embedding"])
  state = run.prepare_state()
  lm = checkpoint.flatten_paths(checkpoint.load_params(lm_dir))
  restored = checkpoint.flatten_paths(jax.device_get(state.params["model"]))
  # The language model trained the embeddings, and the fine-tuning run starts from them.
  assert not np.array_equal(lm["backbone/embed/embedding"], fresh_embedding)
  np.testing.assert_array_equal(restored["backbone/embed/embedding"],
                                lm["backbone/embed/embedding"])
  assert loop.train_and_evaluate(config, ft_dir)["step"] == 2

  # distill_sentiment's teacher: a (tiny) run of experiments/sentiment/mcc.flags.
  mcc_flags = os.path.join("experiments", "sentiment", "mcc.flags")
  teacher = flagfiles.config_from_flagfile(mcc_flags, **flags_test._TINY, data_dir=data_dir)
  teacher_dir = str(tmp_path / "teacher")
  loop.train_and_evaluate(dataclasses.replace(teacher, max_length=16, vocab_size=500),
                          teacher_dir)
  config = smoke("distill_sentiment", {mcc_flags: teacher_dir})
  assert loop.train_and_evaluate(config, student_dir)["model"] == "textcnn"
  # A text teacher reads the student's token ids: another vocabulary is an error.
  with pytest.raises(ConfigError, match="was trained with another vocabulary"):
    loop.train_and_evaluate(dataclasses.replace(config, vocab_size=300),
                            str(tmp_path / "student_other_vocab"))

  # A run with another vocabulary may not restore the pretrained embeddings.
  other = dataclasses.replace(config, method="source_only", teacher=None, init_from=lm_dir,
                              vocab_size=300)
  with pytest.raises(ConfigError, match="another vocabulary"):
    loop.train_and_evaluate(other, str(tmp_path / "other"))
