"""Domain-adaptation objectives in pure JAX (jax, optax and numpy only), optax style.

    from xdomain import losses
    loss = losses.mmd(source_features, target_features)

The conventions every loss here follows:

- Arrays in. A loss that is defined per example returns per-example values
  (`entropy`, `distillation`, `consistency`, `pseudo_label`,
  `adaptive_feature_norm`, `skipgram_negative_sampling`, and the adversarial
  `domain_adversarial` / `cdan` / `margin_disparity_discrepancy`, which return
  one array per domain);
  reduce them yourself, or with the documented reductions
  (`domain_balanced_mean` for the adversarial terms, `pseudo_label_loss` for
  FixMatch's mean). Quantities defined only over a batch (`mmd`, `jmmd`,
  `coral`, `mcc`, `batch_spectral_penalty`, `information_maximization`)
  return a scalar.
- Masks: `where` for a loss of one input; `source_where` / `target_where`
  for a loss of two domains. A masked loss equals the loss on the masked
  subset, and whatever a masked entry holds (NaN, inf) reaches neither the
  value nor the gradients.
- Empty masks (optax's rule): when nothing is valid, or too little to
  estimate a batch quantity (one row for an unbiased MMD or a covariance),
  the value is finite (0: per-example values are 0 where masked, the scalar
  losses and reductions are 0) and the gradients are zero, never NaN.
- Keyword-only hyperparameters whose defaults are the papers' (DAN's
  multi-kernel family for MMD, T = 2.5 for MCC, tau = 0.95 for pseudo-labels,
  ...); other conventions are options.
- float32 accumulation for bf16/f16 inputs; everything is jit-able.
"""

from xdomain.losses.adversarial import CDAN_MULTILINEAR_MAX_DIM
from xdomain.losses.adversarial import CdanRandomMatrices
from xdomain.losses.adversarial import cdan
from xdomain.losses.adversarial import cdan_entropy_weights
from xdomain.losses.adversarial import cdan_features
from xdomain.losses.adversarial import cdan_random_matrices
from xdomain.losses.adversarial import domain_adversarial
from xdomain.losses.adversarial import domain_balanced_mean
from xdomain.losses.adversarial import gradient_reversal
from xdomain.losses.detection import box_area
from xdomain.losses.detection import giou_loss
from xdomain.losses.detection import sigmoid_focal_loss
from xdomain.losses.discrepancy import BANDWIDTH_HEURISTICS
from xdomain.losses.discrepancy import DEFAULT_BANDWIDTH_MULTIPLIERS
from xdomain.losses.discrepancy import DEFAULT_BLOCK_SIZE
from xdomain.losses.discrepancy import KERNEL_REDUCTIONS
from xdomain.losses.discrepancy import MEDIAN_MAX_POINTS
from xdomain.losses.discrepancy import coral
from xdomain.losses.discrepancy import jmmd
from xdomain.losses.discrepancy import mean_bandwidth
from xdomain.losses.discrepancy import median_bandwidth
from xdomain.losses.discrepancy import mmd
from xdomain.losses.disparity import margin_disparity_discrepancy
from xdomain.losses.information import centroid_pseudo_labels
from xdomain.losses.information import information_maximization
from xdomain.losses.label_shift import class_importance_weights
from xdomain.losses.language_model import bidirectional_language_model
from xdomain.losses.language_model import skipgram_negative_sampling
from xdomain.losses.norms import adaptive_feature_norm
from xdomain.losses.objective import combine
from xdomain.losses.prediction import entropy
from xdomain.losses.prediction import mcc
from xdomain.losses.schedules import dann_schedule
from xdomain.losses.schedules import sigmoid_rampup
from xdomain.losses.spectral import batch_spectral_penalty
from xdomain.losses.teacher import class_balanced_weights
from xdomain.losses.teacher import consistency
from xdomain.losses.teacher import distillation
from xdomain.losses.teacher import pseudo_label
from xdomain.losses.teacher import pseudo_label_loss

__all__ = [
    "BANDWIDTH_HEURISTICS",
    "CDAN_MULTILINEAR_MAX_DIM",
    "CdanRandomMatrices",
    "DEFAULT_BANDWIDTH_MULTIPLIERS",
    "DEFAULT_BLOCK_SIZE",
    "KERNEL_REDUCTIONS",
    "MEDIAN_MAX_POINTS",
    "adaptive_feature_norm",
    "batch_spectral_penalty",
    "bidirectional_language_model",
    "box_area",
    "cdan",
    "cdan_entropy_weights",
    "cdan_features",
    "cdan_random_matrices",
    "centroid_pseudo_labels",
    "class_balanced_weights",
    "class_importance_weights",
    "combine",
    "consistency",
    "coral",
    "dann_schedule",
    "distillation",
    "domain_adversarial",
    "domain_balanced_mean",
    "entropy",
    "giou_loss",
    "gradient_reversal",
    "information_maximization",
    "jmmd",
    "margin_disparity_discrepancy",
    "mcc",
    "mean_bandwidth",
    "median_bandwidth",
    "mmd",
    "pseudo_label",
    "pseudo_label_loss",
    "sigmoid_focal_loss",
    "sigmoid_rampup",
    "skipgram_negative_sampling",
]
