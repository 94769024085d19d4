"""Checkpoints of a run's workdir: train state, loader position and what the run was.

Layout: `<workdir>/checkpoints/<step>/{state,loader,meta}`, written by an Orbax
`CheckpointManager`. `meta` records the model, method, domains and parameter
shapes, so a workdir is never resumed by a run of another model (the run stops
with an error naming both, and the checkpoint is left untouched).

`meta` also holds a CRC-32 of every saved array and of the loader state:
Orbax verifies no data (bytes flipped in a state file load silently), so
`restore` checks them. `restore_latest` resumes from the newest readable step
and moves each unreadable one to `<workdir>/checkpoints.damaged/`; nothing is
ever deleted.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints.damaged"
ITEMS = ("state", "loader", "meta")
CHECKSUMS = "checksums"  # the key of the checksums in `meta`


class CheckpointMismatchError(ValueError):
  """A checkpoint does not belong to the run that tries to resume from it."""


class CheckpointDamagedError(RuntimeError):
  """A checkpoint cannot be read, or its data do not match their checksums."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"the checkpoint {path} is damaged: {reason}")
    self.path = path
    self.reason = reason


def _directory(workdir: str | os.PathLike) -> str:
  return os.path.join(os.path.abspath(os.fspath(workdir)), CHECKPOINT_DIR)


def make_manager(workdir: str | os.PathLike, *, keep: int = 3,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """An Orbax manager over the workdir's checkpoints, keeping the last `keep`."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=not read_only)
  return ocp.CheckpointManager(_directory(workdir), options=options, item_names=ITEMS)


def param_shapes(params: Any) -> dict[str, list[int]]:
  """'/'-joined parameter paths -> shapes, as recorded in `meta`."""
  return {path: list(np.shape(leaf)) for path, leaf in flatten_paths(params).items()}


def flatten_paths(tree: Any) -> dict[str, Any]:
  """A nested dict of parameters -> {'backbone/Conv_0/kernel': leaf, ...}."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(_key_name(k) for k in path): leaf for path, leaf in flat}


def _key_name(key) -> str:
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         loader_state: Mapping[str, Any], meta: Mapping[str, Any], *,
         force: bool = False) -> None:
  """Saves asynchronously; `manager.wait_until_finished()` makes it durable.

  The checksums of `state` and `loader_state` go into `meta`, computed now,
  before the caller may donate the state's buffers to the next step.
  """
  checksums = {"state": array_checksums(state), "loader": _json_checksum(loader_state)}
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      loader=ocp.args.JsonSave(dict(loader_state)),
      meta=ocp.args.JsonSave({**meta, CHECKSUMS: checksums})), force=force)


def array_checksums(tree: Any) -> dict[str, str]:
  """'/'-joined paths -> CRC-32 (hex) of each array's bytes, on the host.

  A replicated array is read from one local copy, so every process gets the
  same values; an array split over processes is none of this process's to
  check and is left out (every array of a train state is replicated).
  """
  checksums = {}
  for path, leaf in flatten_paths(tree).items():
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      if not leaf.is_fully_replicated:
        continue
      leaf = leaf.addressable_data(0)
    data = np.ascontiguousarray(jax.device_get(leaf)).reshape(-1).view(np.uint8)
    checksums[path] = f"{zlib.crc32(data):08x}"
  return checksums


def _json_checksum(value: Any) -> str:
  return f"{zlib.crc32(json.dumps(value, sort_keys=True).encode()):08x}"


def _verify(checksums: Mapping[str, str], actual: Mapping[str, str], path: str) -> None:
  """Raises `CheckpointDamagedError` naming the arrays whose checksums differ."""
  bad = sorted(name for name in checksums.keys() & actual.keys()
               if checksums[name] != actual[name])
  if bad:
    raise CheckpointDamagedError(
        path, f"{len(bad)} saved array(s) do not match their checksums"
        f" ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")


