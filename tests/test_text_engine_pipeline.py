"""Text in the engine: domains, vocabulary, buckets, tagger losses, CRF, metrics, errors."""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import numpy as np
import pytest

from xdomain import data
from xdomain import evaluate
from xdomain import methods
from xdomain import models
from xdomain import tasks
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.data import text
from xdomain.data import text_pipeline
from xdomain.models import inputs as model_inputs
from xdomain.models import zoo
from xdomain.train import loop
from xdomain.train import optimizers
from xdomain.train import step as step_lib
from xdomain.train.experiment import validate_config

TAGGING = tasks.Tagging()


def test_text_domains_are_served_by_the_data_registry():
  names = data.list_domains()
  assert {"digits/mnist", "sentiment/tweets", "topics/apple", "brown/news",
          "ner/wnut16"} <= set(names)
  info = data.domain_info("brown/news")
  assert (info.modality, info.task, info.label_keys) == ("text", "tagging", ("tags",))
  assert data.domain_info("sentiment/movies").label_names == ("negative", "positive")
  assert data.domain_info("digits/uci").task == "classification"
  with pytest.raises(ValueError, match="conll:"):
    data.domain_info("sentiment/nowhere")


def test_conll_names_are_domains(tmp_path):
  for name in ("train.txt", "test.txt"):
    (tmp_path / name).write_text("Paris\tB-geo-loc\nis\tO\n\nBob\tB-person\nran\tO\n")
  name = f"conll:{tmp_path}"
  info = data.domain_info(name)
  assert info.task == "tagging" and "B-person" in info.label_names
  rows = data.load_domain(name, "train", data_dir=str(tmp_path / "tfds"))
  assert [list(t) for t in rows["tokens"]] == [["Paris", "is"], ["Bob", "ran"]]


@pytest.mark.parametrize("overrides, message", [
    (dict(source="sentiment/movies", target="topics/apple"), "different label sets"),
    (dict(source="sentiment/movies", target="brown/news"), "different tasks"),
    (dict(source="brown/news", target="brown/fiction", model="textcnn"),
     "does not do tagging"),
    (dict(source="sentiment/movies", target="sentiment/tweets", model="bilstm_crf"),
     "does not do text_classification"),
    (dict(source="sentiment/movies", target="sentiment/tweets", model="seed_cnn"),
     "does not do text_classification.*bigru, bilstm, textcnn"),
    (dict(source="sentiment/movies", target="sentiment/tweets", char_cnn=True),
     "char_cnn"),
    (dict(source="sentiment/movies", target="conll:/no/such/dir"), "does not exist"),
    (dict(source="digits/mnist", target="digits/uci", model="seed_cnn", length_grouping=4),
     "length_grouping=4 is for text"),
    (dict(source="digits/mnist", target="digits/uci", model="seed_cnn", word_dropout=0.1),
     "word_dropout=0.1 is for text"),
    (dict(source="sentiment/movies", target="sentiment/tweets", word_dropout=1.0),
     r"word_dropout=1.0 must be in \[0, 1\)"),
    (dict(source="sentiment/movies", target="sentiment/tweets", vocab_from="source",
          teacher_unseen_as_unk=True), "teacher_unseen_as_unk is for text with --vocab_from=both"),
    (dict(source="sentiment/movies", target="sentiment/tweets", vocab_from="target"),
     "vocab_from='target' is not one of both, source"),
    (dict(source="sentiment/movies", target="sentiment/tweets", length_grouping=-1),
     "length_grouping=-1 must be >= 0"),
])
def test_text_config_errors_are_clear(overrides, message):
  config = Config(**dict(dict(model="bilstm", method="dann"), **overrides))
  with pytest.raises(ConfigError, match=message):
    validate_config(config)


def test_bucket_lengths():
  assert text_pipeline.bucket_lengths(64) == (16, 32, 64)
  assert text_pipeline.bucket_lengths(50) == (16, 32, 50)
  assert text_pipeline.bucket_lengths(8) == (8,)


def _vocab():
  return text.Vocabulary.build([["good", "bad", "film", "paris"]])


