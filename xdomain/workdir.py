"""A run's workdir: is it usable, who holds it, and the flags it was trained with.

One run at a time writes a workdir. `WorkdirLock` makes a second run stop
before it touches anything; `record_config` keeps `config.json` a faithful
record of the flags the checkpoints were trained with. Every failure here is a
`WorkdirError` (a `ValueError`) whose message is one line saying what to do.

Nothing here imports JAX or the rest of xdomain: the loop and the benchmark
drivers both use it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Collection
from collections.abc import Mapping
from typing import Any

from absl import logging

LOCK_FILE = "lock"
CONFIG_FILE = "config.json"
HISTORY_KEY = "config_history"

# Flags that change how a run is watched, stored or spread over machines, never
# the trained weights; they may differ between the runs that share a workdir.
NON_TRAINING_FLAGS = frozenset({
    "log_every", "eval_every",  # when metrics are logged and the test splits scored
    "eval_batch_size",  # evaluation only: correct counts are exact sums
    "checkpoint_every", "keep_checkpoints",  # a resume is bit-identical to no stop
    "plots",  # written after training
    "plots_baseline",  # what the plots compare with
    "data_dir",  # where the same prepared data sets are found
    # The topology: results do not depend on the device or process count.
    "distributed", "coordinator_address", "num_processes", "process_id",
    "allow_config_change",  # the permission itself
})

# flock is unsupported on some network and FUSE file systems.
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class WorkdirError(ValueError):
  """The workdir cannot be used as asked; the message says why and what to do."""


class WorkdirBusyError(WorkdirError):
  """Another run holds the workdir."""


class ConfigChangeError(WorkdirError):
  """A resume asked for flags that would change how the checkpoint trains on."""


def check_workdir(workdir: str | os.PathLike) -> bool:
  """Makes `workdir` (and its parents) if needed and checks a file can be made in it.

  Returns:
    Whether the directory was created by this call.

  Raises:
    WorkdirError: it is a file, lies inside a file, or cannot be written.
  """
  workdir = os.path.abspath(os.fspath(workdir))
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"--workdir={workdir} is a file, not a directory; give a"
                       " directory (a new one is created).")
  created = not os.path.exists(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    # Writing is the only test that holds for root, ACLs and read-only mounts.
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except NotADirectoryError:
    raise WorkdirError(f"--workdir={workdir} lies inside {_file_ancestor(workdir)},"
                       " which is a file; give a path under a directory.") from None
  except OSError as e:
    raise WorkdirError(f"--workdir={workdir} cannot be written ({e.strerror}); give a"
                       " directory you can write to.") from None
  return created


def _file_ancestor(path: str) -> str:
  """The first component of `path` that exists and is not a directory."""
  while not os.path.isdir(path):
    parent = os.path.dirname(path)
    if os.path.exists(path) or parent == path:
      return path
    path = parent
  return path


class WorkdirLock:
  """An exclusive, process-safe hold of a workdir: one run at a time.

  `flock` on `<workdir>/lock`, which names the holder (pid, host, start time)
  for the error a second run gets. The OS drops the lock when the holder's
  process ends, however it ends, so a killed run never blocks the next one; a
  lock file left behind by such a run is taken over with a warning. A clean
  release deletes the file, and the workdir too if this lock created it and
  nothing else was put there (a run that failed at once leaves no trace).

  Multi-host runs take one lock per run: give `enabled=True` on process 0
  only; on the other processes the lock does nothing.

  Example::

    with WorkdirLock(workdir, enabled=jax.process_index() == 0):
      ...  # train
  """

  def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True):
    self.workdir = os.path.abspath(os.fspath(workdir))
    self.path = os.path.join(self.workdir, LOCK_FILE)
    self.enabled = enabled
    self._fd: int | None = None
    self._created = False

  def acquire(self) -> None:
    """Takes the lock, making the workdir if needed.

    Raises:
      WorkdirBusyError: another live process holds it (this one changes nothing).
      WorkdirError: the workdir is unusable (`check_workdir`).
    """
    if not self.enabled or self._fd is not None:
      return
    # A release that deletes the file (or the workdir) between our open and
    # flock leaves us holding a lock on a deleted file: try again.
    for _ in range(100):
      self._created = check_workdir(self.workdir) or self._created
      try:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      except FileNotFoundError:
        continue
      locked = True
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise WorkdirBusyError(
            f"--workdir={self.workdir} is in use by another run ({_describe(holder)});"
            " wait for it to end or stop it, or give another --workdir.") from None
      except OSError as e:
        if e.errno not in _NO_LOCKS:
          os.close(fd)
          raise
        logging.warning("The file system of %s cannot lock files (%s): a second run"
                        " on this workdir would not be stopped.", self.workdir, e.strerror)
        locked = False
      if _same_file(fd, self.path):
        break
      os.close(fd)
    else:
      raise WorkdirError(f"could not lock {self.path}: it kept disappearing; is another"
                         " program deleting the workdir?")
    previous = _read_holder(fd)
    if previous and locked:
      logging.warning("Taking over %s from a run that ended without releasing it (%s).",
                      self.path, _describe(previous))
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    os.fsync(fd)
    self._fd = fd

  def release(self) -> None:
    """Gives the lock up (idempotent); deletes the file while still holding it."""
    if self._fd is None:
      return
    fd, self._fd = self._fd, None
    try:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(self.path)
      if self._created:
        with contextlib.suppress(OSError):  # not empty: the run left its files
          os.rmdir(self.workdir)
    finally:
      os.close(fd)  # closing drops the flock

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()


def _read_holder(fd: int) -> dict[str, Any] | None:
  """The holder recorded in a lock file; None if empty, {} if unreadable."""
  data = os.pread(fd, 4096, 0)
  if not data.strip():
    return None
  try:
    holder = json.loads(data)
  except ValueError:
    return {}
  return holder if isinstance(holder, dict) else {}


def _describe(holder: Mapping[str, Any] | None) -> str:
  if not holder:
    return "holder not recorded yet" if holder is None else "holder unreadable"
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
          f" since {holder.get('since', '?')}")


def _same_file(fd: int, path: str) -> bool:
  try:
    stat = os.stat(path)
  except FileNotFoundError:
    return False
  own = os.fstat(fd)
  return (own.st_dev, own.st_ino) == (stat.st_dev, stat.st_ino)


def write_atomic(path: str | os.PathLike, text: str) -> None:
  """Replaces `path` with `text`, so that a kill at any moment leaves either the
  old file or the new one (temporary file, fsync, rename, fsync of the folder)."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.")
  try:
    try:  # mkstemp makes the file private; keep the mode the file had
      os.fchmod(fd, os.stat(path).st_mode & 0o777)
    except FileNotFoundError:
      os.fchmod(fd, 0o644)
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(temporary)
    raise
  directory = os.open(folder, os.O_RDONLY)
  try:
    os.fsync(directory)
  finally:
    os.close(directory)


