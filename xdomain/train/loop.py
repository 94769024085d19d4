"""`train_and_evaluate`: one experiment from a `Config` to a results file."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from xdomain import checkpoint
from xdomain import workdir as workdir_lib
from xdomain.config import Config
from xdomain.train.experiment import Experiment
from xdomain.train.writer import MetricWriter
from xdomain.train.writer import read_metrics

RESULTS_FILE = "results.json"
CONFIG_FILE = workdir_lib.CONFIG_FILE
_CONFIG_DEFAULTS = {field.name: field.default for field in dataclasses.fields(Config)}


class NonFiniteLossError(RuntimeError):
  """A loss term became NaN or infinite; the run stopped before saving it."""


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

  One run holds `workdir` at a time (`workdir.WorkdirLock`, taken by process
  0 before anything is read or written, released however the run ends). It
  resumes from the newest readable checkpoint (damaged ones are set aside in
  `checkpoints.damaged/`) and only with the flags that checkpoint was trained
  with, unless `config.allow_config_change` (`workdir.record_config`).

  Raises:
    ConfigError: a flag value that cannot work.
    workdir.WorkdirError: the workdir is busy or unusable
      (`WorkdirBusyError`), the flags differ from the checkpoint's
      (`ConfigChangeError`), or its metrics are damaged.
    checkpoint.CheckpointMismatchError: the workdir holds another run.
    checkpoint.CheckpointDamagedError: a checkpoint that `--init_from` or
      `--teacher` names cannot be read.
    NonFiniteLossError: a loss term became NaN/inf (the last good checkpoint
      is kept).
  """
  _initialize_distributed(config)
  workdir = os.path.abspath(workdir)
  lock = _lock(workdir)
  try:
    return _train_and_evaluate(config, workdir, devices)
  finally:
    lock.release()  # a workdir it created and nothing else filled goes too


def _lock(workdir: str) -> workdir_lib.WorkdirLock:
  """Process 0 takes the workdir's lock; if it cannot, every process stops."""
  lock = workdir_lib.WorkdirLock(workdir, enabled=jax.process_index() == 0)
  error = None
  try:
    lock.acquire()
  except Exception as e:  # noqa: BLE001  (re-raised below, after the others know)
    error = e
  if jax.process_count() > 1:
    failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
    if failed and error is None:
      raise workdir_lib.WorkdirError(
          f"process 0 could not take --workdir={workdir} (its error says why).")
  if error is not None:
    raise error
  return lock


def _train_and_evaluate(config: Config, workdir: str,
                        devices: Sequence[jax.Device] | None) -> dict[str, Any]:
  is_writer = jax.process_index() == 0
  experiment = Experiment(config, workdir, devices=devices)
  started = time.time()

  loader = experiment.training_loader()
  state = experiment.prepare_state()
  meta = experiment.meta(state)

  manager = checkpoint.make_manager(workdir, keep=config.keep_checkpoints)
  try:
    start_step, state = _resume(config, workdir, manager, state, loader, meta)
    # A fresh start also forgets the events of attempts killed before their
    # first checkpoint (their compile_seconds at step 0 included).
    writer = MetricWriter(workdir, enabled=is_writer,
                          resume_step=start_step if start_step else -1)
  except BaseException:
    manager.close()
    raise

  preempted, previous_handler = _watch_for_sigterm()
  try:
    results, state = _train(experiment, state, loader, manager, meta, writer, start_step,
                            preempted)
  finally:
    # With the SIGTERM handler still in place: a SIGTERM during the last
    # (asynchronous) save waits for it instead of ending the run unsaved.
    manager.wait_until_finished()
    manager.close()
    writer.close()
    if previous_handler is not None:
      signal.signal(signal.SIGTERM, previous_handler)
  if results.get("interrupted"):
    return results
  if is_writer and config.plots:
    from xdomain import plots  # matplotlib and scikit-learn: only when asked
    results.update(plots.write_plots(experiment, state, read_metrics(workdir)))
  results["wall_seconds"] = time.time() - started
  if is_writer:
    workdir_lib.write_atomic(os.path.join(workdir, RESULTS_FILE),
                             json.dumps(results, indent=2))
  return results


