"""The train state and the pure train step.

Nothing here is jitted: the experiment jits `train_step` with the batch
sharded over the ('data',) mesh, so every loss sees the global batch and the
numbers do not depend on the device count. What differs between images,
text and tags is the task's (`xdomain.tasks`); the step has no branch on it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from xdomain import losses
from xdomain.config import Config
from xdomain.methods import Method
from xdomain.methods import Outputs
from xdomain.models.zoo import ModelSpec
from xdomain.tasks import Task

Batch = Mapping[str, Mapping[str, jax.Array]]
# fold_in data of the step key that draws the labelled view (word dropout).
_LABELLED_VIEW_STREAM = 1


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training.

  `params` holds `model` (the classifier) and `aux` (the method's own trainable
  parts, e.g. a discriminator); `ema` holds the EMA teacher's `params` and
  `batch_stats` for methods that keep one (empty otherwise); `untrained`
  holds what the step reads but never trains (xdomain/transfer.py): the
  method's `teacher` state, its running `statistics` and the L2-SP `anchor`
  (empty otherwise).
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema: Any
  untrained: Any = flax.struct.field(default_factory=dict)


def domain_kwargs(spec: ModelSpec, domain: Any) -> dict[str, Any]:
  """`domain=` of a model with domain-specific batch norm ('source', 'target' or
  ids [B]); nothing for other models."""
  return {"domain": domain} if spec.domain_specific_bn else {}


def _joint_domain_ids(num_source: int, num_target: int | None):
  if num_target is None:
    return "source"
  return jnp.concatenate([jnp.zeros(num_source, jnp.int32), jnp.ones(num_target, jnp.int32)])


def init_state(model, spec: ModelSpec, task: Task, method: Method,
               tx: optax.GradientTransformation, sample_part: Mapping[str, Any],
               rng: jax.Array) -> TrainState:
  """Initialises model, method parts, optimizer and (where used) EMA teacher."""
  model_rng, aux_rng, dropout_rng = jax.random.split(rng, 3)
  (logits, features), variables = model.init_with_output(
      {"params": model_rng, "dropout": dropout_rng}, *task.model_inputs(sample_part),
      train=False, return_features=True, **domain_kwargs(spec, "source"))
  aux = (method.init_aux(aux_rng, features.shape[-1], logits.shape[-1])
         if method.init_aux else {})
  params = {"model": variables["params"], "aux": aux}
  batch_stats = variables.get("batch_stats", {})
  ema = ({"params": params["model"], "batch_stats": batch_stats}
         if method.ema_decay is not None else {})
  untrained = ({"statistics": method.statistics.init(logits.shape[-1])}
               if method.statistics is not None else {})
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats, opt_state=tx.init(params), ema=ema,
                    untrained=untrained)


def make_train_step(model, spec: ModelSpec, task: Task, method: Method, config: Config,
                    tx: optax.GradientTransformation,
                    logged_schedules: Mapping[str, optax.Schedule],
                    regularizer: Callable[[Any, Any], Mapping[str, jax.Array]] | None = None,
                    *, teacher_vocabulary: Any = None
                    ) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict]]:
  """Builds the pure `train_step(state, batch, rng) -> (state, metrics)`.

  `logged_schedules` (e.g. the learning rate of each optimizer group) are
  logged at every step under their names. `regularizer(model_params,
  untrained) -> {name: scalar}` adds terms of weight 1 on the parameters
  themselves (L2-SP, see `transfer.regularizer`). `teacher_vocabulary` (text,
  methods with a teacher): bool [vocab size], the token ids that the teacher
  reads as themselves (`task.teacher_view`, `--teacher_unseen_as_unk`).

  The model runs once over the source and target parts together (batch norm
  sees both domains, as in the reference implementations), and not at all
  for pretraining that runs it itself (`Method.reads_outputs` False); a source-free
  method (`Method.uses_source` False) has batches of the target part only
  and no task loss. A step whose loss
  or any term is not finite leaves the state unchanged and reports
  `finite = False`; the loop stops the run there, naming the term.
  """

  def train_step(state: TrainState, batch: Batch, rng: jax.Array):
    rng = jax.random.fold_in(rng, state.step)
    dropout_rng, method_rng, view_rng = jax.random.split(rng, 3)
    source, target = batch.get("source"), batch["target"]
    source_labels = source_mask = source_inputs = None
    num_source = 0
    if method.uses_source:
      source_labels = source[task.label_key]
      source_mask = task.mask(source)
      # Its own stream, so the other random draws match runs without it.
      source_inputs = task.labelled_view(
          task.model_inputs(source), jax.random.fold_in(rng, _LABELLED_VIEW_STREAM), config)
      num_source = source_inputs[0].shape[0]

    def loss_fn(params):
      variables = {"params": params["model"], "batch_stats": state.batch_stats}
      teacher_inputs = None
      if method.uses_target:
        target_inputs = task.model_inputs(target)
        if method.target_views is not None:
          target_inputs, teacher_inputs = method.target_views(task, target_inputs, view_rng)
        else:
          teacher_inputs = target_inputs
        teacher_inputs = task.teacher_view(teacher_inputs, teacher_vocabulary)
        inputs = (target_inputs if source_inputs is None
                  else task.join(source_inputs, target_inputs))
        num_target = target_inputs[0].shape[0]
      else:
        target_inputs, inputs, num_target = None, source_inputs, None

      def joint_forward_terms():
        """The model's pass over the joint batch, the task loss and the terms that read it."""
        (logits, features), updates = model.apply(
            variables, *inputs, train=True, return_features=True,
            rngs={"dropout": dropout_rng}, mutable=["batch_stats"],
            **domain_kwargs(spec, _joint_domain_ids(num_source, num_target)))
        if target_inputs is None:
          outputs = Outputs(source_logits=logits, source_features=features,
                            source_labels=source_labels, source_mask=source_mask)
        else:
          if source_inputs is None:
            source_logits = source_features = None
            target_logits, target_features = logits, features
          else:
            source_logits, target_logits = task.split(logits, num_source, source, target)
            source_features, target_features = task.split(features, num_source, source, target)
          teacher_logits = None
          if method.teacher is not None:
            teacher_logits = method.teacher.logits(
                state.untrained["teacher"], tuple(teacher_inputs),
                functools.partial(_apply_inference, model, spec))
          elif method.ema_decay is not None:
            teacher_logits = model.apply(state.ema, *teacher_inputs, train=False,
                                         **domain_kwargs(spec, "target"))
          outputs = Outputs(
              source_logits=source_logits, source_features=source_features,
              source_labels=source_labels, source_mask=source_mask,
              target_logits=target_logits, target_features=target_features,
              target_mask=task.mask(target), teacher_target_logits=teacher_logits,
              target_labels=(state.untrained["target_labels"][target["index"]]
                             if method.target_labels is not None else None))
        statistics = None
        if method.statistics is not None:
          statistics = method.statistics.update(state.untrained["statistics"],
                                                jax.lax.stop_gradient(outputs))
          outputs = outputs.replace(statistics=statistics)
        if method.uses_source:
          task_loss, correct, count = task.supervised_loss(
              spec, model, variables, outputs.source_logits, source_labels, source_mask,
              label_smoothing=config.label_smoothing)
        else:
          task_loss, correct, count = jnp.float32(0.0), jnp.float32(0.0), jnp.float32(0.0)
        terms = dict(method.terms(outputs, params["aux"], method_rng, state.step))
        return task_loss, correct, count, terms, statistics, updates.get("batch_stats", {})

      if method.reads_outputs:
        task_loss, correct, count, terms, statistics, batch_stats = joint_forward_terms()
      else:  # pretraining whose model_terms run the model themselves: no pass to waste
        zero = jnp.float32(0.0)
        task_loss, correct, count, terms, statistics, batch_stats = (
            zero, zero, zero, {}, None, state.batch_stats)
      if method.model_terms is not None:  # e.g. language modelling on both domains
        if "general" in batch:  # --general_text: pretraining text beside both domains'
          inputs = task.join(inputs, task.model_inputs(batch["general"]))
        terms.update(method.model_terms(model, variables, inputs, params["aux"],
                                        dropout_rng))
      weighted = {name: (method.weights[name], value) for name, value in terms.items()}
      if regularizer is not None:
        weighted.update({name: (1.0, value) for name, value
                         in regularizer(params["model"], state.untrained).items()})
      total, logs = losses.combine(method.task_weight * task_loss, weighted, state.step)
      return total, (logs, batch_stats, correct, count, statistics)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (total, (logs, batch_stats, correct, count, statistics)), grads = grad_fn(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema
    if method.ema_decay is not None:
      ema = optax.incremental_update(
          {"params": params["model"], "batch_stats": batch_stats}, state.ema,
          1.0 - method.ema_decay)
    untrained = state.untrained
    if statistics is not None:
      untrained = dict(untrained, statistics=statistics)
    if method.teacher is not None and method.teacher.refresh is not None:
      untrained = dict(untrained, teacher=method.teacher.refresh(
          untrained["teacher"], {"params": params["model"], "batch_stats": batch_stats},
          ema, state.step + 1))
    grad_norm = _global_norm(grads)
    # Gradients can turn NaN while the loss stays finite (e.g. max/ReLU drop a
    # NaN activation forward but not backward): check both.
    finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in logs.values()])) & jnp.isfinite(grad_norm)
    updated = state.replace(params=params, batch_stats=batch_stats,
                            opt_state=opt_state, ema=ema, untrained=untrained)
    kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
    metrics = dict(logs, grad_norm=grad_norm, source_train_correct=correct,
                   source_train_count=count, finite=finite)
    for name, schedule in logged_schedules.items():
      metrics[name] = schedule(state.step)
    if statistics is not None:
      metrics.update(method.statistics.log(statistics))
    for name, schedule in method.logged_schedules.items():
      metrics[f"schedule/{name}"] = schedule(state.step)
    return kept.replace(step=state.step + 1), metrics

  return train_step


def _global_norm(tree) -> jax.Array:
  """The L2 norm of all leaves, each leaf's sum of squares as a dot product:
  XLA:CPU computes a large `sum(x * x)` (an embedding's gradient) as a tree of
  reduce-windows, several times slower."""
  return jnp.sqrt(sum(jnp.vdot(leaf, leaf) for leaf in jax.tree.leaves(tree)))


def _apply_inference(model, spec: ModelSpec, variables, *inputs) -> jax.Array:
  """Target logits of `model` with `variables` (no dropout, batch-norm statistics fixed)."""
  return model.apply(variables, *inputs, train=False, **domain_kwargs(spec, "target"))
