"""What a method is: the adaptation terms it adds to the source task loss.

The engine runs one forward pass of the model over the source and target parts
of a batch and hands the outputs to the method as `Outputs`; the method returns
its terms, and the engine builds
`loss = task(source) + sum_i weight_i(step) * term_i` with `losses.combine`.
Methods that need parameters of their own (a domain discriminator) declare them
with `init_aux`; they are trained with the model by the same optimizer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from xdomain import losses
from xdomain.config import Config

Params = Any


@flax.struct.dataclass
class Outputs:
  """Model outputs on one batch.

  Classifiers give logits [B, C] and features [B, D]; taggers give per-token
  logits [B, L, C] and features [B, L, D] with `*_mask` [B, L] marking real
  tokens (None for classifiers). The `source_*` fields are None in a
  source-free run (`Method.uses_source`).
  """

  source_logits: jax.Array | None
  source_features: jax.Array | None
  source_labels: jax.Array | None
  source_mask: jax.Array | None
  target_logits: jax.Array | None = None
  target_features: jax.Array | None = None
  target_mask: jax.Array | None = None
  # Logits of the EMA teacher on the target (methods with `ema_decay`).
  teacher_target_logits: jax.Array | None = None
  # The method's running statistics, updated with this batch (`Statistics`).
  statistics: Any = None
  # The labels that `TargetLabels` gave the target rows of this batch.
  target_labels: jax.Array | None = None


TermsFn = Callable[[Outputs, Params, jax.Array, jax.Array], Mapping[str, jax.Array]]
InitAuxFn = Callable[[jax.Array, int, int], Params]
ModelTermsFn = Callable[[Any, Params, tuple, Params, jax.Array], Mapping[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A teacher model that gives target logits but is not trained by the optimizer.

  Its state lives in `TrainState.untrained['teacher']` (checkpointed, so a
  resumed run continues with the same teacher) and never receives gradients.

  Attributes:
    init: `(student_variables) -> teacher_state`, called once after the
      student is initialised (and restored by `--init_from`);
      `student_variables` is `{'params': ..., 'batch_stats': ...}`.
    logits: `(teacher_state, target_inputs, apply_student) -> logits` of the
      teacher on the target part of the batch (the model inputs, e.g.
      `(images,)` or `(tokens, lengths)`); `apply_student(variables, *inputs)`
      runs the student's architecture in inference mode (for teachers that are
      copies of the student). The result becomes `Outputs.teacher_target_logits`.
    refresh: optional `(teacher_state, student_variables, ema, step) ->
      teacher_state`, called after every update with the new step (e.g. copy
      the student every K steps); `ema` is the EMA of the student when the
      method keeps one (`ema_decay`), else `{}`.
  """

  init: Callable[[Params], Params]
  logits: Callable[[Params, tuple[jax.Array, ...], Callable[..., jax.Array]], jax.Array]
  refresh: Callable[[Params, Params, Params, jax.Array], Params] | None = None


