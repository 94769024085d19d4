"""Tests of xdomain.losses schedules, the `combine` composition, import isolation and the
docstring examples."""

import doctest
import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdomain import losses
from xdomain.losses import (adversarial, discrepancy, label_shift, language_model, objective,
                            prediction, schedules, teacher)


def test_dann_schedule_values():
  schedule = losses.dann_schedule(200, gamma=10.0, max_value=0.5)
  steps = np.array([0, 1, 50, 100, 200, 400])
  p = np.minimum(steps / 200, 1.0)
  expected = 0.5 * (2.0 / (1.0 + np.exp(-10.0 * p)) - 1.0)
  got = jax.jit(jax.vmap(schedule))(jnp.asarray(steps))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose([schedule(int(s)) for s in steps[:3]], expected[:3], rtol=1e-5,
                             atol=1e-7)


def test_sigmoid_rampup_values():
  schedule = losses.sigmoid_rampup(80, max_value=2.0)
  steps = np.array([0, 20, 40, 80, 1000])
  t = np.minimum(steps / 80, 1.0)
  np.testing.assert_allclose(jax.jit(jax.vmap(schedule))(jnp.asarray(steps)),
                             2.0 * np.exp(-5.0 * (1.0 - t) ** 2), rtol=1e-6)
  assert float(losses.sigmoid_rampup(0, max_value=3.0)(jnp.int32(0))) == 3.0


@pytest.mark.parametrize("call, message", [
    (lambda: losses.dann_schedule(0), "total_steps must be a positive int"),
    (lambda: losses.sigmoid_rampup(-1), "rampup_steps must be a non-negative int"),
])
def test_schedule_errors(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_combine_total_and_logs_under_jit():
  schedule = losses.dann_schedule(100)

  @jax.jit
  def step_fn(task, a, b, step):
    return losses.combine(task, {"mmd": (0.3, a), "dann": (schedule, b)}, step)

  total, logs = step_fn(jnp.float32(1.0), jnp.float32(2.0), jnp.bfloat16(4.0), jnp.int32(50))
  weight = float(schedule(50))
  np.testing.assert_allclose(total, 1.0 + 0.3 * 2.0 + weight * 4.0, rtol=1e-6)
  assert set(logs) == {"task", "mmd", "dann", "weight/mmd", "weight/dann", "total"}
  np.testing.assert_allclose(logs["weight/dann"], weight, rtol=1e-6)
  np.testing.assert_allclose(logs["weight/mmd"], 0.3, rtol=1e-6)
  assert float(logs["dann"]) == 4.0 and logs["dann"].dtype == jnp.float32
  grad = jax.grad(lambda a: losses.combine(1.0, {"mmd": (0.3, a)}, 0)[0])(2.0)
  np.testing.assert_allclose(grad, 0.3, rtol=1e-6)


@pytest.mark.parametrize("terms, message", [
    ({"mmd": (1.0, jnp.ones(3))}, r"scalar weight and a scalar value.*\(3,\)"),
    ({"mmd": (jnp.ones(2), 1.0)}, r"scalar weight and a scalar value.*\(2,\)"),
    ({"task": (1.0, 1.0)}, "reserved"),
    ({"a/b": (1.0, 1.0)}, "reserved or contains '/'"),
    ({"mmd": 1.0}, r"must be a \(weight, value\) pair"),
])
def test_combine_errors(terms, message):
  with pytest.raises(ValueError, match=message):
    losses.combine(0.0, terms, 0)
  with pytest.raises(ValueError, match="task_loss must be a scalar"):
    losses.combine(jnp.ones(2), {}, 0)


def _requirements_closure(roots):
  """The distributions `roots` need to run: their requirements, recursively, without extras."""
  seen, todo = set(), list(roots)
  while todo:
    name = todo.pop().lower().replace("_", "-")
    if name not in seen:
      seen.add(name)
      todo += [re.split(r"[ ;<>=!~\[(]", r.strip(), maxsplit=1)[0]
               for r in importlib.metadata.requires(name) or [] if "extra ==" not in r]
  return seen


def test_import_works_with_only_jax_optax_and_numpy_installed(tmp_path):
  """`from xdomain import losses` in an environment holding jax, optax, numpy (and what they
  require) and nothing else: python -S with a path of links to just those packages."""
  for name in _requirements_closure(["jax", "optax", "numpy"]):
    dist = importlib.metadata.distribution(name)
    for top in {f.parts[0] for f in dist.files if not f.parts[0].startswith("..")}:
      source = pathlib.Path(dist.locate_file(top))
      if source.exists() and not (tmp_path / top).exists():
        (tmp_path / top).symlink_to(source)
  code = (
      "import sys\n"
      "import jax.numpy as jnp\n"
      "from xdomain import losses\n"
      "print(float(losses.mmd(jnp.zeros((4, 2)), jnp.ones((4, 2)), estimator='biased')))\n"
      "print(' '.join(sorted({m.split('.')[0] for m in sys.modules}\n"
      "                      - set(sys.stdlib_module_names))))\n")
  root = pathlib.Path(__file__).resolve().parents[1]
  # The CPU backend: a GPU plugin (jax[cuda]) is no requirement of jax, so not linked here.
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
  result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  value, modules = result.stdout.splitlines()
  # Four points at 0 and four at (1, 1): gamma = 32 * 2 / (8 * 7) = 8/7, and the biased
  # MMD with DAN's five kernels exp(-d^2 / (gamma m)) is 5 + 5 - 2 sum_m exp(-2 / (gamma m)).
  expected = 10 - 2 * sum(np.exp(-1.75 / m) for m in (0.25, 0.5, 1.0, 2.0, 4.0))
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)
  heavy = {"flax", "chex", "tensorflow", "tensorflow_datasets", "grain", "orbax", "sklearn",
           "skimage", "mlxtend", "tensorboardX", "matplotlib", "pycocotools"}
  assert not heavy & set(modules.split()), modules


@pytest.mark.parametrize("module", [adversarial, discrepancy, label_shift, language_model,
                                    objective, prediction, schedules, teacher],
                         ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_docstring_examples_run(module):
  result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0
