"""Domain-adaptation objectives in pure JAX (jax, optax and numpy only), optax style.

    from xdomain import losses
    loss = losses.mmd(source_features, target_features)

Arrays in; per-example values (or a scalar for batch-level quantities such as
MMD); optional `where` masks; keyword-only hyperparameters with the papers'
defaults; float32 accumulation for bf16 inputs; everything jit-able.
"""

from xdomain.losses.adversarial import CdanRandomMatrices
from xdomain.losses.adversarial import cdan
from xdomain.losses.adversarial import cdan_entropy_weights
from xdomain.losses.adversarial import cdan_features
from xdomain.losses.adversarial import cdan_random_matrices
from xdomain.losses.adversarial import domain_adversarial
from xdomain.losses.adversarial import gradient_reversal
from xdomain.losses.discrepancy import DEFAULT_BANDWIDTH_MULTIPLIERS
from xdomain.losses.discrepancy import DEFAULT_BLOCK_SIZE
from xdomain.losses.discrepancy import MEDIAN_MAX_POINTS
from xdomain.losses.discrepancy import coral
from xdomain.losses.discrepancy import jmmd
from xdomain.losses.discrepancy import median_bandwidth
from xdomain.losses.discrepancy import mmd
from xdomain.losses.objective import combine
from xdomain.losses.prediction import entropy
from xdomain.losses.prediction import mcc
from xdomain.losses.schedules import dann_schedule
from xdomain.losses.schedules import sigmoid_rampup
from xdomain.losses.teacher import consistency
from xdomain.losses.teacher import distillation
from xdomain.losses.teacher import pseudo_label

__all__ = [
    "CdanRandomMatrices",
    "DEFAULT_BANDWIDTH_MULTIPLIERS",
    "DEFAULT_BLOCK_SIZE",
    "MEDIAN_MAX_POINTS",
    "cdan",
    "cdan_entropy_weights",
    "cdan_features",
    "cdan_random_matrices",
    "combine",
    "consistency",
    "coral",
    "dann_schedule",
    "distillation",
    "domain_adversarial",
    "entropy",
    "gradient_reversal",
    "jmmd",
    "mcc",
    "median_bandwidth",
    "mmd",
    "pseudo_label",
    "sigmoid_rampup",
]
