"""Transfer learning: partial restore, freezing, per-group learning rates, L2-SP.

Parameters are selected by regular expressions over their '/'-joined paths
in the model, which start with `backbone/` or `head/` (e.g.
`backbone/conv_0/kernel`, `head/logits/bias`); a pattern must match a whole
path (`re.fullmatch`).

    --init_from=/tmp/pretrain --restore='backbone/.*'   restore the backbone
    --freeze='backbone/.*'                               and keep it fixed
    --backbone_lr_multiplier=0.1                         or train it slower
    --l2sp=0.01                                          or anchor it (L2-SP)
    --remove_domain_direction                            text: restored word vectors
                                                         lose the domains' axis
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from xdomain import checkpoint
from xdomain.data.text_pipeline import VOCAB_FILE
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.config import check_non_negative

Params = Any
# Optimizer groups of `param_labels`.
FROZEN, BACKBONE, OTHER = "frozen", "backbone", "other"
# The word vectors of the text models (xdomain/models/text.py).
EMBEDDING = "backbone/embed/embedding"


class RestoreError(ConfigError):
  """Restored parameters do not fit the model: the message names every path.

  A `ConfigError` (hence a `ValueError`), so `experiments/main.py` reports it
  in one line."""


def _flatten(tree: Params) -> dict[str, Any]:
  return flax.traverse_util.flatten_dict(tree, sep="/") if tree else {}


def _unflatten(flat: Mapping[str, Any]) -> Params:
  return flax.traverse_util.unflatten_dict(dict(flat), sep="/") if flat else {}


def _compile(pattern: str, flag: str) -> re.Pattern:
  try:
    return re.compile(pattern)
  except re.error as e:
    raise ConfigError(f"--{flag}={pattern!r} is not a regular expression: {e}.") from e


def restore_subset(params: Params, pretrained: Params, *, pattern: str
                   ) -> tuple[Params, list[str]]:
  """Replaces the parameters whose path fully matches `pattern` by pretrained ones.

  Args:
    params: the freshly initialised model parameters (nested dicts).
    pretrained: parameters of another run (nested dicts, e.g. from
      `checkpoint.load_params`); paths outside `pattern` are ignored.
    pattern: regular expression over '/'-joined paths, e.g. 'backbone/.*'.

  Returns:
    `(params, restored_paths)`: the new tree (unmatched leaves unchanged) and
    the sorted restored paths.

  Raises:
    RestoreError: a matched path is missing from `pretrained` or has another
      shape (every such path is named, with both shapes), or `pattern`
      matches no path of `params`.
  """
  regex = re.compile(pattern)
  flat, saved = _flatten(params), _flatten(pretrained)
  matched = sorted(path for path in flat if regex.fullmatch(path))
  if not matched:
    raise RestoreError(
        f"--restore={pattern!r} matches none of the model's parameters; its paths are:"
        f" {', '.join(sorted(flat))}.")
  problems = []
  for path in matched:
    if path not in saved:
      problems.append(f"{path}: missing from the checkpoint")
    elif np.shape(saved[path]) != np.shape(flat[path]):
      problems.append(f"{path}: checkpoint {list(np.shape(saved[path]))},"
                      f" model {list(np.shape(flat[path]))}")
  if problems:
    raise RestoreError(
        f"cannot restore {len(problems)} of the {len(matched)} parameters matched by"
        f" --restore={pattern!r}: {'; '.join(problems)}. Narrow --restore (e.g."
        " 'backbone/.*') or use the model flags of the run that wrote the checkpoint.")
  for path in matched:
    flat[path] = jnp.asarray(saved[path], dtype=jnp.asarray(flat[path]).dtype)
  return _unflatten(flat), matched


def restore_variables(variables: Mapping[str, Params], pretrained: Mapping[str, Params], *,
                      pattern: str) -> tuple[dict[str, Params], list[str]]:
  """`restore_subset` of `params` and, under the same pattern, of `batch_stats`.

  Batch statistics belong to the layers whose parameters they normalise, so
  restoring `backbone/.*` also restores the backbone's running means and
  variances (when both the model and the checkpoint have them).
  """
  params, restored = restore_subset(variables["params"], pretrained["params"],
                                    pattern=pattern)
  batch_stats = variables.get("batch_stats") or {}
  regex = re.compile(pattern)
  if batch_stats and any(regex.fullmatch(p) for p in _flatten(batch_stats)):
    batch_stats, _ = restore_subset(batch_stats, pretrained.get("batch_stats") or {},
                                    pattern=pattern)
  return {"params": params, "batch_stats": batch_stats}, restored


def domain_direction(embedding: np.ndarray, source_counts: np.ndarray,
                     target_counts: np.ndarray) -> np.ndarray:
  """d/|d|, d = sum_w (q_w - p_w) e_w: the unit vector from the source's to the
  target's frequency-weighted mean word vector (`remove_domain_direction`).

  Raises:
    ValueError: the two means coincide.
  """
  vectors = np.asarray(embedding, np.float64)
  frequencies = [np.asarray(c, np.float64) / np.sum(c) for c in (source_counts, target_counts)]
  direction = (frequencies[1] - frequencies[0]) @ vectors
  norm = np.linalg.norm(direction)
  if norm == 0:
    raise ValueError("the two domains' frequency-weighted mean vectors coincide: there is"
                     " no domain direction to remove.")
  return direction / norm


def remove_domain_direction(embedding: np.ndarray, source_counts: np.ndarray,
                            target_counts: np.ndarray) -> np.ndarray:
  """Word vectors without the direction along which two domains' text differs.

  Word vectors learnt from both domains' unlabelled text (skip-gram) encode
  which domain a word is frequent in, as their first principal component on
  sentiment movies/tweets (docs/results.md), and a classifier trained on the
  source with them called nearly every target sentence negative until it was
  removed. With p and q the source's
  and the target's token frequencies, m the mean word vector and
  d = sum_w (q_w - p_w) e_w (the difference of the domains' frequency-weighted
  mean vectors), each word's vector becomes

      e_w <- c * (x_w - (x_w . d/|d|) d/|d|),   x_w = e_w - m,

  with c keeping the words' mean norm, so the downstream learning rate meets
  vectors of the scale it was set for. Centring, then projecting a direction
  out, follows "all-but-the-top" (Mu and Viswanath, ICLR 2018) and the
  direction projection of Bolukbasi et al. (NeurIPS 2016); the direction here
  is the domains', from frequencies alone (no label).

  Args:
    embedding: float [vocab, dim]; rows 0 and 1 (<pad>, <unk>) are kept as they are.
    source_counts, target_counts: float [vocab], how often each id occurs in
      each domain's text (`text_pipeline.token_counts`), or its frequencies.

  Returns:
    The new embedding, float [vocab, dim], of `embedding`'s dtype.

  Raises:
    ValueError: the domains' mean vectors coincide (`domain_direction`).
  """
  embedding = np.asarray(embedding)
  direction = domain_direction(embedding, source_counts, target_counts)
  words = embedding[2:].astype(np.float64)
  centred = words - words.mean(axis=0)
  projected = centred - np.outer(centred @ direction, direction)
  projected *= (np.linalg.norm(words, axis=1).mean()
                / np.linalg.norm(projected, axis=1).mean())
  return np.concatenate([embedding[:2], projected.astype(embedding.dtype)])


def param_labels(params: Params, *, freeze: str | None, backbone_lr_multiplier: float = 1.0
                 ) -> Params:
  """The optimizer group of every parameter: 'frozen', 'backbone' or 'other'.

  Args:
    params: `{'model': ..., 'aux': ...}` as in `TrainState.params`.
    freeze: regular expression over model parameter paths to freeze, or None.
    backbone_lr_multiplier: when not 1, `backbone/...` paths form their own
      group (trained with the learning rate times this).

  Returns:
    A tree of the same structure whose leaves are the group names. The
    method's own parts (`aux`, e.g. a discriminator) are always 'other'.
  """
  regex = re.compile(freeze) if freeze else None

  def label(path: str) -> str:
    if regex is not None and regex.fullmatch(path):
      return FROZEN
    if backbone_lr_multiplier != 1.0 and path.startswith("backbone/"):
      return BACKBONE
    return OTHER

  model = _unflatten({path: label(path) for path in _flatten(params["model"])})
  aux = jax.tree.map(lambda _: OTHER, params.get("aux") or {})
  return {"model": model, "aux": aux}


def make_optimizer(config: Config, learning_rates: Mapping[str, optax.Schedule],
                   base: Callable[[optax.Schedule], optax.GradientTransformation]
                   ) -> optax.GradientTransformation:
  """`base` with `--freeze` and `--backbone_lr_multiplier` applied.

  Frozen parameters get `optax.set_to_zero()` through `optax.multi_transform`,
  so their updates are exactly zero (they stay bit-identical) and no
  optimizer state is kept for them; the backbone group gets its own schedule.

  Args:
    config: the run's config.
    learning_rates: `learning_rate_groups(config, schedule)`.
    base: the plain optimizer at a given learning-rate schedule.
  """
  if not config.freeze and BACKBONE not in learning_rates:
    return base(learning_rates[OTHER])
  transforms = {FROZEN: optax.set_to_zero(), OTHER: base(learning_rates[OTHER])}
  if BACKBONE in learning_rates:
    transforms[BACKBONE] = base(learning_rates[BACKBONE])
  return optax.multi_transform(
      transforms, lambda params: param_labels(
          params, freeze=config.freeze,
          backbone_lr_multiplier=config.backbone_lr_multiplier))


def learning_rate_groups(config: Config, schedule: optax.Schedule
                         ) -> dict[str, optax.Schedule]:
  """The learning rate of each optimizer group: `{'other': schedule}`, plus
  `'backbone'` (the schedule times `--backbone_lr_multiplier`) when it is not 1."""
  groups = {OTHER: schedule}
  multiplier = config.backbone_lr_multiplier
  if multiplier != 1.0:
    groups[BACKBONE] = lambda step: schedule(step) * multiplier
  return groups


def l2sp_penalty(params: Params, anchor: Params, *, alpha: float, beta: float = 0.0
                 ) -> jax.Array:
  r"""L2-SP: the distance of the restored weights to their pretrained values.

  .. math::
    \Omega(w) = \frac{\alpha}{2} \lVert w_S - w_S^0 \rVert_2^2
              + \frac{\beta}{2} \lVert w_{\bar S} \rVert_2^2

  over the restored parameters S (the paths present in `anchor`) and the
  freshly initialised ones \bar S (every other path).

  Args:
    params: model parameters (nested dicts).
    anchor: the pretrained values w^0 of the restored paths (a subtree).
    alpha: weight of the anchoring term (0.01 to 0.1 in Li et al.).
    beta: weight of plain weight decay on the new parameters.

  Returns:
    A float32 scalar.

  References:
    Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning
    with Convolutional Networks", ICML 2018.
  """
  if alpha < 0 or beta < 0:
    raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}.")
  flat, anchored = _flatten(params), _flatten(anchor)
  unknown = sorted(set(anchored) - set(flat))
  if unknown:
    raise ValueError(f"anchor has paths the parameters lack: {', '.join(unknown)}.")
  anchored_sum = jnp.float32(0.0)
  free_sum = jnp.float32(0.0)
  for path, w in flat.items():
    w = jnp.asarray(w, jnp.float32)
    if path in anchored:
      if np.shape(anchored[path]) != w.shape:
        raise ValueError(f"anchor[{path!r}] has shape {np.shape(anchored[path])},"
                         f" expected {w.shape}.")
      anchored_sum += jnp.sum(jnp.square(w - anchored[path]))
    elif beta:
      free_sum += jnp.sum(jnp.square(w))
  return 0.5 * alpha * anchored_sum + 0.5 * beta * free_sum


def regularizer(config: Config) -> Callable[[Params, Params], dict[str, jax.Array]] | None:
  """The `make_train_step` regularizer of the run: L2-SP with `--l2sp` (else None)."""
  if not config.l2sp and not config.l2sp_beta:
    return None

  def terms(model_params: Params, untrained: Params) -> dict[str, jax.Array]:
    return {"l2sp": l2sp_penalty(model_params, untrained["anchor"], alpha=config.l2sp,
                                 beta=config.l2sp_beta)}

  return terms


def check_vocabulary(other: str, workdir: str, flag: str) -> None:
  """Raises `ConfigError` if text runs `other` and `workdir` have different vocabularies.

  Restored embeddings and a text teacher only make sense with the same token
  ids; the vocabulary is `<workdir>/vocab.json` (xdomain/data/text_pipeline.py).
  Image runs (no vocabulary files) pass.
  """
  paths = [os.path.join(d, VOCAB_FILE) for d in (other, workdir)]
  if not all(os.path.isfile(p) for p in paths):
    return
  records = []
  for path in paths:
    with open(path, encoding="utf-8") as f:
      records.append(json.load(f))
  if records[0]["tokens"] != records[1]["tokens"]:
    raise ConfigError(
        f"--{flag}={other} was trained with another vocabulary ({len(records[0]['tokens'])}"
        f" tokens built from {records[0].get('built_from')}) than this run"
        f" ({len(records[1]['tokens'])} tokens built from {records[1].get('built_from')}):"
        " its token ids would mean other words. Use the same --source, --target and"
        " vocabulary flags in both runs.")


def adopt_vocabulary(run: str, workdir: str, *, write: bool) -> None:
  """Copies the vocabulary of the text run `run` into `workdir`, if it has none.

  A source-free run cannot build its vocabulary from the source's text, and
  its restored embeddings need the source run's token ids anyway. Image runs
  (no vocabulary file) are left alone; so is a workdir that has one (a resumed
  run), which `text_pipeline.experiment_vocabulary` then checks.
  """
  source, own = (os.path.join(d, VOCAB_FILE) for d in (workdir_of(run), workdir))
  if write and os.path.isfile(source) and not os.path.exists(own):
    shutil.copyfile(source, own + ".partial")
    os.replace(own + ".partial", own)  # never a half-written vocabulary


def prepare_state(config: Config, method, state, sharding: jax.sharding.Sharding, *,
                  workdir: str | None = None,
                  token_counts: tuple[np.ndarray, np.ndarray] | None = None):
  """Applies `--init_from`/`--restore` to a fresh state and fills `state.untrained`.

  Order: restore the selected pretrained variables; keep their values as the
  L2-SP anchor (when `--l2sp` is set); then let the EMA and the method's
  teacher take their initial state from the (restored) student. On resume
  the checkpoint then overwrites all of it, so resumed runs continue exactly.

  Args:
    config: the run's config.
    method: the run's `methods.Method`.
    state: `TrainState` from `step.init_state`.
    sharding: where the new arrays go (replicated over the mesh).
    workdir: the run's workdir, to check that a text run's vocabulary is the
      one of `--init_from` and `--teacher` (`check_vocabulary`).
    token_counts: the source's and the target's token counts, which
      `--remove_domain_direction` needs (`remove_domain_direction`).

  Returns:
    The new `TrainState`.
  """
  if workdir is not None:
    for flag in ("init_from", "teacher"):
      if getattr(config, flag):
        check_vocabulary(workdir_of(getattr(config, flag)), workdir, flag)
  params, batch_stats = state.params, state.batch_stats
  untrained = dict(state.untrained)  # the method's running statistics, if any
  if config.init_from:
    pretrained = checkpoint.load_variables(config.init_from)
    variables, restored = restore_variables(
        {"params": params["model"], "batch_stats": batch_stats}, pretrained,
        pattern=config.restore)
    fresh = sorted(set(_flatten(params["model"])) - set(restored))
    logging.info("Restored %d parameter arrays from %s (--restore=%r): %s.", len(restored),
                 config.init_from, config.restore, ", ".join(restored))
    logging.info("Freshly initialised %d parameter arrays: %s.", len(fresh),
                 ", ".join(fresh) or "none")
    if config.remove_domain_direction:
      variables["params"] = _without_domain_direction(
          config, variables["params"], restored, token_counts)
    params = dict(params, model=variables["params"])
    batch_stats = variables["batch_stats"]
    if config.l2sp or config.l2sp_beta:
      flat = _flatten(variables["params"])
      untrained["anchor"] = _unflatten({path: flat[path] for path in restored})
  if config.freeze:
    frozen = [path for path in _flatten(params["model"])
              if re.fullmatch(config.freeze, path)]
    if not frozen:
      raise ConfigError(
          f"--freeze={config.freeze!r} matches none of the model's parameters; its paths"
          f" are: {', '.join(sorted(_flatten(params['model'])))}.")
    logging.info("Frozen %d parameter arrays: %s.", len(frozen), ", ".join(sorted(frozen)))
  if method.teacher is not None:
    untrained["teacher"] = method.teacher.init(
        {"params": params["model"], "batch_stats": batch_stats})
  ema = state.ema
  if ema:  # the EMA teacher starts from the restored student, not the random one
    ema = {"params": params["model"], "batch_stats": batch_stats}
  # Copies: the step donates the state, and no two leaves may share a buffer.
  copy = lambda tree: jax.tree.map(  # noqa: E731
      lambda x: jnp.array(x, copy=True), jax.device_put(tree, sharding))
  state = state.replace(params=params, batch_stats=batch_stats, ema=copy(ema),
                        untrained=copy(untrained))
  return jax.device_put(state, sharding)


def _without_domain_direction(config: Config, params: Params, restored: list[str],
                              token_counts: tuple[np.ndarray, np.ndarray]) -> Params:
  if EMBEDDING not in restored:
    raise ConfigError(
        f"--remove_domain_direction acts on restored word vectors ({EMBEDDING}), but"
        f" --restore={config.restore!r} restored {', '.join(restored)}: restore them"
        " (--restore='backbone/embed/.*' from a run of"
        " experiments/transfer/skipgram_sentiment.flags) or drop the flag.")
  flat = _flatten(params)
  flat[EMBEDDING] = jnp.asarray(remove_domain_direction(np.asarray(flat[EMBEDDING]),
                                                        *token_counts))
  logging.info("Removed the domain direction from the restored %s.", EMBEDDING)
  return _unflatten(flat)


def workdir_of(path: str) -> str:
  """The run's workdir for a workdir, its checkpoints dir, or one checkpoint."""
  path = os.path.normpath(path)
  if os.path.basename(path).isdigit():
    path = os.path.dirname(path)
  if os.path.basename(path) == checkpoint.CHECKPOINT_DIR:
    path = os.path.dirname(path)
  return path


def validate_config(config: Config) -> None:
  """Raises `ConfigError` for transfer flags (restore, freeze, anchor) that cannot work."""
  _compile(config.restore, "restore")
  if config.freeze:
    _compile(config.freeze, "freeze")
  if config.init_from and not os.path.isdir(config.init_from):
    raise ConfigError(
        f"--init_from={config.init_from!r} is not a directory: give the --workdir of a"
        " finished run (or one of its checkpoints, <workdir>/checkpoints/<step>).")
  check_non_negative(config, "backbone_lr_multiplier", "l2sp", "l2sp_beta")
  if config.remove_domain_direction and not config.init_from:
    raise ConfigError(
        "--remove_domain_direction acts on restored word vectors: set --init_from to a"
        " run of experiments/transfer/skipgram_sentiment.flags (and --restore='backbone/embed/.*').")
  if (config.l2sp or config.l2sp_beta) and not config.init_from:
    raise ConfigError(
        "--l2sp anchors restored weights to their pretrained values: set --init_from"
        " (and --restore) too.")
  if not 0.0 <= config.target_labelled_fraction <= 1.0:
    raise ConfigError(
        f"--target_labelled_fraction={config.target_labelled_fraction} must be in [0, 1]"
        " (0: no target labels).")
