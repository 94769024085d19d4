"""Mean teacher / self-ensembling for domain adaptation (French et al., ICLR 2018).

The teacher is an exponential moving average of the student (kept by the
engine, `--ema_decay`); the student is pulled towards the teacher's class
probabilities on two different random views of each target example (shifted,
noisy images; text with tokens dropped to <unk> for the student), where the
teacher is confident (`--confidence_threshold`; unset or 0 keeps every example).
"""

from __future__ import annotations

import jax

from xdomain import losses
from xdomain.config import Config
from xdomain.methods import base

def make_mean_teacher(config: Config) -> base.Method:
  """Confidence-thresholded squared-probability consistency to an EMA teacher."""
  threshold = config.confidence_threshold

  def terms(outputs, aux_params, rng, step):
    del aux_params, rng, step
    student, mask = base.flatten_tokens(outputs.target_logits, outputs.target_mask)
    teacher, _ = base.flatten_tokens(outputs.teacher_target_logits, outputs.target_mask)
    per_example = losses.consistency(student, jax.lax.stop_gradient(teacher),
                                     confidence_threshold=threshold, where=mask)
    return {"consistency": base.masked_mean(per_example, mask)}

  return base.Method(name="mean_teacher", terms=terms,
                     weights={"consistency": base.adaptation_weight(config)},
                     ema_decay=config.ema_decay,
                     target_views=lambda task, inputs, rng: task.consistency_views(
                         inputs, rng, config))