def test_text_preprocess_encodes_classification_and_tagging():
  pre = text_pipeline.TextPreprocess(_vocab(), max_length=4, chars=True)
  out = pre.prepare({"text": np.array(["Good film", "x"], object),
                     "label": np.array([1, 0])})
  ids = _vocab().lookup(["good", "film"])
  np.testing.assert_array_equal(out["tokens"], [[*ids, 0, 0], [text.UNK_ID, 0, 0, 0]])
  np.testing.assert_array_equal(out["lengths"], [2, 1])
  assert out["chars"].shape == (2, 4, text_pipeline.MAX_WORD_LENGTH)
  assert out["chars"][0, 0, 0] == ord("G") + 1  # case kept for the char CNN
  tagged = pre.prepare({"tokens": [["Paris", "a", "b", "c", "d"]],
                        "tags": [np.array([1, 0, 0, 0, 2])]})
  np.testing.assert_array_equal(tagged["tags"], [[1, 0, 0, 0]])
  assert "mask" not in tagged  # 'mask' marks real rows in evaluation batches
  # The vocabulary fingerprint is in the repr the loader checks on restore.
  other = text_pipeline.TextPreprocess(text.Vocabulary.build([["x"]]), max_length=4)
  assert pre.fingerprint != other.fingerprint and pre.fingerprint in repr(pre)


def test_vocabulary_is_saved_once_and_checked(tmp_path, monkeypatch):
  built = []

  def fake_build(config):
    built.append(config.source)
    return _vocab()

  monkeypatch.setattr(text_pipeline, "build_vocabulary", fake_build)
  config = Config(source="sentiment/movies", target="sentiment/tweets", model="bilstm")
  first = text_pipeline.experiment_vocabulary(config, str(tmp_path), write=True)
  again = text_pipeline.experiment_vocabulary(config, str(tmp_path), write=True)
  assert built == ["sentiment/movies"] and first.tokens == again.tokens
  with open(tmp_path / text_pipeline.VOCAB_FILE) as f:
    assert json.load(f)["built_from"]["target"] == "sentiment/tweets"
  other = Config(source="sentiment/products", target="sentiment/tweets", model="bilstm")
  with pytest.raises(ConfigError, match="new --workdir"):
    text_pipeline.experiment_vocabulary(other, str(tmp_path), write=True)
  source_alone = Config(source="sentiment/movies", target="sentiment/tweets", model="bilstm",
                        vocab_from="source")
  with pytest.raises(ConfigError, match="new --workdir"):
    text_pipeline.experiment_vocabulary(source_alone, str(tmp_path), write=True)
  # A vocabulary saved before --vocab_from existed was built from both domains.
  with open(tmp_path / text_pipeline.VOCAB_FILE) as f:
    record = json.load(f)
  del record["built_from"]["vocab_from"]
  with open(tmp_path / text_pipeline.VOCAB_FILE, "w") as f:
    json.dump(record, f)
  assert text_pipeline.experiment_vocabulary(config, str(tmp_path), write=True).tokens == (
      first.tokens)


def test_vocabulary_from_the_source_alone_leaves_target_words_unknown(monkeypatch):
  rows = {"brown/news": {"tokens": [["The", "jury", "said"]]},
          "brown/fiction": {"tokens": [["She", "said"]]}}
  monkeypatch.setattr(data.domains, "load_domain", lambda name, split, data_dir: rows[name])
  both = Config(source="brown/news", target="brown/fiction", model="bilstm")
  assert set(text_pipeline.build_vocabulary(both).tokens[2:]) == {"the", "jury", "said", "she"}
  source = dataclasses.replace(both, vocab_from="source")
  vocab = text_pipeline.build_vocabulary(source)
  assert set(vocab.tokens[2:]) == {"the", "jury", "said"}
  assert vocab.lookup(["She"]) == [text.UNK_ID]
  # Out of the source's vocabulary: what its training split never holds.
  seen = text_pipeline.source_vocabulary(both, text_pipeline.build_vocabulary(both))
  assert [bool(seen[i]) for i in text_pipeline.build_vocabulary(both).lookup(
      ["said", "she", "jury"])] == [True, False, True]


