"""experiments/main.py's CPU defaults: what it adds to XLA_FLAGS, and that the
train step computes the same numbers with them (and with glibc's malloc set to
reuse memory, xdomain.host_memory) as without."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from tests import flagfiles

YNN = "--xla_cpu_experimental_ynn_fusion_type="


def test_defaults_are_added_unless_xla_flags_sets_them():
  add = flagfiles.main_module().with_cpu_xla_defaults
  assert add("", "0.10.2") == YNN
  assert add("--xla_force_host_platform_device_count=8", "0.12.0.1") == (
      f"--xla_force_host_platform_device_count=8 {YNN}")
  assert add(f"{YNN}-individual_dot", "0.10.2") == f"{YNN}-individual_dot"  # the user's
  assert add("", "0.9.2") == ""  # XLA before 0.10 would abort on a flag it does not know


# Three DANN steps of the seed CNN at 28x28, fully optimised as in a real run.
_STEPS = """
import json, sys, tempfile
from xdomain import host_memory
if sys.argv[2] == "reuse":
  assert host_memory.reuse_freed_memory()
import jax, numpy as np
from xdomain.config import Config
from xdomain.train import Experiment
config = Config(method="dann", model="seed_cnn", image_size=28, batch_size=32,
                data_dir=sys.argv[1])
run = Experiment(config, tempfile.mkdtemp(), devices=jax.devices()[:1])
state, loader = run.prepare_state(), run.training_loader()
logged = []
for _ in range(3):
  state, metrics = run.train_step(state, run.global_batch(next(loader)), run.step_rng)
  logged += [float(metrics[name]) for name in sorted(metrics)]
params = [np.asarray(p).ravel() for p in jax.tree.leaves(state.params)]
print(json.dumps({"metrics": logged, "params": np.concatenate(params)[::97].tolist()}))
"""


def test_a_train_step_computes_the_same_numbers_with_them(data_dir):
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "JAX_DISABLE_MOST_OPTIMIZATIONS")}
  runs = [subprocess.Popen([sys.executable, "-c", _STEPS, data_dir, memory],
                           env=dict(env, XLA_FLAGS=flags), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
          for flags, memory in (("", "malloc"), (YNN, "malloc"), (YNN, "reuse"))]
  outputs = []
  for run in runs:
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-3000:]
    outputs.append(json.loads(stdout.strip().splitlines()[-1]))
  default, ynn, runner = outputs
  np.testing.assert_allclose(ynn["metrics"], default["metrics"], rtol=1e-5)
  np.testing.assert_allclose(ynn["params"], default["params"], rtol=1e-5, atol=1e-6)
  # Where memory comes from changes no bit.
  assert (runner["metrics"], runner["params"]) == (ynn["metrics"], ynn["params"])
