"""A user's CoNLL-format files as a domain: `conll:<path>[@<domain>[=<mapping>]]`.

`conll:/dir` reads `/dir/train.txt` and `/dir/test.txt` (one token per line,
its tag last, a blank line after each sentence); the `@ner/wnut16` suffix gives
the files exactly that domain's tags, mapping their entity types (see
docs/text_data.md).
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from xdomain.data import registry
from xdomain.data import text_corpora
from xdomain.data.info import SPLITS
from xdomain.data.info import DomainInfo

CONLL_PREFIX = "conll:"
# 'conll:<path>@<domain>[=A:a,B:b]' gives CoNLL files another domain's tags.
RELABEL_SEP = "@"


def conll_paths(name: str) -> tuple[pathlib.Path, pathlib.Path]:
  """Resolves a 'conll:' domain name to its (train file, test file).

  Accepted forms:
    conll:/dir                      -> /dir/train.txt, /dir/test.txt
    conll:/dir/train.txt            -> that file, test from /dir/test.txt
    conll:/dir/a.txt,/dir/b.txt     -> train a.txt, test b.txt
  An '@<domain>...' relabelling suffix is ignored here.
  """
  if not name.startswith(CONLL_PREFIX):
    raise ValueError(f"name={name!r} must start with {CONLL_PREFIX!r}")
  spec = _split_conll_name(name)[0][len(CONLL_PREFIX):]
  if "," in spec:
    train, test = (pathlib.Path(p).expanduser() for p in spec.split(",", 1))
  else:
    path = pathlib.Path(spec).expanduser()
    if path.is_dir():
      train, test = path / "train.txt", path / "test.txt"
    else:
      train, test = path, path.parent / "test.txt"
  for role, path in (("train", train), ("test", test)):
    if not path.is_file():
      raise ValueError(
          f"{name}: the {role} file {path} does not exist; name the files as "
          "conll:/dir (train.txt and test.txt inside), conll:/dir/train.txt "
          "(test.txt beside it) or conll:/path/train,/path/test")
  return train, test


# Built-in type mappings into each of RELABEL_TARGETS, used when the files'
# types are not already the target's.
_CONLL_MAPPINGS = {"ner/wnut16": text_corpora.CONLL2003_TO_WNUT16}


def _entity_types(tag_names: Sequence[str]) -> tuple[str, ...]:
  """The entity types of a B-/I-/E-/S- tag set in order; () if it is not one."""
  try:
    parts = [text_corpora.split_tag(tag) for tag in tag_names]
  except ValueError:
    return ()
  return tuple(dict.fromkeys(kind for prefix, kind in parts if prefix != "O"))


RELABEL_TARGETS = tuple(
    name for name, spec in registry.DOMAINS.items()
    if spec.info.task == "tagging" and _entity_types(spec.info.label_names))


def _split_conll_name(name: str) -> tuple[str, str | None, str | None]:
  """'conll:<path>[@<domain>[=<mapping>]]' -> ('conll:<path>', domain, mapping)."""
  path, sep, suffix = name.rpartition(RELABEL_SEP)
  if not sep:
    return name, None, None
  target, eq, mapping = suffix.partition("=")
  return path, target, mapping if eq else None


def _relabel_target(name: str, target: str) -> DomainInfo:
  """The info of the domain after '@', which must have B-/I- entity tags."""
  if target not in RELABEL_TARGETS:
    hint = ""
    if target not in registry.DOMAINS or registry.DOMAINS[target].info.modality != "text":
      what = "is not a text domain"
      hint = (f". An {RELABEL_SEP!r} in the path is read as the relabelling suffix:"
              f" name files whose path holds {RELABEL_SEP!r} through a symlink without"
              " it, or rename the folder")
    elif registry.DOMAINS[target].info.task == "tagging":
      what = "has no B-/I- entity tags"
    else:
      what = f"is a {registry.DOMAINS[target].info.task} domain, not a tagging domain"
    raise ValueError(
        f"{name}: {target!r} after {RELABEL_SEP!r} {what}; relabel CoNLL files"
        f" into an entity tagging domain: {', '.join(RELABEL_TARGETS)}{hint}")
  return registry.DOMAINS[target].info


def _parse_mapping(name: str) -> dict[str, str]:
  """The mapping after '=': 'PER:person,LOC:geo-loc' -> {'PER': 'person', ...}."""
  path, target, spec = _split_conll_name(name)
  mapping = {}
  for pair in spec.split(","):
    kind, colon, new = (part.strip() for part in pair.partition(":"))
    if not (colon and kind and new):
      raise ValueError(
          f"{name}: {pair!r} is not a 'FILE_TYPE:TARGET_TYPE' pair; write the"
          f" mapping as {path}{RELABEL_SEP}{target}=PER:person,LOC:geo-loc,...")
    if kind in mapping:
      raise ValueError(f"{name}: the mapping maps {kind!r} twice")
    mapping[kind] = new
  return mapping


def _type_mapping(name: str, target: DomainInfo,
                  mapping: dict[str, str] | None,
                  tag_seqs: Sequence[Sequence[str]]) -> dict[str, str]:
  """The mapping of the files' entity types to `target`'s, checked."""
  target_types = _entity_types(target.label_names)
  parts = {text_corpora.split_tag(tag) for seq in tag_seqs for tag in seq}
  file_types = sorted({kind for prefix, kind in parts if prefix != "O"})
  target_prefixes = {text_corpora.split_tag(t)[0] for t in target.label_names}
  extra = sorted({prefix for prefix, _ in parts} - target_prefixes)
  if extra:
    raise ValueError(
        f"{name}: the files use {'/'.join(p + '-' for p in extra)} tags but"
        f" {target.name} has only"
        f" {'/'.join(p + '-' for p in sorted(target_prefixes - {'O'}))} tags;"
        " convert the files to BIO first (S- -> B-, E- -> I-)")
  if mapping is None:
    if set(file_types) <= set(target_types):
      return {kind: kind for kind in file_types}
    mapping = _CONLL_MAPPINGS[target.name]
  unknown = sorted(set(mapping.values()) - set(target_types))
  if unknown:
    raise ValueError(
        f"{name}: mapped-to types {unknown} are not types of {target.name};"
        f" choose from {', '.join(target_types)}")
  missing = [kind for kind in file_types if kind not in mapping]
  if missing:
    path, _, _ = _split_conll_name(name)
    pairs = [f"{k}:{v}" for k, v in mapping.items()]
    pairs += [f"{kind}:<type>" for kind in missing]
    raise ValueError(
        f"{name}: the files' types {missing} are not mapped; map every type of"
        f" the files, e.g. {path}{RELABEL_SEP}{target.name}={','.join(pairs)}"
        f" with <type> one of {', '.join(target_types)}")
  return mapping


def read_conll_domain(name: str) -> tuple[DomainInfo, dict[str, dict[str, Any]]]:
  """Reads a user's CoNLL files: (info, {split: {'tokens': ..., 'tags': ...}}).

  The files are read once while they are unchanged (`_read_files`): every
  lookup of the domain's info during a run costs nothing.

  IOB1 tags (an entity starting with I-, as in CoNLL-2003's eng.train) are read
  as BIO2 (`text_corpora.iob1_to_bio2`) before any relabelling.

  Names (paths as in `conll_paths`):
    conll:<path>                 tags 'O', then B-/I- (E-/S- if used) per
                                 sorted type found in the files.
    conll:<path>@ner/wnut16      exactly ner/wnut16's tags: the files' types
                                 as they are if all are WNUT-16 types, else
                                 mapped with the built-in CoNLL-2003 mapping
                                 (text_corpora.CONLL2003_TO_WNUT16).
    conll:<path>@ner/wnut16=PER:person,LOC:geo-loc,...
                                 the same with this type mapping, which must
                                 cover every type in the files.
  """
  _, target_name, mapping_spec = _split_conll_name(name)
  if target_name is not None:  # a wrong suffix is named before missing files
    _relabel_target(name, target_name)
  if mapping_spec is not None:
    _parse_mapping(name)
  train_path, test_path = conll_paths(name)
  stats = tuple((path.stat().st_mtime_ns, path.stat().st_size)
                for path in (train_path, test_path))
  return _read_files(name, stats)


@functools.lru_cache(maxsize=16)
def _read_files(name: str, stats: tuple) -> tuple[DomainInfo, dict[str, dict[str, Any]]]:
  """`read_conll_domain` of files whose (mtime, size) are `stats`."""
  del stats  # part of the cache key only
  _, target_name, mapping_spec = _split_conll_name(name)
  target = None if target_name is None else _relabel_target(name, target_name)
  mapping = None if mapping_spec is None else _parse_mapping(name)
  train_path, test_path = conll_paths(name)
  sentences = {
      split: [(tokens, text_corpora.iob1_to_bio2(tags))
              for tokens, tags in text_corpora.parse_conll(path.read_text(encoding="utf-8"))]
      for split, path in (("train", train_path), ("test", test_path))}
  for split, path in (("train", train_path), ("test", test_path)):
    if not sentences[split]:  # else a crash in the loader or the first evaluation
      raise ValueError(
          f"{name}: the {split} file {path} holds no sentence; give a CoNLL file"
          " with one token per line (its tag last) and a blank line after each sentence")
  tag_seqs = [tags for split in SPLITS for _, tags in sentences[split]]
  description = f"CoNLL files {train_path} and {test_path}"
  if target is None:
    names = text_corpora.conll_tag_names(tag_seqs)
  else:
    mapping = _type_mapping(name, target, mapping, tag_seqs)
    names = target.label_names
    sentences = {
        split: [(tokens, text_corpora.relabel_tags(tags, mapping))
                for tokens, tags in examples]
        for split, examples in sentences.items()}
    description += f", types mapped to {target.name}'s ({mapping})"
  index = {tag: i for i, tag in enumerate(names)}
  info = DomainInfo(name=name, modality="text", task="tagging", label_names=names,
                    split_sizes={k: len(v) for k, v in sentences.items()},
                    description=description)
  data = {split: {"tokens": [tokens for tokens, _ in sentences[split]],
                  "tags": [np.asarray([index[t] for t in tags], np.int32)
                           for _, tags in sentences[split]]}
          for split in SPLITS}
  return info, data
