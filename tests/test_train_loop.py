"""What a run guarantees (`train_and_evaluate` and `experiments/main.py`): one run
per workdir, a damaged checkpoint set aside, no silent change of flags on resume,
metrics that survive a kill, bad input in one line with exit status 2, and a run
killed at random moments that ends where an unbroken run ends."""

import dataclasses
import gc
import json
import logging
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests import flagfiles
from tests.orbax_reads import ABANDONED_ORBAX_READS
from xdomain import checkpoint
from xdomain import workdir as workdir_lib
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.train import train_and_evaluate
from xdomain.train.writer import read_metrics

MAIN = os.path.join(flagfiles.EXPERIMENTS, "main.py")
SOURCE_ONLY = os.path.join(flagfiles.EXPERIMENTS, "digits", "source_only.flags")
TEST_METRICS = ("source_test_", "target_test_")


def small(data_dir, **overrides) -> Config:
  values = dict(flagfiles.SMOKE_OVERRIDES, method="source_only", data_dir=data_dir)
  values.update(overrides)
  return Config(**values)


def run(config, workdir):
  return train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])


def scores(results):
  return {k: v for k, v in results.items() if k.startswith(TEST_METRICS)}


def losses_by_step(workdir):
  return {e["step"]: e["total"] for e in read_metrics(str(workdir)) if "total" in e}


def assert_same_params(a, b):
  flat_a, flat_b = checkpoint.flatten_paths(a), checkpoint.flatten_paths(b)
  assert flat_a.keys() == flat_b.keys()
  for path in flat_a:
    np.testing.assert_array_equal(flat_a[path], flat_b[path], err_msg=path)


def snapshot(folder):
  """Every path under `folder` with its size, modification time and content."""
  found = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs + files:
      path = os.path.join(root, name)
      stat = os.stat(path)
      content = pathlib.Path(path).read_bytes() if name in files else None
      found[os.path.relpath(path, folder)] = (stat.st_size, stat.st_mtime_ns, content)
  return found


# In-process runs


@ABANDONED_ORBAX_READS
def test_a_damaged_checkpoint_is_set_aside_and_the_run_ends_as_an_unbroken_one(
    data_dir, tmp_path, caplog):
  config = small(data_dir, steps=4, eval_every=4)
  unbroken = run(config, tmp_path)
  unbroken_params, unbroken_losses = checkpoint.load_params(tmp_path), losses_by_step(tmp_path)
  step_dir = tmp_path / "checkpoints" / "4"
  largest = max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
                key=lambda p: p.stat().st_size)
  largest.write_bytes(b"")  # cut to 0 bytes, as a full disk or a bad copy leaves it
  # Named by --init_from, it is an error (main.py: exit status 2), not set aside.
  with pytest.raises(checkpoint.CheckpointDamagedError, match=f"{step_dir} is damaged"):
    run(small(data_dir, init_from=str(tmp_path)), tmp_path / "fine_tune")
  assert not (tmp_path / "fine_tune").exists()
  with caplog.at_level(logging.WARNING):
    resumed = run(config, tmp_path)
  [message] = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
  assert message.startswith("The checkpoint at step 4 is damaged (")
  [aside] = os.listdir(tmp_path / "checkpoints.damaged")
  assert aside.startswith("4-") and aside in message
  # Set aside whole, never deleted: the cut file is there as it was.
  moved = tmp_path / "checkpoints.damaged" / aside / largest.relative_to(step_dir)
  assert moved.is_file() and moved.stat().st_size == 0
  # Resumed from step 2, it trained steps 3 and 4 again, exactly.
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
  assert scores(resumed) == scores(unbroken)
  assert_same_params(checkpoint.load_params(tmp_path), unbroken_params)
  assert losses_by_step(tmp_path) == unbroken_losses
  # Orbax's reads abandoned by the failed restores, collected here under this test's filter
  # rather than in a later test (tests/orbax_reads.py).
  gc.collect()


def test_resume_with_other_training_flags_is_refused_unless_allowed(data_dir, tmp_path):
  run(small(data_dir), tmp_path)
  before = snapshot(tmp_path)
  changed = small(data_dir, steps=3, learning_rate=2e-3)
  with pytest.raises(workdir_lib.ConfigChangeError) as error:
    run(changed, tmp_path)
  assert str(error.value).startswith(
      "the checkpoint at step 2 was trained with other flags (--learning_rate 0.001 ->"
      " 0.002, --steps 2 -> 3); rerun with its flags, give another --workdir, or add"
      " --allow_config_change")
  assert snapshot(tmp_path) == before  # config.json, metrics, checkpoints as they were
  results = run(dataclasses.replace(changed, allow_config_change=True), tmp_path)
  assert results["step"] == 3
  record = workdir_lib.read_config(tmp_path, with_history=True)
  assert record["learning_rate"] == 2e-3 and record["steps"] == 3
  assert record[workdir_lib.HISTORY_KEY] == [{"step": 2, "changes": {
      "learning_rate": {"from": 1e-3, "to": 2e-3}, "steps": {"from": 2, "to": 3}}}]
  # Flags that do not alter training may change freely, and leave the record alone.
  config_json = tmp_path / workdir_lib.CONFIG_FILE
  stat = config_json.stat()
  run(dataclasses.replace(changed, eval_batch_size=32, log_every=5), tmp_path)
  assert (config_json.stat().st_ino, config_json.stat().st_mtime_ns) == (
      stat.st_ino, stat.st_mtime_ns)


