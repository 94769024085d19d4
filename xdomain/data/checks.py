"""The data flags of a run: its domains, their pairing, and their preprocessing."""

from __future__ import annotations

from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.config import check_choice
from xdomain.config import check_fraction
from xdomain.config import check_non_negative
from xdomain.config import check_positive
from xdomain.data import domains
from xdomain.data import preprocess
from xdomain.data import coco
from xdomain.data import conll

# Text: whose training text the vocabulary is built from (--vocab_from).
VOCAB_FROM = ("both", "source")


def validate_config(config: Config):
  """Raises `ConfigError` for data flags that cannot work.

  Returns:
    `(source_info, target_info)`, the domains' `DomainInfo`, resolved once.
  """
  infos = {}
  for name in ("source", "target"):
    domain = getattr(config, name)
    try:
      infos[name] = domains.domain_info(domain)
    except ValueError as e:  # unknown name, or unreadable conll: files
      if domain.startswith((conll.CONLL_PREFIX, coco.COCO_PREFIX)):  # e names the files
        raise ConfigError(f"--{name}={e}.") from e
      raise ConfigError(
          f"--{name}={domain!r} is not a known domain: {e}. Known domains:"
          f" {', '.join(domains.list_domains())}, or conll:/path/train.txt.") from e
  source_info, target_info = infos["source"], infos["target"]
  if (source_info.modality, source_info.task) != (target_info.modality, target_info.task):
    raise ConfigError(
        f"--source={config.source} ({source_info.modality} {source_info.task}) and"
        f" --target={config.target} ({target_info.modality} {target_info.task}) are"
        " different tasks; pair domains of one task.")
  if source_info.label_names != target_info.label_names:
    raise ConfigError(
        f"--source={config.source} and --target={config.target} have different"
        f" label sets ({list(source_info.label_names)} vs"
        f" {list(target_info.label_names)}); pair domains of one task.{_relabel_hint(config)}")
  check_positive(config, "image_size", "max_length", "min_count")
  check_non_negative(config, "resolution", "length_grouping")
  check_choice(config, "normalize", preprocess.NORMALIZATIONS)
  check_choice(config, "vocab_from", VOCAB_FROM)
  check_fraction(config, "word_dropout", "source_val_fraction")
  if config.channels not in (1, 3):
    raise ConfigError(f"--channels={config.channels} must be 1 or 3.")
  if config.vocab_size < 2:
    raise ConfigError(
        f"--vocab_size={config.vocab_size} must be >= 2 (padding and unknown).")
  text = source_info.modality == "text"
  for name, used in (("length_grouping", config.length_grouping > 1),
                     ("word_dropout", config.word_dropout > 0)):
    if used and not text:
      raise ConfigError(f"--{name}={getattr(config, name)} is for text;"
                        f" --source={config.source} is {source_info.modality}.")
  if config.teacher_unseen_as_unk and (not text or config.vocab_from != "both"):
    raise ConfigError(
        "--teacher_unseen_as_unk is for text with --vocab_from=both (with"
        " --vocab_from=source every word the source lacks is <unk> already);"
        f" got --source={config.source} ({source_info.modality}),"
        f" --vocab_from={config.vocab_from}.")
  return source_info, target_info


def _relabel_hint(config: Config) -> str:
  """How to give CoNLL files the other domain's tags, where that would help."""
  # Only CoNLL files not yet relabelled can take the other domain's tags.
  for flag, other in (("source", "target"), ("target", "source")):
    name, other_name = getattr(config, flag), getattr(config, other)
    if (name.startswith(conll.CONLL_PREFIX)
        and conll.RELABEL_SEP not in name
        and other_name in conll.RELABEL_TARGETS):
      return (f" Add a suffix to --{flag} that relabels the CoNLL files' entity"
              f" types into --{other}'s tags: --{flag}={name}"
              f"{conll.RELABEL_SEP}{other_name} (see docs/text_data.md).")
  return ""
