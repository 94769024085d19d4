"""Tests of xdomain.tasks.text's strong view (FixMatch on text): dropped and swapped words."""

import collections

import jax
import numpy as np

from xdomain.config import Config
from xdomain.tasks import Tagging
from xdomain.tasks import TextClassification
from xdomain.tasks import text


def batch():
  rng = np.random.default_rng(0)
  lengths = np.array([9, 4, 1, 12], np.int32)
  tokens = rng.integers(2, 500, (4, 12)).astype(np.int32)
  tokens[np.arange(12)[None, :] >= lengths[:, None]] = 0
  return tokens, lengths


def test_swap_words_moves_words_one_place_within_the_text():
  tokens, lengths = batch()
  swap = jax.jit(text.swap_words)
  swapped = np.asarray(swap(tokens, lengths, jax.random.key(1), 0.5))
  assert (swapped != tokens).any()
  for row, new, n in zip(tokens, swapped, lengths):
    assert collections.Counter(row[:n].tolist()) == collections.Counter(new[:n].tolist())
    assert np.all(new[n:] == 0)
    moved = np.nonzero(new[:n] != row[:n])[0]
    for i in moved:  # each moved word comes from a neighbour that took its place
      j = i + 1 if i + 1 < n and new[i] == row[i + 1] and new[i + 1] == row[i] else i - 1
      assert new[i] == row[j] and new[j] == row[i]
  same = np.asarray(swap(tokens, lengths, jax.random.key(1), 0.0))
  np.testing.assert_array_equal(same, tokens)


def test_strong_views_of_classification_and_tagging():
  tokens, lengths = batch()
  config = Config(token_dropout=0.3)
  view = jax.jit(lambda t, l, k: TextClassification().strong_view((t, l), k, config))
  new_tokens, new_lengths = view(tokens, lengths, jax.random.key(2))
  np.testing.assert_array_equal(new_lengths, lengths)
  real = tokens != 0
  assert np.all((np.asarray(new_tokens) == 0) == ~real)
  assert np.any(np.asarray(new_tokens) == text.text.UNK_ID)
  # Tagging: dropout only, so every position keeps its word or becomes <unk>.
  tagged, _ = jax.jit(lambda t, l, k: Tagging().strong_view((t, l), k, config))(
      tokens, lengths, jax.random.key(2))
  tagged = np.asarray(tagged)
  assert np.all((tagged == tokens) | (tagged == text.text.UNK_ID) & real)
