"""The optimizer and the learning-rate schedule of a run (`--optimizer`,
`--lr_schedule`, `--warmup_steps`, `--weight_decay`)."""

from __future__ import annotations

from collections.abc import Callable

import optax

from xdomain.config import Config
from xdomain.config import check_choice
from xdomain.config import check_fraction
from xdomain.config import check_non_negative
from xdomain.config import check_positive


def _inverse_decay(learning_rate: float, decay_steps: int) -> optax.Schedule:
  """DANN's annealing lr0 / (1 + 10 p)^0.75 over the training progress p."""
  return lambda step: learning_rate * (1.0 + 10.0 * step / decay_steps) ** -0.75


# --lr_schedule: (peak learning rate, steps after warm-up) -> schedule.
LR_SCHEDULES: dict[str, Callable[[float, int], optax.Schedule]] = {
    "constant": lambda learning_rate, decay_steps: optax.constant_schedule(learning_rate),
    "cosine": optax.cosine_decay_schedule,
    "inverse_decay": _inverse_decay,
}


def learning_rate_schedule(config: Config) -> optax.Schedule:
  """The `--lr_schedule`, after `--warmup_steps` of linear warm-up."""
  decay_steps = max(config.steps - config.warmup_steps, 1)
  schedule = LR_SCHEDULES[config.lr_schedule](config.learning_rate, decay_steps)
  if not config.warmup_steps:
    return schedule
  warmup = optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps)
  return optax.join_schedules([warmup, schedule], [config.warmup_steps])


def _sgd(learning_rate: optax.Schedule, config: Config) -> optax.GradientTransformation:
  return optax.sgd(learning_rate, momentum=config.momentum or None,
                   nesterov=bool(config.momentum))


def _adam(learning_rate: optax.Schedule, config: Config) -> optax.GradientTransformation:
  del config
  return optax.adam(learning_rate)


def _adamw(learning_rate: optax.Schedule, config: Config) -> optax.GradientTransformation:
  return optax.adamw(learning_rate, weight_decay=config.weight_decay)


# --optimizer: (learning-rate schedule, config) -> optimizer.
OPTIMIZERS: dict[str, Callable[[optax.Schedule, Config], optax.GradientTransformation]] = {
    "sgd": _sgd, "adam": _adam, "adamw": _adamw,
}


def make_optimizer(config: Config, learning_rate: optax.Schedule
                   ) -> optax.GradientTransformation:
  """The `--optimizer` at `learning_rate`, with `--weight_decay` (decoupled in
  adamw, added to the gradient otherwise)."""
  optimizer = OPTIMIZERS[config.optimizer](learning_rate, config)
  if config.weight_decay and config.optimizer != "adamw":
    return optax.chain(optax.add_decayed_weights(config.weight_decay), optimizer)
  return optimizer


def validate_config(config: Config) -> None:
  """Raises `ConfigError` for optimizer flags that cannot work."""
  check_choice(config, "optimizer", OPTIMIZERS)
  check_choice(config, "lr_schedule", LR_SCHEDULES)
  check_positive(config, "learning_rate")
  check_non_negative(config, "weight_decay", "warmup_steps")
  check_fraction(config, "momentum")