def _resume(config: Config, workdir: str, manager, state, loader, meta) -> tuple[int, Any]:
  """`(step, state)` of the newest readable checkpoint (`(0, state)` if none),
  the loader moved to its position; then `config.json` checked and recorded."""
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  restored = checkpoint.restore_latest(manager, abstract, meta)
  start_step = 0
  if restored is not None:
    start_step, state, loader_state = restored
    try:
      loader.set_state(loader_state)
    except ValueError as e:  # same model, other data settings (preprocessing, ...)
      raise checkpoint.CheckpointMismatchError(
          f"the checkpoint in {workdir} was written with other data settings: {e}."
          " Use a new --workdir, or the flags of the run that wrote it.") from e
    logging.info("Resumed from the checkpoint at step %d in %s.", start_step, workdir)
  # Refused (ConfigChangeError) if flags that alter training differ from those
  # the checkpoint was trained with; the file is written only when they change.
  workdir_lib.record_config(workdir, dataclasses.asdict(config),
                            allow=config.allow_config_change, step=start_step,
                            write=jax.process_index() == 0, defaults=_CONFIG_DEFAULTS)
  return start_step, state


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


def _train(experiment: Experiment, state, loader, manager, meta, writer, start_step: int,
           preempted: Callable[[int], bool]) -> dict[str, Any]:
  config = experiment.config
  evaluator, train_step = experiment.evaluator, experiment.train_step
  method = experiment.method
  step = start_step
  if step >= config.steps:
    logging.info("The checkpoint is at step %d >= --steps=%d: evaluating only.",
                 step, config.steps)
    return _results(config, _evaluate(evaluator, state), step), state

  batch = experiment.global_batch(next(loader))
  # The parts that train: the loader may carry a target part that source_only
  # ignores, and a 'general' part (--general_text) only when it names domains.
  parts = int(method.uses_source) + int(method.uses_target) + int("general" in batch)
  examples_per_step = config.batch_size * parts
  compile_started = time.time()
  # One program per batch shape: images have one, text one per length bucket
  # (each compiled when first seen).
  compiled = {_shapes(batch): train_step.lower(state, batch, experiment.step_rng).compile()}
  compile_seconds = time.time() - compile_started
  if start_step == 0:  # once per run, as in an unbroken run; a resume only logs it
    writer.write(step, {"compile_seconds": compile_seconds})
  logging.info("Compiled the train step in %.1f s.", compile_seconds)

  pending: list[dict] = []
  interval_started, interval_steps = time.time(), 0
  while True:
    # Before the step, so a run resumed at this step recomputes them as an
    # unbroken run does.
    if method.target_labels is not None and step % method.target_labels.every == 0:
      state = experiment.refresh_target_labels(state)
    shapes = _shapes(batch)
    if shapes not in compiled:
      compile_started = time.time()
      compiled[shapes] = train_step.lower(state, batch, experiment.step_rng).compile()
      compile_seconds += time.time() - compile_started
      logging.info("Compiled the train step for batch shapes %s.", shapes)
    state, metrics = compiled[shapes](state, batch, experiment.step_rng)
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
      evaluation = _evaluate(evaluator, state)
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
    batch = experiment.global_batch(next(loader))
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
  if count:  # none in a source-free run
    values["source_train_accuracy"] = correct / count
  return values


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 60}m{seconds % 60:02d}s"


def _evaluate(evaluator, state) -> dict[str, Any]:
  """The test metrics and the validators (which read no target label) of `state`."""
  return {**evaluator.evaluate(state), **evaluator.validators(state)}


def _results(config: Config, evaluation: dict[str, Any], step: int) -> dict[str, Any]:
  """Every source/target test metric, validator and validator diagnostic of the
  last evaluation, and what the run was."""
  return {
      **{name: value for name, value in evaluation.items()
         if name.startswith(("source_test_", "target_test_", "ema_source_test_",
                             "ema_target_test_", "validator/", "diagnostic/"))},
      "step": step, "method": config.method, "source": config.source,
      "target": config.target, "seed": config.seed, "model": config.model,
  }
