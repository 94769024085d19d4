"""The train state, the optimizer, and the pure train and eval steps.

Nothing here is jitted: the loop jits `train_step` with the batch sharded over
the ('data',) mesh, so every loss sees the global batch and the numbers do not
depend on the device count.
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
from xdomain.data import text
from xdomain.methods import Method
from xdomain.methods import Outputs
from xdomain.models import inputs as inputs_lib
from xdomain.train.model_zoo import ModelSpec

Batch = Mapping[str, Mapping[str, jax.Array]]
# fold_in data of the step key that draws the word-dropout mask.
_WORD_DROPOUT_STREAM = 1


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training.

  `params` holds `model` (the classifier) and `aux` (the method's own trainable
  parts, e.g. a discriminator); `ema` holds the EMA teacher's `params` and
  `batch_stats` for methods that keep one (empty otherwise); `untrained`
  holds what the step reads but never trains (xdomain/transfer.py): the
  method's `teacher` state and the L2-SP `anchor` (empty otherwise).
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema: Any
  untrained: Any = flax.struct.field(default_factory=dict)


def learning_rate_schedule(config: Config) -> optax.Schedule:
  """The `--lr_schedule`, after `--warmup_steps` of linear warm-up."""
  decay_steps = max(config.steps - config.warmup_steps, 1)
  if config.lr_schedule == "constant":
    schedule = optax.constant_schedule(config.learning_rate)
  elif config.lr_schedule == "cosine":
    schedule = optax.cosine_decay_schedule(config.learning_rate, decay_steps)
  else:
    # DANN's annealing lr0 / (1 + 10 p)^0.75 over the training progress p.
    schedule = lambda step: config.learning_rate * (  # noqa: E731
        1.0 + 10.0 * step / decay_steps) ** -0.75
  if not config.warmup_steps:
    return schedule
  warmup = optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps)
  return optax.join_schedules([warmup, schedule], [config.warmup_steps])


def make_optimizer(config: Config) -> optax.GradientTransformation:
  """The `--optimizer` with the learning-rate schedule and weight decay."""
  lr = learning_rate_schedule(config)
  if config.optimizer == "adamw":
    return optax.adamw(lr, weight_decay=config.weight_decay)
  if config.optimizer == "adam":
    base = optax.adam(lr)
  else:
    base = optax.sgd(lr, momentum=config.momentum or None, nesterov=bool(config.momentum))
  if config.weight_decay:
    return optax.chain(optax.add_decayed_weights(config.weight_decay), base)
  return base


def model_inputs(part: Mapping[str, jax.Array], spec: ModelSpec) -> tuple[jax.Array, ...]:
  """The positional model inputs held by one domain's part of a batch."""
  if spec.modality == "image":
    return (part["image"],)
  if "chars" in part:  # the tagger's character CNN (--char_cnn)
    return (part["tokens"], part["lengths"], part["chars"])
  return (part["tokens"], part["lengths"])


def token_mask(part: Mapping[str, jax.Array], labels: jax.Array) -> jax.Array | None:
  """[B, L] mask of real tokens for per-token labels; None for class labels."""
  if labels.ndim == 1:
    return None
  return jnp.arange(labels.shape[1])[None, :] < part["lengths"][:, None]


def _concat_inputs(source: tuple[jax.Array, ...], target: tuple[jax.Array, ...]):
  """Concatenates the two domains' inputs on the batch axis; token ids [B, L]
  are first padded to a common length (padding never changes a model's
  outputs, and `_crop` removes it again)."""
  joint = []
  for s, t in zip(source, target):
    if s.ndim == 2 and s.shape[1] != t.shape[1]:
      length = max(s.shape[1], t.shape[1])
      s = jnp.pad(s, ((0, 0), (0, length - s.shape[1])))
      t = jnp.pad(t, ((0, 0), (0, length - t.shape[1])))
    joint.append(jnp.concatenate([s, t], axis=0))
  return tuple(joint)


def _domain_kwargs(spec: ModelSpec, num_source: int, num_target: int | None):
  if not spec.domain_specific_bn:
    return {}
  if num_target is None:
    return {"domain": "source"}
  return {"domain": jnp.concatenate([
      jnp.zeros(num_source, jnp.int32), jnp.ones(num_target, jnp.int32)])}


def init_state(model, spec: ModelSpec, method: Method, tx: optax.GradientTransformation,
               sample_batch: Batch, rng: jax.Array) -> TrainState:
  """Initialises model, method parts, optimizer and (where used) EMA teacher."""
  model_rng, aux_rng, dropout_rng = jax.random.split(rng, 3)
  inputs = model_inputs(sample_batch["source"], spec)
  (logits, features), variables = model.init_with_output(
      {"params": model_rng, "dropout": dropout_rng}, *inputs, train=False,
      return_features=True, **_domain_kwargs(spec, inputs[0].shape[0], None))
  aux = (method.init_aux(aux_rng, features.shape[-1], logits.shape[-1])
         if method.init_aux else {})
  params = {"model": variables["params"], "aux": aux}
  batch_stats = variables.get("batch_stats", {})
  ema = ({"params": params["model"], "batch_stats": batch_stats}
         if method.ema_decay is not None else {})
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats, opt_state=tx.init(params), ema=ema)


