"""Text pipeline: tokenizer, vocabulary, encoding to arrays, length buckets.

A `Vocabulary` is built from the training text of both domains (unlabelled
target text included), saved as JSON next to the checkpoint and loaded again
for evaluation and resumption, so ids never change within an experiment.
Sequences are encoded at a fixed maximum length; `pad_to_bucket` then cuts
each batch down to the smallest of a few bucket lengths, so that `jax.jit`
compiles one program per bucket rather than one per batch.

Example:
  >>> vocab = Vocabulary.build([tokenize(t) for t in ["Good film!", "bad"]])
  >>> batch = encode_texts(["good!"], vocab, max_length=8)
  >>> batch["tokens"].tolist(), batch["lengths"].tolist()
  ([[5, 2, 0, 0, 0, 0, 0, 0]], [2])
"""

from __future__ import annotations

import collections
import dataclasses
import html
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

PAD_ID = 0
UNK_ID = 1
PAD = "<pad>"
UNK = "<unk>"
URL = "<url>"
USER = "<user>"
DEFAULT_BUCKETS = (16, 32, 64, 128)
# Character ids: UTF-8 byte + 1, so 0 stays padding; 257 ids in all.
NUM_CHAR_IDS = 257

_TOKEN = re.compile(
    r"""
    (?:https?://|www\.)\S+                  # URL
  | @\w+                                    # user mention
  | \#\w+                                   # hashtag
  | <(?:url|user|pad|unk)>                  # our own placeholders
  | [<>]?[:;=][-o*']?[)(\]\[dDpP/\\|@3]+(?!\w) # emoticon :-) ;P =D
  | <3+                                     # heart
  | \d+(?:[.,:/]\d+)*%?                     # numbers, times, dates, 12.5%
  | [^\W\d_]+(?:['’][^\W\d_]+)*             # words, with it's / don't
    (?:-[^\W\d_]+(?:['’][^\W\d_]+)*)*        # and hyphenated self-driving
  | (\S)\1*                                 # punctuation, runs as one: !!! ...
    """, re.VERBOSE | re.UNICODE)
_URL = re.compile(r"(?:https?://|www\.)\S+$")
_USER = re.compile(r"@\w+$")


def tokenize(text: str, *, lowercase: bool = True,
             normalize: bool = True) -> list[str]:
  """Splits tweets and prose into word, punctuation and emoticon tokens.

  HTML entities are unescaped first (&amp; -> &). Words keep inner
  apostrophes and hyphens ("don't", "self-driving"); mentions, hashtags,
  emoticons and numbers stay whole; runs of one punctuation mark ("!!!")
  are one token.

  Args:
    text: the text.
    lowercase: lowercase every token.
    normalize: replace URLs by '<url>' and user mentions by '<user>'.

  Returns:
    The tokens, in order. `tokenize(" ".join(tokenize(t))) == tokenize(t)`.
  """
  if not isinstance(text, str):
    raise ValueError(f"text must be a str; got {type(text).__name__}")
  tokens = []
  for match in _TOKEN.finditer(html.unescape(text)):
    token = match.group(0)
    if normalize and _URL.match(token):
      token = URL
    elif normalize and _USER.match(token):
      token = USER
    elif lowercase:
      token = token.lower()
    tokens.append(token)
  return tokens


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """Token <-> id map; id 0 is padding, id 1 stands for unknown tokens.

  Attributes:
    tokens: token of each id; tokens[0] = '<pad>', tokens[1] = '<unk>'.
    lowercase: tokens are lowercased before lookup (and were when building).
  """

  tokens: tuple[str, ...]
  lowercase: bool = True

  def __post_init__(self):
    object.__setattr__(self, "tokens", tuple(self.tokens))
    if tuple(self.tokens[:2]) != (PAD, UNK):
      raise ValueError(
          f"tokens must start with {PAD!r}, {UNK!r}; got {list(self.tokens[:2])}")
    if len(set(self.tokens)) != len(self.tokens):
      raise ValueError("tokens must not repeat")
    object.__setattr__(self, "_index",
                       {t: i for i, t in enumerate(self.tokens)})

  @classmethod
  def build(cls, token_lists: Iterable[Sequence[str]], *, min_count: int = 1,
            max_size: int | None = None, lowercase: bool = True) -> Vocabulary:
    """Builds a vocabulary from tokenized text (e.g. both domains' training sets).

    Tokens are ordered by count (descending), ties by the token itself, so the
    result does not depend on the order of the text.

    Args:
      token_lists: token sequences.
      min_count: tokens seen fewer times are left out (they map to unk).
      max_size: most ids in all, the two reserved ones included.
      lowercase: lowercase tokens (here and at lookup).

    Returns:
      The vocabulary.
    """
    if min_count < 1:
      raise ValueError(f"min_count must be >= 1; got {min_count}")
    if max_size is not None and max_size < 2:
      raise ValueError(f"max_size must be >= 2 (pad and unk); got {max_size}")
    counts = collections.Counter()
    for tokens in token_lists:
      if isinstance(tokens, str):
        raise ValueError("token_lists must hold token sequences, not str; "
                         "call tokenize() first")
      counts.update(t.lower() if lowercase else t for t in tokens)
    for reserved in (PAD, UNK):
      counts.pop(reserved, None)
    kept = sorted((t for t, c in counts.items() if c >= min_count),
                  key=lambda t: (-counts[t], t))
    if max_size is not None:
      kept = kept[:max_size - 2]
    return cls((PAD, UNK, *kept), lowercase=lowercase)

  def __len__(self) -> int:
    return len(self.tokens)

  def __repr__(self) -> str:
    return f"Vocabulary(size={len(self.tokens)}, lowercase={self.lowercase})"

  def lookup(self, tokens: Sequence[str]) -> list[int]:
    """Ids of tokens; unknown ones get UNK_ID."""
    index = self._index  # pytype: disable=attribute-error
    if self.lowercase:
      return [index.get(t.lower(), UNK_ID) for t in tokens]
    return [index.get(t, UNK_ID) for t in tokens]

  def decode(self, ids: Iterable[int]) -> list[str]:
    """Tokens of ids (padding ids included as '<pad>')."""
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < len(self.tokens)]
    if bad:
      raise ValueError(f"ids must be in [0, {len(self.tokens)}); got {bad[:5]}")
    return [self.tokens[i] for i in ids]

  def save(self, path: str | os.PathLike[str]) -> None:
    """Writes the vocabulary as JSON (e.g. into the checkpoint folder)."""
    with open(path, "w", encoding="utf-8") as f:
      json.dump({"tokens": list(self.tokens), "lowercase": self.lowercase}, f,
                ensure_ascii=False)

  @classmethod
  def load(cls, path: str | os.PathLike[str]) -> Vocabulary:
    """Reads a vocabulary written by `save`."""
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    if not isinstance(data, dict) or "tokens" not in data:
      raise ValueError(f"{path} is not a saved Vocabulary (no 'tokens' key)")
    return cls(tuple(data["tokens"]), lowercase=bool(data.get("lowercase", True)))


