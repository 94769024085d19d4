"""The evaluator of a run: test metrics of both domains from one compiled program.

The test batches are built once and kept on the devices, so each evaluation
costs only the forward passes. One program serves every batch of one shape,
whichever domain it comes from (the domain is an argument, for models with
domain-specific batch norm): image runs compile it once, text runs once per
length bucket. Classification sums its confusion matrix on the devices over
the batches (exact accuracies from sums and counts); a task that needs more
(a tagger's entity spans) receives its per-batch outputs on the host.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from xdomain import data
from xdomain.data import subsets
from xdomain.evaluate import detection
from xdomain.evaluate import validators as validators_lib

# The ids of the two domains in the models' domain-specific batch norm.
DOMAIN_IDS = {"source": 0, "target": 1}
# Rows (or tokens) of each domain that the validators read at most.
VALIDATION_ROWS = 1000


class Evaluator:
  """Test metrics of a run's model on the source and target test splits.

  Args:
    experiment: the run (`xdomain.train.Experiment`): its `config`, `task`,
      `model`, `spec`, `source_info`, `preprocess`, `buckets`, `replicated`
      sharding, `global_batch` and, for taggers, `source_vocabulary`.
  """

  def __init__(self, experiment):
    self._experiment = experiment
    config = experiment.config
    # A source-free run never opens the source domain's data.
    parts = ((("source", config.source),) if experiment.method.uses_source else ()) + (
        ("target", config.target),)
    self._batches = {
        part: [experiment.global_batch(batch) for batch in data.eval_batches(
            domain, "test", batch_size=config.eval_batch_size,
            preprocess=experiment.preprocess, data_dir=config.data_dir,
            buckets=experiment.buckets)]
        for part, domain in parts}
    model, spec, task = experiment.model, experiment.spec, experiment.task
    num_classes = experiment.source_info.num_classes

    def eval_step(params, batch_stats, batch, domain):
      variables = {"params": params, "batch_stats": batch_stats}
      ids = jnp.full(batch["mask"].shape[:1], domain, jnp.int32)
      logits = model.apply(variables, *task.model_inputs(batch), train=False,
                           **({"domain": ids} if spec.domain_specific_bn else {}))
      return task.eval_sums(spec, model, variables, logits, batch, num_classes)

    def outputs(params, batch_stats, batch, domain, with_sums=False):
      """Logits, features, which rows (positions) are real and their labels,
      replicated: every process reads the whole batch's. `with_sums` adds the
      task's `eval_sums` of the same forward pass (`sums`)."""
      variables = {"params": params, "batch_stats": batch_stats}
      ids = jnp.full(batch["mask"].shape[:1], domain, jnp.int32)
      logits, feats = model.apply(variables, *task.model_inputs(batch), train=False,
                                  return_features=True,
                                  **({"domain": ids} if spec.domain_specific_bn else {}))
      real = batch["mask"]
      positions = task.mask(batch)
      if positions is not None:
        real = real[:, None] & positions
      out = {"logits": logits, "features": feats, "real": real}
      if task.label_key in batch:
        out["labels"] = batch[task.label_key]
      if with_sums:
        out["sums"] = task.eval_sums(spec, model, variables, logits, batch, num_classes)
      return out

    self._eval_step = jax.jit(eval_step, out_shardings=experiment.replicated)
    self._outputs = jax.jit(outputs, out_shardings=experiment.replicated,
                            static_argnames="with_sums")
    self._replicate = jax.jit(lambda tree: tree, out_shardings=experiment.replicated)
    self._skipped_validators = set()

  def evaluate(self, state) -> dict[str, Any]:
    """Test metrics `{source,target}_test_<name>` of the model (target only in
    a source-free run), and with an `ema_` prefix those of its EMA (the mean
    teacher), where the method keeps one."""
    headline = self._experiment.task.headline  # accuracy; ap50 for detection
    values = self.scores(state.params["model"], state.batch_stats)
    logging.info("eval: %s", self._summary(values, headline))
    if state.ema:
      ema = self.scores(state.ema["params"], state.ema["batch_stats"])
      values.update({f"ema_{name}": value for name, value in ema.items()})
      logging.info("eval (EMA): %s", self._summary(ema, headline))
    return values

  def _summary(self, values: dict[str, Any], headline: str) -> str:
    return ", ".join(f"{part} test {headline} {values[f'{part}_test_{headline}']:.4f}"
                     for part in self._batches)

  def scores(self, params, batch_stats) -> dict[str, Any]:
    """`{source,target}_test_<name>` of the task's metrics for these variables."""
    values = {}
    for part, batches in self._batches.items():
      scores = self._task_metrics(batches, part, params, batch_stats)
      values.update({f"{part}_test_{name}": value for name, value in scores.items()})
    return values

  def _task_metrics(self, batches: list, part: str, params, batch_stats) -> dict[str, Any]:
    """The task's metrics over `batches` of the `part` ('source' or 'target') domain."""
    domain = jnp.int32(DOMAIN_IDS[part])
    return self._metrics_of_sums(
        [self._eval_step(params, batch_stats, batch, domain) for batch in batches])

  def _metrics_of_sums(self, batch_sums: list[dict[str, Any]]) -> dict[str, Any]:
    """The task's metrics from the `eval_sums` of each batch of one pass."""
    experiment = self._experiment
    task = experiment.task
    vocabulary = experiment.source_vocabulary if task.scores_unseen_words else None
    confusion, outputs = None, []
    for sums in batch_sums:
      sums = dict(sums)
      if "confusion" in sums:  # not for detection
        confusion = sums.pop("confusion") + (0 if confusion is None else confusion)
      if sums:
        outputs.append(sums)
    confusion, outputs = jax.device_get((confusion, outputs))
    return task.metrics(None if confusion is None else np.asarray(confusion, np.float64),
                        outputs, experiment.source_info.label_names,
                        source_vocabulary=vocabulary)

  def features(self, part: str, params, batch_stats, *, limit: int) -> np.ndarray:
    """Features [n, D] of the first `limit` real examples (tokens, for taggers)
    of a test split."""
    collected, count = [], 0
    domain = jnp.int32(DOMAIN_IDS[part])
    for batch in self._batches[part]:
      if count >= limit:
        break
      outputs = jax.device_get(self._outputs(params, batch_stats, batch, domain))
      real = np.asarray(outputs["features"])[np.asarray(outputs["real"])]
      collected.append(real)
      count += len(real)
    return np.concatenate(collected)[:limit]

  def detections(self, part: str, params, batch_stats, *, limit: int
                 ) -> list[dict[str, np.ndarray]]:
    """Detection runs: the first `limit` real images of a test split, each with
    `image` (as the model saw it), `true_boxes`, `true_classes` and the model's
    `boxes`, `scores` and `classes` after NMS (`evaluate.detection.detect`)."""
    images = []
    domain = jnp.int32(DOMAIN_IDS[part])
    for batch in self._batches[part]:
      if len(images) >= limit:
        break
      sums, pixels = jax.device_get((self._eval_step(params, batch_stats, batch, domain),
                                     self._replicate(batch)["image"]))
      found = itertools.islice(detection.per_image(sums), limit - len(images))
      for k, (true_boxes, true_classes), (boxes, scores, classes) in found:
        images.append({"image": pixels[k], "true_boxes": true_boxes,
                       "true_classes": true_classes, "boxes": boxes, "scores": scores,
                       "classes": classes})
    return images

  @functools.cached_property
  def _target_train_batches(self) -> list:
    """Every row of the target's training split, its label keys dropped."""
    experiment = self._experiment
    config = experiment.config
    hidden = experiment.target_info.label_keys
    return [experiment.global_batch({k: v for k, v in batch.items() if k not in hidden})
            for batch in data.eval_batches(
                config.target, "train", batch_size=config.eval_batch_size,
                preprocess=experiment.preprocess, data_dir=config.data_dir,
                buckets=experiment.buckets)]

  def target_train_outputs(self, state) -> tuple[jax.Array, jax.Array]:
    """(features [n, D], logits [n, C]) of the model (inference mode) on the
    target's whole training split, in its order: what `TargetLabels` reads."""
    params, batch_stats = state.params["model"], state.batch_stats
    domain = jnp.int32(DOMAIN_IDS["target"])
    features, logits = [], []
    for batch in self._target_train_batches:
      outputs = self._outputs(params, batch_stats, batch, domain)
      features.append(outputs["features"])
      logits.append(outputs["logits"])
    rows = self._experiment.target_info.split_sizes["train"]
    return (jnp.concatenate(features)[:rows], jnp.concatenate(logits)[:rows])

  @functools.cached_property
  def _source_val_batches(self) -> list:
    """The held-out part of the labelled training split (`source_val`, with
    labels; none without --source_val_fraction): the validators' source rows.
    With --target_labelled_fraction, part of the few target labels."""
    experiment = self._experiment
    config = experiment.config
    if not config.source_val_fraction:
      return []
    labelled = experiment.labelled_domain
    _, rows = subsets.labelled_rows(
        data.load_domain(labelled, "train", data_dir=config.data_dir),
        fraction=experiment.labelled_fraction, holdout=config.source_val_fraction,
        seed=config.seed)
    return [experiment.global_batch(batch) for batch in data.eval_batches(
        labelled, "train", batch_size=config.eval_batch_size,
        preprocess=experiment.preprocess, data_dir=config.data_dir,
        buckets=experiment.buckets, rows=rows)]

  @functools.cached_property
  def _target_validation_batches(self) -> list:
    """The first VALIDATION_ROWS of the target's training split, its label keys
    dropped so that nothing can read them: the validators' target rows."""
    experiment = self._experiment
    config = experiment.config
    count = min(VALIDATION_ROWS, experiment.target_info.split_sizes["train"])
    hidden = experiment.target_info.label_keys
    return [
        experiment.global_batch({k: v for k, v in batch.items() if k not in hidden})
        for batch in data.eval_batches(
            config.target, "train", batch_size=config.eval_batch_size,
            preprocess=experiment.preprocess, data_dir=config.data_dir,
            buckets=experiment.buckets, rows=np.arange(count))]

  def _real_outputs(self, part: str, params, batch_stats, *, with_sums: bool = False
                    ) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Logits, features (and labels of `source_val`) of the real rows (tokens,
    for per-position tasks) of one validation part, at most VALIDATION_ROWS;
    and with `with_sums` each batch's `eval_sums` from the same pass (the
    task's metrics of the whole part), else []."""
    domain = jnp.int32(DOMAIN_IDS["target" if part == "target" else "source"])
    batches = self._target_validation_batches if part == "target" else self._source_val_batches
    collected = {"logits": [], "features": [], "labels": []}
    batch_sums = []
    for batch in batches:
      outputs = jax.device_get(
          self._outputs(params, batch_stats, batch, domain, with_sums=with_sums))
      if with_sums:
        batch_sums.append(outputs.pop("sums"))
      real = np.asarray(outputs.pop("real"))
      for key, value in outputs.items():
        collected[key].append(np.asarray(value)[real])
    out = {k: np.concatenate(v) for k, v in collected.items() if v}
    if out and len(out["logits"]) > VALIDATION_ROWS:  # tokens: a fixed sample
      keep = np.sort(np.random.default_rng(0).permutation(len(out["logits"]))[:VALIDATION_ROWS])
      out = {k: v[keep] for k, v in out.items()}
    return out, batch_sums

  def validators(self, state) -> dict[str, float]:
    """`validator/<name>` of the model (`xdomain.evaluate.validators`, higher
    is better), from the target's unlabelled training rows and the held-out
    source rows; a validator that cannot be computed (no --source_val_fraction)
    is left out, with one log line the first time.

    Where IWV or DEV was computed, `diagnostic/importance_weight_ess` and
    `diagnostic/importance_weight_mean` say how far their weights can be
    trusted (`ValidatorInputs.weight_diagnostics`).

    Beside them, the task's `source_val_scores` on `source_val`
    (`validator/source_<name>`), the source-risk validator in the task's own
    metric: span F1 for entity tags; detection, without class logits, has only
    `validator/source_ap50`.
    """
    experiment = self._experiment
    task = experiment.task
    params, batch_stats = state.params["model"], state.batch_stats
    values = {}
    scored = (task.source_val_validators(experiment.source_info.label_names)
              if self._source_val_batches else ())
    if not task.has_validators:
      if scored:
        scores = self._task_metrics(self._source_val_batches, "source", params, batch_stats)
        values = {f"validator/source_{name}": scores[name] for name in scored}
      return values
    # One pass over source_val gives the validators' logits and the task's metrics.
    source, source_sums = self._real_outputs("source_val", params, batch_stats,
                                             with_sums=bool(scored))
    if scored:
      scores = self._metrics_of_sums(source_sums)
      values = {f"validator/source_{name}": scores[name] for name in scored}
    target, _ = self._real_outputs("target", params, batch_stats)
    inputs = validators_lib.ValidatorInputs(
        source_val_logits=source.get("logits"), source_val_labels=source.get("labels"),
        source_val_features=source.get("features"), target_logits=target["logits"],
        target_features=target["features"], seed=experiment.config.seed)
    for name, validator in validators_lib.VALIDATORS.items():
      try:
        values[f"validator/{name}"] = validator(inputs)
      except ValueError as e:
        if name not in self._skipped_validators:
          self._skipped_validators.add(name)
          logging.info("validator %s skipped: %s", name, e)
    if any(f"validator/{name}" in values for name in validators_lib.WEIGHTED):
      values.update({f"diagnostic/{name}": value
                     for name, value in inputs.weight_diagnostics().items()})
    return values

