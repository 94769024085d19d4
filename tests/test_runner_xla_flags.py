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


# DANN steps of the seed CNN at 28x28, fully optimised as in a real run: the
# metrics of each step (the first step's are of the shared initial parameters).
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
steps = []
for _ in range(3):
  state, metrics = run.train_step(state, run.global_batch(next(loader)), run.step_rng)
  steps.append({name: float(value) for name, value in metrics.items()})
params = [np.asarray(p).ravel() for p in jax.tree.leaves(state.params)]
print(json.dumps({"steps": steps, "params": np.concatenate(params)[::97].tolist()}))
"""


def test_a_train_step_computes_the_same_numbers_with_them(data_dir):
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "JAX_DISABLE_MOST_OPTIMIZATIONS")}

  def start(flags, memory):
    return subprocess.Popen([sys.executable, "-c", _STEPS, data_dir, memory],
                            env=dict(env, XLA_FLAGS=flags), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

  def output(run):
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])

  default_run, ynn_run = start("", "malloc"), start(YNN, "malloc")
  default, ynn = output(default_run), output(ynn_run)
  # After the YNN run: the same program, loaded from the session's compilation
  # cache instead of compiled a third time.
  runner = output(start(YNN, "reuse"))
  # The first step, from the same parameters: its losses agree to float
  # rounding. Its gradient only to 1e-3: the two programs round differently, and
  # a ReLU input within rounding of 0 can land on the other side of the kink
  # (one of the discriminator's 65,536 did on an AMD EPYC, moving its first
  # layer's gradient by 5e-3). Adam's first steps, about lr * sign(g), then
  # carry such differences into every parameter whose gradient is near 0, so
  # later steps are not compared across the two settings.
  first_default, first_ynn = default["steps"][0], ynn["steps"][0]
  assert first_ynn.keys() == first_default.keys()
  for name in sorted(first_default):
    np.testing.assert_allclose(first_ynn[name], first_default[name],
                               rtol=1e-3 if name == "grad_norm" else 1e-5, err_msg=name)
  # Where memory comes from changes no bit, over all three steps.
  assert (runner["steps"], runner["params"]) == (ynn["steps"], ynn["params"])
