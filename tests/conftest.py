"""Test-wide setup: eight fake CPU devices, set before JAX starts."""

import importlib.metadata
import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()
# The suite compiles some hundred small programs and runs each a few steps:
# XLA's optimisation passes would cost more than they save (about half the
# suite's time), and XLA:CPU's older (non-MLIR) fusion emitters compile these
# programs 1.4-2.7x faster (jaxlib >= 0.10 has the flag; XLA aborts on flags it
# does not know). Tests compare runs compiled alike, or against references with
# tolerances; accuracy and speed are measured in benchmarks/, with XLA's defaults.
# Only on the CPU: a GPU plugin's XLA aborts on that flag (H200, jax 0.11.2).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
_JAXLIB = tuple(int(p) for p in importlib.metadata.version("jaxlib").split(".")[:2])
if (os.environ["JAX_PLATFORMS"] == "cpu" and _JAXLIB >= (0, 10)
    and "--xla_cpu_use_fusion_emitters" not in os.environ["XLA_FLAGS"]):
  os.environ["XLA_FLAGS"] += " --xla_cpu_use_fusion_emitters=false"
# A compilation cache for the session (and the subprocesses it starts): the
# many short runs of the tests compile the same steps again and again.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="xdomain_jax_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402  (after the XLA flags, which must precede JAX)


# pytest-xdist's workers (setup.cfg runs the suite on two) share what the
# controller set up: its environment, so the compilation cache, and the data dir.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One tfds data dir for the whole session: each domain is prepared once
  (workers take turns through `load_domain`'s lock on the folder)."""
  base = tmp_path_factory.getbasetemp()
  path = (base.parent if _WORKER else base) / "xdomain_data"
  path.mkdir(exist_ok=True)
  return str(path)


def pytest_sessionfinish(session, exitstatus):
  """Removes the compilation cache this session created (the controller's, once
  every worker is done)."""
  del session, exitstatus
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", "")
  if not _WORKER and os.path.basename(cache).startswith("xdomain_jax_cache_"):
    import shutil
    shutil.rmtree(cache, ignore_errors=True)
