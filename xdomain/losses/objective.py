"""Composition of a task loss and weighted adaptation terms, with logs."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import optax

from xdomain.losses import _checks

Weight = float | jax.Array | optax.Schedule


def combine(
    task_loss: jax.Array,
    terms: Mapping[str, tuple[Weight, jax.Array]],
    step: int | jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  r"""Builds total = task + sum_i w_i(step) * term_i and a dict of everything for logging.

  .. math::
    \mathcal{L} = \mathcal{L}_{\mathrm{task}} + \sum_i w_i(\mathrm{step})\, \ell_i

  Each weight is a float (or scalar array) or an optax schedule, called with
  `step`. The logs hold `"task"`, every term's value under its name, its
  weight under `"weight/<name>"`, and `"total"`; all float32 scalars.

  Args:
    task_loss: scalar supervised loss (e.g. source cross-entropy).
    terms: mapping name -> (weight, scalar value); names must not be "task" or
      "total" nor contain "/".
    step: the (possibly traced) training step the schedules are evaluated at.

  Returns:
    `(total, logs)`.

  Raises:
    ValueError: for a non-scalar loss, term or weight, or a reserved name.

  Example:
    >>> from xdomain import losses
    >>> total, logs = losses.combine(
    ...     1.0, {"mmd": (0.5, 0.2), "entropy": (losses.sigmoid_rampup(0), 0.3)}, step=10)
    >>> round(float(total), 4), sorted(logs)
    (1.4, ['entropy', 'mmd', 'task', 'total', 'weight/entropy', 'weight/mmd'])
  """
  task_loss = _checks.as_float(task_loss)
  if task_loss.ndim != 0:
    raise ValueError(f"task_loss must be a scalar, got shape {tuple(task_loss.shape)}.")
  logs = {"task": task_loss}
  total = task_loss
  for name, term in terms.items():
    if name in ("task", "total") or "/" in name:
      raise ValueError(f"term name {name!r} is reserved or contains '/'; rename it.")
    if not isinstance(term, tuple) or len(term) != 2:
      raise ValueError(f"terms[{name!r}] must be a (weight, value) pair, got {term!r}.")
    weight, value = term
    weight = _checks.as_float(weight(step) if callable(weight) else weight)
    value = _checks.as_float(value)
    if weight.ndim != 0 or value.ndim != 0:
      raise ValueError(
          f"terms[{name!r}] must have a scalar weight and a scalar value, got shapes "
          f"{tuple(weight.shape)} and {tuple(value.shape)}; reduce the term first.")
    logs[name] = value
    logs[f"weight/{name}"] = weight
    total = total + weight * value
  logs["total"] = total
  return total, logs
