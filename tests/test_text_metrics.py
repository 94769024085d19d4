"""Metrics of xdomain.evaluate, against scikit-learn and hand-made span cases."""

import numpy as np
import pytest
from sklearn import metrics as skm

from xdomain import evaluate


def test_accuracy_and_macro_f1_match_sklearn():
  rng = np.random.default_rng(0)
  true = rng.integers(0, 4, 50)
  pred = np.where(rng.random(50) < 0.6, true, rng.integers(0, 4, 50))
  assert evaluate.accuracy(true, pred) == pytest.approx(
      skm.accuracy_score(true, pred))
  assert evaluate.macro_f1(true, pred, 4) == pytest.approx(
      skm.f1_score(true, pred, average="macro"))


def test_macro_f1_skips_absent_classes_and_scores_missed_ones_zero():
  # Class 2 appears nowhere; class 1 is never predicted (F1 0).
  true, pred = np.array([0, 0, 1, 3]), np.array([0, 0, 0, 3])
  expected = np.mean([2 * 2 / (2 + 3), 0.0, 1.0])
  assert evaluate.macro_f1(true, pred, 4) == pytest.approx(expected)
  assert evaluate.macro_f1(true, pred, 4) == pytest.approx(
      skm.f1_score(true, pred, average="macro"))


def test_classification_metrics_check_arguments():
  with pytest.raises(ValueError, match=r"same shape; got \(2,\) and \(3,\)"):
    evaluate.accuracy([0, 1], [0, 1, 1])
  with pytest.raises(ValueError, match=r"pred must lie in \[0, num_classes=2\)"):
    evaluate.macro_f1([0, 1], [0, 2], 2)
  with pytest.raises(ValueError, match="true must be integer labels"):
    evaluate.accuracy([[0]], [[0]])
  assert evaluate.classification_metrics([0, 1], [0, 0], 2) == {
      "accuracy": 0.5, "macro_f1": pytest.approx((2 / 3 + 0) / 2)}


def test_token_accuracy_ignores_padding():
  true = np.array([[1, 2, 3, 0], [4, 0, 0, 0]])
  pred = np.array([[1, 0, 3, 9], [4, 9, 9, 9]])
  mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
  assert evaluate.token_accuracy(true, pred, mask) == pytest.approx(3 / 4)
  with pytest.raises(ValueError, match="mask selects no tokens"):
    evaluate.token_accuracy(true, pred, np.zeros_like(mask))
  with pytest.raises(ValueError, match="must all be"):
    evaluate.token_accuracy(true, pred[:, :3], mask)


@pytest.mark.parametrize("tags, expected", [
    # An I- tag after O starts a chunk.
    (["O", "I-PER", "I-PER", "O"], [(1, 3, "PER")]),
    # An I- tag of another type starts a new chunk.
    (["B-PER", "I-LOC", "I-LOC"], [(0, 1, "PER"), (1, 3, "LOC")]),
    # Runs of B- tags are separate chunks.
    (["B-PER", "B-PER", "I-PER", "B-PER"],
     [(0, 1, "PER"), (1, 3, "PER"), (3, 4, "PER")]),
    # A chunk that reaches the end of the sentence.
    (["O", "B-LOC", "I-LOC"], [(1, 3, "LOC")]),
    # IOBES: S- is one token, E- closes, an E- after E- opens a new chunk.
    (["S-PER", "B-LOC", "E-LOC", "E-LOC", "I-LOC"],
     [(0, 1, "PER"), (1, 3, "LOC"), (3, 4, "LOC"), (4, 5, "LOC")]),
    (["O", "O"], []),
    ([], []),
])
def test_chunks(tags, expected):
  assert evaluate.chunks(tags) == expected


def test_span_f1_micro_and_per_type():
  true = [["B-PER", "I-PER", "O", "B-LOC"], ["I-ORG", "I-ORG", "O"]]
  pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG", "B-PER"]]
  scores = evaluate.span_f1(true, pred)
  assert (scores["correct_chunks"], scores["true_chunks"],
          scores["pred_chunks"]) == (2, 3, 4)
  assert scores["precision"] == pytest.approx(0.5)
  assert scores["recall"] == pytest.approx(2 / 3)
  assert scores["f1"] == pytest.approx(4 / 7)
  assert scores["per_type"]["PER"]["f1"] == pytest.approx(2 / 3)
  assert scores["per_type"]["ORG"]["precision"] == pytest.approx(0.5)
  assert scores["per_type"]["LOC"] == {
      "precision": 0.0, "recall": 0.0, "f1": 0.0, "true_chunks": 1,
      "pred_chunks": 0, "correct_chunks": 0}


def test_span_f1_needs_exact_boundaries_and_type():
  true = [["B-PER", "I-PER", "O"]]
  assert evaluate.span_f1(true, [["B-PER", "O", "O"]])["f1"] == 0.0
  assert evaluate.span_f1(true, [["B-LOC", "I-LOC", "O"]])["f1"] == 0.0
  assert evaluate.span_f1(true, [["I-PER", "I-PER", "O"]])["f1"] == 1.0
  # Sentence boundaries end chunks: the I- of sentence 2 is its own chunk.
  two = [["O", "B-PER"], ["I-PER", "O"]]
  assert evaluate.span_f1(two, two)["true_chunks"] == 2


def test_span_f1_empty_predictions():
  scores = evaluate.span_f1([["B-PER", "O"]], [["O", "O"]])
  assert (scores["precision"], scores["recall"], scores["f1"]) == (0, 0, 0)
  assert scores["pred_chunks"] == 0 and scores["true_chunks"] == 1
  nothing = evaluate.span_f1([["O"]], [["O"]])
  assert nothing["f1"] == 0.0 and nothing["per_type"] == {}


def test_span_f1_rejects_bad_input():
  with pytest.raises(ValueError, match="sentence 0: 2 true tags but 1"):
    evaluate.span_f1([["O", "O"]], [["O"]])
  with pytest.raises(ValueError, match="same number of sentences"):
    evaluate.span_f1([["O"]], [])
  with pytest.raises(ValueError, match="'PER' is neither 'O' nor"):
    evaluate.span_f1([["PER"]], [["O"]])


def test_tagging_metrics_from_ids():
  names = ("O", "B-PER", "I-PER")
  true = np.array([[1, 2, 0, 0], [0, 1, 0, 0]])
  pred = np.array([[1, 2, 0, 2], [0, 0, 0, 1]])
  mask = np.array([[1, 1, 1, 0], [1, 1, 1, 0]], bool)
  assert evaluate.tag_names_of(true, mask, names) == [
      ["B-PER", "I-PER", "O"], ["O", "B-PER", "O"]]
  out = evaluate.tagging_metrics(true, pred, mask, names)
  assert out["token_accuracy"] == pytest.approx(5 / 6)
  assert out["span_precision"] == 1.0 and out["span_recall"] == 0.5
  assert out["span_f1/PER"] == pytest.approx(2 / 3)
  # POS tags (no 'O') get token accuracy only.
  assert set(evaluate.tagging_metrics(true, pred, mask, ("A", "B", "C"))) == {
      "token_accuracy"}
