"""The workdir: one run at a time (a lock any exit releases), a usable
directory, and a config.json that records every change of training flags."""

import errno
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys

import pytest

from xdomain import workdir as workdir_lib
from xdomain.workdir import WorkdirLock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLD = ("import sys; from xdomain.workdir import WorkdirLock;"
        " WorkdirLock(sys.argv[1]).acquire(); print('locked', flush=True); sys.stdin.read()")


def hold_in_another_process(workdir):
  process = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline().strip() == "locked"
  return process


def test_second_run_fails_at_once_naming_the_holder_and_touches_nothing(tmp_path):
  with WorkdirLock(tmp_path) as lock:
    recorded = open(lock.path).read()
    with pytest.raises(workdir_lib.WorkdirBusyError) as error:
      WorkdirLock(tmp_path).acquire()
    assert open(lock.path).read() == recorded
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith(f"--workdir={tmp_path} is in use by another run (pid"
                            f" {os.getpid()} on host {socket.gethostname()} since ")
  assert message.endswith("wait for it to end or stop it, or give another --workdir.")


def test_lock_of_a_killed_process_is_taken_over(tmp_path, caplog):
  holder = hold_in_another_process(tmp_path)
  try:
    with pytest.raises(workdir_lib.WorkdirBusyError, match=f"pid {holder.pid} on host"):
      WorkdirLock(tmp_path).acquire()
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.communicate()
  assert json.loads((tmp_path / workdir_lib.LOCK_FILE).read_text())["pid"] == holder.pid
  with caplog.at_level(logging.WARNING):
    with WorkdirLock(tmp_path) as lock:
      assert json.loads(open(lock.path).read())["pid"] == os.getpid()
  assert f"ended without releasing it (pid {holder.pid} on host" in caplog.text


def test_release_on_any_exit_removes_the_lock_file(tmp_path):
  with pytest.raises(RuntimeError):
    with WorkdirLock(tmp_path):
      raise RuntimeError("the run failed")
  assert not (tmp_path / workdir_lib.LOCK_FILE).exists()
  with WorkdirLock(tmp_path):  # free again
    pass


def test_workdir_made_for_the_lock_is_removed_if_left_empty(tmp_path):
  empty, used = tmp_path / "empty" / "run", tmp_path / "used"
  with WorkdirLock(empty):
    assert empty.is_dir()
  assert not empty.exists() and (tmp_path / "empty").is_dir()
  with WorkdirLock(used):
    (used / "metrics.jsonl").write_text("")
  assert os.listdir(used) == ["metrics.jsonl"]


def test_only_the_enabled_process_locks(tmp_path):
  """Multi-host: process 0 holds the run's one lock, the others none."""
  with WorkdirLock(tmp_path, enabled=False):
    assert not (tmp_path / workdir_lib.LOCK_FILE).exists()
    with WorkdirLock(tmp_path, enabled=True):
      with WorkdirLock(tmp_path, enabled=False):
        pass


def test_file_system_without_locks_warns_and_goes_on(tmp_path, monkeypatch, caplog):
  def no_locks(fd, operation):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

  monkeypatch.setattr(fcntl, "flock", no_locks)
  with caplog.at_level(logging.WARNING):
    with WorkdirLock(tmp_path):
      pass
  assert "cannot lock files" in caplog.text


