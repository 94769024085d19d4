"""Teacher methods: distillation against cross-entropy, pseudo-label masks, refresh."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xdomain import losses
from xdomain.config import Config
from xdomain.methods import teacher


def test_distillation_with_one_hot_teacher_at_t1_is_cross_entropy():
  student = jax.random.normal(jax.random.key(0), (6, 5))
  labels = jnp.array([0, 4, 2, 2, 1, 3])
  one_hot_teacher = 1e4 * jax.nn.one_hot(labels, 5)  # softmax is exactly one-hot
  distilled = losses.distillation(student, one_hot_teacher, temperature=1.0)
  expected = optax.softmax_cross_entropy_with_integer_labels(student, labels)
  np.testing.assert_allclose(distilled, expected, rtol=1e-5, atol=1e-6)


def test_pseudo_label_teacher_refreshes_every_k_steps_from_student_or_ema():
  student = {"params": {"w": jnp.full(3, 2.0)}, "batch_stats": {}}
  ema = {"params": {"w": jnp.full(3, 5.0)}, "batch_stats": {}}
  old = {"params": {"w": jnp.zeros(3)}, "batch_stats": {}}
  for source, value in (("student", 2.0), ("ema", 5.0)):
    method = teacher.make_pseudo_label(Config(
        method="pseudo_label", teacher_refresh_every=4, teacher_source=source))
    assert (method.ema_decay is not None) == (source == "ema")
    refresh = method.teacher.refresh
    np.testing.assert_array_equal(refresh(old, student, ema, jnp.int32(3))["params"]["w"], 0.0)
    np.testing.assert_array_equal(refresh(old, student, ema, jnp.int32(8))["params"]["w"], value)


def test_teacher_config_of_a_run_resumed_with_other_flags_loads_its_latest_flags(tmp_path):
  # A teacher run resumed with --allow_config_change has a config_history in
  # its config.json, which is no Config field.
  record = {"method": "source_only", "learning_rate": 2e-3, "config_history": [
      {"step": 100, "changes": {"learning_rate": {"from": 1e-3, "to": 2e-3}}}]}
  (tmp_path / "config.json").write_text(json.dumps(record))
  assert teacher.load_teacher_config(str(tmp_path)) == Config(
      method="source_only", learning_rate=2e-3)
