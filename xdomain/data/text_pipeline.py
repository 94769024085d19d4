"""Text runs: the vocabulary of an experiment, the text preprocessor, length buckets.

A text experiment's vocabulary is built once from the training text of BOTH
domains (the target's unlabelled text is fair to use), written to
`<workdir>/vocab.json`, and read back by every later run in that workdir
(resumption, evaluation), so token ids never change within an experiment.
Building is deterministic, so processes that do not share the workdir's
filesystem build the same vocabulary themselves.

`TextPreprocess` is the loader's preprocessor for text domains (the
`xdomain.data.Preprocessor` protocol): it encodes every row once to
`tokens`/`lengths` (+ `tags` for tagging, + `chars` with the character CNN)
padded to `max_length`; the loader then cuts each batch to the bucket of its
global batch (`bucket_lengths`), so jit sees few shapes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.data import domains
from xdomain.data import text

VOCAB_FILE = "vocab.json"
# Characters kept per word for the character CNN.
MAX_WORD_LENGTH = 16
_BUCKET_STEPS = (16, 32, 64, 128, 256, 512)


def bucket_lengths(max_length: int) -> tuple[int, ...]:
  """The padded lengths of training and evaluation batches for `max_length`.

  Powers of two from 16 below `max_length`, then `max_length` itself, e.g.
  64 -> (16, 32, 64), 50 -> (16, 32, 50).
  """
  if max_length < 1:
    raise ValueError(f"max_length must be positive; got {max_length}")
  return tuple(b for b in _BUCKET_STEPS if b < max_length) + (int(max_length),)


def _token_lists(domain_data: Mapping[str, Any], lowercase: bool) -> list[list[str]]:
  """The tokens of every row of a loaded text domain (`load_domain` output)."""
  if "text" in domain_data:
    return [text.tokenize(t, lowercase=lowercase) for t in domain_data["text"]]
  return [list(tokens) for tokens in domain_data["tokens"]]


def build_vocabulary(config: Config) -> text.Vocabulary:
  """The vocabulary of `config`'s source and target training splits (the
  source's alone with `--vocab_from=source`)."""
  names = [config.source]
  if config.vocab_from == "both":
    names.append(config.target)
  token_lists = []
  for name in names:
    token_lists += _token_lists(
        domains.load_domain(name, "train", data_dir=config.data_dir), lowercase=True)
  return text.Vocabulary.build(token_lists, min_count=config.min_count,
                               max_size=config.vocab_size)


def _vocab_record(config: Config) -> dict[str, Any]:
  """What a saved vocabulary was built from; checked when it is read back."""
  return {"source": config.source, "target": config.target, "vocab_from": config.vocab_from,
          "min_count": config.min_count, "vocab_size": config.vocab_size}


def experiment_vocabulary(config: Config, workdir: str, *, write: bool) -> text.Vocabulary:
  """The workdir's vocabulary: read from `<workdir>/vocab.json`, else built.

  Args:
    config: the experiment.
    workdir: the run's workdir.
    write: save a newly built vocabulary there (process 0 only).

  Returns:
    The vocabulary.

  Raises:
    ConfigError: the workdir's vocabulary was built for other domains or
      vocabulary flags.
  """
  path = os.path.join(workdir, VOCAB_FILE)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved = json.load(f).get("built_from")
    if isinstance(saved, dict):
      saved.setdefault("vocab_from", "both")  # written before --vocab_from existed
    if saved != _vocab_record(config):
      raise ConfigError(
          f"{path} was built for {saved}, not for this run's"
          f" {_vocab_record(config)}; use a new --workdir, or the flags of the run"
          " that wrote it.")
    return text.Vocabulary.load(path)
  vocab = build_vocabulary(config)
  if write:
    record = {"tokens": list(vocab.tokens), "lowercase": vocab.lowercase,
              "built_from": _vocab_record(config)}
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
      json.dump(record, f, ensure_ascii=False)
    os.replace(partial, path)  # never a half-written vocabulary
  return vocab


