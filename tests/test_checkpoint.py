"""Checkpoints: a damaged newest step is set aside and the run falls back to the
one before; corrupted data are detected, never loaded; another run's checkpoint
is refused and left alone."""

import gc
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.orbax_reads import ABANDONED_ORBAX_READS
from xdomain import checkpoint

META = {"model": "tiny", "method": "dann"}


def tiny_state(step):
  rng = np.random.default_rng(step)  # every step's data differ
  return {"step": jnp.asarray(step, jnp.int32),
          "params": {"model": {"w": jnp.asarray(rng.normal(size=(64, 256)), jnp.float32),
                               "b": jnp.asarray(rng.normal(size=(256,)), jnp.float32)}},
          "opt_state": {"count": jnp.asarray(step * 10, jnp.int32)}}


def abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)


def save_steps(workdir, steps):
  with checkpoint.make_manager(workdir) as manager:
    for step in steps:
      checkpoint.save(manager, step, tiny_state(step), {"position": step}, META, force=True)
    manager.wait_until_finished()


def restore_latest(workdir, state=None, meta=META):
  with checkpoint.make_manager(workdir) as manager:
    result = checkpoint.restore_latest(manager, abstract(state or tiny_state(0)), meta)
    steps = manager.all_steps()
  gc.collect()  # Orbax's abandoned reads, if any, within this test (tests/orbax_reads.py)
  return result, steps


def step_dir(workdir, step):
  return os.path.join(workdir, checkpoint.CHECKPOINT_DIR, str(step))


def files_under(path):
  return sorted(os.path.relpath(os.path.join(root, name), path)
                for root, _, names in os.walk(path) for name in names)


def largest_state_file(workdir, step):
  state = os.path.join(step_dir(workdir, step), "state")
  return max((os.path.join(state, name) for name in files_under(state)), key=os.path.getsize)


def cut_state_files(workdir, step):
  state = os.path.join(step_dir(workdir, step), "state")
  for name in files_under(state):
    os.truncate(os.path.join(state, name), 0)


def flip_bytes(workdir, step):
  path = largest_state_file(workdir, step)
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    middle = len(data) // 2
    size = min(4096, len(data) // 4)
    data[middle:middle + size] = bytes(b ^ 0xFF for b in data[middle:middle + size])
    f.seek(0)
    f.write(data)


def swap_in_older_state(workdir, step):
  """Readable data that are not the ones saved: only the checksums can tell."""
  shutil.rmtree(os.path.join(step_dir(workdir, step), "state"))
  shutil.copytree(os.path.join(step_dir(workdir, step - 1), "state"),
                  os.path.join(step_dir(workdir, step), "state"))


DAMAGES = {
    "state files cut to 0 bytes": cut_state_files,
    "_METADATA deleted": lambda w, s: os.remove(
        os.path.join(step_dir(w, s), "state", "_METADATA")),
    "state folder deleted": lambda w, s: shutil.rmtree(os.path.join(step_dir(w, s), "state")),
    "loader folder deleted": lambda w, s: shutil.rmtree(os.path.join(step_dir(w, s), "loader")),
    "meta folder deleted": lambda w, s: shutil.rmtree(os.path.join(step_dir(w, s), "meta")),
    "state data files deleted": lambda w, s: shutil.rmtree(
        os.path.join(step_dir(w, s), "state", "ocdbt.process_0")),
    "4 KB of flipped bytes": flip_bytes,
    "data of another step": swap_in_older_state,
}


@ABANDONED_ORBAX_READS
@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_newest_step_is_set_aside_and_the_previous_one_restored(
    damage, tmp_path, caplog):
  workdir = str(tmp_path)
  save_steps(workdir, [1, 2])
  DAMAGES[damage](workdir, 2)
  damaged_files = files_under(step_dir(workdir, 2))
  with caplog.at_level(logging.WARNING):
    (step, state, loader_state), steps = restore_latest(workdir)
  assert step == 1 and steps == [1]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), tiny_state(1))
  assert loader_state == {"position": 1}
  [aside] = os.listdir(tmp_path / checkpoint.DAMAGED_DIR)
  assert aside.startswith("2-")
  assert files_under(str(tmp_path / checkpoint.DAMAGED_DIR / aside)) == damaged_files
  [message] = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
  assert "step 2 is damaged" in message and aside in message and "\n" not in message


def test_data_that_do_not_match_their_checksums_are_detected_not_loaded(tmp_path, caplog):
  workdir = str(tmp_path)
  save_steps(workdir, [1, 2])
  swap_in_older_state(workdir, 2)
  with pytest.raises(checkpoint.CheckpointDamagedError,
                     match=r"checkpoints/2 is damaged: 4 saved array\(s\) do not match"):
    checkpoint.load_params(step_dir(workdir, 2))
  with caplog.at_level(logging.WARNING):
    (step, _, _), _ = restore_latest(workdir)
  assert step == 1
  assert ("do not match their checksums (opt_state/count, params/model/b,"
          " params/model/w, ...)") in caplog.text


