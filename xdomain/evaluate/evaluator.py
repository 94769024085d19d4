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

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from xdomain import data

# The ids of the two domains in the models' domain-specific batch norm.
DOMAIN_IDS = {"source": 0, "target": 1}


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
    self._batches = {
        part: [experiment.global_batch(batch) for batch in data.eval_batches(
            domain, "test", batch_size=config.eval_batch_size,
            preprocess=experiment.preprocess, data_dir=config.data_dir,
            buckets=experiment.buckets)]
        for part, domain in (("source", config.source), ("target", config.target))}
    model, spec, task = experiment.model, experiment.spec, experiment.task
    num_classes = experiment.source_info.num_classes

    def eval_step(params, batch_stats, batch, domain):
      variables = {"params": params}
      if batch_stats:
        variables["batch_stats"] = batch_stats
      ids = jnp.full(batch["mask"].shape[:1], domain, jnp.int32)
      logits = model.apply(variables, *task.model_inputs(batch), train=False,
                           **({"domain": ids} if spec.domain_specific_bn else {}))
      return task.eval_sums(spec, model, variables, logits, batch, num_classes)

    def features(params, batch_stats, batch, domain):
      variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
      ids = jnp.full(batch["mask"].shape[:1], domain, jnp.int32)
      _, feats = model.apply(variables, *task.model_inputs(batch), train=False,
                             return_features=True,
                             **({"domain": ids} if spec.domain_specific_bn else {}))
      return feats

    self._eval_step = jax.jit(eval_step, out_shardings=experiment.replicated)
    self._features = jax.jit(features, out_shardings=experiment.replicated)

  def evaluate(self, state) -> dict[str, Any]:
    """Test metrics `{source,target}_test_<name>` of the model, and with an
    `ema_` prefix those of its EMA (the mean teacher), where the method keeps one."""
    values = self.scores(state.params["model"], state.batch_stats)
    logging.info("eval: source test accuracy %.4f, target test accuracy %.4f",
                 values["source_test_accuracy"], values["target_test_accuracy"])
    if state.ema:
      ema = self.scores(state.ema["params"], state.ema["batch_stats"])
      values.update({f"ema_{name}": value for name, value in ema.items()})
      logging.info("eval (EMA): source test accuracy %.4f, target test accuracy %.4f",
                   ema["source_test_accuracy"], ema["target_test_accuracy"])
    return values

  def scores(self, params, batch_stats) -> dict[str, Any]:
    """`{source,target}_test_<name>` of the task's metrics for these variables."""
    experiment = self._experiment
    task = experiment.task
    vocabulary = experiment.source_vocabulary if task.scores_unseen_words else None
    values = {}
    for part, batches in self._batches.items():
      domain = jnp.int32(DOMAIN_IDS[part])
      confusion, outputs = None, []
      for batch in batches:
        sums = self._eval_step(params, batch_stats, batch, domain)
        confusion = sums.pop("confusion") + (0 if confusion is None else confusion)
        if sums:
          outputs.append(sums)
      confusion, outputs = jax.device_get((confusion, outputs))
      scores = task.metrics(np.asarray(confusion, np.float64), outputs,
                            experiment.source_info.label_names,
                            source_vocabulary=vocabulary)
      values.update({f"{part}_test_{name}": value for name, value in scores.items()})
    return values

  def features(self, part: str, params, batch_stats, *, limit: int) -> np.ndarray:
    """Features [n, D] of the first `limit` real examples (tokens, for taggers)
    of a test split."""
    collected, count = [], 0
    domain = jnp.int32(DOMAIN_IDS[part])
    for batch in self._batches[part]:
      if count >= limit:
        break
      features = np.asarray(self._features(params, batch_stats, batch, domain))
      real_rows = np.asarray(jax.device_get(batch["mask"]))
      if features.ndim == 3:  # per-token features [B, L, D]: keep real tokens
        lengths = np.asarray(jax.device_get(batch["lengths"]))
        real_rows = real_rows[:, None] & (np.arange(features.shape[1]) < lengths[:, None])
      real = features[real_rows]
      collected.append(real)
      count += len(real)
    return np.concatenate(collected)[:limit]