def _check_max_length(max_length: int) -> None:
  if not isinstance(max_length, (int, np.integer)) or max_length < 1:
    raise ValueError(f"max_length must be a positive int; got {max_length!r}")


def encode_tokens(token_lists: Sequence[Sequence[str]], vocab: Vocabulary, *,
                  max_length: int) -> dict[str, np.ndarray]:
  """Encodes token sequences to padded ids, cut at max_length.

  Args:
    token_lists: N token sequences.
    vocab: the vocabulary.
    max_length: L; longer sequences keep their first L tokens.

  Returns:
    {'tokens': int32 [N, L] (0 = padding), 'lengths': int32 [N]}.
  """
  _check_max_length(max_length)
  ids = np.zeros((len(token_lists), max_length), np.int32)
  lengths = np.zeros((len(token_lists),), np.int32)
  for i, tokens in enumerate(token_lists):
    row = vocab.lookup(tokens[:max_length])
    ids[i, :len(row)] = row
    lengths[i] = len(row)
  return {"tokens": ids, "lengths": lengths}


def encode_texts(texts: Sequence[str], vocab: Vocabulary, *, max_length: int,
                 normalize: bool = True) -> dict[str, np.ndarray]:
  """Tokenizes and encodes texts for classification.

  A text with no tokens is encoded as one '<unk>', so every length is >= 1
  and pooled features are defined.

  Args:
    texts: N strings.
    vocab: the vocabulary (its `lowercase` is used for tokenizing).
    max_length: L.
    normalize: replace URLs and mentions by placeholders (as `tokenize`).

  Returns:
    {'tokens': int32 [N, L], 'lengths': int32 [N]}.
  """
  if isinstance(texts, str):
    raise ValueError("texts must be a sequence of str, not one str")
  token_lists = [tokenize(t, lowercase=vocab.lowercase, normalize=normalize)
                 or [UNK] for t in texts]
  return encode_tokens(token_lists, vocab, max_length=max_length)


