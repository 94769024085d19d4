"""The `--model` names and how each is built from a `Config`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from xdomain import models
from xdomain.config import Config
from xdomain.data import text


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """How to build one `--model` and what it reads.

  Attributes:
    build: `(config, num_classes) -> module` for images;
      `(config, num_classes, *, vocab_size, task) -> module` for text, `task`
      being the domain's 'classification' or 'tagging'.
    modality: 'image' (inputs `(images,)`) or 'text' (`(tokens, lengths)`,
      plus `chars` with `--char_cnn`).
    domain_specific_bn: the module takes `domain=` ids and normalises source
      and target with separate batch-norm statistics.
    tasks: the domain tasks the model does.
    task_loss: `(model, variables, logits, labels, mask) -> (mean loss,
      correct, count)` replacing the softmax cross-entropy (e.g. a CRF's
      negative log-likelihood); None for cross-entropy.
    predict: `(model, variables, logits, lengths) -> predicted labels` used by
      evaluation (e.g. Viterbi decoding); None for the argmax.
  """

  build: Callable[..., nn.Module]
  modality: str = "image"
  domain_specific_bn: bool = False
  tasks: tuple[str, ...] = ("classification",)
  task_loss: Callable[..., tuple[jax.Array, jax.Array, jax.Array]] | None = None
  predict: Callable[..., jax.Array] | None = None


def _row_rnn(cell: str) -> Callable[[Config, int], nn.Module]:
  def build(config: Config, num_classes: int) -> nn.Module:
    return models.RowRNNClassifier(
        num_classes, cell=cell, hidden_size=config.hidden_size,
        bidirectional=True, dropout_rate=config.dropout_rate)
  return build


def _recurrent_text(cell: str, use_crf: bool = False) -> Callable[..., nn.Module]:
  def build(config: Config, num_classes: int, *, vocab_size: int, task: str) -> nn.Module:
    if task == "tagging":
      return models.RNNTagger(
          vocab_size, num_classes, embed_dim=config.embed_size, cell=cell,
          hidden_size=config.hidden_size, dropout_rate=config.dropout_rate,
          use_crf=use_crf,
          char_vocab_size=text.NUM_CHAR_IDS if config.char_cnn else 0)
    return models.RNNClassifier(
        vocab_size, num_classes, embed_dim=config.embed_size, cell=cell,
        hidden_size=config.hidden_size, pooling=config.pooling,
        dropout_rate=config.dropout_rate)
  return build


def _text_cnn(config: Config, num_classes: int, *, vocab_size: int, task: str) -> nn.Module:
  del task  # classification only (ModelSpec.tasks)
  return models.TextCNN(vocab_size, num_classes, embed_dim=config.embed_size,
                        dropout_rate=config.dropout_rate)


def _crf_task_loss(model, variables, emissions, tags, mask):
  """CRF negative log-likelihood per real token, and argmax-correct tokens."""
  mask = mask.astype(jnp.float32)
  lengths = jnp.sum(mask, axis=1).astype(jnp.int32)
  nll = model.apply(variables, emissions.astype(jnp.float32), tags, lengths,
                    method=models.RNNTagger.nll_from_emissions)
  count = jnp.sum(mask)
  correct = jnp.sum((jnp.argmax(emissions, -1) == tags) * mask)
  return jnp.sum(nll) / jnp.maximum(count, 1.0), correct, count


def _crf_predict(model, variables, emissions, lengths):
  """Viterbi decoding of the emissions [B, L, T] -> tags [B, L]."""
  return model.apply(variables, emissions.astype(jnp.float32), lengths,
                     method=models.RNNTagger.decode_emissions)


def models_for(modality: str, task: str) -> list[str]:
  """The `--model` names that read `modality` and do `task`, sorted."""
  return sorted(name for name, spec in MODELS.items()
                if spec.modality == modality and task in spec.tasks)


MODELS: dict[str, ModelSpec] = {
    "seed_cnn": ModelSpec(lambda config, num_classes: models.SeedCNN(
        num_classes, dropout_rate=config.dropout_rate)),
    "resnet": ModelSpec(lambda config, num_classes: models.ResNet(
        num_classes, dropout_rate=config.dropout_rate)),
    "resnet_dsbn": ModelSpec(
        lambda config, num_classes: models.ResNet(
            num_classes, domain_specific_bn=True,
            dropout_rate=config.dropout_rate),
        domain_specific_bn=True),
    "row_lstm": ModelSpec(_row_rnn("lstm")),
    "row_gru": ModelSpec(_row_rnn("gru")),
    "bilstm": ModelSpec(_recurrent_text("lstm"), modality="text",
                        tasks=("classification", "tagging")),
    "bigru": ModelSpec(_recurrent_text("gru"), modality="text"),
    "textcnn": ModelSpec(_text_cnn, modality="text"),
    "bilstm_crf": ModelSpec(_recurrent_text("lstm", use_crf=True), modality="text",
                            tasks=("tagging",), task_loss=_crf_task_loss,
                            predict=_crf_predict),
}
