"""The complete example of docs/losses.md, run as it stands, and the README's
excerpt of it ("Using the losses in your own JAX code")."""

import contextlib
import io
import pathlib
import re

import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLE = ROOT / "docs" / "losses.md"


def python_block(page: pathlib.Path, heading: str) -> str:
  """The one python block of `page`'s section under `heading`."""
  text = page.read_text()
  section = text[text.index(heading):]
  section = section[:section.index("\n## ", len(heading))]
  blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
  assert len(blocks) == 1, f"{page.name}'s {heading!r} holds one python block"
  return blocks[0]


def readme_example() -> str:
  return python_block(EXAMPLE, "## A complete training step")


def test_readme_excerpt_is_part_of_the_complete_example():
  excerpt = python_block(README, "## Using the losses in your own JAX code")
  paragraphs = [p for p in excerpt.split("\n\n\n") if p.strip()]
  assert len(paragraphs) == 2 and "def loss_fn(" in paragraphs[-1]
  for paragraph in paragraphs:
    assert paragraph.strip() in readme_example(), paragraph


def test_readme_training_step_adapts_to_the_rotated_target():
  namespace = {"__name__": "readme_example"}
  output = io.StringIO()
  with contextlib.redirect_stdout(output):
    exec(compile(readme_example(), str(EXAMPLE), "exec"), namespace)  # pylint: disable=exec-used
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
