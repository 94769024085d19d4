"""Teacher ("proxy") model losses: distillation, mean-teacher consistency, pseudo-labels.

In every function here the teacher's logits are targets: they are wrapped in
`stop_gradient`, so gradients reach the student only, even when student and
teacher share parameters. `consistency` and `pseudo_label` share one
confidence rule: an example counts when the teacher's top probability is at
least the threshold, max_c p_c >= tau (FixMatch's rule).
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


def _confident(teacher_logits: jax.Array, threshold: float | None) -> jax.Array | None:
  """The threshold rule of `consistency` and `pseudo_label`: max_c softmax(z)_c >= tau."""
  if threshold is None:
    return None
  return jnp.max(jax.nn.softmax(teacher_logits, axis=-1), axis=-1) >= threshold


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
    where: optional boolean mask of shape logits.shape[:-1]; masked entries give 0,
      with zero gradients whatever they hold.

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
    m_i = [\max_c p^t_{ic} \geq \tau]

  with p = softmax(z); without a threshold every m_i = 1. Averaging over
  the whole batch (confident or not), as French et al. do, is `loss.mean()`.

  Args:
    student_logits: [..., c] student logits (on one augmentation).
    teacher_logits: [..., c] EMA-teacher logits (on another; detached).
    confidence_threshold: optional tau in [0, 1]; examples whose teacher
      confidence is below it give 0 (0.968 in French et al.), the rule of
      :func:`pseudo_label`.
    where: optional boolean mask of shape logits.shape[:-1]; masked entries give 0,
      with zero gradients whatever they hold.

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
  confident = _confident(teacher_logits, confidence_threshold)
  if confident is not None:
    keep = keep & confident
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

  (FixMatch's rule, >= tau, also that of :func:`consistency`). FixMatch averages
  over all unlabelled examples, `loss.sum() / loss.size` (:func:`pseudo_label_loss`);
  dividing by `mask.sum()` instead averages over the confident ones. Pass the
  same logits twice for plain self-training (Lee 2013): the teacher side is
  detached.

  Args:
    student_logits: [..., c] student logits (e.g. on a strong augmentation).
    teacher_logits: [..., c] teacher logits (e.g. EMA model or weak augmentation).
    confidence_threshold: tau (0.95 as in FixMatch), or None to keep every example.
    where: optional boolean mask of shape logits.shape[:-1]; masked entries give 0,
      with zero gradients whatever they hold.

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
  confident = _confident(teacher_logits, confidence_threshold)
  if confident is not None:
    keep = keep & confident
  return jnp.where(keep, loss, 0.0), keep


def class_balanced_weights(
    teacher_logits: jax.Array,
    *,
    where: jax.Array | None = None,
) -> jax.Array:
  r"""Per-example weights that give every pseudo-class the same total weight.

  .. math::
    w_i = [i \text{ kept}] \frac{K}{C_+ \, n_{\hat y_i}}, \qquad
    \hat y_i = \arg\max_c z_{ic}

  with K kept examples, n_c of them with pseudo-label c, and C_+ classes with
  n_c > 0; the weights sum to K, so `sum(w * loss) / N` has the scale of the
  unweighted mean, but a class the teacher over-predicts no longer dominates
  (the failure mode of self-training under label shift, Zou et al. 2018).
  The weights depend on the whole batch; no gradient flows through them.

  Args:
    teacher_logits: [..., C] teacher logits (e.g. [N, C] or [batch, time, C]).
    where: optional boolean mask of shape teacher_logits.shape[:-1], the kept
      examples (e.g. the confident, valid ones: the mask of :func:`pseudo_label`).

  Returns:
    [...] float32 weights, 0 where not kept (all 0 if none is kept).

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> logits = jnp.array([[5.0, 0.0], [5.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    >>> losses.class_balanced_weights(logits).tolist()  # 3 of class 0, 1 of class 1
    [0.6666666865348816, 0.6666666865348816, 0.6666666865348816, 2.0]

  References:
    Zou et al., "Unsupervised Domain Adaptation for Semantic Segmentation via
    Class-Balanced Self-Training", ECCV 2018.
  """
  teacher_logits = jax.lax.stop_gradient(_checks.as_float(teacher_logits))
  _checks.check_min_ndim(teacher_logits, 1, "teacher_logits", "[..., C]")
  keep = _checks.mask(where, teacher_logits.shape[:-1], "where")
  num_classes = teacher_logits.shape[-1]
  labels = jnp.argmax(teacher_logits, axis=-1).reshape(-1)
  kept = keep.astype(jnp.float32).reshape(-1)
  counts = jnp.sum(jax.nn.one_hot(labels, num_classes) * kept[:, None], axis=0)
  present = jnp.sum(counts > 0)
  total = jnp.sum(kept)
  per_class = total / (jnp.maximum(present, 1) * jnp.maximum(counts, 1.0))
  return (kept * per_class[labels]).reshape(keep.shape)


def pseudo_label_loss(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    *,
    confidence_threshold: float | None = 0.95,
    class_balance: bool = False,
    where: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  r"""Self-training over a batch: :func:`pseudo_label` reduced as FixMatch, and the kept fraction.

  .. math::
    \mathcal{L} = \frac{1}{N} \sum_i w_i \ell_i

  with :math:`\ell_i` the per-example losses of :func:`pseudo_label` (0 where
  the teacher is not confident), N the number of valid examples (confident or
  not, FixMatch's mean) and w_i = 1, or :func:`class_balanced_weights` of the
  kept examples with `class_balance`.

  Args:
    student_logits: [..., C] student logits.
    teacher_logits: [..., C] teacher logits (detached).
    confidence_threshold: tau (0.95 as in FixMatch), or None to keep every example.
    class_balance: weight the kept examples with :func:`class_balanced_weights`.
    where: optional boolean mask of shape logits.shape[:-1], the valid examples
      (e.g. real tokens).

  Returns:
    `(loss, kept_fraction)`, float32 scalars; both 0, with zero gradients, when
    no example is valid.

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> t = jnp.array([[10.0, 0.0], [0.1, 0.0]]); s = jnp.zeros((2, 2))
    >>> loss, kept = losses.pseudo_label_loss(s, t)
    >>> round(float(loss), 4), float(kept)  # log 2 / 2: one of two kept
    (0.3466, 0.5)

  References:
    Sohn et al., "FixMatch", NeurIPS 2020.
    Zou et al., "Unsupervised Domain Adaptation for Semantic Segmentation via
    Class-Balanced Self-Training", ECCV 2018.
  """
  per_example, keep = pseudo_label(
      student_logits, teacher_logits, confidence_threshold=confidence_threshold, where=where)
  weights = (class_balanced_weights(teacher_logits, where=keep) if class_balance
             else keep.astype(jnp.float32))
  valid = (jnp.float32(per_example.size) if where is None
           else jnp.maximum(jnp.sum(jnp.asarray(where).astype(jnp.float32)), 1.0))
  return jnp.sum(weights * per_example) / valid, jnp.sum(keep) / valid
