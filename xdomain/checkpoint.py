"""Checkpoints of a run's workdir: train state, loader position and what the run was.

Layout: `<workdir>/checkpoints/<step>/{state,loader,meta}`, written by an Orbax
`CheckpointManager`. `meta` records the model, method, domains and parameter
shapes, so a workdir is never resumed by a run of another model (the run stops
with an error naming both, and the checkpoint is left untouched).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"
ITEMS = ("state", "loader", "meta")


class CheckpointMismatchError(ValueError):
  """A checkpoint does not belong to the run that tries to resume from it."""


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
  """Saves asynchronously; `manager.wait_until_finished()` makes it durable."""
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      loader=ocp.args.JsonSave(dict(loader_state)),
      meta=ocp.args.JsonSave(dict(meta))), force=force)


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
  """Restores (state, loader_state) at `step` after checking `meta`."""
  saved_meta = manager.restore(step, args=ocp.args.Composite(
      meta=ocp.args.JsonRestore()))["meta"]
  check_meta(saved_meta, current_meta, f"{manager.directory}/{step}")
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      loader=ocp.args.JsonRestore()))
  return restored["state"], restored["loader"]


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
  state = _read_as_numpy(os.path.join(_directory(workdir), str(step), "state"))
  return {"params": state["params"]["model"], "batch_stats": state.get("batch_stats") or {}}


def _read_as_numpy(path: str) -> Any:
  """A saved pytree as host numpy arrays, whatever devices or processes wrote it
  (restoring onto the writer's shardings fails on another topology)."""
  with ocp.PyTreeCheckpointer() as reader:
    tree = reader.metadata(path).item_metadata.tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return reader.restore(path, restore_args=restore_args)


def load_meta(workdir: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
  """The `meta` record (model, method, domains, shapes) of a run's checkpoint."""
  with make_manager(workdir, read_only=True) as manager:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint has been saved in {_directory(workdir)}.")
    return manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]
