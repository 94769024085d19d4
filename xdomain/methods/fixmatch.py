"""FixMatch-style self-training on the target (Sohn et al., NeurIPS 2020).

Each target example is seen twice in the same forward pass as the source:
a weak view, the target batch as the loader gives it, and a strong view
(`task.strong_view`: RandAugment-style ops and a cutout for images, dropped
and swapped words for text). The weak view is the training augmentation that
the labelled source gets too (`--augment`: the loader's random shifts of both
domains; none without it), as in FixMatch, whose labelled and weak images go
through the same flip-and-shift: the pseudo-labels come from inputs like those
the classifier learned from. (An extra shift of the target alone made them
from inputs the source never showed: on uci -> mnist such runs collapsed from
weight 1 up, docs/results.md.) The model's own prediction on the weak view, where its
confidence reaches `--confidence_threshold` (FixMatch's 0.95 when unset), is
the label that the strong view is trained on; no gradient flows through the
weak side. As in FixMatch, the weak and strong views go through the model in
one batch (training mode), and the loss is averaged over all target examples.
"""

from __future__ import annotations

import jax

from xdomain import losses
from xdomain.config import Config
from xdomain.methods import base

DEFAULT_CONFIDENCE_THRESHOLD = 0.95  # FixMatch's tau


def fixmatch_views(task, inputs, rng, config: Config):
  """Target inputs -> ((weak ++ strong) on the batch axis, weak): both views
  run through the model as the target part of the batch."""
  strong = task.strong_view(inputs, rng, config)
  return task.join(inputs, strong), inputs


def fixmatch_loss(weak_logits: jax.Array, strong_logits: jax.Array, *,
                  confidence_threshold: float, class_balance: bool = False,
                  where: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(mean cross-entropy of the strong view to the weak view's confident
  argmax over all valid examples, kept fraction) (`losses.pseudo_label_loss`,
  the weak side detached; `class_balance` gives each pseudo-class the same
  total weight)."""
  return losses.pseudo_label_loss(strong_logits, jax.lax.stop_gradient(weak_logits),
                                  confidence_threshold=confidence_threshold,
                                  class_balance=class_balance, where=where)


def make_fixmatch(config: Config) -> base.Method:
  """Source cross-entropy + adaptation weight * FixMatch's unlabelled loss on the target."""
  threshold = (DEFAULT_CONFIDENCE_THRESHOLD if config.confidence_threshold is None
               else config.confidence_threshold)

  def terms(outputs, aux_params, rng, step):
    del aux_params, rng, step
    logits = outputs.target_logits
    half = logits.shape[0] // 2
    mask = outputs.target_mask
    weak, _ = base.flatten_tokens(logits[:half], mask)
    strong, _ = base.flatten_tokens(logits[half:], mask)
    mask = None if mask is None else mask.reshape(-1)
    loss, kept = fixmatch_loss(weak, strong, confidence_threshold=threshold,
                               class_balance=config.class_balance, where=mask)
    return {"fixmatch": loss, "fixmatch_kept": kept}

  return base.Method(
      name="fixmatch", terms=terms,
      weights={"fixmatch": base.adaptation_weight(config), "fixmatch_kept": 0.0},
      target_views=lambda task, inputs, rng: fixmatch_views(task, inputs, rng, config))
