"""The resolved configuration of one experiment.

`experiments/main.py` turns flags into a `Config`; tests and users build one
directly. Every field is validated by `Config.validate` before any work starts,
so a bad value fails with one line that names the field and what to do.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "inverse_decay")
WEIGHT_SCHEDULES = ("constant", "dann", "rampup")
NORMALIZATIONS = ("unit", "standardize")
POOLINGS = ("last", "mean", "max")
# Text: whose training text the vocabulary is built from (--vocab_from).
VOCAB_FROM = ("both", "source")


class ConfigError(ValueError):
  """A configuration value is invalid; the message says which and what to do."""


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything one experiment needs; field names match the command-line flags."""

  method: str = "dann"
  source: str = "digits/mnist"
  target: str = "digits/uci"
  model: str = "seed_cnn"
  steps: int = 2000
  batch_size: int = 64
  eval_batch_size: int = 256
  seed: int = 0

  optimizer: str = "adam"
  learning_rate: float = 1e-3
  momentum: float = 0.9
  weight_decay: float = 0.0
  lr_schedule: str = "constant"
  warmup_steps: int = 0

  # Adaptation term weight lambda(step) = adapt_weight * schedule(step).
  adapt_weight: float = 1.0
  adapt_schedule: str = "constant"
  rampup_steps: int = 1000
  # Method-specific hyperparameters (ignored by methods that do not use them).
  cdan_entropy: bool = True
  cdan_random_dim: int = 1024
  mcc_temperature: float = 2.5
  ema_decay: float = 0.99
  token_dropout: float = 0.0
  confidence_threshold: float = 0.0
  discriminator_hidden: int = 1024
  # Transfer learning (xdomain/transfer.py): restore, freeze, anchor.
  init_from: str | None = None
  restore: str = "backbone/.*"
  freeze: str | None = None
  backbone_lr_multiplier: float = 1.0
  l2sp: float = 0.0
  l2sp_beta: float = 0.0
  target_labelled_fraction: float = 0.0
  # Teacher (proxy) models (xdomain/methods/teacher.py).
  teacher: str | None = None
  distill_temperature: float = 2.0
  distill_weight: float = 1.0
  distill_align: str | None = None
  teacher_refresh_every: int = 100
  teacher_source: str = "student"
  class_balance: bool = False

  image_size: int = 28
  channels: int = 1
  normalize: str = "unit"
  augment: bool = False
  crop_to_content: bool = False
  resolution: int = 0
  # Model sizes (used by the models that have them).
  hidden_size: int = 128
  dropout_rate: float = 0.0
  # Text models and their input (xdomain/train/text_pipeline.py).
  embed_size: int = 128
  pooling: str = "max"
  max_length: int = 64
  vocab_size: int = 20000
  min_count: int = 1
  vocab_from: str = "both"
  word_dropout: float = 0.0
  teacher_unseen_as_unk: bool = False
  char_cnn: bool = False
  length_grouping: int = 0

  log_every: int = 50
  eval_every: int = 500
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  plots: bool = False
  data_dir: str | None = None

  # Multi-host: set all three; or `distributed` alone to take them from the
  # cluster's environment (SLURM, TPU, ...); or none for one process.
  distributed: bool = False
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None

  def validate(self) -> None:
    """Raises `ConfigError` for the first value that cannot work."""
    # Imported here so that building a Config stays cheap and free of JAX.
    from xdomain import data
    from xdomain import methods
    from xdomain.train import model_zoo

    _check_choice("method", self.method, sorted(methods.METHODS))
    _check_choice("model", self.model, sorted(model_zoo.MODELS))
    _check_choice("optimizer", self.optimizer, OPTIMIZERS)
    _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
    _check_choice("adapt_schedule", self.adapt_schedule, WEIGHT_SCHEDULES)
    _check_choice("normalize", self.normalize, NORMALIZATIONS)
    _check_choice("pooling", self.pooling, POOLINGS)
    infos = {}
    for name in ("source", "target"):
      domain = getattr(self, name)
      try:
        infos[name] = data.domain_info(domain)
      except ValueError as e:  # unknown name, or unreadable conll: files
        raise ConfigError(
            f"--{name}={domain!r} is not a known domain: {e}. Known domains:"
            f" {', '.join(data.list_domains())}, or conll:/path/train.txt.") from e
    spec = model_zoo.MODELS[self.model]
    source_info = infos["source"]
    if source_info.modality != spec.modality:
      raise ConfigError(
          f"--model={self.model} reads {spec.modality} but --source={self.source} is"
          f" {source_info.modality}; choose a"
          f" {source_info.modality} model ({', '.join(model_zoo.models_for(source_info.modality, source_info.task))}).")
    if source_info.task not in spec.tasks:
      raise ConfigError(
          f"--model={self.model} does not do {source_info.task} (--source={self.source});"
          f" choose one of {', '.join(model_zoo.models_for(source_info.modality, source_info.task))}.")
    if self.char_cnn and source_info.task != "tagging":
      raise ConfigError(
          f"--char_cnn is for taggers; --source={self.source} is {source_info.task}.")
    for name in ("steps", "batch_size", "eval_batch_size", "log_every",
                 "eval_every", "checkpoint_every", "keep_checkpoints",
                 "image_size", "hidden_size", "discriminator_hidden",
                 "cdan_random_dim", "embed_size", "max_length", "min_count"):
      if getattr(self, name) <= 0:
        raise ConfigError(f"--{name}={getattr(self, name)} must be positive.")
    for name in ("learning_rate",):
      if not getattr(self, name) > 0:
        raise ConfigError(f"--{name}={getattr(self, name)} must be positive.")
    if self.length_grouping > 1 and source_info.modality != "text":
      raise ConfigError(f"--length_grouping={self.length_grouping} is for text;"
                        f" --source={self.source} is {source_info.modality}.")
    if self.word_dropout and source_info.modality != "text":
      raise ConfigError(f"--word_dropout={self.word_dropout} is for text;"
                        f" --source={self.source} is {source_info.modality}.")
    if self.vocab_from not in VOCAB_FROM:
      raise ConfigError(f"--vocab_from={self.vocab_from!r} must be one of"
                        f" {', '.join(VOCAB_FROM)}.")
    if self.teacher_unseen_as_unk and (source_info.modality != "text"
                                       or self.vocab_from != "both"):
      raise ConfigError(
          "--teacher_unseen_as_unk is for text with --vocab_from=both (with"
          " --vocab_from=source every word the source lacks is <unk> already);"
          f" got --source={self.source} ({source_info.modality}),"
          f" --vocab_from={self.vocab_from}.")
    for name in ("weight_decay", "adapt_weight", "warmup_steps", "resolution",
                 "length_grouping"):
      if getattr(self, name) < 0:
        raise ConfigError(f"--{name}={getattr(self, name)} must be >= 0.")
    for name in ("momentum", "ema_decay", "confidence_threshold",
                 "dropout_rate", "token_dropout", "word_dropout"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ConfigError(
            f"--{name}={getattr(self, name)} must be in [0, 1).")
    from xdomain import transfer
    transfer.validate_config(self)
    if self.channels not in (1, 3):
      raise ConfigError(f"--channels={self.channels} must be 1 or 3.")
    if self.mcc_temperature <= 0:
      raise ConfigError(
          f"--mcc_temperature={self.mcc_temperature} must be positive.")
    multihost = (self.coordinator_address, self.num_processes, self.process_id)
    if any(v is not None for v in multihost) and any(
        v is None for v in multihost):
      raise ConfigError(
          "--coordinator_address, --num_processes and --process_id go"
          " together: set all three, or none.")
    if self.vocab_size < 2:
      raise ConfigError(
          f"--vocab_size={self.vocab_size} must be >= 2 (padding and unknown).")
    target_info = infos["target"]
    if (source_info.modality, source_info.task) != (target_info.modality, target_info.task):
      raise ConfigError(
          f"--source={self.source} ({source_info.modality} {source_info.task}) and"
          f" --target={self.target} ({target_info.modality} {target_info.task}) are"
          " different tasks; pair domains of one task.")
    if source_info.label_names != target_info.label_names:
      from xdomain.data import text_builders
      hint = ""
      # Only CoNLL files not yet relabelled can take the other domain's tags.
      for flag, other in (("source", "target"), ("target", "source")):
        name, other_name = getattr(self, flag), getattr(self, other)
        if (name.startswith(text_builders.CONLL_PREFIX)
            and text_builders.RELABEL_SEP not in name
            and other_name in text_builders.RELABEL_TARGETS):
          hint = (f" Add a suffix to --{flag} that relabels the CoNLL files' entity"
                  f" types into --{other}'s tags: --{flag}={name}"
                  f"{text_builders.RELABEL_SEP}{other_name} (see docs/text_data.md).")
          break
      raise ConfigError(
          f"--source={self.source} and --target={self.target} have different"
          f" label sets ({list(source_info.label_names)} vs"
          f" {list(target_info.label_names)}); pair domains of one task.{hint}")

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> Config:
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ConfigError(f"unknown config fields: {sorted(unknown)}")
    return cls(**values)


def _check_choice(name: str, value: str, choices) -> None:
  if value not in choices:
    raise ConfigError(
        f"--{name}={value!r} is not one of {', '.join(choices)}.")