def config_differences(saved: Mapping[str, Any], new: Mapping[str, Any], *,
                       ignore: Collection[str] = NON_TRAINING_FLAGS,
                       defaults: Mapping[str, Any] | None = None
                       ) -> dict[str, dict[str, Any]]:
  """`{flag: {'from': saved value, 'to': new value}}` for every flag outside
  `ignore` that differs. A flag missing from `saved` (newer than the run) has its
  value in `defaults`; without one, or missing from `new`, it reads as None."""
  saved = {**(defaults or {}), **saved}
  changes = {}
  for name in sorted((set(saved) | set(new)) - set(ignore) - {HISTORY_KEY}):
    before, after = saved.get(name), new.get(name)
    if before != after:
      changes[name] = {"from": before, "to": after}
  return changes


def check_config_change(saved: Mapping[str, Any] | None, new: Mapping[str, Any], *,
                        allow: bool, step: int,
                        ignore: Collection[str] = NON_TRAINING_FLAGS,
                        defaults: Mapping[str, Any] | None = None
                        ) -> dict[str, Any] | None:
  """What `config.json` should hold when a run with flags `new` resumes at `step`.

  Args:
    saved: the workdir's `config.json` (None if it has none).
    new: this run's flags (`dataclasses.asdict(config)`).
    allow: the user's `--allow_config_change`.
    step: the checkpoint step the run resumes from (0: it starts afresh).
    ignore: flags that do not alter training (`NON_TRAINING_FLAGS`).
    defaults: the value of a flag the saved record lacks (e.g. the `Config`
      defaults, for flags added after the run started).

  Returns:
    None when `config.json` should stay as it is (nothing that alters training
    changed); else the record to write: `new` for a run that starts afresh, or,
    with `allow`, `new` plus a `config_history` list that gains
    `{'step': step, 'changes': {flag: {'from': ..., 'to': ...}}}`, so the flags
    every part of the checkpoint was trained with stay on record.

  Raises:
    ConfigChangeError: flags that alter training changed, at `step` > 0,
      without `allow`.
  """
  if saved is None:
    return dict(new)
  changes = config_differences(saved, new, ignore=ignore, defaults=defaults)
  if not changes:
    return None
  if step == 0:  # no checkpoint: nothing was trained with the old flags
    return dict(new)
  if not allow:
    listed = ", ".join(f"--{name} {change['from']!r} -> {change['to']!r}"
                       for name, change in changes.items())
    raise ConfigChangeError(
        f"the checkpoint at step {step} was trained with other flags ({listed}); rerun"
        " with its flags, give another --workdir, or add --allow_config_change to go on"
        " with these (recorded in config.json).")
  logging.warning("Resuming at step %d with changed flags: %s.", step,
                  ", ".join(f"{name}={change['to']!r}" for name, change in changes.items()))
  history = list(saved.get(HISTORY_KEY, []))
  history.append({"step": step, "changes": changes})
  return {**new, HISTORY_KEY: history}


