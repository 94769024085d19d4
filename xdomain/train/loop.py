"""`train_and_evaluate`: one experiment from a `Config` to a results file."""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from xdomain import checkpoint
from xdomain import data
from xdomain import methods
from xdomain import transfer
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.train import model_zoo
from xdomain.train import step as step_lib
from xdomain.train import text_pipeline
from xdomain.train.writer import MetricWriter

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.json"


class NonFiniteLossError(RuntimeError):
  """A loss term became NaN or infinite; the run stopped before saving it."""


class _Run:
  """The pieces of one run that the loop, evaluation and checkpoints share."""

  def __init__(self, config: Config, workdir: str, devices):
    self.config = config
    self.workdir = workdir
    devices = jax.devices() if devices is None else list(devices)
    num_devices = len(devices)
    for name in ("batch_size", "eval_batch_size"):
      if getattr(config, name) % num_devices:
        raise ConfigError(
            f"--{name}={getattr(config, name)} is not divisible by the {num_devices}"
            f" devices; use a multiple of {num_devices}.")
    # Auto axes: XLA propagates the batch sharding (Explicit, the default in
    # recent JAX, would make every op name its sharding).
    self.mesh = jax.sharding.Mesh(np.array(devices), ("data",),
                                  axis_types=(jax.sharding.AxisType.Auto,))
    self.data_sharding = NamedSharding(self.mesh, P("data"))
    self.replicated = NamedSharding(self.mesh, P())
    self.spec = model_zoo.MODELS[config.model]
    self.method = methods.METHODS[config.method](config)
    if config.teacher_unseen_as_unk and (self.method.teacher is None
                                        and self.method.ema_decay is None):
      raise ConfigError(
          "--teacher_unseen_as_unk is for methods with a teacher (mean_teacher,"
          f" pseudo_label, teacher); --method={config.method} has none.")
    self.info = data.domain_info(config.source)
    # Sequence batches are cut to these lengths (None: images).
    self.buckets = None
    if self.spec.modality == "text":
      vocab = text_pipeline.experiment_vocabulary(
          config, workdir, write=jax.process_index() == 0)
      self.preprocess = text_pipeline.TextPreprocess(vocab, config.max_length,
                                                     chars=config.char_cnn)
      self.buckets = text_pipeline.bucket_lengths(config.max_length)
      self.model = self.spec.build(config, self.info.num_classes,
                                   vocab_size=len(vocab), task=self.info.task)
    else:
      self.model = self.spec.build(config, self.info.num_classes)
      self.preprocess = data.ImagePreprocess(
          size=(config.image_size, config.image_size), channels=config.channels,
          normalize=config.normalize, augment=config.augment,
          crop_to_content=config.crop_to_content, resolution=config.resolution)
    self.tx = transfer.make_optimizer(config, step_lib.make_optimizer)
    self.lr_schedule = step_lib.learning_rate_schedule(config)
    init_rng, self.step_rng = jax.random.split(jax.random.key(config.seed))
    self.init_rng = init_rng

  def training_loader(self) -> data.CrossDomainLoader:
    """The labelled stream (the source; the target for the oracle or with
    --target_labelled_fraction, its few labels) beside the unlabelled target."""
    config = self.config
    few_labels = config.target_labelled_fraction > 0
    labelled = (config.target if self.method.train_on_target_labels or few_labels
                else config.source)
    return data.CrossDomainLoader(
        labelled, config.target, batch_size=config.batch_size, preprocess=self.preprocess,
        seed=config.seed, data_dir=config.data_dir, buckets=self.buckets,
        source_fraction=config.target_labelled_fraction if few_labels else 1.0,
        length_grouping=config.length_grouping)

  @functools.cached_property
  def source_vocabulary(self) -> np.ndarray:
    """Text: bool [vocab size], the token ids of the source's training split."""
    return text_pipeline.source_vocabulary(self.config, self.preprocess.vocab)

  def train_step(self):
    """The pure train step of this run (`step.make_train_step`), to be jitted."""
    config = self.config
    return step_lib.make_train_step(
        self.model, self.spec, self.method, self.tx, self.lr_schedule,
        transfer.regularizer(config), word_dropout=config.word_dropout,
        teacher_vocabulary=(self.source_vocabulary if config.teacher_unseen_as_unk
                            else None))

  def global_batch(self, local: Any) -> Any:
    """Process-local numpy arrays -> global arrays sharded over the mesh."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.data_sharding, x), local)

  def sample_batch(self) -> dict:
    if self.spec.modality == "text":
      return {"source": text_pipeline.sample_inputs(self.config, self.info.task)}
    images = jnp.zeros((1, self.config.image_size, self.config.image_size,
                        self.config.channels), jnp.float32)
    return {"source": {"image": images, "label": jnp.zeros((1,), jnp.int32)}}

  def init_state(self) -> step_lib.TrainState:
    init = functools.partial(step_lib.init_state, self.model, self.spec, self.method,
                             self.tx, self.sample_batch())
    return jax.jit(init, out_shardings=self.replicated)(self.init_rng)

  def meta(self, state: step_lib.TrainState) -> dict:
    """What a checkpoint records about the run, checked on resume."""
    c = self.config
    return {"model": c.model, "method": c.method, "source": c.source, "target": c.target,
            "seed": c.seed, "batch_size": c.batch_size, "image_size": c.image_size,
            "channels": c.channels, "num_classes": self.info.num_classes,
            "param_shapes": checkpoint.param_shapes(state.params)}


def _initialize_distributed(config: Config) -> None:
  if config.coordinator_address is None and not config.distributed:
    return
  # CPU processes need gloo for cross-process collectives; other backends ignore it.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if config.coordinator_address is not None:
    jax.distributed.initialize(config.coordinator_address, config.num_processes,
                               config.process_id)
  else:
    jax.distributed.initialize()  # the cluster's environment (SLURM, TPU, ...)


def train_and_evaluate(config: Config, workdir: str, *,
                       devices: Sequence[jax.Device] | None = None) -> dict[str, Any]:
  """Trains and evaluates one experiment, resuming from `workdir` if it holds one.

  The batch is split over `devices` (default: every device of every process);
  the results do not depend on how many there are.

  Returns the results (also written to `<workdir>/results.json`), or, when
  the run was stopped by SIGTERM, `{'interrupted': True, 'step': ...}` after
  saving a checkpoint to resume from.

  Raises:
    ConfigError: a flag value that cannot work.
    checkpoint.CheckpointMismatchError: the workdir holds another run.
    NonFiniteLossError: a loss term became NaN/inf (the last good checkpoint
      is kept).
  """
  config.validate()
  _initialize_distributed(config)
  workdir = os.path.abspath(workdir)
  is_writer = jax.process_index() == 0
  if is_writer:
    os.makedirs(workdir, exist_ok=True)
  run = _Run(config, workdir, devices)
  started = time.time()

  loader = run.training_loader()
  state = transfer.prepare_state(config, run.method, run.init_state(), run.replicated,
                                 workdir=workdir)
  meta = run.meta(state)

  manager = checkpoint.make_manager(workdir, keep=config.keep_checkpoints)
  start_step = manager.latest_step() or 0
  if start_step:
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    state, loader_state = checkpoint.restore(manager, start_step, abstract, meta)
    try:
      loader.set_state(loader_state)
    except ValueError as e:  # same model, other data settings (preprocessing, ...)
      raise checkpoint.CheckpointMismatchError(
          f"the checkpoint in {workdir} was written with other data settings: {e}."
          " Use a new --workdir, or the flags of the run that wrote it.") from e
    logging.info("Resumed from the checkpoint at step %d in %s.", start_step, workdir)
  if is_writer:
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
      f.write(config.to_json())
  writer = MetricWriter(workdir, enabled=is_writer, resume_step=start_step)
  evaluator = _Evaluator(run)

  train_step = jax.jit(
      run.train_step(), in_shardings=(run.replicated, run.data_sharding, run.replicated),
      out_shardings=(run.replicated, run.replicated), donate_argnums=0)

  preempted, previous_handler = _watch_for_sigterm()
  try:
    results, state = _train(run, state, loader, manager, meta, writer, evaluator,
                            train_step, start_step, preempted)
  finally:
    if previous_handler is not None:
      signal.signal(signal.SIGTERM, previous_handler)
    manager.wait_until_finished()
    manager.close()
    writer.close()
  if results.get("interrupted"):
    return results
  if is_writer and config.plots:
    from xdomain import plots  # matplotlib and scikit-learn: only when asked
    results.update(plots.write_plots(run, evaluator, state))
  results["wall_seconds"] = time.time() - started
  if is_writer:
    with open(os.path.join(workdir, RESULTS_FILE), "w") as f:
      json.dump(results, f, indent=2)
  return results


def _watch_for_sigterm() -> tuple[Callable[[int], bool], Any]:
  """`(preempted, previous SIGTERM handler)`.

  `preempted(step)` says whether to save a checkpoint and stop after `step`.
  One process sets a flag from its own SIGTERM handler (main thread only).
  Several must all stop at the same step, as saving is collective: one process
  stopping alone would leave the others waiting in the save forever. JAX's
  preemption service catches SIGTERM in every process (so no Python handler is
  installed) and picks a step that every process reaches; it must be asked at
  every step.
  """
  if jax.process_count() > 1:
    if jax.config.jax_enable_preemption_service:
      return multihost_utils.reached_preemption_sync_point, None
    logging.warning("jax_enable_preemption_service is off: SIGTERM will end these"
                    " processes without saving a checkpoint.")
    return lambda step: False, None
  stop = threading.Event()
  previous_handler = None
  if threading.current_thread() is threading.main_thread():
    previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
  return lambda step: stop.is_set(), previous_handler


def _train(run: _Run, state, loader, manager, meta, writer, evaluator, train_step,
           start_step: int, preempted: Callable[[int], bool]) -> dict[str, Any]:
  config = run.config
  examples_per_step = config.batch_size * (2 if run.method.uses_target else 1)
  step = start_step
  if step >= config.steps:
    logging.info("The checkpoint is at step %d >= --steps=%d: evaluating only.",
                 step, config.steps)
    return _results(config, evaluator.evaluate(state), step), state

  batch = run.global_batch(next(loader))
  compile_started = time.time()
  # One program per batch shape: images have one, text one per length bucket
  # (each compiled when first seen).
  compiled = {_shapes(batch): train_step.lower(state, batch, run.step_rng).compile()}
  compile_seconds = time.time() - compile_started
  writer.write(step, {"compile_seconds": compile_seconds})
  logging.info("Compiled the train step in %.1f s.", compile_seconds)

  pending: list[dict] = []
  interval_started, interval_steps = time.time(), 0
  while True:
    shapes = _shapes(batch)
    if shapes not in compiled:
      compile_started = time.time()
      compiled[shapes] = train_step.lower(state, batch, run.step_rng).compile()
      compile_seconds += time.time() - compile_started
      logging.info("Compiled the train step for batch shapes %s.", shapes)
    state, metrics = compiled[shapes](state, batch, run.step_rng)
    pending.append(metrics)
    step += 1
    interval_steps += 1
    done = step >= config.steps
    interrupted = not done and preempted(step)
    if step % config.log_every == 0 or done or interrupted:
      values = _average(pending, step)  # raises NonFiniteLossError
      pending = []
      elapsed = time.time() - interval_started
      values["examples_per_sec"] = interval_steps * examples_per_step / elapsed
      writer.write(step, values)
      rate = interval_steps / elapsed
      logging.info("step %d/%d  loss %.4f  %.1f steps/s  ETA %s", step, config.steps,
                   values["total"], rate, _duration((config.steps - step) / rate))
      interval_steps = 0
    if step % config.eval_every == 0 or done:
      evaluation = evaluator.evaluate(state)
      writer.write(step, evaluation)
    if step % config.checkpoint_every == 0 or done or interrupted:
      _check_finite(pending, step)  # never save a state after a non-finite step
      checkpoint.save(manager, step, state, loader.get_state(), meta, force=True)
    if interrupted:
      manager.wait_until_finished()
      logging.warning("SIGTERM (in this or another process): saved the checkpoint at"
                      " step %d; rerun with the same --workdir to resume.", step)
      return {"interrupted": True, "step": step}, state
    if done:
      break
    if interval_steps == 0:
      interval_started = time.time()
    batch = run.global_batch(next(loader))
  results = _results(config, evaluation, step)
  results["compile_seconds"] = compile_seconds
  return results, state


def _shapes(batch: Any) -> tuple:
  """The shapes of a batch's arrays, in tree order (the key of a compiled step)."""
  return tuple(x.shape for x in jax.tree.leaves(batch))


