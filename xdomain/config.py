"""The resolved configuration of one experiment: plain values, one field per flag.

`experiments/main.py` defines one command-line flag per field (its help is the
field's `help` metadata) and builds a `Config`; tests and users build one
directly. Nothing here imports xdomain: each owner of a flag checks it
(`xdomain.train.experiment.validate_config` calls them all, once, before any
work starts), so a bad value fails with one line that names the flag.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any


class ConfigError(ValueError):
  """A configuration value is invalid; the message says which and what to do."""


def _flag(default: Any, help_text: str) -> Any:
  """A `Config` field with the flag's help text in its metadata."""
  return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything one experiment needs; field names match the command-line flags."""

  method: str = _flag("dann",
      "Training method: source_only, target_only, dann, iwdan, cdan, dan, jan, coral, entropy, "
      "mcc, mean_teacher, distill, pseudo_label, lm_pretrain, skipgram, mdd, bsp, afn, fixmatch, "
      "shot.")
  source: str = _flag("digits/mnist", 'Labelled source domain, e.g. digits/mnist.')
  target: str = _flag("digits/uci", 'Target domain (its labels are only used for evaluation).')
  model: str = _flag("seed_cnn",
      "Network: seed_cnn, resnet, resnet_dsbn, row_lstm, row_gru (images); bilstm, bigru, "
      "textcnn (text classification); bilstm, bilstm_crf (sequence tagging).")
  steps: int = _flag(2000, 'Number of training steps.')
  batch_size: int = _flag(64, 'Global batch size per domain (divisible by the device count).')
  eval_batch_size: int = _flag(256, 'Global evaluation batch size (divisible by the device count).')
  seed: int = _flag(0, 'Seed of initialisation, data order and every random draw.')

  optimizer: str = _flag("adam", 'sgd, adam or adamw.')
  learning_rate: float = _flag(1e-3, 'Peak learning rate.')
  momentum: float = _flag(0.9, 'SGD momentum (Nesterov when > 0).')
  weight_decay: float = _flag(0.0,
      "Weight decay (decoupled with adamw, L2 added to the gradient otherwise).")
  lr_schedule: str = _flag("constant",
      "constant, cosine, or inverse_decay (DANN's lr / (1 + 10 p)^0.75).")
  warmup_steps: int = _flag(0, 'Linear learning-rate warm-up steps.')

  # Adaptation term weight lambda(step) = adapt_weight * schedule(step).
  adapt_weight: float = _flag(1.0,
      "Weight (or gradient-reversal coefficient) of the adaptation term.")
  adapt_schedule: str = _flag("constant",
      "Schedule of that weight: constant, dann (2/(1+exp(-10p))-1) or rampup.")
  rampup_steps: int = _flag(1000, 'Steps of the sigmoid ramp-up (adapt_schedule=rampup).')
  # Method-specific hyperparameters (ignored by methods that do not use them).
  cdan_entropy: bool = _flag(True, 'CDAN+E: weight examples by 1 + exp(-entropy).')
  cdan_random_dim: int = _flag(1024,
      "CDAN: use the randomized multilinear map above this dimension.")
  mcc_temperature: float = _flag(2.5, 'MCC: softmax temperature.')
  ema_decay: float = _flag(0.99, 'mean_teacher: decay of the EMA teacher.')
  label_shift_decay: float = _flag(
      0.99, "iwdan: decay of the running confusion matrix and target prediction from which "
      "the class weights are estimated.")
  token_dropout: float = _flag(0.0,
      "mean_teacher on text: probability that a token of the student's target view is "
      "replaced by <unk>, its characters (--char_cnn) by padding; the teacher sees the text "
      "as is.")
  confidence_threshold: float | None = _flag(None,
      "Confidence a teacher's prediction needs to be trained on (mean_teacher, pseudo_label:"
      " the teacher's; fixmatch: the weak view's; detection_mean_teacher: a box's score); 0"
      " keeps every one. Unset: the method's default (fixmatch 0.95, detection_mean_teacher"
      " 0.5, the others keep every one).")
  max_pseudo_boxes: int = _flag(0,
      "detection_mean_teacher: keep at most this many pseudo-boxes per target image, the most"
      " confident (0: up to 8).")
  pseudo_box_regression: bool = _flag(True,
      "detection_mean_teacher: train box distances and centre-ness on the pseudo-boxes as well"
      " as their classes; false: their classes only, as Unbiased Teacher.")
  center_aware_weight: float = _flag(1.0,
      "epm: the center-aware term's gradient reversal, relative to the global term's (1: the"
      " same; experiments/detection/epm.flags sets its validator's pick).")
  discriminator_per_level: bool = _flag(False,
      "dann and epm on detection: one discriminator per FPN level, as EPM (each term the mean"
      " of the levels' losses); false: one over every location of every level.")
  discriminator_hidden: int = _flag(1024,
      "Width of the domain discriminator's two hidden layers (mdd: of its adversarial head's "
      "one).")
  # MDD, BSP, AFN (xdomain/methods/disparity.py, feature_penalties.py).
  mdd_margin: float = _flag(4.0, "mdd: margin gamma of the margin disparity discrepancy.")
  bsp_weight: float = _flag(0.0,
      "Batch spectral penalty weight; --method=bsp (CDAN + BSP) uses the paper's 1e-4 when 0, "
      "--method=dann or cdan add the penalty when > 0.")
  afn_delta: float = _flag(1.0, "afn: step size delta_r of the stepwise adaptive feature norm.")
  afn_radius: float = _flag(0.0,
      "afn: 0 for the stepwise variant (SAFN); > 0 for hard AFN with this radius R (25 in the "
      "paper).")
  shot_pseudo_weight: float = _flag(0.3,
      "shot: weight beta of the centroid pseudo-labels' cross-entropy (0: SHOT-IM); the "
      "information maximisation has --adapt_weight.")
  shot_refresh_every: int = _flag(0,
      "shot: recompute the pseudo-labels of the whole target training split every this many "
      "steps (0: once per target epoch, as SHOT).")
  skipgram_window: int = _flag(5,
      "skipgram: a word predicts the words at most this many positions away.")
  skipgram_negatives: int = _flag(5, "skipgram: noise words per (word, context) pair.")
  general_text: str = _flag("",
      "skipgram, lm_pretrain: comma-separated text domains of general text (e.g. "
      "brown/news,brown/fiction) whose training sentences, labels and tags unused, join every "
      "step as a third part of --batch_size rows; their words outside the vocabulary "
      "(--vocab_from) are <unk>, which trains nothing.")
  # Transfer learning (xdomain/transfer.py): restore, freeze, anchor.
  init_from: str | None = _flag(None,
      "Transfer: restore parameters from this run's workdir (or <workdir>/checkpoints/<step>)"
      " before training.")
  restore: str = _flag("backbone/.*",
      "Transfer: regex over '/'-joined parameter paths (backbone/..., head/...) restored by "
      "--init_from.")
  freeze: str | None = _flag(None,
      "Transfer: regex of parameter paths kept fixed (no optimizer state), e.g. "
      "'backbone/.*'.")
  backbone_lr_multiplier: float = _flag(1.0,
      "Transfer: learning rate of backbone/ parameters relative to --learning_rate "
      "(discriminative fine-tuning).")
  l2sp: float = _flag(0.0,
      "Transfer: L2-SP alpha, anchoring restored weights to their pretrained values (alpha/2 "
      "|w - w0|^2).")
  l2sp_beta: float = _flag(0.0,
      "Transfer: L2-SP beta, weight decay beta/2 |w|^2 of the parameters not restored.")
  remove_domain_direction: bool = _flag(False,
      "Transfer, text: project out of the restored word vectors the direction from the "
      "source's to the target's frequency-weighted mean vector (unlabelled training text).")
  target_labelled_fraction: float = _flag(0.0,
      "Train on this stratified fraction of the target's labelled training split instead of "
      "the source (0: off).")
  source_val_fraction: float = _flag(0.0,
      "Hold out this stratified fraction of the source's training split (the same rows for "
      "every seed; they never train) for the validators that need labelled source data "
      "(source_accuracy, importance_weighted, dev); 0: none, those validators are skipped. "
      "With --target_labelled_fraction, of those few target labels instead.")
  # Teacher (proxy) models (xdomain/methods/teacher.py).
  teacher: str | None = _flag(None,
      "distill: workdir of the trained teacher run (any xdomain model).")
  distill_temperature: float = _flag(2.0,
      "distill: softmax temperature T (the term is scaled by T^2).")
  distill_weight: float = _flag(1.0, 'distill: weight of the distillation term on the target.')
  distill_align: str | None = _flag(None,
      "distill: also add this alignment method's terms (dann, coral, ...).")
  teacher_refresh_every: int = _flag(100,
      "pseudo_label: copy the student (or its EMA) into the teacher every this many steps.")
  teacher_source: str = _flag("student",
      "pseudo_label: refresh the teacher from the 'student' or its 'ema'.")
  class_balance: bool = _flag(
      False, 'pseudo_label, fixmatch: give every pseudo-class the same total weight.')

  image_size: int = _flag(28, 'Images are resized to image_size x image_size.')
  channels: int = _flag(1, 'Images are converted to 1 (grey) or 3 (RGB) channels.')
  normalize: str = _flag("unit", 'unit ([0, 1]) or standardize.')
  augment: bool = _flag(False, 'Random translations of the training images.')
  crop_to_content: bool = _flag(False,
      "Crop every image (all domains) to the square around its ink before resizing.")
  resolution: int = _flag(0,
      "Pass every image through this common resolution before --image_size (0: off).")
  # Model sizes (used by the models that have them).
  hidden_size: int = _flag(128, 'Hidden size of recurrent models.')
  weight_norm_head: bool = _flag(False,
      "Classifiers: weight-normalise the output layer (SHOT's source model; --method=shot "
      "needs a run made with it).")
  bottleneck_size: int = _flag(0,
      "Classifiers: > 0 adds a Dense layer of this size with batch norm after the features "
      "(SHOT's bottleneck, 256 in the paper); 0: none.")
  label_smoothing: float = _flag(0.0,
      "Smooth the labels of the supervised cross-entropy by this much (SHOT's source stage: "
      "0.1).")
  dropout_rate: float = _flag(0.0,
      "Dropout before the classifier head (text models: also on the embeddings and between "
      "recurrent layers).")
  # Text models and their input (xdomain/data/text_pipeline.py, xdomain/tasks/text.py).
  embed_size: int = _flag(128, 'Text models: word embedding size.')
  pooling: str = _flag("max",
      "bilstm/bigru classifiers: pool the token outputs by 'last' state, 'mean' or 'max'.")
  max_length: int = _flag(64,
      "Text: tokens kept per text (longer texts are cut); batches are padded to the smallest "
      "of 16, 32, ... max_length that fits.")
  vocab_size: int = _flag(20000,
      "Text: most vocabulary entries (padding and unknown included), built from the training "
      "text (--vocab_from) and saved as <workdir>/vocab.json.")
  min_count: int = _flag(1, 'Text: words seen fewer times in the training text map to <unk>.')
  vocab_from: str = _flag("both",
      "Text: build the vocabulary from the training text of 'both' domains (methods with "
      "target terms can learn the target's own words) or of the 'source' alone (words it "
      "lacks are <unk>, whose embedding --word_dropout trains).")
  word_dropout: float = _flag(0.0,
      "Text: probability that a labelled training token is read as <unk> (its characters "
      "kept), so the model learns to tag words whose embedding it never trained.")
  teacher_unseen_as_unk: bool = _flag(False,
      "Text, methods with a teacher (mean_teacher, pseudo_label, teacher): the teacher reads "
      "the target's words that the source's training text lacks as <unk> (their embeddings "
      "learnt nothing from labels); the student reads them, and learns them from the "
      "teacher's tags.")
  char_cnn: bool = _flag(False, 'Taggers: add a character CNN over each word (case kept).')
  length_grouping: int = _flag(0,
      "Text: re-cut each run of this many training batches into batches of similar lengths, "
      "so they pad to shorter buckets (faster; batches less random); 0 keeps them as drawn.")

  log_every: int = _flag(50, 'Log training metrics every this many steps.')
  eval_every: int = _flag(500, 'Evaluate on the test splits every this many steps.')
  checkpoint_every: int = _flag(500, 'Save a checkpoint every this many steps.')
  keep_checkpoints: int = _flag(3, 'Keep the last this many checkpoints.')
  allow_config_change: bool = _flag(False,
      "Resume a workdir with flags that alter training (learning rate, steps, ...) other "
      "than those its checkpoint was trained with; the change and its step are recorded "
      "in config.json's config_history. Without it such a resume is refused.")
  plots: bool = _flag(False,
      "Write learning curves, t-SNE of the features and the proxy A-distance.")
  plots_baseline: str | None = _flag(None,
      "--plots: the workdir of the run whose model the t-SNE and proxy A-distance compare "
      "with (e.g. the source-only run of the same pair and seed); default the random "
      "initialisation.")
  data_dir: str | None = _flag(None,
      "tfds data dir (default $XDOMAIN_DATA_DIR or ~/tensorflow_datasets).")

  # Multi-host: set all three; or `distributed` alone to take them from the
  # cluster's environment (SLURM, TPU, ...); or none for one process.
  distributed: bool = _flag(False,
      "Multi-host: call jax.distributed.initialize() from the cluster's environment.")
  coordinator_address: str | None = _flag(None, 'Multi-host: address:port of process 0.')
  num_processes: int | None = _flag(None, 'Multi-host: number of processes.')
  process_id: int | None = _flag(None, "Multi-host: this process's index.")

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> Config:
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ConfigError(f"unknown config fields: {sorted(unknown)}")
    return cls(**values)


def check_choice(config: Config, name: str, choices) -> None:
  """Raises `ConfigError` unless `--name` is one of `choices`."""
  value = getattr(config, name)
  if value not in choices:
    raise ConfigError(f"--{name}={value!r} is not one of {', '.join(sorted(choices))}.")


def check_positive(config: Config, *names: str) -> None:
  """Raises `ConfigError` for the first of `names` that is not > 0."""
  for name in names:
    if not getattr(config, name) > 0:
      raise ConfigError(f"--{name}={getattr(config, name)} must be positive.")


def check_non_negative(config: Config, *names: str) -> None:
  """Raises `ConfigError` for the first of `names` that is < 0."""
  for name in names:
    if getattr(config, name) < 0:
      raise ConfigError(f"--{name}={getattr(config, name)} must be >= 0.")


def check_method_flags(config: Config, method: str, *names: str) -> None:
  """Raises `ConfigError` for the first of `names`, flags of `method` alone, set
  away from its default for another method."""
  if config.method == method:
    return
  for name in names:
    if getattr(config, name) != Config.__dataclass_fields__[name].default:
      raise ConfigError(f"--{name} is for --method={method}, not {config.method}.")


def check_fraction(config: Config, *names: str) -> None:
  """Raises `ConfigError` for the first of `names` outside [0, 1)."""
  for name in names:
    if getattr(config, name) is not None and not 0.0 <= getattr(config, name) < 1.0:
      raise ConfigError(f"--{name}={getattr(config, name)} must be in [0, 1).")
