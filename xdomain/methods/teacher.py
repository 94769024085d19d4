"""Teacher ("proxy") methods: distillation from a trained model, and pseudo-labelling.

Both keep a teacher that is not trained by the optimizer (`base.Teacher`,
its state in `TrainState.untrained['teacher']`, checkpointed so that resume
is exact) and run it on the target part of every batch inside the step:

- `distill` (`--teacher=<workdir>`): any trained xdomain model, possibly of
  another architecture (a CNN teacher for an RNN student, a large model for a
  small one), fixed for the whole run; the student matches its tempered
  distribution on the target (`losses.distillation`, T^2 scaling), on top of
  the source cross-entropy and, with `--distill_align`, an alignment method's
  terms.
- `pseudo_label`: self-training; the teacher is a copy of the student (or of
  its EMA, `--teacher_source=ema`) refreshed every `--teacher_refresh_every`
  steps, its confident predictions (`--confidence_threshold`) are the target
  labels, optionally class-balanced (`--class_balance`).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp

from xdomain import losses
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.methods import base


def class_balanced_weights(teacher_logits: jax.Array, keep: jax.Array) -> jax.Array:
  r"""Per-example weights that give every pseudo-class the same total weight.

  .. math::
    w_i = [i \text{ kept}] \frac{K}{C_+ \, n_{\hat y_i}}

  with K kept examples, n_c of them with pseudo-label c, and C_+ classes with
  n_c > 0; the weights sum to K, so `sum(w * loss) / N` has the scale of the
  unweighted mean, but a class the teacher over-predicts no longer dominates
  (the failure mode of self-training under label shift, Zou et al. 2018).

  Args:
    teacher_logits: [N, C] teacher logits.
    keep: [N] boolean mask of kept (confident, valid) examples.

  Returns:
    [N] float32 weights, 0 where not kept.
  """
  if teacher_logits.ndim != 2 or keep.shape != teacher_logits.shape[:1]:
    raise ValueError(
        f"teacher_logits must be [N, C] and keep [N]; got {teacher_logits.shape} and"
        f" {keep.shape}.")
  labels = jnp.argmax(teacher_logits, axis=-1)
  kept = keep.astype(jnp.float32)
  counts = jnp.sum(jax.nn.one_hot(labels, teacher_logits.shape[-1]) * kept[:, None], axis=0)
  present = jnp.sum(counts > 0)
  total = jnp.sum(kept)
  per_class = total / (jnp.maximum(present, 1) * jnp.maximum(counts, 1.0))
  return kept * per_class[labels]


def pseudo_label_loss(student_logits: jax.Array, teacher_logits: jax.Array, *,
                      confidence_threshold: float | None, class_balance: bool,
                      where: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Self-training loss over a batch and the fraction of examples kept.

  Cross-entropy to the teacher's argmax where its confidence is >= the
  threshold (`losses.pseudo_label`), summed (class-balanced weights with
  `class_balance`) and divided by the number of valid examples, as FixMatch.

  Args:
    student_logits: [N, C].
    teacher_logits: [N, C] (detached inside).
    confidence_threshold: tau, or None to keep every example.
    class_balance: weight with `class_balanced_weights`.
    where: optional [N] mask of valid examples (real tokens).

  Returns:
    `(loss, kept_fraction)`, float32 scalars.
  """
  per_example, keep = losses.pseudo_label(
      student_logits, teacher_logits, confidence_threshold=confidence_threshold, where=where)
  weights = (class_balanced_weights(teacher_logits, keep) if class_balance
             else keep.astype(jnp.float32))
  valid = (jnp.float32(per_example.shape[0]) if where is None
           else jnp.maximum(jnp.sum(where.astype(jnp.float32)), 1.0))
  return jnp.sum(weights * per_example) / valid, jnp.sum(keep) / valid


def _teacher_runner(workdir: str, config: Config):
  """`(variables, inputs, apply_student) -> logits` of the run in `workdir`, and its spec."""
  # Imported here: xdomain.train imports xdomain.methods.
  from xdomain import data  # pylint: disable=g-import-not-at-top
  from xdomain.train import model_zoo  # pylint: disable=g-import-not-at-top
  spec = model_zoo.MODELS[config.model]
  info = data.domain_info(config.source)
  if spec.modality == "text":
    vocab_path = os.path.join(workdir, VOCAB_FILE)
    if not os.path.isfile(vocab_path):
      raise FileNotFoundError(f"the text teacher in {workdir} has no {VOCAB_FILE}.")
    with open(vocab_path, encoding="utf-8") as f:
      vocab_size = len(json.load(f)["tokens"])
    model = spec.build(config, info.num_classes, vocab_size=vocab_size, task=info.task)
  else:
    model = spec.build(config, info.num_classes)
  kwargs = {"domain": "target"} if spec.domain_specific_bn else {}

  def run(variables, inputs, apply_student):
    del apply_student  # another model
    variables = {k: v for k, v in variables.items() if v}
    return model.apply(variables, *inputs, train=False, **kwargs)

  return run, spec


