"""The README's "Using the losses in your own JAX code" block, run as it stands."""

import contextlib
import io
import pathlib
import re

import jax.numpy as jnp
import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Using the losses in your own JAX code"


def readme_example() -> str:
  text = README.read_text()
  section = text[text.index(SECTION):]
  section = section[:section.index("\n## ", len(SECTION))]
  blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
  assert len(blocks) == 1, "the section holds one python block, the complete example"
  return blocks[0]


def test_readme_training_step_adapts_to_the_rotated_target():
  namespace = {"__name__": "readme_example"}
  output = io.StringIO()
  with contextlib.redirect_stdout(output):
    exec(compile(readme_example(), str(README), "exec"), namespace)  # pylint: disable=exec-used
  history = namespace["history"]
  assert len(history) == namespace["STEPS"]
  assert set(history[0]) == {"task", "mmd", "entropy", "dann", "total", "weight/mmd",
                             "weight/entropy", "weight/dann"}
  for logs in history:
    assert all(np.isfinite(float(v)) for v in logs.values())
  task = np.array([float(logs["task"]) for logs in history])
  assert task[-20:].mean() < 0.1 * task[0]
  # The labels of a fresh target sample, never seen in training: the same network trained
  # on the source alone (the three weights at 0) reaches 0.81 here.
  accuracy = float(jnp.mean(namespace["predictions"] == namespace["target_y"]))
  assert accuracy > 0.95, accuracy
  assert f"target accuracy {accuracy:.3f}" in output.getvalue()
  # The discriminator trained against reversed features: its loss stays near log 2
  # (it cannot separate the aligned domains) rather than falling to 0.
  dann = np.array([float(logs["dann"]) for logs in history[-50:]])
  assert 0.4 < dann.mean() < 0.8