def encode_tagged(token_lists: Sequence[Sequence[str]],
                  tag_lists: Sequence[Sequence[int]], vocab: Vocabulary, *,
                  max_length: int) -> dict[str, np.ndarray]:
  """Encodes tagged sentences: token ids, lengths, tags (0-padded) and a mask.

  Args:
    token_lists: N token sequences.
    tag_lists: N tag-id sequences, each as long as its tokens.
    vocab: the vocabulary.
    max_length: L; longer sentences are cut (tokens and tags alike).

  Returns:
    {'tokens': int32 [N, L], 'lengths': int32 [N], 'tags': int32 [N, L]
    (0 at padding, which is also a real tag id: use the mask),
    'mask': bool [N, L] (True at real tokens)}.
  """
  if len(token_lists) != len(tag_lists):
    raise ValueError(
        f"token_lists and tag_lists must have the same length; got "
        f"{len(token_lists)} and {len(tag_lists)}")
  out = encode_tokens(token_lists, vocab, max_length=max_length)
  tags = np.zeros_like(out["tokens"])
  for i, (tokens, tag_ids) in enumerate(zip(token_lists, tag_lists)):
    if len(tokens) != len(tag_ids):
      raise ValueError(
          f"sentence {i}: {len(tokens)} tokens but {len(tag_ids)} tags")
    row = np.asarray(tag_ids[:max_length], np.int32)
    tags[i, :len(row)] = row
  out["tags"] = tags
  out["mask"] = np.arange(max_length)[None, :] < out["lengths"][:, None]
  return out


def encode_chars(token_lists: Sequence[Sequence[str]], *, max_length: int,
                 max_word_length: int = 16) -> np.ndarray:
  """Character ids per token for a character CNN: UTF-8 byte + 1, 0 = padding.

  Case is kept (capitals matter for entity tagging); pass the tokens as
  written. Words longer than max_word_length keep their first bytes.

  Args:
    token_lists: N token sequences.
    max_length: L tokens per sequence.
    max_word_length: W bytes per token.

  Returns:
    int32 [N, L, W], ids in [0, NUM_CHAR_IDS).
  """
  _check_max_length(max_length)
  if max_word_length < 1:
    raise ValueError(f"max_word_length must be >= 1; got {max_word_length}")
  chars = np.zeros((len(token_lists), max_length, max_word_length), np.int32)
  for i, tokens in enumerate(token_lists):
    for j, token in enumerate(tokens[:max_length]):
      data = token.encode("utf-8")[:max_word_length]
      chars[i, j, :len(data)] = np.frombuffer(data, np.uint8).astype(np.int32) + 1
  return chars


def bucket_length(lengths: np.ndarray,
                  buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
  """The smallest bucket that holds the longest sequence of a batch.

  Args:
    lengths: int [B] sequence lengths.
    buckets: increasing bucket lengths.

  Returns:
    The bucket length.
  """
  lengths = np.asarray(lengths)
  if lengths.ndim != 1:
    raise ValueError(f"lengths must be int [B]; got shape {lengths.shape}")
  if not buckets or any(b <= a for a, b in zip(buckets, buckets[1:])):
    raise ValueError(f"buckets must be increasing; got {tuple(buckets)}")
  longest = int(lengths.max()) if lengths.size else 0
  for bucket in buckets:
    if longest <= bucket:
      return int(bucket)
  raise ValueError(
      f"lengths reach {longest}, beyond the largest bucket {buckets[-1]}; "
      "encode with max_length <= the largest bucket")


SEQUENCE_KEYS = ("tokens", "tags", "mask", "chars")


def pad_to_bucket(batch: Mapping[str, np.ndarray],
                  buckets: Sequence[int] = DEFAULT_BUCKETS, *,
                  length: int | None = None) -> dict[str, np.ndarray]:
  """Cuts or pads a batch's sequence arrays to its bucket length.

  The arrays under SEQUENCE_KEYS ('tokens', 'tags', 'mask', 'chars'; [B, L]
  or [B, L, W]) get length T = `bucket_length(batch['lengths'], buckets)`
  along axis 1: cut if L > T (only padding is cut), zero-padded if L < T.
  Other entries pass through unchanged.

  Args:
    batch: arrays with 'lengths' int [B].
    buckets: increasing bucket lengths.
    length: use this length instead of computing the bucket (e.g. the
      maximum over all processes, which must agree on shapes).

  Returns:
    A new dict with the same keys.
  """
  if "lengths" not in batch:
    raise ValueError(f"batch needs 'lengths'; got keys {sorted(batch)}")
  lengths = np.asarray(batch["lengths"])
  target = bucket_length(lengths, buckets) if length is None else int(length)
  if lengths.size and target < lengths.max():
    raise ValueError(
        f"length={target} is shorter than the longest sequence {lengths.max()}")
  out = dict(batch)
  for key in SEQUENCE_KEYS:
    if key not in batch:
      continue
    x = np.asarray(batch[key])
    if x.ndim < 2 or x.shape[0] != lengths.shape[0]:
      raise ValueError(
          f"batch[{key!r}] must be [B={lengths.shape[0]}, L, ...]; got shape "
          f"{x.shape}")
    if x.shape[1] >= target:
      out[key] = x[:, :target]
    else:
      pad = [(0, 0)] * x.ndim
      pad[1] = (0, target - x.shape[1])
      out[key] = np.pad(x, pad)
  return out
