"""Tokenizer, vocabulary, encoders and length buckets of xdomain.data.text."""

import json

import numpy as np
import pytest

from xdomain.data import text


@pytest.mark.parametrize("raw, expected", [
    ("I can't believe it!!! :-)", ["i", "can't", "believe", "it", "!!!", ":-)"]),
    ("@Delta lost my bag http://t.co/x1 #fail &amp; 12.5% off",
     ["<user>", "lost", "my", "bag", "<url>", "#fail", "&", "12.5%", "off"]),
    ("Self-driving cars... <3", ["self-driving", "cars", "...", "<3"]),
    ("xpress :pizza (8)", ["xpress", ":", "pizza", "(", "8", ")"]),
])
def test_tokenize_cases(raw, expected):
  assert text.tokenize(raw) == expected


def test_tokenize_options_keep_case_and_urls():
  tokens = text.tokenize("Hi @Bob www.x.org", lowercase=False, normalize=False)
  assert tokens == ["Hi", "@Bob", "www.x.org"]


@pytest.mark.parametrize("raw", [
    "The Rock is destined to be the 21st Century's new ''Conan''.",
    "RT @CBSPittsburgh: Former Belichick Scout: Bill has always... #DeflateGate",
    "Claritin &gt; _äó»äó_ :D ;) =P",
    "'hello' mr. o’neil -- 1,000 x--y",
])
def test_tokenize_round_trip(raw):
  tokens = text.tokenize(raw)
  assert text.tokenize(" ".join(tokens)) == tokens


def test_tokenize_rejects_non_str():
  with pytest.raises(ValueError, match="text must be a str"):
    text.tokenize(["a"])


def test_vocabulary_build_order_min_count_max_size():
  lists = [["b", "a", "B"], ["c", "a", "d"], ["<unk>"]]
  vocab = text.Vocabulary.build(lists)
  # Counts: a 2, b 2 (B lowercased), c 1, d 1; ties broken by token.
  assert vocab.tokens == ("<pad>", "<unk>", "a", "b", "c", "d")
  assert text.Vocabulary.build(lists, min_count=2).tokens[2:] == ("a", "b")
  assert len(text.Vocabulary.build(lists, max_size=3)) == 3
  cased = text.Vocabulary.build(lists, lowercase=False)
  assert cased.lookup(["B", "b", "zz"]) == [cased.tokens.index("B"),
                                           cased.tokens.index("b"), 1]


def test_vocabulary_lookup_decode_round_trip():
  vocab = text.Vocabulary.build([text.tokenize("good film , bad film")])
  ids = vocab.lookup(["Film", "good", "unseen"])
  assert ids[2] == text.UNK_ID
  assert vocab.decode(ids) == ["film", "good", "<unk>"]
  with pytest.raises(ValueError, match=r"ids must be in \[0, 6\)"):
    vocab.decode([6])


def test_vocabulary_save_load(tmp_path):
  vocab = text.Vocabulary.build([["ünï", "b"], ["b"]], lowercase=False)
  path = tmp_path / "vocab.json"
  vocab.save(path)
  assert json.loads(path.read_text(encoding="utf-8"))["tokens"][2] == "b"
  loaded = text.Vocabulary.load(path)
  assert loaded == vocab
  assert loaded.lookup(["ünï"]) == vocab.lookup(["ünï"]) == [3]
  path.write_text("[1, 2]")
  with pytest.raises(ValueError, match="not a saved Vocabulary"):
    text.Vocabulary.load(path)


def test_vocabulary_rejects_bad_tokens():
  with pytest.raises(ValueError, match="must start with"):
    text.Vocabulary(("a", "<pad>", "<unk>"))
  with pytest.raises(ValueError, match="call tokenize"):
    text.Vocabulary.build(["a string"])


def test_encode_texts_pads_cuts_and_fills_empty():
  vocab = text.Vocabulary.build([["a", "b", "c"]])
  out = text.encode_texts(["a b c a b", "c", "   "], vocab, max_length=3)
  a, b, c = vocab.lookup(["a", "b", "c"])
  np.testing.assert_array_equal(out["tokens"],
                                [[a, b, c], [c, 0, 0], [text.UNK_ID, 0, 0]])
  np.testing.assert_array_equal(out["lengths"], [3, 1, 1])
  assert out["tokens"].dtype == out["lengths"].dtype == np.int32
  with pytest.raises(ValueError, match="max_length must be a positive int"):
    text.encode_texts(["a"], vocab, max_length=0)


def test_encode_tagged_masks_padding():
  vocab = text.Vocabulary.build([["x", "y"]])
  out = text.encode_tagged([["x", "y", "x"], ["y"]], [[2, 1, 0], [3]], vocab,
                           max_length=4)
  np.testing.assert_array_equal(out["tags"], [[2, 1, 0, 0], [3, 0, 0, 0]])
  np.testing.assert_array_equal(out["mask"], [[1, 1, 1, 0], [1, 0, 0, 0]])
  np.testing.assert_array_equal(out["lengths"], [3, 1])
  with pytest.raises(ValueError, match="sentence 1: 1 tokens but 2 tags"):
    text.encode_tagged([["x"], ["y"]], [[0], [0, 1]], vocab, max_length=4)


def test_encode_chars():
  chars = text.encode_chars([["Ab", "é"]], max_length=3, max_word_length=2)
  assert chars.shape == (1, 3, 2)
  np.testing.assert_array_equal(
      chars[0], [[ord("A") + 1, ord("b") + 1], [0xC3 + 1, 0xA9 + 1], [0, 0]])
  assert chars.max() < text.NUM_CHAR_IDS


def test_bucket_length():
  assert text.bucket_length(np.array([3, 16])) == 16
  assert text.bucket_length(np.array([17, 2])) == 32
  assert text.bucket_length(np.array([100]), (50, 200)) == 200
  with pytest.raises(ValueError, match="beyond the largest bucket 128"):
    text.bucket_length(np.array([129]))
  with pytest.raises(ValueError, match="buckets must be increasing"):
    text.bucket_length(np.array([1]), (32, 16))


def test_pad_to_bucket_cuts_padding_only_and_pads_up():
  vocab = text.Vocabulary.build([["w"]])
  batch = text.encode_tagged([["w"] * 20, ["w"]], [[1] * 20, [2]], vocab,
                             max_length=128)
  batch["chars"] = text.encode_chars([["w"] * 20, ["w"]], max_length=128)
  batch["label"] = np.array([0, 1])
  out = text.pad_to_bucket(batch)
  assert out["tokens"].shape == out["tags"].shape == out["mask"].shape == (2, 32)
  assert out["chars"].shape == (2, 32, 16)
  np.testing.assert_array_equal(out["tokens"], batch["tokens"][:, :32])
  assert out["label"] is batch["label"]
  short = text.encode_tokens([["w"] * 3], vocab, max_length=8)
  padded = text.pad_to_bucket(short, length=64)
  assert padded["tokens"].shape == (1, 64)
  np.testing.assert_array_equal(padded["tokens"][0, :8], short["tokens"][0])
  assert not padded["tokens"][0, 8:].any()
  with pytest.raises(ValueError, match="shorter than the longest sequence 20"):
    text.pad_to_bucket(batch, length=16)
