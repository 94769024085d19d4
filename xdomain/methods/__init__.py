"""Training methods, one module per family, dispatched by `--method` name."""

import functools
import os

from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.config import check_choice
from xdomain.config import check_fraction
from xdomain.config import check_method_flags
from xdomain.config import check_non_negative
from xdomain.config import check_positive
from xdomain.methods import adversarial
from xdomain.methods import baselines
from xdomain.methods import detection_teacher
from xdomain.methods import disparity
from xdomain.methods import feature_penalties
from xdomain.methods import fixmatch
from xdomain.methods import mean_teacher
from xdomain.methods import pretrain
from xdomain.methods import source_free
from xdomain.methods import statistics
from xdomain.methods import target_structure
from xdomain.methods import teacher
from xdomain.methods.base import ADAPT_SCHEDULES
from xdomain.methods.base import Method
from xdomain.methods.base import Outputs
from xdomain.methods.base import Teacher

# The methods that only add terms on the two domains' outputs, which
# distillation can add to its own (--distill_align).
ALIGNMENTS = {
    "dann": feature_penalties.optional_bsp(adversarial.make_dann),
    "cdan": feature_penalties.optional_bsp(adversarial.make_cdan),
    "dan": statistics.make_dan,
    "jan": statistics.make_jan,
    "coral": statistics.make_coral,
    "entropy": target_structure.make_entropy,
    "mcc": target_structure.make_mcc,
}

METHODS = {
    "source_only": baselines.make_source_only,
    "target_only": baselines.make_target_only,
    **ALIGNMENTS,
    "iwdan": adversarial.make_iwdan,
    "mean_teacher": mean_teacher.make_mean_teacher,
    "distill": functools.partial(teacher.make_distill, alignments=ALIGNMENTS),
    "pseudo_label": teacher.make_pseudo_label,
    "lm_pretrain": pretrain.make_lm_pretrain,
    "skipgram": pretrain.make_skipgram,
    "detection_mean_teacher": detection_teacher.make_detection_mean_teacher,
    "epm": adversarial.make_epm,
    "mdd": disparity.make_mdd,
    "bsp": feature_penalties.make_bsp,
    "afn": feature_penalties.make_afn,
    "fixmatch": fixmatch.make_fixmatch,
    "shot": source_free.make_shot,
}

# Methods whose step runs a teacher on the target.
_WITH_TEACHER = ("mean_teacher", "pseudo_label", "distill")
TEACHER_SOURCES = ("student", "ema")


def validate_config(config: Config, task: str) -> None:
  """Raises `ConfigError` for method flags that cannot work for a run of `task`."""
  check_choice(config, "method", METHODS)
  check_choice(config, "adapt_schedule", ADAPT_SCHEDULES)
  check_choice(config, "teacher_source", TEACHER_SOURCES)
  check_positive(config, "discriminator_hidden", "cdan_random_dim", "mcc_temperature",
                 "distill_temperature", "teacher_refresh_every", "rampup_steps",
                 "skipgram_window", "skipgram_negatives")
  check_non_negative(config, "adapt_weight", "distill_weight")
  check_fraction(config, "ema_decay", "confidence_threshold", "token_dropout",
                 "label_shift_decay")
  if config.method == "iwdan" and (task == "detection" or config.model.endswith("_crf")):
    raise ConfigError(
        "--method=iwdan reweighs the source cross-entropy of each class, which"
        f" {'detection' if task == 'detection' else f'--model={config.model} (a CRF)'} does"
        " not train with; use --method=dann.")
  if config.teacher_unseen_as_unk and config.method not in _WITH_TEACHER:
    raise ConfigError(
        "--teacher_unseen_as_unk is for methods with a teacher (mean_teacher,"
        f" pseudo_label, distill); --method={config.method} has none.")
  if config.method == "distill":
    if not config.teacher:
      raise ConfigError(
          "--method=distill needs --teacher=<workdir of a trained xdomain run>.")
    if not os.path.isfile(os.path.join(config.teacher, "config.json")):
      raise ConfigError(
          f"--teacher={config.teacher!r} holds no config.json: give the --workdir of a"
          " run of experiments/main.py.")
  elif config.teacher:
    raise ConfigError(f"--teacher is only used by --method=distill, not {config.method}.")
  if config.distill_align and config.distill_align not in ALIGNMENTS:
    raise ConfigError(
        f"--distill_align={config.distill_align} is not an alignment method; use one of"
        f" {', '.join(ALIGNMENTS)}.")
  if config.method == "detection_mean_teacher" and task != "detection":
    raise ConfigError(f"--method=detection_mean_teacher is for detection; --source={config.source}"
                      f" is {task}: use --method=mean_teacher.")
  detection_teacher.validate_config(config)
  if config.method == "epm" and task != "detection":
    raise ConfigError(f"--method=epm aligns a detector's FPN locations; --source={config.source}"
                      f" is {task}: use --method=dann.")
  check_non_negative(config, "center_aware_weight")
  check_method_flags(config, "epm", "center_aware_weight")
  if config.discriminator_per_level and (
      task != "detection" or config.method not in ("dann", "epm")):
    raise ConfigError(
        "--discriminator_per_level gives each FPN level of a detector its own discriminator,"
        f" for --method=dann or epm; --method={config.method} with --source={config.source}"
        f" ({task}) has none: leave it false.")
  if config.method in pretrain.PRETRAINED_MODELS:
    pretrain.validate_config(config, task)
  elif config.general_text:
    raise ConfigError(
        f"--general_text adds unlabelled text to pretraining (--method=skipgram or"
        f" lm_pretrain), not to --method={config.method}: drop the flag.")
  if config.method == "shot":
    source_free.validate_config(config, task)
  check_non_negative(config, "shot_pseudo_weight", "shot_refresh_every")
  check_positive(config, "mdd_margin", "afn_delta")
  check_non_negative(config, "bsp_weight", "afn_radius")
  if config.bsp_weight and config.method not in ("bsp", "dann", "cdan"):
    raise ConfigError(
        f"--bsp_weight is added to --method=dann, cdan or bsp, not {config.method}.")


__all__ = ["ALIGNMENTS", "METHODS", "Method", "Outputs", "Teacher", "validate_config"]