def _task_loss(logits: jax.Array, labels: jax.Array, mask: jax.Array | None):
  """Mean cross-entropy over examples (or over real tokens) and correct count."""
  per_example = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  if mask is None:
    return jnp.mean(per_example), jnp.sum(correct), jnp.float32(labels.size)
  mask = mask.astype(jnp.float32)
  count = jnp.sum(mask)
  return (jnp.sum(per_example * mask) / jnp.maximum(count, 1.0),
          jnp.sum(correct * mask), count)


def make_train_step(model, spec: ModelSpec, method: Method,
                    tx: optax.GradientTransformation, lr_schedule: optax.Schedule,
                    regularizer: Callable[[Any, Any], Mapping[str, jax.Array]] | None = None,
                    *, word_dropout: float = 0.0, teacher_vocabulary: Any = None
                    ) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict]]:
  """Builds the pure `train_step(state, batch, rng) -> (state, metrics)`.

  `regularizer(model_params, untrained) -> {name: scalar}` adds terms of
  weight 1 on the parameters themselves (L2-SP, see `transfer.regularizer`).
  `word_dropout` (text): each labelled token is read as <unk> with this
  probability (its characters stay), so the model learns to tag the words
  whose embedding it never trained from their spelling and context.
  `teacher_vocabulary` (text, methods with a teacher): bool [vocab size]; the
  teacher reads the target's other token ids as <unk>, for their embeddings
  learnt nothing from labels, while the student reads them and so learns
  them from the teacher's tags (`--teacher_unseen_as_unk`).

  The model runs once over the source and target parts together (batch norm
  sees both domains, as in the reference implementations). A step whose loss
  or any term is not finite leaves the state unchanged and reports
  `finite = False`; the loop stops the run there, naming the term.
  """

  def train_step(state: TrainState, batch: Batch, rng: jax.Array):
    rng = jax.random.fold_in(rng, state.step)
    dropout_rng, method_rng, view_rng = jax.random.split(rng, 3)
    source, target = batch["source"], batch["target"]
    source_labels = source["tags"] if "tags" in source else source["label"]
    source_mask = token_mask(source, source_labels)
    source_inputs = model_inputs(source, spec)
    if word_dropout:
      # Its own stream, so the other random draws match runs without it.
      tokens, _ = inputs_lib.words_to_unk(
          source_inputs[0], jax.random.fold_in(rng, _WORD_DROPOUT_STREAM), word_dropout,
          text.UNK_ID)
      source_inputs = (tokens, *source_inputs[1:])
    num_source = source_inputs[0].shape[0]

    def loss_fn(params):
      variables = {"params": params["model"]}
      if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
      teacher_inputs = None
      if method.uses_target:
        target_inputs = model_inputs(target, spec)
        if method.target_views is not None:
          target_inputs, teacher_inputs = method.target_views(target_inputs, view_rng)
        else:
          teacher_inputs = target_inputs
        if teacher_vocabulary is not None:
          tokens = teacher_inputs[0]
          teacher_inputs = (jnp.where(jnp.asarray(teacher_vocabulary)[tokens], tokens,
                                      text.UNK_ID), *teacher_inputs[1:])
        inputs = _concat_inputs(source_inputs, target_inputs)
        num_target = target_inputs[0].shape[0]
      else:
        target_inputs, inputs, num_target = None, source_inputs, None
      (logits, features), updates = model.apply(
          variables, *inputs, train=True, return_features=True,
          rngs={"dropout": dropout_rng}, mutable=["batch_stats"],
          **_domain_kwargs(spec, num_source, num_target))
      source_length = source_labels.shape[1] if source_labels.ndim == 2 else None
      outputs = Outputs(
          source_logits=_crop(logits[:num_source], source_length),
          source_features=_crop(features[:num_source], source_length),
          source_labels=source_labels, source_mask=source_mask)
      if target_inputs is not None:
        target_length = (target_inputs[0].shape[1] if source_length is not None else None)
        target_mask = (jnp.arange(target_length)[None, :] < target["lengths"][:, None]
                       if target_length is not None else None)
        teacher_logits = None
        if method.teacher is not None:
          teacher_logits = method.teacher.logits(
              state.untrained["teacher"], tuple(teacher_inputs),
              functools.partial(_apply_inference, model, spec))
        elif method.ema_decay is not None:
          teacher_variables = {"params": state.ema["params"]}
          if state.ema["batch_stats"]:
            teacher_variables["batch_stats"] = state.ema["batch_stats"]
          teacher_logits = model.apply(
              teacher_variables, *teacher_inputs, train=False,
              **({"domain": "target"} if spec.domain_specific_bn else {}))
        outputs = outputs.replace(
            target_logits=_crop(logits[num_source:], target_length),
            target_features=_crop(features[num_source:], target_length),
            target_mask=target_mask, teacher_target_logits=teacher_logits)
      if spec.task_loss is not None:  # e.g. a CRF's negative log-likelihood
        task, correct, count = spec.task_loss(
            model, variables, outputs.source_logits, source_labels, source_mask)
      else:
        task, correct, count = _task_loss(outputs.source_logits, source_labels, source_mask)
      terms = dict(method.terms(outputs, params["aux"], method_rng, state.step))
      if method.model_terms is not None:  # e.g. language modelling on both domains
        terms.update(method.model_terms(model, variables, inputs, params["aux"],
                                        dropout_rng))
      weighted = {name: (method.weights[name], value) for name, value in terms.items()}
      if regularizer is not None:
        weighted.update({name: (1.0, value) for name, value
                         in regularizer(params["model"], state.untrained).items()})
      total, logs = losses.combine(method.task_weight * task, weighted, state.step)
      return total, (logs, updates.get("batch_stats", {}), correct, count)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (total, (logs, batch_stats, correct, count)), grads = grad_fn(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema
    if method.ema_decay is not None:
      ema = optax.incremental_update(
          {"params": params["model"], "batch_stats": batch_stats}, state.ema,
          1.0 - method.ema_decay)
    untrained = state.untrained
    if method.teacher is not None and method.teacher.refresh is not None:
      untrained = dict(untrained, teacher=method.teacher.refresh(
          untrained["teacher"], {"params": params["model"], "batch_stats": batch_stats},
          ema, state.step + 1))
    grad_norm = optax.tree.norm(grads)
    # Gradients can turn NaN while the loss stays finite (e.g. max/ReLU drop a
    # NaN activation forward but not backward): check both.
    finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in logs.values()])) & jnp.isfinite(grad_norm)
    updated = state.replace(params=params, batch_stats=batch_stats,
                            opt_state=opt_state, ema=ema, untrained=untrained)
    kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
    metrics = dict(logs, learning_rate=lr_schedule(state.step), grad_norm=grad_norm,
                   source_train_correct=correct, source_train_count=count,
                   finite=finite)
    for name, schedule in method.logged_schedules.items():
      metrics[f"schedule/{name}"] = schedule(state.step)
    return kept.replace(step=state.step + 1), metrics

  return train_step