def _check_finite(pending: list[dict], step: int) -> None:
  """Raises `NonFiniteLossError` naming the first non-finite step since the last log."""
  finite = [bool(f) for f in jax.device_get([metrics["finite"] for metrics in pending])]
  if all(finite):
    return
  offset = finite.index(False)
  metrics = jax.device_get(pending[offset])
  bad = sorted(name for name, value in metrics.items()
               if name != "finite" and not np.isfinite(value))
  raise NonFiniteLossError(
      f"the loss became non-finite at step {step - len(pending) + 1 + offset}"
      f" (terms: {', '.join(f'{n}={metrics[n]}' for n in bad)}); the run stopped"
      " without saving that state, and the last good checkpoint is kept. Lower"
      " --learning_rate or the weight of that term.")


def _average(pending: list[dict], step: int) -> dict[str, float]:
  """Means of the per-step metrics since the last log; stops on a non-finite step."""
  _check_finite(pending, step)
  fetched = jax.device_get(pending)
  values = {name: float(np.mean([m[name] for m in fetched]))
            for name in fetched[0] if not name.startswith("source_train_") and name != "finite"}
  correct = sum(float(m["source_train_correct"]) for m in fetched)
  count = sum(float(m["source_train_count"]) for m in fetched)
  values["source_train_accuracy"] = correct / count
  return values


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 60}m{seconds % 60:02d}s"