@ABANDONED_ORBAX_READS
@pytest.mark.parametrize("partial", ["empty", "only meta", "half of the state"])
def test_empty_or_partial_step_folder_is_set_aside(partial, tmp_path):
  """A copy cut short (or a crash mid-copy) leaves a newer step folder that
  Orbax lists as a step."""
  workdir = str(tmp_path)
  save_steps(workdir, [1, 2])
  newest = step_dir(workdir, 3)
  if partial == "empty":
    os.makedirs(newest)
  else:
    shutil.copytree(step_dir(workdir, 2), newest)
    if partial == "only meta":
      for item in ("state", "loader"):
        shutil.rmtree(os.path.join(newest, item))
    else:  # the copy of the data file stopped half way
      largest = largest_state_file(workdir, 3)
      os.truncate(largest, os.path.getsize(largest) // 2)
  (step, _, _), steps = restore_latest(workdir)
  assert (step, steps) == (2, [1, 2])
  [aside] = os.listdir(tmp_path / checkpoint.DAMAGED_DIR)
  assert aside.startswith("3-")


@ABANDONED_ORBAX_READS
def test_every_step_damaged_sets_all_aside_and_starts_afresh(tmp_path, caplog):
  workdir = str(tmp_path)
  save_steps(workdir, [1, 2])
  for step in (1, 2):
    cut_state_files(workdir, step)
  with caplog.at_level(logging.WARNING):
    result, steps = restore_latest(workdir)
  assert result is None and steps == []
  assert sorted(d.split("-")[0] for d in os.listdir(tmp_path / checkpoint.DAMAGED_DIR)) == [
      "1", "2"]
  assert "starts afresh" in caplog.text


def test_a_new_save_after_the_fallback_reuses_the_step_number(tmp_path):
  workdir = str(tmp_path)
  save_steps(workdir, [1, 2])
  cut_state_files(workdir, 2)
  with checkpoint.make_manager(workdir) as manager:
    step, _, _ = checkpoint.restore_latest(manager, abstract(tiny_state(0)), META)
    assert step == 1
    checkpoint.save(manager, 2, tiny_state(2), {"position": 2}, META, force=True)
    manager.wait_until_finished()
  (step, state, _), steps = restore_latest(workdir)
  assert (step, steps) == (2, [1, 2])
  np.testing.assert_array_equal(state["params"]["model"]["w"],
                                tiny_state(2)["params"]["model"]["w"])


def test_checkpoint_of_another_run_is_refused_and_nothing_moved(tmp_path):
  workdir = str(tmp_path)
  save_steps(workdir, [1, 2])
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r"method: checkpoint 'dann', this run 'coral'"):
    restore_latest(workdir, meta={**META, "method": "coral"})
  assert not os.path.exists(tmp_path / checkpoint.DAMAGED_DIR)
  assert sorted(os.listdir(tmp_path / checkpoint.CHECKPOINT_DIR)) == ["1", "2"]


def test_state_of_other_arrays_is_a_mismatch_not_damage(tmp_path):
  """E.g. resuming with another optimizer: readable, but not this run's state."""
  workdir = str(tmp_path)
  save_steps(workdir, [1])
  other = {**tiny_state(0), "opt_state": {"count": jnp.zeros((), jnp.int32),
                                          "mu": jnp.zeros((256,), jnp.float32)}}
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r"other arrays \(opt_state/mu: checkpoint None, this run"):
    restore_latest(workdir, state=other)
  assert not os.path.exists(tmp_path / checkpoint.DAMAGED_DIR)


def test_meta_and_params_read_back_without_checksums(tmp_path):
  workdir = str(tmp_path)
  save_steps(workdir, [1])
  assert checkpoint.load_meta(workdir) == META
  np.testing.assert_array_equal(checkpoint.load_params(workdir)["w"],
                                tiny_state(1)["params"]["model"]["w"])


def test_checkpoint_saved_before_checksums_restores_with_a_warning(tmp_path, caplog):
  with checkpoint.make_manager(tmp_path) as manager:
    manager.save(1, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tiny_state(1)),
        loader=ocp.args.JsonSave({"position": 1}), meta=ocp.args.JsonSave(META)))
    manager.wait_until_finished()
  with caplog.at_level(logging.WARNING):
    (step, _, loader_state), _ = restore_latest(str(tmp_path))
  assert (step, loader_state) == (1, {"position": 1})
  assert "saved without checksums" in caplog.text


def test_checksums_cover_every_array_and_tell_them_apart():
  state = tiny_state(1)
  checksums = checkpoint.array_checksums(state)
  assert sorted(checksums) == ["opt_state/count", "params/model/b", "params/model/w", "step"]
  changed = jax.tree.map(lambda x: x, state)
  changed["params"]["model"]["w"] = changed["params"]["model"]["w"].at[3, 7].add(1e-6)
  assert {k for k, v in checkpoint.array_checksums(changed).items()
          if v != checksums[k]} == {"params/model/w"}


def test_checksums_of_a_replicated_array_agree_with_its_host_copy():
  mesh = jax.make_mesh((len(jax.devices()),), ("data",))
  value = tiny_state(1)["params"]["model"]["w"]
  replicated = jax.device_put(value, jax.sharding.NamedSharding(mesh, jax.P()))
  sharded = jax.device_put(value, jax.sharding.NamedSharding(mesh, jax.P("data")))
  expected = checkpoint.array_checksums({"w": np.asarray(value)})
  assert checkpoint.array_checksums({"w": replicated}) == expected
  assert checkpoint.array_checksums({"w": sharded}) == expected