def check_meta(saved: Mapping[str, Any], current: Mapping[str, Any], where: str) -> None:
  """Raises `CheckpointMismatchError` naming every field that differs."""
  differences = []
  for key, value in current.items():
    if key == "param_shapes":
      continue
    if saved.get(key) != value:
      differences.append(f"{key}: checkpoint {saved.get(key)!r}, this run {value!r}")
  saved_shapes, shapes = saved.get("param_shapes", {}), current.get("param_shapes", {})
  for path in sorted(set(saved_shapes) | set(shapes)):
    if saved_shapes.get(path) != shapes.get(path):
      differences.append(
          f"{path}: checkpoint {saved_shapes.get(path)}, this run {shapes.get(path)}")
  if differences:
    raise CheckpointMismatchError(
        f"the checkpoint in {where} was written by a different run"
        f" ({'; '.join(differences[:8])}{'; ...' if len(differences) > 8 else ''})."
        " Use a new --workdir, or the flags of the run that wrote it.")


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
            current_meta: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
  """Restores (state, loader_state) at `step` after checking `meta`.

  Raises:
    CheckpointMismatchError: the checkpoint is readable but was written by
      another run (`meta`, or the structure of its state, differs).
    CheckpointDamagedError: it cannot be read, or its data do not match the
      checksums saved with them.
  """
  path = os.path.join(os.fspath(manager.directory), str(step))
  saved_meta = _damage_as_error(path, "meta", lambda: manager.restore(
      step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
  if not isinstance(saved_meta, dict):
    raise CheckpointDamagedError(path, "its meta record is not a JSON object")
  check_meta(saved_meta, current_meta, path)
  saved_tree = _damage_as_error(path, "state/_METADATA",
                                lambda: _saved_tree(os.path.join(path, "state")))
  _check_structure(saved_tree, abstract_state, path)
  restored = _damage_as_error(path, "state or loader", lambda: manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                    loader=ocp.args.JsonRestore())))
  checksums = saved_meta.get(CHECKSUMS)
  if checksums is None:
    logging.warning("%s was saved without checksums: its data cannot be verified.", path)
  else:
    _verify({"loader": checksums["loader"]},
            {"loader": _json_checksum(restored["loader"])}, path)
    _verify(checksums["state"], array_checksums(restored["state"]), path)
  return restored["state"], restored["loader"]


def _damage_as_error(path: str, item: str, read):
  """`read()` of `item`, any failure of which means its files are damaged: Orbax
  and TensorStore raise many kinds (missing files, bad JSON, truncated chunks)."""
  try:
    return read()
  except (CheckpointMismatchError, MemoryError):
    raise
  except Exception as e:  # noqa: BLE001  (classified as damage, never swallowed)
    raise CheckpointDamagedError(path, f"{item}: {_one_line(e)}") from e


def _one_line(error: BaseException) -> str:
  """The innermost cause, which names the file and the fault (Orbax wraps
  TensorStore's errors in messages that dump the whole spec)."""
  while True:
    inner = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    if inner is None:
      break
    error = inner
  text = " ".join(str(error).split()) or "no message"
  text = text if len(text) <= 300 else text[:297] + "..."
  return f"{type(error).__name__}: {text}"


def _saved_tree(path: str) -> Any:
  """A saved pytree's structure (Orbax's `_METADATA`): leaves with shape and dtype."""
  handler = ocp.PyTreeCheckpointHandler()  # the checkpointer would warn of step metadata
  try:
    metadata = handler.metadata(epath.Path(path))
  finally:
    handler.close()
  if metadata is None or metadata.tree is None:
    raise ValueError(f"{path}/_METADATA is unreadable")
  return metadata.tree


def _check_structure(saved_tree: Any, abstract_state: Any, path: str) -> None:
  """A readable state of other arrays (another optimizer, an EMA added) belongs
  to another run: a `CheckpointMismatchError`, not damage to be set aside."""
  def describe(tree):
    return {name: (tuple(leaf.shape), np.dtype(leaf.dtype).name)
            for name, leaf in flatten_paths(tree).items()}
  saved, current = describe(saved_tree), describe(abstract_state)
  differences = [f"{name}: checkpoint {saved.get(name)}, this run {current.get(name)}"
                 for name in sorted(saved.keys() | current.keys())
                 if saved.get(name) != current.get(name)]
  if differences:
    raise CheckpointMismatchError(
        f"the checkpoint in {path} holds a train state of other arrays"
        f" ({'; '.join(differences[:4])}{'; ...' if len(differences) > 4 else ''})."
        " Use a new --workdir, or the flags of the run that wrote it.")


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any,
                   current_meta: Mapping[str, Any]
                   ) -> tuple[int, Any, dict[str, Any]] | None:
  """Restores the newest readable checkpoint: `(step, state, loader_state)`, or
  None if there is none.

  Each newer step that is damaged (`CheckpointDamagedError`) is reported in one
  warning (which step, why) and moved by process 0 to
  `<workdir>/checkpoints.damaged/<step>-<time>`, where the manager no longer
  sees it; the manager is reloaded after. Every process must call this: a step
  counts as readable only if it is readable on all of them.

  Raises:
    CheckpointMismatchError: a readable checkpoint of another run (nothing is
      moved for it).
  """
  set_aside = False
  result = None
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      state, loader_state = restore(manager, step, abstract_state, current_meta)
      damage = None
    except CheckpointDamagedError as e:
      damage = e
    if _on_every_process(damage is None):
      result = step, state, loader_state
      break
    reason = damage.reason if damage else "unreadable on another process"
    path = os.path.join(os.fspath(manager.directory), str(step))
    if jax.process_index() == 0:
      destination = _set_aside(path, step)
      logging.warning("The checkpoint at step %d is damaged (%s); moved it to %s and"
                      " trying the one before.", step, reason, destination)
    set_aside = True
  if set_aside:
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("xdomain: damaged checkpoints set aside")
    manager.reload()
    if result is None:
      logging.warning("No readable checkpoint is left in %s: training starts afresh.",
                      manager.directory)
  return result