def test_a_torn_metrics_line_is_dropped_on_resume_with_a_warning(data_dir, tmp_path, caplog):
  config = small(data_dir)
  run(config, tmp_path)
  events = read_metrics(str(tmp_path))
  assert [e["step"] for e in events if "compile_seconds" in e] == [0]
  config_json = tmp_path / workdir_lib.CONFIG_FILE
  stat = config_json.stat()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 2, "total": 0.5, "target_test_accu')  # a kill mid-line
  with caplog.at_level(logging.WARNING):
    results = run(config, tmp_path)  # at --steps already: evaluates only
  assert "Ignoring the torn last line" in caplog.text
  assert results["step"] == 2
  assert (tmp_path / "metrics.jsonl").read_text().endswith("}\n")
  assert read_metrics(str(tmp_path)) == events
  # A rerun with the same flags leaves config.json as it was.
  assert (config_json.stat().st_ino, config_json.stat().st_mtime_ns) == (
      stat.st_ino, stat.st_mtime_ns)


def test_a_run_that_fails_before_training_leaves_no_workdir(data_dir, tmp_path):
  workdir = tmp_path / "new"
  with pytest.raises(ConfigError, match="--method='bogus' is not one of"):
    run(small(data_dir, method="bogus"), workdir)
  assert not workdir.exists()
  workdir.mkdir()  # one the user made stays, empty
  with pytest.raises(ConfigError):
    run(small(data_dir, method="bogus"), workdir)
  assert os.listdir(workdir) == []


def test_a_busy_workdir_is_refused_in_process_too(data_dir, tmp_path):
  with workdir_lib.WorkdirLock(tmp_path):
    before = snapshot(tmp_path)
    with pytest.raises(workdir_lib.WorkdirBusyError, match=f"pid {os.getpid()} on host"):
      run(small(data_dir), tmp_path)
    assert snapshot(tmp_path) == before
  assert os.listdir(tmp_path) == []


def test_sigterm_during_the_final_save_waits_for_it(data_dir, tmp_path, monkeypatch):
  # The run's own SIGTERM handler must stay in place until the last save is
  # durable: before, SIGTERM then went to the previous handler (the default
  # ends the process) while the save was still being written.
  config = small(data_dir)
  final_save_issued, sent = [], []
  save, make_manager = checkpoint.save, checkpoint.make_manager

  def save_and_note(manager, step, *args, **kwargs):
    save(manager, step, *args, **kwargs)
    if step == config.steps:
      final_save_issued.append(step)

  def manager_that_gets_sigterm_while_waiting(*args, **kwargs):
    manager = make_manager(*args, **kwargs)
    wait = manager.wait_until_finished

    def wait_until_finished():
      if final_save_issued and not sent:
        sent.append(True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # delivered to whichever handler is installed
      wait()

    manager.wait_until_finished = wait_until_finished
    return manager

  monkeypatch.setattr(checkpoint, "save", save_and_note)
  monkeypatch.setattr(checkpoint, "make_manager", manager_that_gets_sigterm_while_waiting)
  reached_previous_handler = []
  previous = signal.signal(signal.SIGTERM, lambda *_: reached_previous_handler.append(True))
  try:
    results = run(config, tmp_path)
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert sent and not reached_previous_handler
  assert results["step"] == 2 and "interrupted" not in results
  assert checkpoint.load_meta(tmp_path)["method"] == "source_only"
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]


# experiments/main.py, as a user runs it


def main(*args, timeout=240):
  return subprocess.run([sys.executable, MAIN, *args], capture_output=True, text=True,
                        timeout=timeout, cwd=flagfiles.REPO)


def assert_one_error_line(result, pattern):
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, result.stderr[-3000:]
  assert re.match(pattern, errors[0]), errors[0]


def test_main_on_a_busy_workdir_exits_2_naming_the_holder_and_touches_nothing(
    data_dir, tmp_path):
  workdir = tmp_path / "run"
  with workdir_lib.WorkdirLock(workdir):
    (workdir / "metrics.jsonl").write_text('{"step": 1, "total": 2.0}\n')
    before = snapshot(workdir)
    result = main(f"--flagfile={SOURCE_ONLY}", f"--workdir={workdir}",
                  f"--data_dir={data_dir}", "--steps=2")
    assert_one_error_line(
        result, rf"error: --workdir={workdir} is in use by another run \(pid {os.getpid()}"
        r" on host .* since .*\); wait for it to end or stop it, or give another --workdir")
    assert snapshot(workdir) == before


