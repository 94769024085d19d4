"""Sequence tagging: one tag per token (part of speech, named entities)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xdomain.config import Config
from xdomain.evaluate import metrics as metrics_lib
from xdomain.tasks import base
from xdomain.tasks import text


class Tagging(text.TextTask):
  """Per-token outputs [B, L, ...] over real tokens only (`mask`).

  Scores: token accuracy; entity spans (conlleval's rules) when the tags are
  BIO tags; and the accuracy on the tokens whose word the source's training
  split lacks (`oov_token_accuracy`), where a tagger's errors gather.
  """

  name = "tagging"
  label_key = "tags"
  model_task = "tagging"
  scores_unseen_words = True
  source_val_scores = ("span_f1",)  # entities: held-out span F1, not token accuracy

  def source_val_validators(self, label_names: Sequence[str]) -> tuple[str, ...]:
    return self.source_val_scores if _is_bio(label_names) else ()

  def sample_part(self, config: Config) -> dict[str, np.ndarray]:
    return {**super().sample_part(config),
            "tags": np.zeros((1, config.max_length), np.int32)}

  def mask(self, part: base.Part) -> jax.Array:
    length = part["tokens"].shape[1]
    return jnp.arange(length)[None, :] < part["lengths"][:, None]

  def strong_view(self, inputs: base.Inputs, rng: jax.Array, config: Config
                  ) -> base.Inputs:
    """Words (and their characters) dropped to <unk> only: a swap would move
    the words away from their positions' tags."""
    return text.drop_tokens(inputs, rng, config.token_dropout or text.STRONG_TOKEN_DROPOUT)

  def split(self, joint: jax.Array, num_source: int, source: base.Part, target: base.Part
            ) -> tuple[jax.Array, jax.Array]:
    """Also drops the common padding that `join` added to either domain."""
    return (joint[:num_source, :source["tokens"].shape[1]],
            joint[num_source:, :target["tokens"].shape[1]])

  def eval_outputs(self, batch: base.Part, predictions: jax.Array, valid: jax.Array
                   ) -> dict[str, jax.Array]:
    return {"predictions": predictions.astype(jnp.int32), "labels": batch["tags"],
            "valid": valid, "tokens": batch["tokens"]}

  def metrics(self, confusion: np.ndarray, outputs: Sequence[Mapping[str, np.ndarray]],
              label_names: Sequence[str], *, source_vocabulary: np.ndarray | None
              ) -> dict[str, Any]:
    """`accuracy` (= `token_accuracy`) and per-tag accuracy; `span_*` for BIO
    tags; with `source_vocabulary` (bool [vocab size]) `oov_token_accuracy`
    (left out where there are no such tokens) and `oov_token_fraction`."""
    length = max(o["labels"].shape[1] for o in outputs)

    def stack(key):  # batches of several bucket lengths -> [N, longest]
      rows = [o[key][o["valid"].any(axis=1)] for o in outputs]
      return np.concatenate([np.pad(r, ((0, 0), (0, length - r.shape[1]))) for r in rows])

    names = tuple(label_names) if _is_bio(label_names) else None
    true, predicted, valid = stack("labels"), stack("predictions"), stack("valid")
    scores = metrics_lib.tagging_metrics(true, predicted, valid, names)
    scores["accuracy"] = scores["token_accuracy"]
    scores["per_class_accuracy"] = base.confusion_metrics(confusion)["per_class_accuracy"]
    if source_vocabulary is not None:
      oov = valid & ~source_vocabulary[stack("tokens")]
      scores["oov_token_fraction"] = float(oov.sum() / max(valid.sum(), 1))
      if oov.any():
        scores["oov_token_accuracy"] = metrics_lib.token_accuracy(true, predicted, oov)
    return scores


def _is_bio(label_names: Sequence[str]) -> bool:
  """Entity tags (BIO, an outside tag 'O'), which `span_f1` scores."""
  return "O" in label_names
