"""What a task is: everything that differs between kinds of problems.

The train step, the evaluator and the experiment are written once; a task
tells them how a batch becomes model inputs, labels and a mask of what counts,
what the supervised loss is, how the model is built for its inputs, which
random views a consistency method sees, and which metrics evaluation reports.
A new kind of problem is one new module here plus its entry in `TASKS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xdomain.config import Config
from xdomain.models.zoo import ModelSpec

Part = Mapping[str, jax.Array]  # one domain's part of a batch
Inputs = tuple[jax.Array, ...]  # positional model inputs


class Task:
  """The behaviour tasks share (one output per example); subclasses fill in
  their inputs and override what differs.

  Attributes:
    name: the task name that models declare (`ModelSpec.tasks`).
    label_key: the batch key of the supervision.
    scores_unseen_words: `metrics` takes the source's vocabulary, to score
      the words that the source never labelled apart.
    headline: the metric the console reports after each evaluation.
    has_validators: the model gives class logits per example (or position),
      which `xdomain.evaluate.validators` score.
    source_val_scores: task metrics that are also validators on the held-out
      source split (`source_<name>`): where accuracy is not the task's score,
      or there are no logits to score (detection's AP50).
  """

  name = ""
  label_key = "label"
  scores_unseen_words = False
  headline = "accuracy"
  has_validators = True
  source_val_scores: tuple[str, ...] = ()

  def validate_config(self, config: Config) -> None:
    """Raises `ConfigError` for flags this task cannot take (default: none)."""
    del config

  def source_val_validators(self, label_names: Sequence[str]) -> tuple[str, ...]:
    """The `source_val_scores` that the metrics of domains with these labels
    have."""
    del label_names
    return self.source_val_scores

  # The experiment: preprocessing, model, a sample batch to initialise it.

  def make_preprocess(self, config: Config, workdir: str, *, write: bool):
    """The loader's preprocessor (`xdomain.data.Preprocessor`) of the run."""
    raise NotImplementedError

  def buckets(self, config: Config) -> tuple[int, ...] | None:
    """Padded sequence lengths of batches; None for fixed-shape inputs."""
    del config
    return None

  def model_kwargs(self, config: Config, preprocess) -> dict[str, Any]:
    """What the model builder needs to know of the inputs (`ModelSpec.build`)."""
    del config, preprocess
    return {}

  def model_kwargs_of_run(self, config: Config, workdir: str) -> dict[str, Any]:
    """`model_kwargs` of a finished run in `workdir` (a teacher)."""
    del config, workdir
    return {}

  def check_teacher(self, teacher: Config, student: Config, teacher_workdir: str) -> None:
    """Raises `ConfigError` if the student's batches cannot feed the teacher."""
    raise NotImplementedError

  def sample_part(self, config: Config) -> dict[str, np.ndarray]:
    """A one-row labelled part with the run's input shapes (to initialise)."""
    raise NotImplementedError

  # The step.

  def model_inputs(self, part: Part) -> Inputs:
    """The positional model inputs held by one domain's part of a batch."""
    raise NotImplementedError

  def mask(self, part: Part) -> jax.Array | None:
    """[B, L] mask of the real positions of per-position outputs; None for one
    output per example."""
    del part
    return None

  def join(self, source: Inputs, target: Inputs) -> Inputs:
    """Both domains' inputs concatenated on the batch axis (one forward pass)."""
    return tuple(jnp.concatenate([s, t], axis=0) for s, t in zip(source, target))

  def split(self, joint: jax.Array, num_source: int, source: Part, target: Part
            ) -> tuple[jax.Array, jax.Array]:
    """Model outputs of `join`ed inputs -> (source outputs, target outputs)."""
    del source, target
    return joint[:num_source], joint[num_source:]

  def labelled_view(self, inputs: Inputs, rng: jax.Array, config: Config) -> Inputs:
    """The labelled inputs as trained on (e.g. word dropout); default unchanged."""
    del rng, config
    return inputs

  def teacher_view(self, inputs: Inputs, seen: jax.Array | None) -> Inputs:
    """What a teacher reads of the target (`--teacher_unseen_as_unk`)."""
    del seen
    return inputs

  def consistency_views(self, inputs: Inputs, rng: jax.Array, config: Config
                        ) -> tuple[Inputs, Inputs]:
    """(student, teacher) random views of the target for a consistency method."""
    raise NotImplementedError

  def strong_view(self, inputs: Inputs, rng: jax.Array, config: Config) -> Inputs:
    """A strongly augmented random view of the inputs (FixMatch's student view),
    whose labels are those of the inputs."""
    raise NotImplementedError(f"the {self.name} task has no strong augmentation.")

  def supervised_loss(self, spec: ModelSpec, model, variables, logits: jax.Array,
                      labels: jax.Array, mask: jax.Array | None, *,
                      label_smoothing: float = 0.0):
    """(mean loss, correct, count) over the labelled examples (or positions);
    cross-entropy against labels smoothed by `label_smoothing`."""
    if spec.task_loss is not None:  # e.g. a CRF's negative log-likelihood
      return spec.task_loss(model, variables, logits, labels, mask)
    if label_smoothing:
      targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
      per_example = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
    else:
      per_example = optax.softmax_cross_entropy_with_integer_labels(
          logits.astype(jnp.float32), labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    if mask is None:
      return jnp.mean(per_example), jnp.sum(correct), jnp.float32(labels.size)
    mask = mask.astype(jnp.float32)
    count = jnp.sum(mask)
    return (jnp.sum(per_example * mask) / jnp.maximum(count, 1.0),
            jnp.sum(correct * mask), count)

  # Evaluation.

  def eval_sums(self, spec: ModelSpec, model, variables, logits: jax.Array, batch: Part,
                num_classes: int) -> dict[str, jax.Array]:
    """Device-side outputs of one evaluation batch.

    `confusion` (real examples or positions of class i predicted as j) is
    summed over batches on the device; the other entries (per-position tasks)
    are fetched per batch for `metrics`.
    """
    labels = batch[self.label_key]
    valid = batch["mask"]
    mask = self.mask(batch)
    if mask is not None:
      valid = valid[:, None] & mask
    predictions = (spec.predict(model, variables, logits, batch["lengths"])
                   if spec.predict is not None else jnp.argmax(logits, -1))
    weights = valid.astype(jnp.float32)
    true = jax.nn.one_hot(labels, num_classes) * weights[..., None]
    predicted = jax.nn.one_hot(predictions, num_classes)
    sums = {"confusion": jnp.einsum("...i,...j->ij", true, predicted)}
    sums.update(self.eval_outputs(batch, predictions, valid))
    return sums

  def eval_outputs(self, batch: Part, predictions: jax.Array, valid: jax.Array
                   ) -> dict[str, jax.Array]:
    """Per-batch outputs that `metrics` needs beyond the confusion matrix."""
    del batch, predictions, valid
    return {}

  def metrics(self, confusion: np.ndarray, outputs: Sequence[Mapping[str, np.ndarray]],
              label_names: Sequence[str], *, source_vocabulary: np.ndarray | None
              ) -> dict[str, Any]:
    """A split's scores: accuracy, per-class accuracy and macro-F1 of the
    confusion matrix (`outputs` unused by classification)."""
    del outputs, label_names, source_vocabulary
    return confusion_metrics(confusion)


def confusion_metrics(confusion: np.ndarray) -> dict[str, Any]:
  """Accuracy, per-class accuracy and macro-F1 of a confusion matrix.

  Macro-F1 leaves out classes that occur neither among the labels nor among
  the predictions (as `evaluate.macro_f1` and scikit-learn do).
  """
  confusion = np.asarray(confusion, np.float64)
  true, predicted, hits = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion)
  present = (true + predicted) > 0
  f1 = 2.0 * hits[present] / (true + predicted)[present]
  return {"accuracy": float(hits.sum() / confusion.sum()),
          "per_class_accuracy": (hits / np.maximum(true, 1.0)).tolist(),
          "macro_f1": float(np.mean(f1))}
