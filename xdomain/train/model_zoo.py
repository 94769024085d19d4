"""The `--model` names and how each is built from a `Config`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn

from xdomain import models
from xdomain.config import Config


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """How to build one `--model` and what it reads.

  Attributes:
    build: `(config, num_classes) -> module`.
    modality: 'image' (inputs `(images,)`) or 'text' (`(tokens, lengths)`).
    domain_specific_bn: the module takes `domain=` ids and normalises source
      and target with separate batch-norm statistics.
  """

  build: Callable[[Config, int], nn.Module]
  modality: str = "image"
  domain_specific_bn: bool = False


def _row_rnn(cell: str) -> Callable[[Config, int], nn.Module]:
  def build(config: Config, num_classes: int) -> nn.Module:
    return models.RowRNNClassifier(
        num_classes, cell=cell, hidden_size=config.hidden_size,
        bidirectional=True, dropout_rate=config.dropout_rate)
  return build


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
}
