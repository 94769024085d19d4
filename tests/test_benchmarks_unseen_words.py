"""benchmarks/unseen_words.py: a text run scored with the words its source never
labelled read as <unk> (and benchmarks/domain_axis.py's refusal of a run without
word vectors, which shares this file's image run)."""

import numpy as np
import pytest

from benchmarks import domain_axis
from benchmarks import unseen_words
from tests import flagfiles
from tests.test_text_engine_flags import TINY
from xdomain.data import text
from xdomain.train import train_and_evaluate


def test_unseen_rows_become_unk_s_row_and_the_rest_stay():
  embedding = np.arange(12.0).reshape(6, 2)
  params = {"backbone": {"embed": {"embedding": embedding}, "lstm": {"kernel": np.ones(3)}},
            "head": {"bias": np.zeros(2)}}
  seen = np.array([True, True, True, False, True, False])
  replaced = unseen_words.unseen_as_unk(params, seen)
  got = replaced["backbone"]["embed"]["embedding"]
  np.testing.assert_array_equal(got[~seen], [embedding[text.UNK_ID]] * 2)
  np.testing.assert_array_equal(got[seen], embedding[seen])
  assert replaced["head"] is params["head"]
  assert replaced["backbone"]["lstm"] is params["backbone"]["lstm"]
  np.testing.assert_array_equal(params["backbone"]["embed"]["embedding"],
                                np.arange(12.0).reshape(6, 2))  # not mutated


def _tiny_sentiment_run(data_dir, folder, **overrides):
  config = flagfiles.config_from_flagfile("experiments/sentiment/source_only.flags",
                                          **TINY, data_dir=data_dir, **overrides)
  train_and_evaluate(config, str(folder), devices=flagfiles.smoke_devices())
  return str(folder)


def test_a_source_vocabulary_run_scores_the_same_and_a_both_domains_one_lacks_target_words(
    data_dir, tmp_path):
  source_only = unseen_words.scores(_tiny_sentiment_run(data_dir, tmp_path / "source"))
  # Its only unseen id is <unk> (no source word is rare at --min_count=1),
  # whose row stays its own: nothing the evaluation reads changes.
  assert source_only["unseen_words"] == 1
  assert source_only["unseen_as_unk"] == source_only["as_trained"]

  both = unseen_words.scores(_tiny_sentiment_run(data_dir, tmp_path / "both", vocab_from="both"))
  assert both["vocabulary"] > source_only["vocabulary"]
  # Each word both domains add beyond the source's vocabulary is unseen.
  assert both["unseen_words"] >= both["vocabulary"] - source_only["vocabulary"]
  assert set(both["unseen_as_unk"]) == set(both["as_trained"])
  assert both["unseen_as_unk"] != both["as_trained"]  # the replaced rows are the ones scored


def test_a_model_without_word_embeddings_is_refused_by_name(data_dir, tmp_path):
  config = flagfiles.config_from_flagfile("experiments/digits/source_only.flags",
                                          **flagfiles.SMOKE_OVERRIDES, data_dir=data_dir)
  train_and_evaluate(config, str(tmp_path), devices=flagfiles.smoke_devices())
  with pytest.raises(ValueError, match="no word embeddings at backbone/embed/embedding"):
    unseen_words.scores(str(tmp_path))
  with pytest.raises(ValueError, match="no word embeddings at backbone/embed/embedding"):
    domain_axis.run_axis(str(tmp_path), min_tokens=5)
