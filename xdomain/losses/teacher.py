"""Teacher ("proxy") model losses: distillation, mean-teacher consistency, pseudo-labels.

In every function here the teacher's logits are targets: they are wrapped in
`stop_gradient`, so gradients reach the student only, even when student and
teacher share parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xdomain.losses import _checks


def _student_teacher(student_logits, teacher_logits, where):
  """Checks shapes, promotes to f32, detaches the teacher and neutralises masked rows."""
  student_logits = _checks.as_float(student_logits)
  teacher_logits = jax.lax.stop_gradient(_checks.as_float(teacher_logits))
  _checks.check_min_ndim(student_logits, 1, "student_logits", "[..., c]")
  _checks.check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits")
  keep = _checks.mask(where, student_logits.shape[:-1], "where")
  if where is not None:
    student_logits = jnp.where(keep[..., None], student_logits, 0.0)
    teacher_logits = jnp.where(keep[..., None], teacher_logits, 0.0)
  return student_logits, teacher_logits, keep


def distillation(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    *,
    temperature: float = 1.0,
    where: jax.Array | None = None,
) -> jax.Array:
  r"""Knowledge distillation: T^2 KL(teacher || student) at temperature T, per example.

  .. math::
    \ell = T^2 \sum_c p^t_c \left(\log p^t_c - \log p^s_c\right), \qquad
    p^t = \mathrm{softmax}(z^t / T),\; p^s = \mathrm{softmax}(z^s / T)

  The T^2 factor keeps the gradient's magnitude independent of T (Hinton et
  al.). Computed from log-softmaxes, with 0 log 0 = 0.

  Args:
    student_logits: [..., c] student logits.
    teacher_logits: [..., c] teacher logits (detached).
    temperature: T > 0.
    where: optional boolean mask of shape logits.shape[:-1]; masked entries give 0.

  Returns:
    [...] per-example losses (float32 for f32/bf16 inputs).

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> z = jnp.array([[2.0, 0.0, -1.0]])
    >>> print(f"{float(losses.distillation(z, z, temperature=4.0)[0]):.4f}")
    0.0000
    >>> print(f"{float(losses.distillation(jnp.zeros((1, 2)), jnp.array([[0.0, 1e4]]))[0]):.4f}")
    0.6931

  References:
    Hinton et al., "Distilling the Knowledge in a Neural Network", 2015.
  """
  if not temperature > 0:
    raise ValueError(f"temperature must be positive, got {temperature!r}.")
  student_logits, teacher_logits, keep = _student_teacher(student_logits, teacher_logits, where)
  log_ps = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  log_pt = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
  pt = jnp.exp(log_pt)
  kl = jnp.sum(jnp.where(pt > 0, pt * (log_pt - log_ps), 0.0), axis=-1)
  return jnp.where(keep, temperature**2 * kl, 0.0)


def consistency(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    *,
    confidence_threshold: float | None = None,
    where: jax.Array | None = None,
) -> jax.Array:
  r"""Mean-teacher consistency: squared difference of class probabilities, per example.

  .. math::
    \ell_i = m_i \frac{1}{c} \sum_c \left(p^s_{ic} - p^t_{ic}\right)^2, \qquad
    m_i = [\max_c p^t_{ic} > \tau]

  with p = softmax(z); without a threshold every m_i = 1. Averaging over
  the whole batch (confident or not), as French et al. do, is `loss.mean()`.

  Args:
    student_logits: [..., c] student logits (on one augmentation).
    teacher_logits: [..., c] EMA-teacher logits (on another; detached).
    confidence_threshold: optional tau in [0, 1); examples whose teacher
      confidence is not strictly above it give 0 (0.968 in French et al.).
    where: optional boolean mask of shape logits.shape[:-1]; masked entries give 0.

  Returns:
    [...] per-example losses (float32 for f32/bf16 inputs).

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> s = jnp.array([[0.0, 0.0], [0.0, 0.0]]); t = jnp.array([[10.0, -10.0], [0.1, 0.0]])
    >>> [round(v, 3) for v in losses.consistency(s, t, confidence_threshold=0.9).tolist()]
    [0.25, 0.0]

  References:
    French et al., "Self-ensembling for visual domain adaptation", ICLR 2018.
    Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017.
  """
  student_logits, teacher_logits, keep = _student_teacher(student_logits, teacher_logits, where)
  ps = jax.nn.softmax(student_logits, axis=-1)
  pt = jax.nn.softmax(teacher_logits, axis=-1)
  loss = jnp.mean(jnp.square(ps - pt), axis=-1)
  if confidence_threshold is not None:
    keep = keep & (jnp.max(pt, axis=-1) > confidence_threshold)
  return jnp.where(keep, loss, 0.0)


def pseudo_label(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    *,
    confidence_threshold: float | None = 0.95,
    where: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  r"""Cross-entropy to the teacher's hard labels, kept where the teacher is confident.

  .. math::
    \ell_i = m_i \left(-\log \mathrm{softmax}(z^s_i)_{\hat y_i}\right), \quad
    \hat y_i = \arg\max_c z^t_{ic}, \quad
    m_i = [\max_c \mathrm{softmax}(z^t_i)_c \geq \tau]

  (FixMatch's rule, >= tau). FixMatch averages over all unlabelled examples,
  `loss.sum() / loss.size`; dividing by `mask.sum()` instead averages over the
  confident ones. Pass the same logits twice for plain self-training (Lee
  2013): the teacher side is detached.

  Args:
    student_logits: [..., c] student logits (e.g. on a strong augmentation).
    teacher_logits: [..., c] teacher logits (e.g. EMA model or weak augmentation).
    confidence_threshold: tau (0.95 as in FixMatch), or None to keep every example.
    where: optional boolean mask of shape logits.shape[:-1].

  Returns:
    `(loss, mask)`: [...] per-example losses, 0 where not kept, and the
    boolean [...] mask of kept examples (confident and valid).

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> t = jnp.array([[10.0, 0.0], [0.1, 0.0]]); s = jnp.zeros((2, 2))
    >>> loss, mask = losses.pseudo_label(s, t)
    >>> [round(v, 4) for v in loss.tolist()], mask.tolist()
    ([0.6931, 0.0], [True, False])

  References:
    Lee, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning
    Method for Deep Neural Networks", ICML 2013 workshops.
    Sohn et al., "FixMatch", NeurIPS 2020.
  """
  student_logits, teacher_logits, keep = _student_teacher(student_logits, teacher_logits, where)
  labels = jnp.argmax(teacher_logits, axis=-1)
  log_ps = jax.nn.log_softmax(student_logits, axis=-1)
  loss = -jnp.take_along_axis(log_ps, labels[..., None], axis=-1)[..., 0]
  if confidence_threshold is not None:
    confidence = jnp.max(jax.nn.softmax(teacher_logits, axis=-1), axis=-1)
    keep = keep & (confidence >= confidence_threshold)
  return jnp.where(keep, loss, 0.0), keep