@dataclasses.dataclass(frozen=True)
class Statistics:
  """Running statistics of the model's outputs that a method's terms read.

  Their state lives in `TrainState.untrained['statistics']` (checkpointed, so a
  resumed run continues with the same statistics) and never receives
  gradients. Each step updates it with the batch's outputs before the terms
  run, and the terms read the updated state as `Outputs.statistics`; they are
  computed on the whole batch, so they do not depend on the device count.

  Attributes:
    init: `(num_classes) -> state`.
    update: `(state, outputs) -> state`; the outputs are not differentiated
      through.
    log: `(state) -> {name: scalar}`, logged at every step under those names.
  """

  init: Callable[[int], Params]
  update: Callable[[Params, Outputs], Params]
  log: Callable[[Params], Mapping[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class TargetLabels:
  """Labels of every row of the target's training split, recomputed from the
  model by a pass over the whole split (e.g. SHOT's centroid pseudo-labels).

  The pass runs before the first step and then every `every` steps, with the
  model in inference mode. The labels live in
  `TrainState.untrained['target_labels']` (int32 [rows], checkpointed, so a
  resumed run continues with the same labels), and the terms read those of the
  batch's target rows as `Outputs.target_labels`.

  Attributes:
    every: steps between passes.
    compute: `(features [n, D], logits [n, C]) -> int32 [n]`, the labels of
      the split's rows in its order.
  """

  every: int
  compute: Callable[[jax.Array, jax.Array], jax.Array]


def _no_terms(outputs, aux_params, rng, step):
  del outputs, aux_params, rng, step
  return {}


@dataclasses.dataclass(frozen=True)
class Method:
  """A training method.

  Attributes:
    name: the `--method` name.
    terms: `(outputs, aux_params, rng, step) -> {name: scalar}`, the adaptation
      terms (not the task loss).
    weights: weight (float or optax schedule of the step) of each term.
    uses_target: whether the target batch goes through the model at all.
    train_on_target_labels: the target-only oracle: the labelled training
      stream is the target domain's own training split.
    init_aux: `(rng, feature_dim, num_classes) -> params` of the method's own
      trainable parts (e.g. a discriminator), or None.
    ema_decay: if set, an EMA teacher of the model is kept with this decay and
      its target logits are given to `terms`.
    target_views: `(task, inputs, rng) -> (student_inputs, teacher_inputs)`:
      two random views of the target's model inputs (a tuple: `(images,)` or
      `(tokens, lengths[, chars])`), e.g. the task's `consistency_views`, for
      the mean teacher; None for the inputs as they are.
    logged_schedules: schedules that shape a term other than through its weight
      (e.g. the gradient-reversal coefficient), logged as `schedule/<name>`.
    teacher: a `Teacher` (distillation, pseudo-labels) whose target logits go
      to `terms` as `teacher_target_logits` (instead of the EMA's), or None.
    model_terms: `(model, variables, inputs, aux_params, dropout_rng) ->
      {name: scalar}`, terms that run the model themselves (in training mode)
      on the model inputs of both domains (concatenated on the batch axis),
      e.g. language modelling; weighted by `weights` like `terms`.
    task_weight: weight of the source task loss (0 for pure pretraining).
    statistics: `Statistics` that the terms read (e.g. IWDAN's estimate of
      the target's class proportions), or None.
    uses_source: False for a source-free method (SHOT): the run never opens
      the source domain's data; batches and outputs hold the target only, and
      there is no task loss.
    target_labels: `TargetLabels` of the target's training rows that the
      terms read, or None.
    reads_outputs: False for pure pretraining, whose `model_terms` run the
      model themselves: the step then skips its pass over the joint batch
      (no task loss, no `terms`; batch statistics stay as they were).
  """

  name: str
  terms: TermsFn = _no_terms
  weights: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  uses_target: bool = True
  train_on_target_labels: bool = False
  init_aux: InitAuxFn | None = None
  ema_decay: float | None = None
  target_views: Callable[[Any, tuple[jax.Array, ...], jax.Array],
                         tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]] | None = None
  logged_schedules: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  teacher: Teacher | None = None
  model_terms: ModelTermsFn | None = None
  task_weight: float = 1.0
  statistics: Statistics | None = None
  uses_source: bool = True
  target_labels: TargetLabels | None = None
  reads_outputs: bool = True

  def __post_init__(self):
    if not self.reads_outputs and (
        self.model_terms is None or self.task_weight != 0 or self.terms is not _no_terms
        or self.teacher is not None or self.ema_decay is not None
        or self.statistics is not None or self.target_labels is not None):
      raise ValueError(
          f"method {self.name}: reads_outputs=False skips the model's pass over the batch,"
          " so it needs model_terms and no task loss, terms, teacher, EMA, statistics"
          " or target labels")


# --adapt_schedule: config -> lambda(step), from 0 (or adapt_weight) up to adapt_weight.
ADAPT_SCHEDULES: dict[str, Callable[[Config], optax.Schedule]] = {
    "constant": lambda config: optax.constant_schedule(config.adapt_weight),
    "dann": lambda config: losses.dann_schedule(config.steps, max_value=config.adapt_weight),
    "rampup": lambda config: losses.sigmoid_rampup(config.rampup_steps,
                                                   max_value=config.adapt_weight),
}


def adaptation_weight(config: Config) -> optax.Schedule:
  """lambda(step) = adapt_weight * schedule(step), the weight of the main term."""
  return ADAPT_SCHEDULES[config.adapt_schedule](config)


def flatten_tokens(features: jax.Array, mask: jax.Array | None
                  ) -> tuple[jax.Array, jax.Array | None]:
  """[B, L, D] token features and [B, L] mask -> [B*L, D] samples and [B*L] mask.

  Classifier features [B, D] (mask None) pass through unchanged, so every
  method aligns whatever the model's features are: one vector per example, or
  one per real token with padding masked out.
  """
  if mask is None:
    return features, None
  return features.reshape(-1, features.shape[-1]), mask.reshape(-1)


def features_of_both(outputs: Outputs):
  """(source, source_mask, target, target_mask) features, flattened per sample."""
  source, source_mask = flatten_tokens(outputs.source_features, outputs.source_mask)
  target, target_mask = flatten_tokens(outputs.target_features, outputs.target_mask)
  return source, source_mask, target, target_mask


def logits_of_both(outputs: Outputs):
  """(source, source_mask, target, target_mask) logits, flattened per sample."""
  source, source_mask = flatten_tokens(outputs.source_logits, outputs.source_mask)
  target, target_mask = flatten_tokens(outputs.target_logits, outputs.target_mask)
  return source, source_mask, target, target_mask


def masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Mean of per-example values over the real examples (all when mask is None)."""
  if mask is None:
    return jnp.mean(values)
  mask = mask.astype(values.dtype)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)