def test_token_counts_count_each_id_of_a_domain_s_training_text(monkeypatch):
  rows = {"sentiment/movies": {"text": ["A good film, GOOD!", "bad film"]},
          "sentiment/tweets": {"text": ["good day :)"]}}
  monkeypatch.setattr(data.domains, "load_domain", lambda name, split, data_dir: rows[name])
  config = Config(source="sentiment/movies", target="sentiment/tweets", model="bilstm")
  vocab = text.Vocabulary.build([["good", "film", "a", ",", "!", "bad"]])
  counts = text_pipeline.token_counts(config, vocab, "sentiment/movies")
  expected = {"good": 2, "film": 2, "a": 1, ",": 1, "!": 1, "bad": 1}
  for word, count in expected.items():
    assert counts[vocab.lookup([word])[0]] == count
  assert counts.sum() == 8 and counts[text.UNK_ID] == 0
  tweets = text_pipeline.token_counts(config, vocab, "sentiment/tweets")
  assert tweets[vocab.lookup(["good"])[0]] == 1 and tweets[text.UNK_ID] == 2  # day, :)


@pytest.fixture(scope="module")
def sentiment_loader_args(data_dir):
  try:
    vocab = text.Vocabulary.build([["good"]])
    data.load_domain("sentiment/tweets", "train", data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    if "registry" in str(e) or "Fetch" in str(e):
      pytest.skip(f"registry unreachable: {e}")
    raise
  return dict(batch_size=16, seed=3, data_dir=data_dir, buckets=(8, 16, 32),
              preprocess=text_pipeline.TextPreprocess(vocab, max_length=32))


def test_training_batches_share_one_bucket_on_every_process(sentiment_loader_args):
  one = data.CrossDomainLoader("sentiment/products", "sentiment/tweets",
                               process_index=0, process_count=1, **sentiment_loader_args)
  halves = [data.CrossDomainLoader("sentiment/products", "sentiment/tweets",
                                   process_index=p, process_count=2,
                                   **sentiment_loader_args) for p in (0, 1)]
  seen = set()
  for _ in range(6):
    batch = next(one)
    parts = [next(h) for h in halves]
    length = batch["source"]["tokens"].shape[1]
    seen.add(length)
    assert batch["target"]["tokens"].shape == (16, length)
    longest = max(batch["source"]["lengths"].max(), batch["target"]["lengths"].max())
    assert length == min(b for b in (8, 16, 32) if b >= longest)
    for part in ("source", "target"):
      stacked = np.concatenate([p[part]["tokens"] for p in parts])
      np.testing.assert_array_equal(stacked, batch[part]["tokens"])
    assert "label" in batch["source"] and "label" not in batch["target"]
  assert seen <= {8, 16, 32}


def test_general_text_is_a_third_part_and_leaves_the_other_two_as_they_were(
    sentiment_loader_args):
  plain = data.CrossDomainLoader("sentiment/products", "sentiment/tweets",
                                 process_index=0, process_count=1, **sentiment_loader_args)
  # Tagged tokens (Brown) and sentences pool into one stream, without tags.
  general = ("brown/news", "sentiment/editorials")
  loaders = [data.CrossDomainLoader("sentiment/products", "sentiment/tweets", general=general,
                                    process_index=p, process_count=n, **sentiment_loader_args)
             for p, n in ((0, 1), (0, 2), (1, 2))]
  for _ in range(4):
    without, (batch, *halves) = next(plain), [next(loader) for loader in loaders]
    assert set(batch["general"]) == {"tokens", "lengths"}
    length = batch["source"]["tokens"].shape[1]
    assert batch["general"]["tokens"].shape == (16, length)
    longest = max(batch[part]["lengths"].max() for part in ("source", "target", "general"))
    assert length == min(b for b in (8, 16, 32) if b >= longest)
    for part in ("source", "target"):  # the same rows, at most padded further
      np.testing.assert_array_equal(batch[part]["lengths"], without[part]["lengths"])
      shorter = min(length, without[part]["tokens"].shape[1])
      np.testing.assert_array_equal(batch[part]["tokens"][:, :shorter],
                                    without[part]["tokens"][:, :shorter])
      assert not batch[part]["tokens"][:, shorter:].any()
    np.testing.assert_array_equal(
        np.concatenate([h["general"]["tokens"] for h in halves]), batch["general"]["tokens"])
  state = loaders[0].get_state()
  assert state["config"]["general"] == list(general)
  with pytest.raises(ValueError, match="different configuration"):
    plain.set_state(state)


def test_eval_batches_are_bucketed_and_cover_the_split(sentiment_loader_args):
  args = dict(sentiment_loader_args)
  batches = list(data.eval_batches(
      "sentiment/tweets", "test", batch_size=256, preprocess=args["preprocess"],
      data_dir=args["data_dir"], process_index=0, process_count=1,
      buckets=args["buckets"]))
  assert sum(int(b["mask"].sum()) for b in batches) == (
      data.domain_info("sentiment/tweets").split_sizes["test"])
  for b in batches:
    assert b["tokens"].shape[1] == text.bucket_length(b["lengths"][b["mask"]], (8, 16, 32))
    assert b["mask"].shape == (256,)


def _tagger_setup(model_name, method_name="source_only", dropout=0.0, word_dropout=0.0,
                  teacher_vocabulary=None):
  config = Config(model=model_name, method=method_name, dropout_rate=dropout,
                  embed_size=8, hidden_size=8, learning_rate=0.05, steps=10,
                  source="brown/news", target="brown/fiction", word_dropout=word_dropout)
  spec = zoo.MODELS[model_name]
  model = spec.build(config, 5, vocab_size=20, char_vocab_size=0, task="tagging")
  method = methods.METHODS[method_name](config)
  tx = optimizers.make_optimizer(config, optimizers.learning_rate_schedule(config))
  step = jax.jit(step_lib.make_train_step(model, spec, TAGGING, method, config, tx, {},
                                          teacher_vocabulary=teacher_vocabulary))
  return model, spec, method, tx, step


def _init(model, spec, method, tx, batch):
  init = functools.partial(step_lib.init_state, model, spec, TAGGING, method, tx,
                           batch["source"])
  return jax.jit(init)(jax.random.key(0))


def _tag_batch(length, pad_to, seed=0):
  rng = np.random.default_rng(seed)
  lengths = np.array([length, length - 3, 2, length - 1], np.int32)

  def part(with_tags):
    tokens = rng.integers(2, 20, (4, length)).astype(np.int32)
    tags = rng.integers(0, 5, (4, length)).astype(np.int32)
    # Padding: garbage ids and tags beyond each length, then more columns.
    out = {"tokens": np.pad(tokens, ((0, 0), (0, pad_to - length)),
                            constant_values=7),
           "lengths": lengths}
    if with_tags:
      out["tags"] = np.pad(tags, ((0, 0), (0, pad_to - length)), constant_values=4)
    return out

  return {"source": part(True), "target": part(False)}


def _garbage_beyond_lengths(batch, seed):
  rng = np.random.default_rng(seed)
  out = {}
  for name, part in batch.items():
    part = dict(part)
    beyond = np.arange(part["tokens"].shape[1])[None] >= part["lengths"][:, None]
    for key, high in (("tokens", 20), ("tags", 5)):
      if key in part:
        part[key] = np.where(beyond, rng.integers(0, high, part[key].shape), part[key])
    out[name] = part
  return out


# Cross-entropy with a feature alignment term; the CRF with a prediction term.
@pytest.mark.parametrize("model_name, method_name", [
    ("bilstm", "coral"), ("bilstm_crf", "mcc")])
def test_tagger_padding_never_affects_the_loss(model_name, method_name):
  model, spec, method, tx, step = _tagger_setup(model_name, method_name)
  short = _tag_batch(8, 8)
  long = _garbage_beyond_lengths(_tag_batch(8, 16), seed=1)
  state = _init(model, spec, method, tx, long)
  _, a = step(state, short, jax.random.key(1))
  _, b = step(state, long, jax.random.key(1))
  for name in a:
    np.testing.assert_allclose(np.asarray(a[name]), np.asarray(b[name]), rtol=2e-5,
                               atol=1e-6, err_msg=name)
  assert a["source_train_count"] == 8 + 5 + 2 + 7


def test_word_dropout_reads_labelled_tokens_as_unk():
  batch = _tag_batch(8, 8)
  model, spec, method, tx, plain_step = _tagger_setup("bilstm", "mcc")
  *_, dropping_step = _tagger_setup("bilstm", "mcc", word_dropout=0.5)
  state = _init(model, spec, method, tx, batch)
  key = jax.random.key(3)
  # The mask the step draws: its own stream of the step's key.
  mask_key = jax.random.fold_in(jax.random.fold_in(key, 0), step_lib._LABELLED_VIEW_STREAM)
  source_tokens = np.asarray(batch["source"]["tokens"])
  dropped_tokens, dropped = model_inputs.words_to_unk(source_tokens, mask_key, 0.5)
  assert 0 < np.asarray(dropped).sum() < dropped.size
  as_unk = {"source": dict(batch["source"], tokens=np.asarray(dropped_tokens)),
            "target": batch["target"]}  # the unlabelled target is read as is
  _, dropping = dropping_step(state, batch, key)
  _, expected = plain_step(state, as_unk, key)
  _, plain = plain_step(state, batch, key)
  for name in ("task", "mcc"):
    np.testing.assert_allclose(np.asarray(dropping[name]), np.asarray(expected[name]),
                               rtol=1e-6, err_msg=name)
  assert not np.isclose(dropping["task"], plain["task"])


def test_teacher_reads_the_words_the_source_lacks_as_unk():
  batch = _tag_batch(8, 8)
  target_ids = set(np.asarray(batch["target"]["tokens"]).ravel().tolist())
  model, spec, method, tx, plain_step = _tagger_setup("bilstm", "mean_teacher")
  state = _init(model, spec, method, tx, batch)
  key = jax.random.key(3)
  _, plain = plain_step(state, batch, key)

  def metrics(unseen_ids):
    vocabulary = np.ones(20, bool)
    vocabulary[list(unseen_ids)] = False
    *_, step = _tagger_setup("bilstm", "mean_teacher", teacher_vocabulary=vocabulary)
    return step(state, batch, key)[1]

  # Ids that the target never holds change nothing; the target's own do, and
  # only through the teacher (the student's task loss stays).
  assert set(range(2, 20)) - target_ids  # some ids the target never holds
  absent = metrics(set(range(2, 20)) - target_ids)
  hidden = metrics(sorted(target_ids)[:4])
  for name in ("task", "consistency"):
    np.testing.assert_allclose(absent[name], plain[name], rtol=1e-6, err_msg=name)
  np.testing.assert_allclose(hidden["task"], plain["task"], rtol=1e-6)
  assert not np.isclose(hidden["consistency"], plain["consistency"])


def test_teacher_unseen_as_unk_needs_a_teacher(tmp_path):
  config = Config(source="brown/news", target="brown/fiction", model="bilstm",
                  method="dann", teacher_unseen_as_unk=True)
  with pytest.raises(ConfigError, match="--method=dann has none"):
    loop.train_and_evaluate(config, str(tmp_path))


def test_crf_step_trains_on_the_nll_and_eval_decodes_with_viterbi():
  model, spec, method, tx, step = _tagger_setup("bilstm_crf")
  batch = _tag_batch(8, 8)
  state = _init(model, spec, method, tx, batch)
  variables = {"params": state.params["model"]}
  source = batch["source"]
  nll = model.apply(variables, source["tokens"], source["lengths"], source["tags"],
                    method=models.RNNTagger.negative_log_likelihood)
  _, metrics = step(state, batch, jax.random.key(1))
  np.testing.assert_allclose(metrics["task"], nll.sum() / source["lengths"].sum(),
                             rtol=1e-5)
  losses = []
  for _ in range(15):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics["task"]))
  assert losses[-1] < 0.5 * losses[0]
  eval_batch = dict(source, mask=np.array([True, True, True, False]))
  def eval_sums(params, batch):
    variables = {"params": params}
    logits = model.apply(variables, *TAGGING.model_inputs(batch), train=False)
    return TAGGING.eval_sums(spec, model, variables, logits, batch, 5)

  out = jax.jit(eval_sums)(state.params["model"], eval_batch)
  decoded = model.apply({"params": state.params["model"]}, source["tokens"],
                        source["lengths"], method=models.RNNTagger.decode)
  np.testing.assert_array_equal(out["predictions"], decoded)
  valid = np.asarray(out["valid"])
  assert valid.sum() == 8 + 5 + 2 and not valid[3].any()
  np.testing.assert_allclose(np.asarray(out["confusion"]).sum(), valid.sum())


