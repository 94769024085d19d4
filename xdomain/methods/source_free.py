"""Source-free adaptation: SHOT (Liang et al., ICML 2020).

Only the trained source model travels. Its source stage is an ordinary run
with a weight-normalised classifier and smoothed labels
(`experiments/digits/shot_source.flags`); the target stage starts from it
(`--init_from`, `--restore='.*'`), keeps the classifier, the source
hypothesis, fixed (`--freeze='head/.*'`) and trains the feature extractor on
the target alone:

    loss = adapt_weight * IM(target logits)
         + shot_pseudo_weight * CE(target logits, centroid pseudo-labels)

The pseudo-labels of the whole target training split are recomputed from the
model every target epoch (`base.TargetLabels`). The run never opens the
source domain's data (`Method.uses_source` is False): no source batches, no
source test metrics, no validators that read source rows.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import optax

from xdomain import data
from xdomain import losses
from xdomain import transfer
from xdomain import workdir as workdir_lib
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.methods import base

SOURCE_FLAGS = "experiments/digits/shot_source.flags"
# The classifier's parameters, which SHOT restores and freezes.
_HEAD_PATHS = ("head/logits/direction", "head/logits/scale", "head/logits/bias")
_TASKS = ("image_classification", "text_classification")


def _pseudo_labels(features: jax.Array, logits: jax.Array) -> jax.Array:
  return losses.centroid_pseudo_labels(features, jax.nn.softmax(logits.astype(jnp.float32)))


def make_shot(config: Config) -> base.Method:
  """Information maximisation + centroid pseudo-labels, on the target only."""
  rows = data.domain_info(config.target).split_sizes["train"]
  every = config.shot_refresh_every or math.ceil(rows / config.batch_size)
  with_pseudo_labels = config.shot_pseudo_weight > 0  # 0: SHOT-IM

  def terms(outputs, aux_params, rng, step):
    del aux_params, rng, step
    logits = outputs.target_logits
    values = {"information_maximization": losses.information_maximization(logits)}
    if with_pseudo_labels:
      values["pseudo_label"] = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
          logits.astype(jnp.float32), outputs.target_labels))
    return values

  weights = {"information_maximization": base.adaptation_weight(config)}
  target_labels = None
  if with_pseudo_labels:
    weights["pseudo_label"] = config.shot_pseudo_weight
    target_labels = base.TargetLabels(every=every, compute=_pseudo_labels)
  return base.Method(name="shot", terms=terms, weights=weights, task_weight=0.0,
                     uses_source=False, target_labels=target_labels)


def validate_config(config: Config, task: str) -> None:
  """Raises `ConfigError` for a SHOT run that cannot work, naming the fix."""
  if task not in _TASKS:
    raise ConfigError(f"--method=shot adapts classifiers; --source={config.source} is {task}.")
  if not config.init_from:
    raise ConfigError(
        "--method=shot adapts a trained source model: set --init_from=<workdir of a run of"
        f" {SOURCE_FLAGS}> (weight-normalised classifier, smoothed labels).")
  # The config.json of the run that --init_from names (its workdir or a checkpoint).
  saved = workdir_lib.read_config(transfer.workdir_of(config.init_from))
  if saved is not None and not saved.get("weight_norm_head"):
    raise ConfigError(
        f"--init_from={config.init_from} has no weight-normalised classifier, which SHOT"
        f" keeps as the source hypothesis: train the source model with {SOURCE_FLAGS}"
        " (--weight_norm_head --label_smoothing=0.1).")
  if saved is not None and saved.get("source") != config.source:
    raise ConfigError(
        f"--init_from={config.init_from} was trained on {saved.get('source')}, not"
        f" --source={config.source}: set --source={saved.get('source')} (its label set;"
        " its data is never read).")
  if not config.weight_norm_head:
    raise ConfigError("--method=shot needs --weight_norm_head, as the source model it adapts.")
  for flag, role in (("restore", "restored from the source model"),
                     ("freeze", "kept fixed (the source hypothesis)")):
    pattern = getattr(config, flag) or ""
    if not all(re.fullmatch(pattern, path) for path in _HEAD_PATHS):
      raise ConfigError(
          f"--method=shot: the classifier (head/...) must be {role}; --{flag}={pattern!r}"
          f" misses it. Use --restore='.*' --freeze='head/.*' (experiments/digits/shot.flags).")
  if config.source_val_fraction:
    raise ConfigError("--source_val_fraction holds out source rows; --method=shot reads no"
                      " source data. Leave it at 0.")
  if config.plots:
    raise ConfigError("--plots draws the source domain's test features, which --method=shot"
                      " never reads; plot the source run instead.")
  if config.target_labelled_fraction:
    raise ConfigError("--target_labelled_fraction trains on target labels; --method=shot is"
                      " unsupervised on the target.")
