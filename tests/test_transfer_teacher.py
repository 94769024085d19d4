"""Teacher methods: distillation against cross-entropy, pseudo-label masks, refresh."""

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


def _numpy_pseudo_label(student, teacher, threshold, balance):
  p_t = np.exp(teacher - teacher.max(-1, keepdims=True))
  p_t /= p_t.sum(-1, keepdims=True)
  labels, confidence = p_t.argmax(-1), p_t.max(-1)
  keep = confidence >= threshold
  log_ps = student - student.max(-1, keepdims=True)
  log_ps -= np.log(np.exp(log_ps).sum(-1, keepdims=True))
  ce = -log_ps[np.arange(len(labels)), labels]
  weights = keep.astype(np.float64)
  if balance:
    kept_labels = labels[keep]
    classes = np.unique(kept_labels)
    for c in classes:
      weights[keep & (labels == c)] = keep.sum() / (len(classes) * np.sum(kept_labels == c))
  return np.sum(weights * ce) / len(labels), keep.mean(), weights


def test_pseudo_label_mask_and_class_balance_against_numpy():
  rng = np.random.default_rng(0)
  teacher_logits = rng.normal(size=(32, 4)) * 3.0
  teacher_logits[:12, 0] += 8.0  # class 0 dominates the confident predictions
  student_logits = rng.normal(size=(32, 4))
  for balance in (False, True):
    loss, kept = teacher.pseudo_label_loss(
        jnp.asarray(student_logits, jnp.float32), jnp.asarray(teacher_logits, jnp.float32),
        confidence_threshold=0.8, class_balance=balance)
    want_loss, want_kept, weights = _numpy_pseudo_label(
        student_logits, teacher_logits, 0.8, balance)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(kept, want_kept, rtol=1e-6)
  got = teacher.class_balanced_weights(
      jnp.asarray(teacher_logits), jnp.asarray(weights > 0))
  np.testing.assert_allclose(got, weights, rtol=1e-6)
  # Every kept pseudo-class carries the same total weight.
  labels = teacher_logits.argmax(-1)
  totals = [weights[labels == c].sum() for c in np.unique(labels[weights > 0])]
  np.testing.assert_allclose(totals, totals[0], rtol=1e-6)


def test_pseudo_label_ignores_masked_tokens():
  rng = np.random.default_rng(1)
  student = jnp.asarray(rng.normal(size=(10, 3)), jnp.float32)
  teacher_logits = jnp.asarray(rng.normal(size=(10, 3)) * 5, jnp.float32)
  where = jnp.arange(10) < 6
  masked, _ = teacher.pseudo_label_loss(student, teacher_logits, confidence_threshold=0.5,
                                        class_balance=True, where=where)
  subset, _ = teacher.pseudo_label_loss(student[:6], teacher_logits[:6],
                                        confidence_threshold=0.5, class_balance=True)
  np.testing.assert_allclose(masked, subset, rtol=1e-6)


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
