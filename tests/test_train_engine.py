"""The engine: flag files run and resume, restarts and device counts change nothing."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from tests import flagfiles
from xdomain import checkpoint
from xdomain import methods
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.methods import base
from xdomain.train import NonFiniteLossError
from xdomain.train import train_and_evaluate
from xdomain.train.writer import read_metrics
from xdomain.train.experiment import validate_config


def tiny(data_dir, **overrides) -> Config:
  values = dict(flagfiles.SMOKE_OVERRIDES, method="dann", data_dir=data_dir)
  values.update(overrides)
  return Config(**values)


def losses_by_step(workdir):
  return {r["step"]: r["total"] for r in read_metrics(str(workdir)) if "total" in r}


def assert_trees_close(a, b, **tolerance):
  flat_a, flat_b = checkpoint.flatten_paths(a), checkpoint.flatten_paths(b)
  assert flat_a.keys() == flat_b.keys()
  for path in flat_a:
    np.testing.assert_allclose(flat_a[path], flat_b[path], err_msg=path, **tolerance)


@pytest.mark.parametrize("flagfile",
                         flagfiles.flag_files("digits") + flagfiles.flag_files("mnist_m"))
def test_flag_file_runs_and_resumes(flagfile, data_dir, tmp_path):
  overrides = flagfiles.with_upstreams(
      flagfile, dict(flagfiles.SMOKE_OVERRIDES, data_dir=data_dir), tmp_path)
  tmp_path = tmp_path / "run"
  config = flagfiles.config_from_flagfile(flagfile, **overrides)
  validate_config(config)
  results = train_and_evaluate(config, str(tmp_path),
                               devices=flagfiles.smoke_devices())
  assert results["step"] == 2
  assert 0.0 <= results["target_test_accuracy"] <= 1.0
  assert len(results["target_test_per_class_accuracy"]) == 10
  # Rerun as it was: the run restores its checkpoint (state, loader position)
  # and, its steps done, evaluates the restored model, which must score as the
  # saved one did. (Resumed training is exact: test_resume_ends_where_..., the
  # fault test in test_train_loop.py.)
  restored = train_and_evaluate(config, str(tmp_path), devices=flagfiles.smoke_devices())
  for name, value in results.items():
    if name.startswith(("target_test_", "source_test_", "ema_")):
      assert restored[name] == value, name
  events = read_metrics(str(tmp_path))
  assert [e["step"] for e in events if "compile_seconds" in e] == [0]  # once per run
  assert [e["step"] for e in events if "total" in e] == [1, 2]


def test_resume_ends_where_an_unbroken_run_ends(data_dir, tmp_path):
  # IWDAN (DANN with class weights) draws dropout in the discriminator, keeps
  # running statistics in the state and a loader position: all must continue
  # exactly.
  config = tiny(data_dir, method="iwdan", steps=6, checkpoint_every=3)
  one = flagfiles.smoke_devices()
  train_and_evaluate(config, str(tmp_path / "unbroken"), devices=one)
  train_and_evaluate(dataclasses.replace(config, steps=3), str(tmp_path / "resumed"), devices=one)
  train_and_evaluate(dataclasses.replace(config, allow_config_change=True),
                     str(tmp_path / "resumed"), devices=one)
  assert_trees_close(checkpoint.load_params(tmp_path / "unbroken"),
                     checkpoint.load_params(tmp_path / "resumed"), rtol=0, atol=0)
  assert losses_by_step(tmp_path / "unbroken") == losses_by_step(tmp_path / "resumed")


@pytest.mark.parametrize("method", ["dann", "mean_teacher"])
def test_one_and_eight_devices_agree(method, data_dir, tmp_path):
  assert jax.device_count() == 8
  config = tiny(data_dir, method=method, steps=4, checkpoint_every=4, augment=True)
  one = train_and_evaluate(config, str(tmp_path / "one"), devices=jax.devices()[:1])
  eight = train_and_evaluate(config, str(tmp_path / "eight"))
  one_losses, eight_losses = losses_by_step(tmp_path / "one"), losses_by_step(tmp_path / "eight")
  assert one_losses.keys() == eight_losses.keys() == {1, 2, 3, 4}
  np.testing.assert_allclose(list(one_losses.values()), list(eight_losses.values()),
                             rtol=1e-4)
  assert_trees_close(checkpoint.load_params(tmp_path / "one"),
                     checkpoint.load_params(tmp_path / "eight"), rtol=1e-3, atol=1e-5)
  assert one["target_test_accuracy"] == pytest.approx(eight["target_test_accuracy"], abs=0.01)
  # The mean teacher's EMA model is evaluated too, with an `ema_` prefix.
  assert ("ema_target_test_accuracy" in one) == (method == "mean_teacher")
  if method == "mean_teacher":
    assert one["ema_target_test_accuracy"] == pytest.approx(
        eight["ema_target_test_accuracy"], abs=0.01)


def test_iwdan_weights_are_of_the_whole_batch_on_eight_devices(data_dir, tmp_path):
  config = tiny(data_dir, method="iwdan", steps=2, checkpoint_every=2)
  train_and_evaluate(config, str(tmp_path / "one"), devices=jax.devices()[:1])
  train_and_evaluate(config, str(tmp_path / "eight"))

  def weights(workdir):
    return [[r[f"label_shift/weight_{k}"] for k in range(10)]
            for r in read_metrics(str(workdir)) if "total" in r]

  # Weights from 2 of the 16 examples (one device's share) would differ by
  # tens of percent; a linear solve with 10 classes and 16 examples amplifies
  # rounding to ~1e-4 at the shared initial parameters. The second step's are
  # of parameters after one Adam step, about lr * sign(g), which turns rounding
  # in gradients near 0 into whole steps (1.2e-3 apart on an AMD EPYC).
  one, eight = weights(tmp_path / "one"), weights(tmp_path / "eight")
  assert len(one) == len(eight) == 2
  np.testing.assert_allclose(one[0], eight[0], rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(one[1], eight[1], rtol=1e-2, atol=1e-5)


_WORKER = textwrap.dedent("""
    import sys
    from xdomain.config import Config
    from xdomain.train import train_and_evaluate
    address, process_id, workdir, data_dir, steps = sys.argv[1:]
    config = Config(method="dann", steps=int(steps), batch_size=16, eval_batch_size=64,
                    log_every=1, eval_every=int(steps), checkpoint_every=int(steps),
                    discriminator_hidden=32, data_dir=data_dir,
                    coordinator_address=address, num_processes=2,
                    process_id=int(process_id), allow_config_change=True)
    results = train_and_evaluate(config, workdir)
    sys.exit(128 + 15 if results.get("interrupted") else 0)
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start_two_processes(workdir, data_dir, steps: int) -> list[subprocess.Popen]:
  """Two processes of one device each train `tiny`'s DANN run in `workdir`."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=flagfiles.xla_flags(devices=1))
  address = f"127.0.0.1:{_free_port()}"
  return [subprocess.Popen(
      [sys.executable, "-c", _WORKER, address, str(i), str(workdir), data_dir, str(steps)],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]


def _finish(workers, returncode: int) -> None:
  try:
    outputs = [w.communicate(timeout=300)[0] for w in workers]
  finally:  # a hung process must not outlive the test
    _kill(workers)
  for worker, output in zip(workers, outputs):
    assert worker.returncode == returncode, output[-3000:]


def _kill(workers) -> None:
  for worker in workers:
    worker.kill()


def test_two_processes_stopped_by_sigterm_to_one_resume_to_match_one(data_dir, tmp_path):
  # Saving is collective: had process 1 stopped alone, process 0 would wait for
  # it forever (or save a step that process 1 never reached).
  workdir = tmp_path / "two"
  workers = _start_two_processes(workdir, data_dir, steps=100000)
  deadline = time.time() + 240
  while not any("total" in e for e in _events(workdir)):
    if time.time() > deadline or any(w.poll() is not None for w in workers):
      _kill(workers)
      outputs = "\n".join(w.communicate()[0][-3000:] for w in workers)
      pytest.fail(f"the two processes did not start training:\n{outputs}")
    time.sleep(0.5)
  workers[1].send_signal(signal.SIGTERM)
  _finish(workers, returncode=128 + signal.SIGTERM)
  steps = [int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()]
  assert len(steps) == 1 and 1 <= steps[0] < 100000
  # Resumed by both processes, the run ends where an unbroken one ends (in
  # one process, whose two devices split the batch as the processes do).
  end = steps[0] + 2
  _finish(_start_two_processes(workdir, data_dir, steps=end), returncode=0)
  unbroken = tiny(data_dir, steps=end, checkpoint_every=end, eval_every=end)
  train_and_evaluate(unbroken, str(tmp_path / "one"), devices=jax.devices()[:2])
  np.testing.assert_allclose(list(losses_by_step(workdir).values()),
                             list(losses_by_step(tmp_path / "one").values()), rtol=1e-4)
  assert_trees_close(checkpoint.load_params(workdir),
                     checkpoint.load_params(tmp_path / "one"), rtol=1e-3, atol=1e-5)


def test_sigterm_saves_a_checkpoint_to_resume_from(data_dir, tmp_path):
  workdir = tmp_path / "run"
  command = [sys.executable, os.path.join(flagfiles.EXPERIMENTS, "main.py"),
             f"--flagfile={os.path.join(flagfiles.EXPERIMENTS, 'digits', 'source_only.flags')}",
             f"--workdir={workdir}", f"--data_dir={data_dir}", "--steps=100000",
             "--batch_size=16", "--log_every=1", "--checkpoint_every=100000"]
  process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
  deadline = time.time() + 240
  while not any("total" in e for e in _events(workdir)):
    assert process.poll() is None and time.time() < deadline, process.communicate()[0][-3000:]
    time.sleep(0.5)
  process.send_signal(signal.SIGTERM)
  output = process.communicate(timeout=120)[0]
  assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
  saved = checkpoint.load_meta(workdir)
  assert saved["method"] == "source_only"
  steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
  assert len(steps) == 1 and 1 <= steps[0] < 100000
  assert "SIGTERM" in output


def _events(workdir):
  path = workdir / "metrics.jsonl"
  return read_metrics(str(workdir)) if path.exists() else []


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    data_dir, tmp_path, monkeypatch):
  def make_exploding(config):
    def terms(outputs, aux_params, rng, step):
      del aux_params, rng
      value = base.masked_mean(outputs.target_logits[:, 0], None)
      return {"boom": value + jax.numpy.where(step >= 3, jax.numpy.nan, 0.0)}
    return methods.Method(name="exploding", terms=terms, weights={"boom": 0.0})

  monkeypatch.setitem(methods.METHODS, "exploding", make_exploding)
  config = tiny(data_dir, method="exploding", steps=6, checkpoint_every=2)
  with pytest.raises(NonFiniteLossError, match=r"step 4 .*boom=nan"):
    train_and_evaluate(config, str(tmp_path), devices=flagfiles.smoke_devices())
  steps = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert steps == [2]


def test_checkpoint_of_another_run_is_refused_and_kept(data_dir, tmp_path):
  train_and_evaluate(tiny(data_dir), str(tmp_path), devices=flagfiles.smoke_devices())
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r"method: checkpoint 'dann', this run 'coral'"):
    train_and_evaluate(tiny(data_dir, method="coral", steps=4), str(tmp_path), devices=flagfiles.smoke_devices())
  assert checkpoint.load_meta(tmp_path)["method"] == "dann"
  params = checkpoint.load_params(tmp_path)
  assert sum(np.size(p) for p in jax.tree.leaves(params)) == 225_034


@pytest.mark.parametrize("overrides, message", [
    ({"method": "bogus"}, r"--method='bogus' is not one of"),
    ({"target": "digits/nope"}, r"--target='digits/nope' is not a known domain"),
    ({"steps": 0}, r"--steps=0 must be positive"),
    ({"ema_decay": 1.5}, r"--ema_decay=1.5 must be in \[0, 1\)"),
    ({"coordinator_address": "127.0.0.1:1"}, r"go together"),
])
def test_bad_config_is_one_clear_error(overrides, message, data_dir):
  with pytest.raises(ConfigError, match=message):
    validate_config(tiny(data_dir, **overrides))


def test_batch_not_divisible_by_devices(data_dir, tmp_path):
  with pytest.raises(ConfigError, match=r"--batch_size=12 is not divisible by the 8 devices"):
    train_and_evaluate(tiny(data_dir, batch_size=12), str(tmp_path))


def test_main_reports_bad_flags_in_one_line(data_dir, tmp_path):
  command = [sys.executable, os.path.join(flagfiles.EXPERIMENTS, "main.py"),
             f"--workdir={tmp_path}", "--method=bogus", f"--data_dir={data_dir}"]
  result = subprocess.run(command, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: --method='bogus'")
  assert "Traceback" not in result.stderr


def test_resuming_with_other_preprocessing_is_refused(data_dir, tmp_path):
  train_and_evaluate(tiny(data_dir), str(tmp_path), devices=flagfiles.smoke_devices())
  with pytest.raises(checkpoint.CheckpointMismatchError, match=r"other data settings"):
    train_and_evaluate(tiny(data_dir, normalize="standardize", steps=4), str(tmp_path),
                       devices=flagfiles.smoke_devices())
  assert checkpoint.load_meta(tmp_path)["method"] == "dann"
