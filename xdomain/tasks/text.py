"""What text tasks share: tokens and lengths as inputs, the experiment's
vocabulary, batches padded to length buckets, and word-level views."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xdomain.config import Config
from xdomain.data import text
from xdomain.data import text_pipeline
from xdomain.models import inputs as inputs_lib
from xdomain.tasks import base


def drop_tokens(inputs: base.Inputs, rng: jax.Array, rate: float) -> base.Inputs:
  """Text inputs `(tokens [B, L], lengths[, chars [B, L, W]])` with each real
  token replaced by <unk> with probability `rate`, its characters (if any) by
  padding, so neither the embedding nor the character CNN sees the word;
  padding stays padding."""
  tokens, *rest = inputs
  tokens, dropped = inputs_lib.words_to_unk(tokens, rng, rate, text.UNK_ID)
  if len(rest) == 2:  # character ids of a tagger's character CNN
    lengths, chars = rest
    # Character id 0 pads too (`text.encode_chars`).
    return tokens, lengths, jnp.where(dropped[..., None], text.PAD_ID, chars)
  return (tokens, *rest)


# FixMatch's strong view of text: token dropout (--token_dropout, this rate
# when 0) plus swaps of neighbouring words.
STRONG_TOKEN_DROPOUT = 0.1
WORD_SWAP_RATE = 0.1


def swap_words(tokens: jax.Array, lengths: jax.Array, rng: jax.Array, rate: float
               ) -> jax.Array:
  """Token ids [B, L] with neighbouring real words swapped: each text is cut
  into pairs (2j + o, 2j + o + 1), o in {0, 1} drawn per text, and each pair of
  real tokens is swapped with probability `rate` (pairs do not overlap, so
  every word moves at most one place); padding stays padding."""
  batch, length = tokens.shape
  offset_key, swap_key = jax.random.split(rng)
  offset = jax.random.bernoulli(offset_key, 0.5, (batch, 1)).astype(jnp.int32)
  position = jnp.arange(length)[None, :]
  first = (position - offset) % 2 == 0  # the first token of its pair
  partner = jnp.where(first, position + 1, position - 1)
  pair_start = jnp.where(first, position, position - 1)
  swap = jax.random.bernoulli(swap_key, rate, (batch, length + 1))
  swap = jnp.take_along_axis(swap, jnp.clip(pair_start, 0, length), axis=1)
  valid = (pair_start >= 0) & (pair_start + 1 < lengths[:, None])
  source = jnp.where(swap & valid, partner, position)
  return jnp.take_along_axis(tokens, jnp.clip(source, 0, length - 1), axis=1)


class TextTask(base.Task):
  """Token ids [B, L] and lengths [B] (plus characters [B, L, W] for a
  character CNN), over the vocabulary that the run keeps in its workdir."""

  model_task = ""  # what the text model builders are told: 'classification' or 'tagging'

  def make_preprocess(self, config: Config, workdir: str, *, write: bool
                      ) -> text_pipeline.TextPreprocess:
    vocab = text_pipeline.experiment_vocabulary(config, workdir, write=write)
    return text_pipeline.TextPreprocess(vocab, config.max_length, chars=config.char_cnn)

  def buckets(self, config: Config) -> tuple[int, ...]:
    return text_pipeline.bucket_lengths(config.max_length)

  def model_kwargs(self, config: Config, preprocess: text_pipeline.TextPreprocess
                   ) -> dict[str, Any]:
    return self._model_kwargs(config, len(preprocess.vocab))

  def model_kwargs_of_run(self, config: Config, workdir: str) -> dict[str, Any]:
    path = os.path.join(workdir, text_pipeline.VOCAB_FILE)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"the text run in {workdir} has no {text_pipeline.VOCAB_FILE}.")
    with open(path, encoding="utf-8") as f:
      return self._model_kwargs(config, len(json.load(f)["tokens"]))

  def _model_kwargs(self, config: Config, vocab_size: int) -> dict[str, Any]:
    return {"vocab_size": vocab_size,
            "char_vocab_size": text.NUM_CHAR_IDS if config.char_cnn else 0,
            "task": self.model_task}

  def check_teacher(self, teacher: Config, student: Config, teacher_workdir: str) -> None:
    del teacher, student, teacher_workdir  # the vocabularies are compared on restore

  def sample_part(self, config: Config) -> dict[str, np.ndarray]:
    part = {"tokens": np.zeros((1, config.max_length), np.int32),
            "lengths": np.ones((1,), np.int32)}
    if config.char_cnn:
      part["chars"] = np.zeros((1, config.max_length, text_pipeline.MAX_WORD_LENGTH),
                               np.int32)
    return part

  def model_inputs(self, part: base.Part) -> base.Inputs:
    if "chars" in part:  # the tagger's character CNN (--char_cnn)
      return (part["tokens"], part["lengths"], part["chars"])
    return (part["tokens"], part["lengths"])

  def join(self, source: base.Inputs, target: base.Inputs) -> base.Inputs:
    """Concatenates the two domains' inputs on the batch axis; token ids [B, L]
    are first padded to a common length (padding never changes a model's
    outputs, and `split` removes it again)."""
    joint = []
    for s, t in zip(source, target):
      if s.ndim >= 2 and s.shape[1] != t.shape[1]:
        length = max(s.shape[1], t.shape[1])
        s = jnp.pad(s, ((0, 0), (0, length - s.shape[1])) + ((0, 0),) * (s.ndim - 2))
        t = jnp.pad(t, ((0, 0), (0, length - t.shape[1])) + ((0, 0),) * (t.ndim - 2))
      joint.append(jnp.concatenate([s, t], axis=0))
    return tuple(joint)

  def labelled_view(self, inputs: base.Inputs, rng: jax.Array, config: Config
                    ) -> base.Inputs:
    """`--word_dropout`: each labelled token is read as <unk> with that
    probability (its characters stay), so the model learns to read the words
    whose embedding it never trained from their spelling and context."""
    if not config.word_dropout:
      return inputs
    tokens, _ = inputs_lib.words_to_unk(inputs[0], rng, config.word_dropout, text.UNK_ID)
    return (tokens, *inputs[1:])

  def teacher_view(self, inputs: base.Inputs, seen: jax.Array | None) -> base.Inputs:
    """`seen` (bool [vocab size]): the teacher reads the other token ids as
    <unk>, as their embeddings learnt nothing from labels."""
    if seen is None:
      return inputs
    tokens = inputs[0]
    return (jnp.where(jnp.asarray(seen)[tokens], tokens, text.UNK_ID), *inputs[1:])

  def consistency_views(self, inputs: base.Inputs, rng: jax.Array, config: Config
                        ) -> tuple[base.Inputs, base.Inputs]:
    """The student's view loses words to <unk> (`--token_dropout`; a tagger's
    character CNN loses their characters too), so it must read them from
    context as it must for words it never saw labelled; the teacher sees the
    text as is. Model dropout makes the two views differ further."""
    student_key, _ = jax.random.split(rng)
    if config.token_dropout:
      return drop_tokens(inputs, student_key, config.token_dropout), inputs
    return inputs, inputs

  def strong_view(self, inputs: base.Inputs, rng: jax.Array, config: Config
                  ) -> base.Inputs:
    """Words dropped to <unk> (`--token_dropout`, STRONG_TOKEN_DROPOUT when 0)
    and neighbouring words swapped (`swap_words`, WORD_SWAP_RATE)."""
    drop_key, swap_key = jax.random.split(rng)
    tokens, lengths, *rest = drop_tokens(
        inputs, drop_key, config.token_dropout or STRONG_TOKEN_DROPOUT)
    return (swap_words(tokens, lengths, swap_key, WORD_SWAP_RATE), lengths, *rest)
