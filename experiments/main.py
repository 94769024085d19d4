r"""Runs one xdomain experiment: flags -> `xdomain.train.train_and_evaluate`.

  python experiments/main.py --flagfile=experiments/digits/dann.flags \
      --workdir=/tmp/xdomain/dann [--steps=... any flag overrides the file]

Rerunning with the same --workdir resumes from its latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging as std_logging
import sys

from absl import app
from absl import flags
from absl import logging

from xdomain.config import Config
from xdomain.config import ConfigError

_DEFAULTS = Config()
_HELP = {
    "method": "Training method: source_only, target_only, dann, cdan, dan, jan, coral,"
              " entropy, mcc, mean_teacher, distill, pseudo_label, lm_pretrain.",
    "source": "Labelled source domain, e.g. digits/mnist.",
    "target": "Target domain (its labels are only used for evaluation).",
    "model": "Network: seed_cnn, resnet, resnet_dsbn, row_lstm, row_gru (images);"
             " bilstm, bigru, textcnn (text classification); bilstm, bilstm_crf"
             " (sequence tagging).",
    "steps": "Number of training steps.",
    "batch_size": "Global batch size per domain (divisible by the device count).",
    "eval_batch_size": "Global evaluation batch size (divisible by the device count).",
    "seed": "Seed of initialisation, data order and every random draw.",
    "optimizer": "sgd, adam or adamw.",
    "learning_rate": "Peak learning rate.",
    "momentum": "SGD momentum (Nesterov when > 0).",
    "weight_decay": "Weight decay (decoupled with adamw, L2 added to the gradient otherwise).",
    "lr_schedule": "constant, cosine, or inverse_decay (DANN's lr / (1 + 10 p)^0.75).",
    "warmup_steps": "Linear learning-rate warm-up steps.",
    "adapt_weight": "Weight (or gradient-reversal coefficient) of the adaptation term.",
    "adapt_schedule": "Schedule of that weight: constant, dann (2/(1+exp(-10p))-1) or rampup.",
    "rampup_steps": "Steps of the sigmoid ramp-up (adapt_schedule=rampup).",
    "cdan_entropy": "CDAN+E: weight examples by 1 + exp(-entropy).",
    "cdan_random_dim": "CDAN: use the randomized multilinear map above this dimension.",
    "mcc_temperature": "MCC: softmax temperature.",
    "ema_decay": "mean_teacher: decay of the EMA teacher.",
    "token_dropout": "mean_teacher on text: probability that a token of the student's"
                     " target view is replaced by <unk>, its characters (--char_cnn) by"
                     " padding; the teacher sees the text as is.",
    "confidence_threshold": "mean_teacher, pseudo_label: teacher confidence needed for"
                            " the consistency/pseudo-label term (0 keeps all).",
    "discriminator_hidden": "Width of the domain discriminator's two hidden layers.",
    "init_from": "Transfer: restore parameters from this run's workdir (or"
                 " <workdir>/checkpoints/<step>) before training.",
    "restore": "Transfer: regex over '/'-joined parameter paths (backbone/..., head/...)"
               " restored by --init_from.",
    "freeze": "Transfer: regex of parameter paths kept fixed (no optimizer state),"
              " e.g. 'backbone/.*'.",
    "backbone_lr_multiplier": "Transfer: learning rate of backbone/ parameters relative"
                              " to --learning_rate (discriminative fine-tuning).",
    "l2sp": "Transfer: L2-SP alpha, anchoring restored weights to their pretrained values"
            " (alpha/2 |w - w0|^2).",
    "l2sp_beta": "Transfer: L2-SP beta, weight decay beta/2 |w|^2 of the parameters not"
                 " restored.",
    "target_labelled_fraction": "Train on this stratified fraction of the target's labelled"
                                " training split instead of the source (0: off).",
    "teacher": "distill: workdir of the trained teacher run (any xdomain model).",
    "distill_temperature": "distill: softmax temperature T (the term is scaled by T^2).",
    "distill_weight": "distill: weight of the distillation term on the target.",
    "distill_align": "distill: also add this alignment method's terms (dann, coral, ...).",
    "teacher_refresh_every": "pseudo_label: copy the student (or its EMA) into the teacher"
                             " every this many steps.",
    "teacher_source": "pseudo_label: refresh the teacher from the 'student' or its 'ema'.",
    "class_balance": "pseudo_label: give every pseudo-class the same total weight.",
    "image_size": "Images are resized to image_size x image_size.",
    "channels": "Images are converted to 1 (grey) or 3 (RGB) channels.",
    "normalize": "unit ([0, 1]) or standardize.",
    "augment": "Random translations of the training images.",
    "crop_to_content": "Crop every image (all domains) to the square around its ink before resizing.",
    "resolution": "Pass every image through this common resolution before --image_size (0: off).",
    "hidden_size": "Hidden size of recurrent models.",
    "dropout_rate": "Dropout before the classifier head (text models: also on the"
                    " embeddings and between recurrent layers).",
    "embed_size": "Text models: word embedding size.",
    "pooling": "bilstm/bigru classifiers: pool the token outputs by 'last' state,"
               " 'mean' or 'max'.",
    "max_length": "Text: tokens kept per text (longer texts are cut); batches are"
                  " padded to the smallest of 16, 32, ... max_length that fits.",
    "vocab_size": "Text: most vocabulary entries (padding and unknown included), built"
                  " from the training text (--vocab_from) and saved as <workdir>/vocab.json.",
    "min_count": "Text: words seen fewer times in the training text map to <unk>.",
    "vocab_from": "Text: build the vocabulary from the training text of 'both' domains"
                  " (methods with target terms can learn the target's own words) or of"
                  " the 'source' alone (words it lacks are <unk>, whose embedding"
                  " --word_dropout trains).",
    "word_dropout": "Text: probability that a labelled training token is read as <unk>"
                    " (its characters kept), so the model learns to tag words whose"
                    " embedding it never trained.",
    "teacher_unseen_as_unk": "Text, methods with a teacher (mean_teacher, pseudo_label,"
                             " teacher): the teacher reads the target's words that the"
                             " source's training text lacks as <unk> (their embeddings"
                             " learnt nothing from labels); the student reads them, and"
                             " learns them from the teacher's tags.",
    "char_cnn": "Taggers: add a character CNN over each word (case kept).",
    "length_grouping": "Text: re-cut each run of this many training batches into batches"
                       " of similar lengths, so they pad to shorter buckets (faster;"
                       " batches less random); 0 keeps them as drawn.",
    "log_every": "Log training metrics every this many steps.",
    "eval_every": "Evaluate on the test splits every this many steps.",
    "checkpoint_every": "Save a checkpoint every this many steps.",
    "keep_checkpoints": "Keep the last this many checkpoints.",
    "plots": "Write learning curves, t-SNE of the features and the proxy A-distance.",
    "data_dir": "tfds data dir (default $XDOMAIN_DATA_DIR or ~/tensorflow_datasets).",
    "distributed": "Multi-host: call jax.distributed.initialize() from the cluster's"
                   " environment.",
    "coordinator_address": "Multi-host: address:port of process 0.",
    "num_processes": "Multi-host: number of processes.",
    "process_id": "Multi-host: this process's index.",
}
_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
           float: flags.DEFINE_float, str: flags.DEFINE_string}
_TYPES = {"bool": bool, "int": int, "float": float, "str": str,
          "str | None": str, "int | None": int}

for _field in dataclasses.fields(Config):
  _DEFINE[_TYPES[_field.type]](_field.name, getattr(_DEFAULTS, _field.name),
                               _HELP[_field.name])
flags.DEFINE_string("workdir", None, "Directory of checkpoints, metrics and results.")
flags.mark_flag_as_required("workdir")


class _QuietLibraries(std_logging.Filter):
  """Keeps the console to xdomain's progress: Orbax, tfds and grain log a lot at INFO."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    noisy = ("/orbax/", "/tensorflow_datasets/", "/grain/", "/etils/")
    return record.levelno >= std_logging.WARNING or not any(
        part in record.pathname for part in noisy)


def config_from_flags() -> Config:
  return Config(**{f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(Config)})


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # Imported after flag parsing so that `--help` stays fast.
  from xdomain import checkpoint
  from xdomain import train

  try:
    results = train.train_and_evaluate(config_from_flags(), flags.FLAGS.workdir)
  except (ConfigError, checkpoint.CheckpointMismatchError, train.NonFiniteLossError,
          FileNotFoundError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2 if isinstance(e, ConfigError) else 1
  if results.get("interrupted"):
    return 128 + 15  # stopped by SIGTERM after saving a checkpoint
  print(f"target test accuracy {results['target_test_accuracy']:.4f}, source test"
        f" accuracy {results['source_test_accuracy']:.4f} after {results['step']} steps;"
        f" results in {flags.FLAGS.workdir}/results.json")
  return 0


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main)
