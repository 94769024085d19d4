"""xdomain.host_memory: with it, a jitted program's temporary buffer is reused from
one call to the next instead of page-faulted in again; the numbers do not change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from xdomain import host_memory

# A program whose 64 MiB intermediate exp(x) is read by two dots, so XLA keeps it
# in the temporary buffer; the minor page faults of each of 30 calls.
_CALLS = """
import json, resource, sys
from xdomain import host_memory
applied = sys.argv[1] == "reuse" and host_memory.reuse_freed_memory()
import jax, jax.numpy as jnp, numpy as np

@jax.jit
def f(x, v):
  a = jnp.exp(x)
  return a @ v, a.T @ x[:, :1]

x = jax.random.uniform(jax.random.key(0), (2048, 8192), minval=-1.0, maxval=1.0)
v = jnp.ones(8192)
compiled = f.lower(x, v).compile()
outputs = jax.block_until_ready(compiled(x, v))
faults = []
for _ in range(30):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  outputs = jax.block_until_ready(compiled(x, v))
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults,
                  "temp_bytes": compiled.memory_analysis().temp_size_in_bytes,
                  "outputs": [np.asarray(o).ravel()[::7].tolist() for o in outputs]}))
"""


def _run(setting: str) -> dict:
  finished = subprocess.run([sys.executable, "-c", _CALLS, setting], capture_output=True,
                            text=True, timeout=300, check=False,
                            env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"})
  assert finished.returncode == 0, finished.stderr[-3000:]
  return json.loads(finished.stdout.strip().splitlines()[-1])


def test_calls_reuse_their_temporary_buffer_and_compute_the_same():
  glibc, reused = _run("malloc"), _run("reuse")
  if not reused["applied"]:
    pytest.skip("no glibc: reuse_freed_memory changes nothing here")
  pages = glibc["temp_bytes"] / os.sysconf("SC_PAGE_SIZE")
  assert glibc["temp_bytes"] >= 48 << 20  # the premise: a temporary buffer over glibc's mmap threshold
  if np.median(glibc["faults"]) < 0.5 * pages:
    pytest.skip("this malloc reuses large blocks by itself: nothing to compare")
  # Reused, most calls fault nothing; now and then one faults the whole buffer in
  # again (0-3 calls in 10 on this CPU, 2026-12-03; the cause is not known), so
  # the test counts the calls that fault in more than half the buffer.
  refaulted = [n for n in reused["faults"] if n > 0.5 * pages]
  assert len(refaulted) < 0.5 * len(reused["faults"]), (reused["faults"], glibc["faults"])
  assert reused["outputs"] == glibc["outputs"]


def test_without_glibc_it_changes_nothing(monkeypatch):
  monkeypatch.setattr(host_memory.ctypes, "CDLL", lambda path: types.SimpleNamespace())
  assert host_memory.reuse_freed_memory() is False

  def no_library(path):
    raise OSError(f"{path}: cannot open shared object file")

  monkeypatch.setattr(host_memory.ctypes, "CDLL", no_library)
  assert host_memory.reuse_freed_memory() is False
