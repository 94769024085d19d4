"""Training methods, one module per family, dispatched by `--method` name."""

from xdomain.methods import adversarial
from xdomain.methods import baselines
from xdomain.methods import mean_teacher
from xdomain.methods import pretrain
from xdomain.methods import statistics
from xdomain.methods import target_structure
from xdomain.methods import teacher
from xdomain.methods.base import Method
from xdomain.methods.base import Outputs
from xdomain.methods.base import Teacher

METHODS = {
    "source_only": baselines.make_source_only,
    "target_only": baselines.make_target_only,
    "dann": adversarial.make_dann,
    "cdan": adversarial.make_cdan,
    "dan": statistics.make_dan,
    "jan": statistics.make_jan,
    "coral": statistics.make_coral,
    "entropy": target_structure.make_entropy,
    "mcc": target_structure.make_mcc,
    "mean_teacher": mean_teacher.make_mean_teacher,
    "distill": teacher.make_distill,
    "pseudo_label": teacher.make_pseudo_label,
    "lm_pretrain": pretrain.make_lm_pretrain,
}

__all__ = ["METHODS", "Method", "Outputs", "Teacher"]