def vocabulary_fingerprint(vocab: text.Vocabulary) -> str:
  """A short hash of the tokens in id order (part of the loader state)."""
  return hashlib.sha256("\n".join(vocab.tokens).encode("utf-8")).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class TextPreprocess:
  """Encodes a text domain's rows for the loader (no augmentation).

  Attributes:
    vocab: the experiment's vocabulary.
    max_length: L; longer texts keep their first L tokens.
    chars: also give each token's character ids (`chars` int32 [N, L, W]) for
      the character CNN of the tagger.
    fingerprint: `vocabulary_fingerprint(vocab)`; in the `repr`, so a loader
      state is never restored with other token ids.
  """
  vocab: text.Vocabulary
  max_length: int
  chars: bool = False
  fingerprint: str = ""

  def __post_init__(self):
    if not isinstance(self.vocab, text.Vocabulary):
      raise ValueError(f"vocab must be a Vocabulary; got {type(self.vocab).__name__}")
    if self.max_length < 1:
      raise ValueError(f"max_length must be positive; got {self.max_length}")
    object.__setattr__(self, "fingerprint", vocabulary_fingerprint(self.vocab))

  def prepare(self, rows: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Encodes a loaded text domain (labels optional: the target has none).

    Args:
      rows: `{'text': N str, ['label': int [N]]}` (classification) or
        `{'tokens': N token lists, ['tags': N int arrays]}` (tagging).

    Returns:
      `{'tokens': int32 [N, L], 'lengths': int32 [N]}` plus `label` int32 [N]
      or `tags` int32 [N, L] (0 past each length) where given, and `chars`
      int32 [N, L, W] when `self.chars`.
    """
    if "text" in rows:
      token_lists = [text.tokenize(t, lowercase=False) or [text.UNK]
                     for t in rows["text"]]
    elif "tokens" in rows:
      token_lists = [list(tokens) for tokens in rows["tokens"]]
    else:
      raise ValueError(f"rows must hold 'text' or 'tokens'; got keys {sorted(rows)}")
    if "tags" in rows:
      out = text.encode_tagged(token_lists, rows["tags"], self.vocab,
                               max_length=self.max_length)
      del out["mask"]  # the lengths say it; 'mask' names real rows in eval batches
    else:
      out = text.encode_tokens(token_lists, self.vocab, max_length=self.max_length)
    if self.chars:
      out["chars"] = text.encode_chars(token_lists, max_length=self.max_length,
                                       max_word_length=MAX_WORD_LENGTH)
    if "label" in rows:
      out["label"] = np.asarray(rows["label"], np.int32)
    return out

  def sample_augmentation(self, rng: np.random.Generator, n: int) -> None:
    del rng, n  # token ids are not augmented (dropout makes views differ)
    return None

  def apply_augmentation(self, batch: Mapping[str, np.ndarray], params: None
                         ) -> dict[str, np.ndarray]:
    del params
    return dict(batch)


def token_counts(config: Config, vocab: text.Vocabulary, domain: str) -> np.ndarray:
  """float [len(vocab)]: how often each token id occurs in `domain`'s training
  split (its text only; words outside `vocab` count as <unk>; `lookup` folds case)."""
  counts = np.zeros(len(vocab))
  for tokens in _token_lists(domains.load_domain(domain, "train", data_dir=config.data_dir),
                             lowercase=False):
    np.add.at(counts, vocab.lookup(tokens), 1)
  return counts


def source_vocabulary(config: Config, vocab: text.Vocabulary) -> np.ndarray:
  """bool [len(vocab)]: which token ids the source's training split holds
  (and padding).

  A tagger's errors on the target gather on the words that the source never
  labelled; the tagging task scores those tokens apart (`oov_token_accuracy`).
  The words are told apart by id: with `--min_count` > 1 the source's rare
  words make <unk> "seen", and the target's words that are <unk> count so too.
  """
  seen = token_counts(config, vocab, config.source) > 0
  seen[text.PAD_ID] = True  # padding is never a word to score or hide
  return seen
