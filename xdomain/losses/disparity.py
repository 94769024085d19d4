"""Disparity between a classifier and an adversarial auxiliary classifier: MDD."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xdomain.losses import _checks


def margin_disparity_discrepancy(
    source_logits: jax.Array,
    source_adversarial_logits: jax.Array,
    target_logits: jax.Array,
    target_adversarial_logits: jax.Array,
    *,
    margin: float = 4.0,
    offset: float = 1e-6,
    source_where: jax.Array | None = None,
    target_where: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  r"""Margin disparity discrepancy (classification), per example and domain.

  With the main classifier's predictions :math:`\hat y = \arg\max_c z_c`
  (constants: no gradient reaches `source_logits` / `target_logits`) and
  the adversarial classifier's probabilities :math:`p' = \mathrm{softmax}(z')`,

  .. math::
    \ell^s_i = \gamma \left(-\log p'_{i, \hat y^s_i}\right), \qquad
    \ell^t_j = -\log\!\left(\min(1,\, 1 - p'_{j, \hat y^t_j} + \epsilon)\right)

  The adversarial head minimises :math:`\mathrm{mean}(\ell^s) + \mathrm{mean}(\ell^t)`:
  it agrees with the classifier on the source and disagrees on the target;
  the features, behind a gradient-reversal layer, maximise it, so that the
  disagreement the adversary can reach on the target shrinks. This is
  -1 times TLlib's `ClassificationMarginDisparityDiscrepancy` (which the
  reference code minimises as `-mdd`), its `shift_log` offset included.

  Args:
    source_logits: [n_s, c] logits of the main classifier on the source.
    source_adversarial_logits: [n_s, c] logits of the adversarial classifier.
    target_logits: [n_t, c] logits of the main classifier on the target.
    target_adversarial_logits: [n_t, c] logits of the adversarial classifier.
    margin: gamma, the weight of the source disparity (4 in the paper).
    offset: epsilon of the target's shifted log (1e-6, as TLlib).
    source_where: optional boolean mask [n_s] of valid source examples.
    target_where: optional boolean mask [n_t] of valid target examples.

  Returns:
    `(source_losses [n_s], target_losses [n_t])`, float32; 0, with zero
    gradients, where masked.

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> z = jnp.array([[2.0, 0.0]]); adv = jnp.zeros((1, 2))
    >>> s, t = losses.margin_disparity_discrepancy(z, adv, z, adv)
    >>> round(float(s[0]), 4), round(float(t[0]), 4)  # 4 log 2, log 2
    (2.7726, 0.6931)

  References:
    Zhang et al., "Bridging Theory and Algorithm for Domain Adaptation",
    ICML 2019.
  """
  if not margin > 0:
    raise ValueError(f"margin must be positive, got {margin!r}.")
  if not offset >= 0:
    raise ValueError(f"offset must be >= 0, got {offset!r}.")
  values = []
  for name, logits, adversarial, where in (
      ("source", source_logits, source_adversarial_logits, source_where),
      ("target", target_logits, target_adversarial_logits, target_where)):
    logits = jax.lax.stop_gradient(_checks.as_float(logits))
    adversarial = _checks.as_float(adversarial)
    _checks.check_ndim(logits, 2, f"{name}_logits", "[n, c]")
    _checks.check_same_shape(logits, adversarial, f"{name}_logits",
                             f"{name}_adversarial_logits")
    keep = _checks.mask(where, logits.shape[:1], f"{name}_where")
    logits = jnp.where(keep[:, None], logits, 0.0)
    adversarial = jnp.where(keep[:, None], adversarial, 0.0)
    labels = jnp.argmax(logits, axis=-1)
    if name == "source":
      log_p = jax.nn.log_softmax(adversarial, axis=-1)
      loss = -margin * jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
    else:
      p = jax.nn.softmax(adversarial, axis=-1)
      p = jnp.take_along_axis(p, labels[:, None], axis=-1)[:, 0]
      loss = -jnp.log(jnp.minimum(1.0 - p + offset, 1.0))
    values.append(jnp.where(keep, loss, 0.0))
  return values[0], values[1]