def test_text_metrics_over_batches_of_different_lengths():
  names = ("O", "B-person", "I-person", "B-geo-loc", "I-geo-loc")
  first = {"labels": np.array([[1, 2, 0], [3, 0, 0]]),
           "predictions": np.array([[1, 2, 0], [3, 4, 0]]),
           "valid": np.array([[True, True, True], [True, False, False]])}
  second = {"labels": np.array([[0, 3, 4, 0, 1], [0, 0, 0, 0, 0]]),
            "predictions": np.array([[0, 3, 0, 0, 2], [0, 0, 0, 0, 0]]),
            "valid": np.array([[True] * 5, [False] * 5])}
  def text_metrics(outputs, names, source_vocabulary=None):
    return TAGGING.metrics(np.eye(len(names)), outputs, names,
                           source_vocabulary=source_vocabulary)

  scores = text_metrics([first, second], names)
  expected = evaluate.span_f1(
      [["B-person", "I-person", "O"], ["B-geo-loc"], ["O", "B-geo-loc", "I-geo-loc", "O", "B-person"]],
      [["B-person", "I-person", "O"], ["B-geo-loc"], ["O", "B-geo-loc", "O", "O", "I-person"]])
  assert scores["span_f1"] == pytest.approx(expected["f1"])
  assert scores["span_f1/person"] == pytest.approx(expected["per_type"]["person"]["f1"])
  assert scores["token_accuracy"] == pytest.approx(7 / 9)
  pos = text_metrics([first], ("a", "b", "c", "d", "e"))
  assert "span_f1" not in pos and pos["accuracy"] == pytest.approx(1.0)
  # Ids 4-6 are out of the source's vocabulary: two such tokens tagged right,
  # one wrong (padding holds id 6 too and is not counted).
  first["tokens"] = np.array([[2, 5, 6], [3, 6, 6]])
  second["tokens"] = np.array([[2, 2, 6, 2, 2], [6, 6, 6, 6, 6]])
  seen = np.array([True, True, True, True, False, False, False])
  oov = text_metrics([first, second], names, source_vocabulary=seen)
  assert oov["oov_token_fraction"] == pytest.approx(3 / 9)
  assert oov["oov_token_accuracy"] == pytest.approx(2 / 3)
  assert oov["token_accuracy"] == scores["token_accuracy"]
  none_oov = text_metrics([first], names, source_vocabulary=np.ones(7, bool))
  assert none_oov["oov_token_fraction"] == 0 and "oov_token_accuracy" not in none_oov
  # Classification scores from the confusion matrix of labels [0, 1, 1] and
  # predictions [0, 1, 0] (the fourth example is padding).
  cls = tasks.TextClassification().metrics(np.array([[1.0, 0.0], [1.0, 1.0]]), [], ("n", "p"),
                                           source_vocabulary=None)
  assert cls == {"accuracy": pytest.approx(2 / 3), "per_class_accuracy": [1.0, 0.5],
                 "macro_f1": pytest.approx(evaluate.macro_f1([0, 1, 1], [0, 1, 0], 2))}