def load_teacher_config(workdir: str) -> Config:
  """The `Config` of the run in `workdir` (its `config.json`)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"no config.json in --teacher={workdir!r}: give the --workdir of a run of"
        " experiments/main.py.")
  with open(path) as f:
    return Config.from_dict(json.load(f))


VOCAB_FILE = "vocab.json"  # a text run's vocabulary (xdomain/train/text_pipeline.py)
# Flags whose values must agree between teacher and student: the teacher
# reads the student's batches, so it needs the same inputs.
_SAME_INPUTS = ("image_size", "channels", "crop_to_content", "resolution", "normalize")


def make_distill(config: Config) -> base.Method:
  """Source cross-entropy + distill_weight * T^2 KL(teacher || student) on the target."""
  from xdomain import checkpoint  # pylint: disable=g-import-not-at-top
  from xdomain import data  # pylint: disable=g-import-not-at-top
  from xdomain import methods  # pylint: disable=g-import-not-at-top

  teacher_config = load_teacher_config(config.teacher)
  info = data.domain_info(config.source)
  teacher_info = data.domain_info(teacher_config.source)
  if teacher_info.label_names != info.label_names:
    raise ConfigError(
        f"the teacher in {config.teacher} predicts {list(teacher_info.label_names)}"
        f" ({teacher_config.source}), the student {list(info.label_names)}; distil"
        " between models of one task.")
  run_teacher, teacher_spec = _teacher_runner(config.teacher, teacher_config)
  from xdomain.train import model_zoo  # pylint: disable=g-import-not-at-top
  if teacher_spec.modality != model_zoo.MODELS[config.model].modality:
    raise ConfigError(
        f"the teacher's --model={teacher_config.model} reads {teacher_spec.modality}, the"
        f" student's --model={config.model} another modality.")
  if teacher_spec.modality == "image":
    differ = [f"--{n}: teacher {getattr(teacher_config, n)!r}, student {getattr(config, n)!r}"
              for n in _SAME_INPUTS if getattr(teacher_config, n) != getattr(config, n)]
    if differ:
      raise ConfigError(
          f"the teacher in {config.teacher} was trained on other inputs ({'; '.join(differ)});"
          " run the student with the teacher's preprocessing flags.")
  variables = checkpoint.load_variables(config.teacher)

  align = None
  if config.distill_align:
    if config.distill_align not in methods.METHODS:
      raise ConfigError(f"--distill_align={config.distill_align!r} is not a method.")
    align = methods.METHODS[config.distill_align](config)
    if (not align.uses_target or align.ema_decay is not None or align.teacher is not None
        or align.target_views is not None or align.train_on_target_labels):
      raise ConfigError(
          f"--distill_align={config.distill_align} is not an alignment method; use one of"
          " dann, cdan, dan, jan, coral, entropy, mcc.")
  temperature = config.distill_temperature

  def terms(outputs, aux_params, rng, step):
    student, mask = base.flatten_tokens(outputs.target_logits, outputs.target_mask)
    teacher, _ = base.flatten_tokens(outputs.teacher_target_logits, outputs.target_mask)
    per_example = losses.distillation(student, teacher, temperature=temperature, where=mask)
    values = {"distill": base.masked_mean(per_example, mask)}
    if align is not None:
      values.update(align.terms(outputs, aux_params, rng, step))
    return values

  weights = {"distill": config.distill_weight}
  if align is not None:
    weights.update(align.weights)
  teacher = base.Teacher(
      init=lambda student: jax.tree.map(jnp.asarray, variables),
      logits=run_teacher)
  return base.Method(name="distill", terms=terms, weights=weights, teacher=teacher,
                     init_aux=align.init_aux if align is not None else None)


def make_pseudo_label(config: Config) -> base.Method:
  """Source cross-entropy + adaptation weight * confident pseudo-label cross-entropy."""
  threshold = config.confidence_threshold or None
  every = config.teacher_refresh_every
  from_ema = config.teacher_source == "ema"

  def refresh(teacher, student, ema, step):
    new = ema if from_ema else student
    due = step % every == 0
    return jax.tree.map(lambda n, o: jnp.where(due, n, o), new, teacher)

  def terms(outputs, aux_params, rng, step):
    del aux_params, rng, step
    student, mask = base.flatten_tokens(outputs.target_logits, outputs.target_mask)
    teacher, _ = base.flatten_tokens(outputs.teacher_target_logits, outputs.target_mask)
    loss, kept = pseudo_label_loss(student, teacher, confidence_threshold=threshold,
                                   class_balance=config.class_balance, where=mask)
    return {"pseudo_label": loss, "pseudo_label_kept": kept}

  teacher = base.Teacher(
      init=lambda student: student,
      logits=lambda state, inputs, apply_student: apply_student(state, *inputs),
      refresh=refresh)
  return base.Method(
      name="pseudo_label", terms=terms,
      weights={"pseudo_label": base.adaptation_weight(config), "pseudo_label_kept": 0.0},
      teacher=teacher, ema_decay=config.ema_decay if from_ema else None)