def _on_every_process(ok: bool) -> bool:
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def _set_aside(path: str, step: int) -> str:
  """Renames a step folder into `checkpoints.damaged/`, under a new name."""
  parent = os.path.join(os.path.dirname(os.path.dirname(path)), DAMAGED_DIR)
  os.makedirs(parent, exist_ok=True)
  stamp = time.strftime("%Y%m%d-%H%M%S")
  destination = os.path.join(parent, f"{step}-{stamp}")
  suffix = 1
  while os.path.exists(destination):
    suffix += 1
    destination = os.path.join(parent, f"{step}-{stamp}-{suffix}")
  os.rename(path, destination)
  return destination


def load_params(workdir: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
  """The model parameters of a run (latest checkpoint unless `step` is given).

  Args:
    workdir: the run's workdir (holding `checkpoints/`), its checkpoints dir,
      or one checkpoint `<workdir>/checkpoints/<step>`.
    step: a saved step; default the latest (or the one named by the path).

  Returns:
    The model's parameter pytree (nested dicts of numpy arrays), as passed to
    `model.apply({'params': ...}, ...)`.

  Raises:
    FileNotFoundError: no checkpoint there (or not at `step`).
    CheckpointDamagedError: it cannot be read, or its data do not match their
      checksums.
  """
  return load_variables(workdir, step)["params"]


def load_variables(workdir: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
  """The model variables `{'params': ..., 'batch_stats': ...}` of a run's checkpoint.

  Like `load_params`, plus the batch-norm statistics (`{}` for models
  without batch norm): what `model.apply` needs to run the saved model.
  """
  workdir = os.path.normpath(os.fspath(workdir))
  parent = os.path.dirname(workdir)
  if os.path.basename(workdir).isdigit() and os.path.basename(parent) == CHECKPOINT_DIR:
    step = int(os.path.basename(workdir)) if step is None else step
    workdir = parent
  if os.path.basename(workdir) == CHECKPOINT_DIR:
    workdir = os.path.dirname(workdir)
  if not os.path.isdir(_directory(workdir)):
    raise FileNotFoundError(
        f"no checkpoints in {workdir}: expected {_directory(workdir)} written by a"
        " run of experiments/main.py with that --workdir.")
  with make_manager(workdir, read_only=True) as manager:
    steps = manager.all_steps()
    if not steps:
      raise FileNotFoundError(f"no checkpoint has been saved in {_directory(workdir)}.")
    step = manager.latest_step() if step is None else step
    if step not in steps:
      raise FileNotFoundError(
          f"no checkpoint at step {step} in {_directory(workdir)}; saved steps: {steps}.")
    path = os.path.join(_directory(workdir), str(step))
    saved_meta = _damage_as_error(path, "meta", lambda: manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
  state = _damage_as_error(path, "state",
                           lambda: _read_as_numpy(os.path.join(path, "state")))
  if CHECKSUMS in saved_meta:
    _verify(saved_meta[CHECKSUMS]["state"], array_checksums(state), path)
  return {"params": state["params"]["model"], "batch_stats": state.get("batch_stats") or {}}


def _read_as_numpy(path: str) -> Any:
  """A saved pytree as host numpy arrays, whatever devices or processes wrote it
  (restoring onto the writer's shardings fails on another topology)."""
  tree = _saved_tree(path)
  with ocp.PyTreeCheckpointer() as reader:
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return reader.restore(path, restore_args=restore_args)


def load_meta(workdir: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
  """The `meta` record (model, method, domains, shapes) of a run's checkpoint,
  without the checksums."""
  with make_manager(workdir, read_only=True) as manager:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint has been saved in {_directory(workdir)}.")
    meta = manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]
  meta.pop(CHECKSUMS, None)
  return meta
