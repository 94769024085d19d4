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

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from xdomain import checkpoint
from xdomain import data
from xdomain import losses
from xdomain import tasks
from xdomain import workdir as workdir_lib
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.methods import base
from xdomain.models import zoo


def _teacher_runner(workdir: str, config: Config, task, info):
  """`(variables, inputs, apply_student) -> logits` of the run in `workdir`."""
  spec = zoo.MODELS[config.model]
  model = spec.build(config, info.num_classes, **task.model_kwargs_of_run(config, workdir))
  kwargs = {"domain": "target"} if spec.domain_specific_bn else {}

  def run(variables, inputs, apply_student):
    del apply_student  # another model
    return model.apply(variables, *inputs, train=False, **kwargs)

  return run


def load_teacher_config(workdir: str) -> Config:
  """The `Config` of the run in `workdir` (its `config.json`, whose flags are
  the latest ones if it was resumed with others: its `config_history` is left out)."""
  saved = workdir_lib.read_config(workdir)
  if saved is None:
    raise FileNotFoundError(
        f"no config.json in --teacher={workdir!r}: give the --workdir of a run of"
        " experiments/main.py.")
  return Config.from_dict(saved)


def make_distill(config: Config, *, alignments: Mapping[str, Callable[[Config], base.Method]]
                 ) -> base.Method:
  """Source cross-entropy + distill_weight * T^2 KL(teacher || student) on the target.

  `alignments`: the methods that `--distill_align` may name.
  """
  teacher_config = load_teacher_config(config.teacher)
  info = data.domain_info(config.source)
  teacher_info = data.domain_info(teacher_config.source)
  if teacher_info.label_names != info.label_names:
    raise ConfigError(
        f"the teacher in {config.teacher} predicts {list(teacher_info.label_names)}"
        f" ({teacher_config.source}), the student {list(info.label_names)}; distil"
        " between models of one task.")
  task, teacher_task = tasks.for_domain(info), tasks.for_domain(teacher_info)
  if teacher_task is not task:
    raise ConfigError(
        f"the teacher's --model={teacher_config.model} does {teacher_task.name}, the"
        f" student's --model={config.model} {task.name}.")
  task.check_teacher(teacher_config, config, config.teacher)
  run_teacher = _teacher_runner(config.teacher, teacher_config, teacher_task, teacher_info)
  variables = checkpoint.load_variables(config.teacher)

  align = None
  if config.distill_align:
    if config.distill_align not in alignments:
      raise ConfigError(f"--distill_align={config.distill_align!r} is not one of"
                        f" {', '.join(sorted(alignments))}.")
    align = alignments[config.distill_align](config)
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
  threshold = config.confidence_threshold
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
    loss, kept = losses.pseudo_label_loss(student, teacher, confidence_threshold=threshold,
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