def _apply_inference(model, spec: ModelSpec, variables, *inputs) -> jax.Array:
  """Target logits of `model` with `variables` (no dropout, batch-norm statistics fixed)."""
  variables = {name: value for name, value in variables.items() if value}
  return model.apply(variables, *inputs, train=False,
                     **({"domain": "target"} if spec.domain_specific_bn else {}))


def _crop(x: jax.Array, length: int | None) -> jax.Array:
  """Drops the common padding added by `_concat_inputs` from per-token outputs."""
  return x if length is None else x[:, :length]


def make_eval_step(model, spec: ModelSpec, num_classes: int, domain: str):
  """Builds `eval_step(params, batch_stats, batch) -> sums` for one domain's batches.

  Returns the confusion-matrix sum over the batch's real examples (or tokens),
  from which the host forms exact accuracies over all batches; text models
  also return `predictions`, `labels` and `valid` ([B] or [B, L]) for the
  host's macro-F1 and entity span scores, and taggers their `tokens` for the
  out-of-vocabulary scores. Predictions are the argmax, or `spec.predict`
  (e.g. Viterbi decoding with a CRF).
  """

  def eval_step(params, batch_stats, batch):
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    labels = batch["tags"] if "tags" in batch else batch["label"]
    logits = model.apply(variables, *model_inputs(batch, spec), train=False,
                         **({"domain": domain} if spec.domain_specific_bn else {}))
    valid = batch["mask"]
    mask = token_mask(batch, labels)
    if mask is not None:
      valid = valid[:, None] & mask
    if spec.predict is not None:
      predictions = spec.predict(model, variables, logits, batch["lengths"])
    else:
      predictions = jnp.argmax(logits, -1)
    weights = valid.astype(jnp.float32)
    true = jax.nn.one_hot(labels, num_classes) * weights[..., None]
    predicted = jax.nn.one_hot(predictions, num_classes)
    # confusion[i, j]: real examples (or tokens) of class i predicted as j.
    sums = {"confusion": jnp.einsum("...i,...j->ij", true, predicted)}
    if spec.modality == "text":
      sums.update(predictions=predictions.astype(jnp.int32), labels=labels, valid=valid)
      if labels.ndim == 2:
        sums["tokens"] = batch["tokens"]
    return sums

  return eval_step