def test_workdir_that_is_a_file_or_lies_inside_one_is_one_clear_error(tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(workdir_lib.WorkdirError,
                     match=f"^--workdir={tmp_path}/file is a file, not a directory;"):
    WorkdirLock(tmp_path / "file").acquire()
  with pytest.raises(workdir_lib.WorkdirError,
                     match=f"^--workdir={tmp_path}/file/sub/run lies inside {tmp_path}/file,"
                           " which is a file; give a path under a directory.$"):
    WorkdirLock(tmp_path / "file" / "sub" / "run").acquire()
  assert os.listdir(tmp_path) == ["file"]


@pytest.fixture
def unwritable_dir(tmp_path):
  """A directory no file can be made in: by permissions, or for root (whom they
  do not stop) by the immutable attribute where the file system has it."""
  path = tmp_path / "unwritable"
  path.mkdir(mode=0o555)
  if os.access(path, os.W_OK):
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
      pytest.skip("running as root on a file system without chattr +i")
  yield path
  subprocess.run(["chattr", "-i", str(path)], capture_output=True)
  path.chmod(0o755)


def test_workdir_that_cannot_be_written_is_one_clear_error(unwritable_dir):
  workdir = unwritable_dir / "run"
  with pytest.raises(workdir_lib.WorkdirError) as error:
    WorkdirLock(workdir).acquire()
  assert str(error.value) in (
      f"--workdir={workdir} cannot be written ({reason}); give a directory you can write to."
      for reason in ("Permission denied", "Operation not permitted"))
  with pytest.raises(workdir_lib.WorkdirError, match=r"cannot be written"):
    workdir_lib.check_workdir(unwritable_dir)


SAVED = {"learning_rate": 0.001, "steps": 100, "log_every": 10, "method": "dann"}


def test_unchanged_or_only_non_training_flags_leave_config_json_alone():
  new = {**SAVED, "log_every": 1, "eval_every": 5}
  assert workdir_lib.check_config_change(SAVED, SAVED, allow=False, step=50) is None
  assert workdir_lib.check_config_change(
      {**SAVED, "eval_every": 50}, new, allow=False, step=50) is None


def test_changed_training_flags_are_refused_in_one_line():
  new = {**SAVED, "learning_rate": 0.01, "steps": 200, "log_every": 1}
  with pytest.raises(workdir_lib.ConfigChangeError) as error:
    workdir_lib.check_config_change(SAVED, new, allow=False, step=50)
  assert str(error.value) == (
      "the checkpoint at step 50 was trained with other flags (--learning_rate 0.001 ->"
      " 0.01, --steps 100 -> 200); rerun with its flags, give another --workdir, or add"
      " --allow_config_change to go on with these (recorded in config.json).")


def test_allowed_changes_are_recorded_with_their_steps():
  first = {**SAVED, "learning_rate": 0.01}
  record = workdir_lib.check_config_change(SAVED, first, allow=True, step=50)
  assert record == {**first, "config_history": [
      {"step": 50, "changes": {"learning_rate": {"from": 0.001, "to": 0.01}}}]}
  second = {**first, "steps": 200}
  record = workdir_lib.check_config_change(record, second, allow=True, step=100)
  assert record["config_history"][1] == {
      "step": 100, "changes": {"steps": {"from": 100, "to": 200}}}
  assert record["config_history"][0]["step"] == 50
  assert {k: v for k, v in record.items() if k != "config_history"} == second


def test_without_a_checkpoint_the_new_flags_replace_the_old():
  new = {**SAVED, "learning_rate": 0.01}
  assert workdir_lib.check_config_change(SAVED, new, allow=False, step=0) == new
  assert workdir_lib.check_config_change(None, new, allow=False, step=50) == new


def test_flags_newer_than_the_run_take_their_defaults():
  new = {**SAVED, "label_smoothing": 0.0}
  assert workdir_lib.check_config_change(
      SAVED, new, allow=False, step=50, defaults={"label_smoothing": 0.0}) is None
  with pytest.raises(workdir_lib.ConfigChangeError, match=r"--label_smoothing None -> 0.1"):
    workdir_lib.check_config_change(SAVED, {**SAVED, "label_smoothing": 0.1},
                                    allow=False, step=50)


def test_record_config_writes_atomically_and_only_on_change(tmp_path):
  workdir_lib.record_config(tmp_path, SAVED, allow=False, step=0)
  path = tmp_path / workdir_lib.CONFIG_FILE
  inode = os.stat(path).st_ino
  workdir_lib.record_config(tmp_path, {**SAVED, "log_every": 1}, allow=False, step=50)
  assert os.stat(path).st_ino == inode and json.loads(path.read_text()) == SAVED
  with pytest.raises(workdir_lib.ConfigChangeError):
    workdir_lib.record_config(tmp_path, {**SAVED, "steps": 7}, allow=False, step=50)
  assert json.loads(path.read_text()) == SAVED
  workdir_lib.record_config(tmp_path, {**SAVED, "steps": 7}, allow=True, step=50)
  assert workdir_lib.read_config(tmp_path) == {**SAVED, "steps": 7}
  assert workdir_lib.read_config(tmp_path, with_history=True)["config_history"] == [
      {"step": 50, "changes": {"steps": {"from": 100, "to": 7}}}]
  assert sorted(os.listdir(tmp_path)) == [workdir_lib.CONFIG_FILE]
  assert os.stat(path).st_mode & 0o777 == 0o644


def test_unreadable_config_json_is_one_clear_error(tmp_path):
  (tmp_path / workdir_lib.CONFIG_FILE).write_text('{"steps": 1')
  with pytest.raises(workdir_lib.WorkdirError, match=r"config.json is not valid JSON"):
    workdir_lib.record_config(tmp_path, SAVED, allow=False, step=50)
  assert workdir_lib.read_config(tmp_path / "nothing") is None