def test_length_grouping_pads_less_and_keeps_the_rows(sentiment_loader_args):
  def lengths_and_rows(loader, steps):
    buckets, rows = [], {"source": [], "target": []}
    for _ in range(steps):
      batch = next(loader)
      buckets.append(batch["source"]["tokens"].shape[1])
      for part in rows:  # a row's tokens identify it
        rows[part] += [tuple(r) for r in batch[part]["tokens"][:, :8]]
    return buckets, rows

  args = dict(sentiment_loader_args, process_index=0, process_count=1)
  plain = data.CrossDomainLoader("sentiment/products", "sentiment/tweets", **args)
  grouped = data.CrossDomainLoader("sentiment/products", "sentiment/tweets",
                                   length_grouping=4, **args)
  # 3 windows of 4 batches: the same rows, re-cut into shorter batches.
  plain_buckets, plain_rows = lengths_and_rows(plain, 12)
  grouped_buckets, grouped_rows = lengths_and_rows(grouped, 12)
  for part in ("source", "target"):
    assert sorted(grouped_rows[part]) == sorted(plain_rows[part])
  assert sum(grouped_buckets) < sum(plain_buckets)
  # A pure function of the step: resuming gives the same batches.
  state = grouped.get_state()
  expected = next(grouped)
  resumed = data.CrossDomainLoader("sentiment/products", "sentiment/tweets",
                                   length_grouping=4, **args)
  resumed.set_state(state)
  again = next(resumed)
  for part in ("source", "target"):
    np.testing.assert_array_equal(again[part]["tokens"], expected[part]["tokens"])
  with pytest.raises(ValueError, match="different configuration"):
    plain.set_state(state)
  with pytest.raises(ValueError, match="length_grouping=-1"):
    data.CrossDomainLoader("sentiment/products", "sentiment/tweets", length_grouping=-1,
                           **args)