class _Evaluator:
  """Accuracy on the source and target test splits from confusion matrices.

  The test batches are built once and kept on the devices, so each evaluation
  costs only the forward passes.
  """

  def __init__(self, run: _Run):
    self.run = run
    config = run.config
    self._batches = {}
    self._steps = {}
    self._feature_fns = {}
    for part, domain in (("source", config.source), ("target", config.target)):
      local = data.eval_batches(domain, "test", batch_size=config.eval_batch_size,
                                preprocess=run.preprocess, data_dir=config.data_dir,
                                buckets=run.buckets)
      self._batches[part] = [run.global_batch(b) for b in local]
      step = step_lib.make_eval_step(run.model, run.spec, run.info.num_classes, part)
      self._steps[part] = jax.jit(
          step, in_shardings=(run.replicated, run.replicated, run.data_sharding),
          out_shardings=run.replicated)

  def features(self, part: str, params, batch_stats, *, limit: int) -> np.ndarray:
    """Features [n, D] of the first `limit` real examples (tokens, for taggers)
    of a test split."""
    if part not in self._feature_fns:
      run = self.run
      domain_kwargs = {"domain": part} if run.spec.domain_specific_bn else {}

      def features_fn(params, batch_stats, batch):
        variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
        _, features = run.model.apply(
            variables, *step_lib.model_inputs(batch, run.spec), train=False,
            return_features=True, **domain_kwargs)
        return features

      self._feature_fns[part] = jax.jit(features_fn, out_shardings=run.replicated)
    collected, count = [], 0
    for batch in self._batches[part]:
      if count >= limit:
        break
      features = np.asarray(self._feature_fns[part](params, batch_stats, batch))
      real_rows = np.asarray(jax.device_get(batch["mask"]))
      if features.ndim == 3:  # tagger token features [B, L, D]: keep real tokens
        lengths = np.asarray(jax.device_get(batch["lengths"]))
        real_rows = real_rows[:, None] & (np.arange(features.shape[1]) < lengths[:, None])
      real = features[real_rows]
      collected.append(real)
      count += len(real)
    return np.concatenate(collected)[:limit]

  def confusion(self, part: str, params, batch_stats) -> np.ndarray:
    total = None
    for batch in self._batches[part]:
      confusion = self._steps[part](params, batch_stats, batch)["confusion"]
      total = confusion if total is None else total + confusion
    return np.asarray(jax.device_get(total), np.float64)

  def evaluate(self, state) -> dict[str, Any]:
    """Test metrics of the model, and with an `ema_` prefix those of its EMA
    (the mean teacher), where the method keeps one."""
    values = self._scores(state.params["model"], state.batch_stats)
    logging.info("eval: source test accuracy %.4f, target test accuracy %.4f",
                 values["source_test_accuracy"], values["target_test_accuracy"])
    if state.ema:
      ema = self._scores(state.ema["params"], state.ema["batch_stats"])
      values.update({f"ema_{name}": value for name, value in ema.items()})
      logging.info("eval (EMA): source test accuracy %.4f, target test accuracy %.4f",
                   ema["source_test_accuracy"], ema["target_test_accuracy"])
    return values

  def _oov_vocabulary(self) -> np.ndarray | None:
    """Taggers are also scored on the words their source lacks."""
    return self.run.source_vocabulary if self.run.info.task == "tagging" else None

  def _scores(self, params, batch_stats) -> dict[str, Any]:
    values = {}
    for part in ("source", "target"):
      if self.run.spec.modality == "text":
        # Macro-F1 and entity spans need the predictions themselves.
        outputs = jax.device_get([self._steps[part](params, batch_stats, batch)
                                  for batch in self._batches[part]])
        confusion = np.sum([o["confusion"] for o in outputs], axis=0, dtype=np.float64)
        scores = text_pipeline.text_metrics(outputs, self.run.info.task,
                                            self.run.info.label_names,
                                            source_vocabulary=self._oov_vocabulary())
        values.update({f"{part}_test_{name}": value for name, value in scores.items()})
      else:
        confusion = self.confusion(part, params, batch_stats)
      values[f"{part}_test_accuracy"] = float(np.trace(confusion) / confusion.sum())
      per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1.0)
      values[f"{part}_test_per_class_accuracy"] = per_class.tolist()
    return values


def _results(config: Config, evaluation: dict[str, Any], step: int) -> dict[str, Any]:
  """Every source/target test metric of the last evaluation, and what the run was."""
  return {
      **{name: value for name, value in evaluation.items()
         if name.startswith(("source_test_", "target_test_", "ema_source_test_",
                             "ema_target_test_"))},
      "step": step, "method": config.method, "source": config.source,
      "target": config.target, "seed": config.seed, "model": config.model,
  }
