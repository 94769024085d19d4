"""Tests of xdomain.losses.teacher: distillation, consistency, pseudo-labels, class balance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from xdomain import losses


def np_softmax(z):
  p = np.exp(z - z.max(-1, keepdims=True))
  return p / p.sum(-1, keepdims=True)


def logits(seed, *shape, scale=2.0):
  return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def test_distillation_matches_numpy_with_t_squared():
  s, t = logits(4, 5, 6), logits(5, 5, 6)
  for temperature in (1.0, 4.0):
    pt, ps = np_softmax(t / temperature), np_softmax(s / temperature)
    expected = temperature**2 * (pt * (np.log(pt) - np.log(ps))).sum(-1)
    np.testing.assert_allclose(losses.distillation(s, t, temperature=temperature), expected,
                               rtol=1e-4, atol=1e-6)


def test_consistency_matches_numpy_with_threshold():
  s, t = logits(6, 8, 3), logits(7, 8, 3, scale=4.0)
  ps, pt = np_softmax(s), np_softmax(t)
  sq = ((ps - pt) ** 2).mean(-1)
  np.testing.assert_allclose(losses.consistency(s, t), sq, rtol=1e-5)
  confident = pt.max(-1) > 0.9
  assert 0 < confident.sum() < 8
  np.testing.assert_allclose(losses.consistency(s, t, confidence_threshold=0.9),
                             np.where(confident, sq, 0.0), rtol=1e-5)


def test_pseudo_label_matches_numpy():
  s, t = logits(8, 10, 4), logits(9, 10, 4, scale=3.0)
  log_ps = np.log(np_softmax(s))
  ce = -log_ps[np.arange(10), t.argmax(-1)]
  loss, mask = losses.pseudo_label(s, t, confidence_threshold=None)
  np.testing.assert_allclose(loss, ce, rtol=1e-5)
  assert mask.dtype == jnp.bool_ and bool(mask.all())
  confident = np_softmax(t).max(-1) >= 0.95
  assert 0 < confident.sum() < 10
  loss, mask = losses.pseudo_label(s, t)
  np.testing.assert_array_equal(mask, confident)
  np.testing.assert_allclose(loss, np.where(confident, ce, 0.0), rtol=1e-5)


def test_teacher_losses_where_mask():
  s, t = logits(10, 2, 4, 3), logits(11, 2, 4, 3, scale=4.0)
  where = np.array([[1, 1, 0, 1], [0, 1, 1, 1]], bool)
  s_bad = np.where(where[..., None], s, np.nan).astype(np.float32)

  def all_losses(a, b, where=None):
    return jnp.stack([
        losses.distillation(a, b, temperature=2.0, where=where).sum(),
        losses.consistency(a, b, confidence_threshold=0.5, where=where).sum(),
        losses.pseudo_label(a, b, where=where)[0].sum()])

  values = jax.jit(lambda a: all_losses(a, t, where))(s_bad)
  grads = jax.jit(jax.jacrev(lambda a: all_losses(a, t, where)))(s_bad)
  np.testing.assert_allclose(values, jax.jit(all_losses)(s[where], t[where]), rtol=1e-5)
  assert np.all(np.isfinite(grads)) and np.all(grads[:, ~where] == 0)
  _, mask = losses.pseudo_label(s, t, where=where, confidence_threshold=None)
  np.testing.assert_array_equal(mask, where)


def test_teacher_gets_no_gradient_and_student_gradients_check():
  with jax.enable_x64(True):
    s, t = jnp.asarray(logits(12, 5, 4), jnp.float64), jnp.asarray(logits(13, 5, 4), jnp.float64)

    def total(a, b):
      return (losses.distillation(a, b, temperature=2.0).sum() + losses.consistency(a, b).sum()
              + losses.pseudo_label(a, b, confidence_threshold=None)[0].sum())

    fn = jax.jit(total)
    assert float(jnp.abs(jax.grad(fn, argnums=1)(s, t)).max()) == 0.0
    check_grads(lambda a: fn(a, t), (s,), order=2, modes=("rev",))


def test_consistency_and_pseudo_label_keep_a_teacher_exactly_at_the_threshold():
  """One rule for both, FixMatch's `max_probs.ge(threshold)`: confidence >= tau counts.

  Equal logits give the exactly representable confidences 1/2 and 1/4.
  """
  teacher = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 0.1]], np.float32)  # 0.5, 0.953, 0.525
  student = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], np.float32)
  for tau, kept in ((0.5, [True, True, True]), (0.51, [False, True, True]),
                    (0.96, [False, False, False])):
    _, mask = losses.pseudo_label(student, teacher, confidence_threshold=tau)
    np.testing.assert_array_equal(mask, kept)
    consistency = losses.consistency(student, teacher, confidence_threshold=tau)
    np.testing.assert_array_equal(consistency > 0, kept)
  uniform, student = np.zeros((1, 4), np.float32), np.array([[0.0, 0.0, 0.0, 1.0]], np.float32)
  assert bool(losses.pseudo_label(student, uniform, confidence_threshold=0.25)[1][0])
  assert float(losses.consistency(student, uniform, confidence_threshold=0.25)[0]) > 0


def np_pseudo_label_loss(student, teacher, threshold, balance, where=None):
  """Self-training as FixMatch: CE to the confident argmax, summed, over the valid count."""
  where = np.ones(len(student), bool) if where is None else where
  p_t = np_softmax(teacher)
  labels, confidence = p_t.argmax(-1), p_t.max(-1)
  keep = (confidence >= threshold) & where
  log_ps = np.log(np_softmax(student))
  ce = -log_ps[np.arange(len(labels)), labels]
  weights = keep.astype(np.float64)
  if balance:  # Zou et al. 2018: every kept pseudo-class weighs the same in total
    kept_labels = labels[keep]
    classes = np.unique(kept_labels)
    for c in classes:
      weights[keep & (labels == c)] = keep.sum() / (len(classes) * np.sum(kept_labels == c))
  return np.sum(weights * ce) / where.sum(), keep.sum() / where.sum(), weights


def test_pseudo_label_loss_and_class_balance_against_numpy():
  rng = np.random.default_rng(0)
  teacher_logits = rng.normal(size=(32, 4)) * 3.0
  teacher_logits[:12, 0] += 8.0  # class 0 dominates the confident predictions
  student_logits = rng.normal(size=(32, 4))
  where = np.arange(32) % 5 != 0
  for balance in (False, True):
    for mask in (None, where):
      loss, kept = losses.pseudo_label_loss(
          jnp.asarray(student_logits, jnp.float32), jnp.asarray(teacher_logits, jnp.float32),
          confidence_threshold=0.8, class_balance=balance, where=mask)
      want_loss, want_kept, weights = np_pseudo_label_loss(
          student_logits, teacher_logits, 0.8, balance, mask)
      np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
      np.testing.assert_allclose(kept, want_kept, rtol=1e-6)
  got = losses.class_balanced_weights(jnp.asarray(teacher_logits), where=weights > 0)
  np.testing.assert_allclose(got, weights, rtol=1e-6)
  # Every kept pseudo-class carries the same total weight, and the weights sum to K.
  labels = teacher_logits.argmax(-1)
  totals = [weights[labels == c].sum() for c in np.unique(labels[weights > 0])]
  np.testing.assert_allclose(totals, totals[0], rtol=1e-6)
  np.testing.assert_allclose(weights.sum(), (weights > 0).sum(), rtol=1e-6)
  # Sequences [batch, time, C] are the flattened examples.
  np.testing.assert_allclose(
      losses.class_balanced_weights(jnp.asarray(teacher_logits).reshape(4, 8, 4),
                                    where=(weights > 0).reshape(4, 8)).reshape(32),
      weights, rtol=1e-6)


def test_pseudo_label_loss_of_masked_tokens_equals_subset():
  rng = np.random.default_rng(1)
  student = jnp.asarray(rng.normal(size=(10, 3)), jnp.float32)
  teacher_logits = jnp.asarray(rng.normal(size=(10, 3)) * 5, jnp.float32)
  where = jnp.arange(10) < 6
  student_bad = student.at[6:].set(jnp.nan)
  masked = jax.jit(lambda s: losses.pseudo_label_loss(
      s, teacher_logits, confidence_threshold=0.5, class_balance=True, where=where))
  subset = losses.pseudo_label_loss(student[:6], teacher_logits[:6], confidence_threshold=0.5,
                                    class_balance=True)
  np.testing.assert_allclose(masked(student_bad), subset, rtol=1e-6)
  grad = jax.jit(jax.grad(lambda s: masked(s)[0]))(student_bad)
  assert np.all(np.isfinite(grad)) and np.all(grad[6:] == 0)


def test_empty_masks_give_zero_and_zero_gradients():
  s, t = logits(16, 4, 3), logits(17, 4, 3, scale=4.0)
  none = np.zeros(4, bool)

  def total(a):
    return (losses.distillation(a, t, where=none).sum() + losses.consistency(a, t, where=none).sum()
            + losses.pseudo_label(a, t, where=none)[0].sum()
            + sum(losses.pseudo_label_loss(a, t, class_balance=True, where=none)))

  value, grad = jax.jit(jax.value_and_grad(total))(s)
  assert float(value) == 0.0
  np.testing.assert_array_equal(grad, 0.0)
  np.testing.assert_array_equal(losses.class_balanced_weights(t, where=none), 0.0)


def test_bf16_inputs_give_f32():
  s, t = jnp.asarray(logits(14, 4, 3), jnp.bfloat16), jnp.asarray(logits(15, 4, 3), jnp.bfloat16)
  s32, t32 = s.astype(jnp.float32), t.astype(jnp.float32)
  fn = jax.jit(lambda a, b: [
      losses.distillation(a, b, temperature=2.0), losses.consistency(a, b),
      losses.pseudo_label(a, b)[0], losses.pseudo_label_loss(a, b, class_balance=True)[0]])
  for got, expected in zip(fn(s, t), fn(s32, t32)):
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda: losses.class_balanced_weights(jnp.ones((3, 4)), where=jnp.ones(4, bool)),
     r"where must have shape \(3,\)"),
    (lambda: losses.pseudo_label_loss(jnp.ones((3, 4)), jnp.ones((3, 4)), where=jnp.ones(4, bool)),
     r"where must have shape \(3,\)"),
    (lambda: losses.distillation(jnp.ones((3, 4)), jnp.ones((3, 5))),
     r"student_logits and teacher_logits must have the same shape, got \(3, 4\) and \(3, 5\)"),
    (lambda: losses.distillation(jnp.ones((3, 4)), jnp.ones((3, 4)), temperature=-1.0),
     "temperature must be positive"),
    (lambda: losses.consistency(jnp.ones((3, 4)), jnp.ones((3, 4)), where=jnp.ones((3, 4), bool)),
     r"where must have shape \(3,\)"),
])
def test_errors(call, message):
  with pytest.raises(ValueError, match=message):
    call()
