"""Skip-gram word vectors (`--method=skipgram`, xdomain.methods.pretrain): the
pairs it trains on, its term, and its flag files (pretraining, then the
sentiment rows that restore the vectors)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import flagfiles
from xdomain import checkpoint
from xdomain import transfer
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.data import text
from xdomain.data import text_pipeline
from xdomain.methods import METHODS
from xdomain.methods import pretrain
from xdomain.train import Experiment
from xdomain.train import train_and_evaluate
from xdomain.train.experiment import validate_config
from tests.test_text_engine_flags import TINY
from tests.test_train_engine import assert_trees_close
from tests.test_train_engine import losses_by_step


def test_pairs_are_every_ordered_pair_within_the_window_of_real_words():
  unk = text.UNK_ID
  tokens = np.array([[5, 6, unk, 7, 0], [8, 9, 0, 0, 0]], np.int32)
  lengths = np.array([4, 2])
  centres, contexts, valid = pretrain.skipgram_pairs(jnp.asarray(tokens), jnp.asarray(lengths), 2)
  got = sorted(zip(np.asarray(centres)[np.asarray(valid)].tolist(),
                   np.asarray(contexts)[np.asarray(valid)].tolist()))
  assert got == sorted([(5, 6), (6, 5), (6, 7), (7, 6), (8, 9), (9, 8)])


def test_noise_words_are_the_batch_s_real_words_by_frequency():
  unk = text.UNK_ID
  tokens = jnp.array([[5, 5, 5, unk, 9], [6, 9, 0, 0, 0]], jnp.int32)
  lengths = jnp.array([4, 2])  # the 9 of row 0 is padding beyond its length
  noise = np.asarray(pretrain.skipgram_noise(jax.random.key(0), tokens, lengths, (20000,)))
  counts = {word: np.mean(noise == word) for word in (5, 6, 9)}
  assert set(np.unique(noise)) == {5, 6, 9}
  np.testing.assert_allclose([counts[5], counts[6], counts[9]], [0.6, 0.2, 0.2], atol=0.015)


def test_term_is_the_mean_sgns_loss_of_the_valid_pairs():
  config = Config(method="skipgram", model="bilstm", vocab_size=12, embed_size=4,
                  skipgram_window=2, skipgram_negatives=3)
  method = METHODS["skipgram"](config)
  aux = method.init_aux(jax.random.key(0), 8, 2)
  assert aux["context"].shape == (12, 4) and not np.any(aux["context"])
  output = jax.random.normal(jax.random.key(1), (12, 4))
  embedding = jax.random.normal(jax.random.key(2), (12, 4))
  tokens = jnp.array([[2, 3, text.UNK_ID, 5, 0, 0], [6, 7, 8, 9, 10, 11]], jnp.int32)
  lengths = jnp.array([4, 6])
  rng = jax.random.key(3)

  def term(e, o):
    return method.model_terms(None, {"params": {"backbone": {"embed": {"embedding": e}}}},
                              (tokens, lengths), {"context": o}, rng)["skipgram"]

  centres, contexts, valid = pretrain.skipgram_pairs(tokens, lengths, 2)
  noise = pretrain.skipgram_noise(jax.random.fold_in(rng, pretrain.NOISE_STREAM), tokens,
                                  lengths, (centres.shape[0], 3))
  e, o, n = (np.asarray(x, np.float64) for x in (embedding[centres], output[contexts],
                                                  output[noise]))
  per_pair = -np_log_sigmoid(np.sum(e * o, 1)) - np.sum(
      np_log_sigmoid(-np.einsum("ne,nke->nk", e, n)), 1)
  valid = np.asarray(valid)
  np.testing.assert_allclose(term(embedding, output), per_pair[valid].mean(), rtol=1e-5)
  # Padding and <unk> never train.
  grads = jax.grad(term, argnums=(0, 1))(embedding, output)
  assert np.all(np.asarray(grads[0])[[0, text.UNK_ID]] == 0)
  assert np.all(np.asarray(grads[1])[[0, text.UNK_ID]] == 0)


def np_log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


@pytest.mark.parametrize("overrides, message", [
    (dict(source="brown/news", target="brown/fiction"), "reads sentence"),
    (dict(model="row_lstm", source="digits/mnist", target="digits/uci"), "use --model= one of"),
    (dict(skipgram_window=0), "--skipgram_window"),
    (dict(general_text="brown/news,brown/nowhere"), "names 'brown/nowhere', which is not"),
    (dict(general_text="brown/news, digits/mnist"), "names 'digits/mnist', an image domain"),
    (dict(general_text=" , "), "names no domain"),
    (dict(method="dann", general_text="brown/news"), "not to --method=dann: drop the flag"),
])
def test_bad_config(overrides, message):
  values = dict(method="skipgram", model="bilstm", source="sentiment/movies",
                target="sentiment/tweets")
  values.update(overrides)
  with pytest.raises(ConfigError, match=message):
    validate_config(Config(**values))


def test_pretrained_vectors_are_what_the_word_vector_rows_start_from(data_dir, tmp_path):
  path = "experiments/sentiment/source_only_word_vectors.flags"
  overrides = flagfiles.with_upstreams(path, dict(TINY, data_dir=data_dir), tmp_path)
  vectors = checkpoint.load_params(overrides["init_from"])["backbone"]["embed"]["embedding"]
  config = flagfiles.config_from_flagfile(path, **overrides)
  (tmp_path / "run").mkdir()
  # The flag file's --remove_domain_direction: the vectors start without the
  # axis along which the domains' text differs (from both training splits' words).
  assert config.remove_domain_direction
  run = Experiment(config, str(tmp_path / "run"))
  start = run.prepare_state().params["model"]["backbone"]["embed"]["embedding"]
  counts = [text_pipeline.token_counts(config, run.preprocess.vocab, domain)
            for domain in (config.source, config.target)]
  assert counts[0][5] != counts[1][5]
  np.testing.assert_allclose(
      np.asarray(start), transfer.remove_domain_direction(vectors, *counts), rtol=1e-6)
  assert not np.allclose(np.asarray(start), np.asarray(vectors), atol=1e-3)

  # Without it they start as the skip-gram stage left them.
  run = Experiment(dataclasses.replace(config, remove_domain_direction=False),
                   str(tmp_path / "run"))
  start = run.prepare_state().params["model"]["backbone"]["embed"]["embedding"]
  np.testing.assert_array_equal(np.asarray(start), np.asarray(vectors))

  # It acts on restored word vectors only.
  config = dataclasses.replace(config, restore="backbone/(?!embed/).*")
  with pytest.raises(ConfigError, match="acts on restored word vectors"):
    Experiment(config, str(tmp_path / "run")).prepare_state()


def test_general_text_runs_agree_on_one_and_eight_devices_and_resume_exactly(data_dir, tmp_path):
  assert jax.device_count() == 8
  config = Config(method="skipgram", model="bilstm", source="sentiment/movies",
                  target="sentiment/tweets", general_text="brown/news", data_dir=data_dir,
                  steps=4, checkpoint_every=2, eval_every=4, log_every=1, batch_size=8,
                  eval_batch_size=512, embed_size=8, hidden_size=8, max_length=16,
                  learning_rate=0.05)
  one = jax.devices()[:1]
  train_and_evaluate(config, str(tmp_path / "one"), devices=one)
  train_and_evaluate(config, str(tmp_path / "eight"))
  train_and_evaluate(dataclasses.replace(config, steps=2), str(tmp_path / "resumed"), devices=one)
  train_and_evaluate(dataclasses.replace(config, allow_config_change=True),
                     str(tmp_path / "resumed"), devices=one)
  unbroken = losses_by_step(tmp_path / "one")
  assert unbroken.keys() == {1, 2, 3, 4}
  assert losses_by_step(tmp_path / "resumed") == unbroken
  assert_trees_close(checkpoint.load_params(tmp_path / "one"),
                     checkpoint.load_params(tmp_path / "resumed"), rtol=0, atol=0)
  np.testing.assert_allclose(list(losses_by_step(tmp_path / "eight").values()),
                             list(unbroken.values()), rtol=1e-4)
  assert_trees_close(checkpoint.load_params(tmp_path / "one"),
                     checkpoint.load_params(tmp_path / "eight"), rtol=1e-3, atol=1e-5)