@pytest.mark.parametrize("case", ["workdir is a file", "flag parse error", "empty conll test"])
def test_main_reports_bad_input_in_one_line_with_exit_status_2(case, data_dir, tmp_path):
  workdir = tmp_path / "run"
  args = [f"--flagfile={SOURCE_ONLY}", f"--workdir={workdir}", f"--data_dir={data_dir}"]
  if case == "workdir is a file":
    workdir.write_text("not a folder")
    pattern = rf"error: --workdir={workdir} is a file, not a directory"
  elif case == "flag parse error":
    args.append("--steps=ten")
    pattern = r"error: flag --steps=ten: invalid literal for int\(\)"
  else:
    (tmp_path / "train.txt").write_text("Peter B-PER\nsaw O\n")
    (tmp_path / "test.txt").write_text("\n\n")
    args += [f"--source=conll:{tmp_path}", "--target=ner/wnut16", "--model=bilstm"]
    pattern = (rf"error: --source=conll:{tmp_path}: the test file {tmp_path}/test.txt"
               " holds no sentence; give a CoNLL file")
  assert_one_error_line(main(*args), pattern)
  if case == "empty conll test":
    assert not workdir.exists()  # stopped before anything was written


# A fault test: SIGKILL at random moments, inside saves too


def _start(workdir, log, common):
  env = dict(os.environ, XLA_FLAGS=flagfiles.xla_flags(devices=1))
  # XLA's own settings, as in this process, whose unbroken run the result must equal bit for bit.
  return subprocess.Popen([sys.executable, MAIN, f"--workdir={workdir}", "--cpu_xla_defaults=false",
                           *common],
                          stdout=log, stderr=subprocess.STDOUT, env=env,
                          cwd=flagfiles.REPO)


def _wait_for(condition, process, deadline, what, interval=0.01):
  while not condition():
    if process.poll() is not None or time.time() > deadline:
      process.kill()
      pytest.fail(f"the run ended (status {process.poll()}) or took too long before {what}")
    time.sleep(interval)


def _trained_steps(workdir):
  try:
    return [e["step"] for e in read_metrics(str(workdir)) if "total" in e]
  except (FileNotFoundError, ValueError):
    return []


def test_sigkill_at_random_moments_then_resume_ends_as_an_unbroken_run(data_dir, tmp_path):
  rng = random.Random(19)
  steps = 48
  # Without the flag file's cropping, each start loads the data in half the time.
  flags = dict(data_dir=data_dir, steps=steps, batch_size=8, eval_batch_size=128,
               log_every=1, eval_every=steps, checkpoint_every=2, keep_checkpoints=2,
               crop_to_content=False, resolution=0, source_val_fraction=0.0)
  common = [f"--flagfile={SOURCE_ONLY}", *(f"--{k}={v}" for k, v in flags.items())]
  deadline = time.time() + 240
  # In this process, on one device (bit-identical to a main.py process of one).
  unbroken_results = run(flagfiles.config_from_flagfile(
      os.path.relpath(SOURCE_ONLY, flagfiles.REPO), **flags), tmp_path / "unbroken")

  workdir = tmp_path / "killed"
  checkpoints = workdir / "checkpoints"

  def saves_in_progress():
    return {name for name in os.listdir(checkpoints) if "tmp" in name}

  def training_past(step):
    return lambda: any(s > step for s in _trained_steps(workdir))

  kills = []
  for attempt in range(3):
    with open(tmp_path / f"attempt{attempt}.log", "w") as log:
      done = max(_trained_steps(workdir), default=0)
      left_by_a_kill = saves_in_progress() if checkpoints.is_dir() else set()
      process = _start(workdir, log, common)
      if attempt == 0:  # after a random step
        _wait_for(training_past(rng.randint(3, 10)), process, deadline, "kill 1")
      elif attempt == 1:  # inside a save: its folder is still a temporary one
        _wait_for(training_past(done), process, deadline, "kill 2")
        _wait_for(lambda: saves_in_progress() - left_by_a_kill, process, deadline, "kill 2",
                  interval=0.002)
      else:  # at a random moment of training
        _wait_for(training_past(done), process, deadline, "kill 3")
        time.sleep(rng.uniform(0.0, 0.5))
      assert process.poll() is None, "the run ended before it could be killed"
      process.send_signal(signal.SIGKILL)
      process.wait()
      kills.append(max(_trained_steps(workdir)))
  with open(tmp_path / "final.log", "w") as log:
    assert _start(workdir, log, common).wait(timeout=240) == 0
  assert time.time() < deadline
  assert kills == sorted(kills) and kills[-1] < steps, kills
  # The killed holder's lock was taken over by the next run.
  assert "Taking over" in (tmp_path / "attempt1.log").read_text()

  with open(workdir / "results.json") as f:
    assert scores(json.load(f)) == scores(unbroken_results)
  assert_same_params(checkpoint.load_params(workdir),
                     checkpoint.load_params(tmp_path / "unbroken"))
  # metrics.jsonl reads as one unbroken run: every step once, compile time once.
  events = read_metrics(str(workdir))
  assert [e["step"] for e in events if "total" in e] == list(range(1, steps + 1))
  assert [e["step"] for e in events if "compile_seconds" in e] == [0]
  assert losses_by_step(workdir) == losses_by_step(tmp_path / "unbroken")
  assert not os.path.exists(workdir / workdir_lib.LOCK_FILE)
