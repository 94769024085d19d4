"""Optax-style schedules for the weights of adaptation terms."""

from __future__ import annotations

import jax.numpy as jnp
import optax


def _check_steps(value: int, name: str, *, allow_zero: bool) -> None:
  if not isinstance(value, int) or value < 0 or (value == 0 and not allow_zero):
    bound = "a non-negative" if allow_zero else "a positive"
    raise ValueError(f"{name} must be {bound} int, got {value!r}.")


def dann_schedule(total_steps: int, *, gamma: float = 10.0,
                  max_value: float = 1.0) -> optax.Schedule:
  r"""DANN's adaptation-weight schedule, rising from 0 to `max_value`.

  .. math::
    \lambda(p) = \lambda_{\max}\left(\frac{2}{1 + \exp(-\gamma p)} - 1\right)
      = \lambda_{\max} \tanh(\gamma p / 2),
    \qquad p = \min(\mathrm{step} / \mathrm{total\_steps}, 1)

  (evaluated in the tanh form, which is the same function and stable).

  Args:
    total_steps: the number of training steps over which p goes from 0 to 1.
    gamma: the steepness (10 in the paper).
    max_value: the value approached at the end of training.

  Returns:
    A schedule `step -> float32 scalar`, jit-able with a traced step.

  Example:
    >>> from xdomain import losses
    >>> schedule = losses.dann_schedule(1000)
    >>> [round(float(schedule(s)), 4) for s in (0, 100, 1000)]
    [0.0, 0.4621, 0.9999]

  References:
    Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016.
  """
  _check_steps(total_steps, "total_steps", allow_zero=False)

  def schedule(step):
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0)
    return jnp.float32(max_value) * jnp.tanh(0.5 * gamma * progress)

  return schedule


def sigmoid_rampup(rampup_steps: int, *, max_value: float = 1.0) -> optax.Schedule:
  r"""The sigmoid-shaped ramp-up of temporal ensembling and mean teachers.

  .. math::
    w(t) = w_{\max} \exp\left(-5 (1 - t)^2\right),
    \qquad t = \min(\mathrm{step} / \mathrm{rampup\_steps}, 1)

  so w starts at exp(-5) * w_max ~ 0.0067 w_max and reaches w_max at
  `rampup_steps`; `rampup_steps=0` gives `max_value` from the start.

  Args:
    rampup_steps: the number of steps of the ramp.
    max_value: the value after the ramp.

  Returns:
    A schedule `step -> float32 scalar`, jit-able with a traced step.

  Example:
    >>> from xdomain import losses
    >>> schedule = losses.sigmoid_rampup(100)
    >>> [round(float(schedule(s)), 4) for s in (0, 50, 100, 500)]
    [0.0067, 0.2865, 1.0, 1.0]

  References:
    Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017.
  """
  _check_steps(rampup_steps, "rampup_steps", allow_zero=True)

  def schedule(step):
    if rampup_steps == 0:
      return jnp.full((), max_value, jnp.float32)
    t = jnp.clip(jnp.asarray(step, jnp.float32) / rampup_steps, 0.0, 1.0)
    return jnp.float32(max_value) * jnp.exp(-5.0 * jnp.square(1.0 - t))

  return schedule
