"""The `--model` names, what each model does, and how it is built from a `Config`.

A model serves tasks by name (`xdomain.tasks`: 'image_classification',
'text_classification', 'tagging', 'detection'); the task hands the builder what the data
decides (the vocabulary size of text, the number of classes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.config import check_choice
from xdomain.config import check_fraction
from xdomain.config import check_non_negative
from xdomain.config import check_positive
from xdomain.models import text as text_models
from xdomain.models.cnn import ResNet
from xdomain.models.cnn import SeedCNN
from xdomain.models.detection import FCOS


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """How to build one `--model` and what it does.

  Attributes:
    build: `(config, num_classes, **inputs) -> module`; text models take
      `vocab_size`, `char_vocab_size` (0: no character CNN) and `task`.
    tasks: the task names the model serves.
    domain_specific_bn: the module takes `domain=` ids and normalises source
      and target with separate batch-norm statistics.
    task_loss: `(model, variables, logits, labels, mask) -> (mean loss,
      correct, count)` replacing the softmax cross-entropy (e.g. a CRF's
      negative log-likelihood); None for cross-entropy.
    predict: `(model, variables, logits, lengths) -> predicted labels` used by
      evaluation (e.g. Viterbi decoding); None for the argmax.
  """

  build: Callable[..., nn.Module]
  tasks: tuple[str, ...] = ("image_classification",)
  domain_specific_bn: bool = False
  task_loss: Callable[..., tuple[jax.Array, jax.Array, jax.Array]] | None = None
  predict: Callable[..., jax.Array] | None = None


def _row_rnn(cell: str) -> Callable[[Config, int], nn.Module]:
  def build(config: Config, num_classes: int) -> nn.Module:
    return text_models.RowRNNClassifier(
        num_classes, cell=cell, hidden_size=config.hidden_size,
        bidirectional=True, dropout_rate=config.dropout_rate,
        weight_norm_head=config.weight_norm_head, bottleneck_size=config.bottleneck_size)
  return build


def _recurrent_text(cell: str, use_crf: bool = False) -> Callable[..., nn.Module]:
  def build(config: Config, num_classes: int, *, vocab_size: int, char_vocab_size: int,
            task: str) -> nn.Module:
    if task == "tagging":
      return text_models.RNNTagger(
          vocab_size, num_classes, embed_dim=config.embed_size, cell=cell,
          hidden_size=config.hidden_size, dropout_rate=config.dropout_rate,
          use_crf=use_crf, char_vocab_size=char_vocab_size)
    return text_models.RNNClassifier(
        vocab_size, num_classes, embed_dim=config.embed_size, cell=cell,
        hidden_size=config.hidden_size, pooling=config.pooling,
        dropout_rate=config.dropout_rate, weight_norm_head=config.weight_norm_head,
        bottleneck_size=config.bottleneck_size)
  return build


def _text_cnn(config: Config, num_classes: int, *, vocab_size: int, char_vocab_size: int,
              task: str) -> nn.Module:
  del char_vocab_size, task  # text classification only (ModelSpec.tasks)
  return text_models.TextCNN(vocab_size, num_classes, embed_dim=config.embed_size,
                             dropout_rate=config.dropout_rate,
                             weight_norm_head=config.weight_norm_head,
                             bottleneck_size=config.bottleneck_size)


def _crf_task_loss(model, variables, emissions, tags, mask):
  """CRF negative log-likelihood per real token, and argmax-correct tokens."""
  mask = mask.astype(jnp.float32)
  lengths = jnp.sum(mask, axis=1).astype(jnp.int32)
  nll = model.apply(variables, emissions.astype(jnp.float32), tags, lengths,
                    method=text_models.RNNTagger.nll_from_emissions)
  count = jnp.sum(mask)
  correct = jnp.sum((jnp.argmax(emissions, -1) == tags) * mask)
  return jnp.sum(nll) / jnp.maximum(count, 1.0), correct, count


def _crf_predict(model, variables, emissions, lengths):
  """Viterbi decoding of the emissions [B, L, T] -> tags [B, L]."""
  return model.apply(variables, emissions.astype(jnp.float32), lengths,
                     method=text_models.RNNTagger.decode_emissions)


_IMAGE = ("image_classification",)
_TEXT = ("text_classification",)

MODELS: dict[str, ModelSpec] = {
    "seed_cnn": ModelSpec(lambda config, num_classes: SeedCNN(
        num_classes, dropout_rate=config.dropout_rate,
        weight_norm_head=config.weight_norm_head, bottleneck_size=config.bottleneck_size)),
    "resnet": ModelSpec(lambda config, num_classes: ResNet(
        num_classes, dropout_rate=config.dropout_rate,
        weight_norm_head=config.weight_norm_head, bottleneck_size=config.bottleneck_size)),
    "resnet_dsbn": ModelSpec(
        lambda config, num_classes: ResNet(
            num_classes, domain_specific_bn=True, dropout_rate=config.dropout_rate,
            weight_norm_head=config.weight_norm_head, bottleneck_size=config.bottleneck_size),
        domain_specific_bn=True),
    "row_lstm": ModelSpec(_row_rnn("lstm")),
    "row_gru": ModelSpec(_row_rnn("gru")),
    "bilstm": ModelSpec(_recurrent_text("lstm"), tasks=("text_classification", "tagging")),
    "bigru": ModelSpec(_recurrent_text("gru"), tasks=_TEXT),
    "textcnn": ModelSpec(_text_cnn, tasks=_TEXT),
    "bilstm_crf": ModelSpec(_recurrent_text("lstm", use_crf=True), tasks=("tagging",),
                            task_loss=_crf_task_loss, predict=_crf_predict),
    "fcos": ModelSpec(lambda config, num_classes: FCOS(num_classes), tasks=("detection",)),
}


def models_for(task: str) -> list[str]:
  """The `--model` names that serve `task`, sorted."""
  return sorted(name for name, spec in MODELS.items() if task in spec.tasks)


def validate_config(config: Config, task: str) -> ModelSpec:
  """Checks the model flags for a run of `task`; returns the model's spec."""
  check_choice(config, "model", MODELS)
  spec = MODELS[config.model]
  if task not in spec.tasks:
    raise ConfigError(
        f"--model={config.model} does not do {task} (--source={config.source});"
        f" choose one of {', '.join(models_for(task))}.")
  check_fraction(config, "label_smoothing")
  check_non_negative(config, "bottleneck_size")
  if config.label_smoothing and (spec.task_loss is not None or task == "detection"):
    raise ConfigError(f"--label_smoothing is for a softmax cross-entropy; --model={config.model}"
                      " trains with another loss.")
  for name in ("weight_norm_head", "bottleneck_size"):
    if getattr(config, name) and task not in ("image_classification", "text_classification"):
      raise ConfigError(f"--{name} is for classifiers; --model={config.model} does {task}.")
  if config.char_cnn and task != "tagging":
    raise ConfigError(f"--char_cnn is for taggers; --source={config.source} is {task}.")
  check_choice(config, "pooling", text_models.POOLINGS)
  check_positive(config, "hidden_size", "embed_size")
  check_fraction(config, "dropout_rate")
  return spec