def read_config(workdir: str | os.PathLike, *,
                with_history: bool = False) -> dict[str, Any] | None:
  """The flags a run's `config.json` records (without `config_history`, unless
  `with_history`); None if it has none.

  Raises:
    WorkdirError: `config.json` is not a JSON object.
  """
  path = os.path.join(os.fspath(workdir), CONFIG_FILE)
  try:
    with open(path) as f:
      record = json.load(f)
  except FileNotFoundError:
    return None
  except ValueError as e:
    raise WorkdirError(f"{path} is not valid JSON ({e}); restore it, or delete it if"
                       " the run's flags are known to be the ones given now.") from None
  if not isinstance(record, dict):
    raise WorkdirError(f"{path} holds no JSON object; restore or delete it.")
  if not with_history:
    record.pop(HISTORY_KEY, None)
  return record


def record_config(workdir: str | os.PathLike, new: Mapping[str, Any], *, allow: bool,
                  step: int, write: bool = True,
                  ignore: Collection[str] = NON_TRAINING_FLAGS,
                  defaults: Mapping[str, Any] | None = None) -> None:
  """`check_config_change` against the workdir's `config.json`, then writes the
  result atomically (or leaves the file untouched).

  Call it once the checkpoint to resume from is known, on every process (each
  raises the same error), with `write` true on process 0 only.
  """
  saved = read_config(workdir, with_history=True)
  record = check_config_change(saved, new, allow=allow, step=step, ignore=ignore,
                               defaults=defaults)
  if record is not None and write:
    write_atomic(os.path.join(os.fspath(workdir), CONFIG_FILE),
                 json.dumps(record, indent=2, sort_keys=True) + "\n")
