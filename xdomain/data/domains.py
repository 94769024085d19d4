"""Registry of the shipped domains and reading them as numpy arrays.

A domain is a tfds builder (and config) plus static facts about it
(``DomainInfo``). Adding one takes a ``DomainSpec`` entry in ``DOMAINS``; the
loader is generic over the dicts of numpy arrays that ``load_domain`` returns.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow_datasets as tfds

from xdomain.data import builders
from xdomain.data import text_builders

SPLITS = ("train", "test")
DATA_DIR_ENV = "XDOMAIN_DATA_DIR"
DIGIT_NAMES = tuple(str(d) for d in range(10))


@dataclasses.dataclass(frozen=True)
class DomainInfo:
  """Static description of a domain, available without preparing its data.

  Attributes:
    name: registry name, e.g. ``'digits/mnist'``.
    modality: ``'image'`` (text domains, described by
      ``text_builders.TextDomainInfo`` with the same attributes, use ``'text'``).
    num_classes: number of classes of ``label``.
    label_names: class names in label order; two domains can be paired only if
      these are equal.
    image_shape: native ``(H, W, C)`` of the stored images, None for text.
    split_sizes: examples per split, e.g. ``{'train': 4000, 'test': 1000}``.
    label_keys: keys of the example dict that carry supervision; the loader
      removes them from the target part of training batches.
    task: ``'classification'`` (text domains may be ``'tagging'``).
  """
  name: str
  modality: str
  num_classes: int
  label_names: tuple[str, ...]
  image_shape: tuple[int, ...] | None
  split_sizes: Mapping[str, int]
  label_keys: tuple[str, ...] = ("label",)
  task: str = "classification"


@dataclasses.dataclass(frozen=True)
class DomainSpec:
  """A registry entry: what the domain is and how to build it.

  Attributes:
    info: static facts.
    make_builder: ``data_dir -> tfds builder`` writing ``array_record``.
  """
  info: DomainInfo
  make_builder: Callable[[str], tfds.core.DatasetBuilder]


def _digits(config: str, image_shape: tuple[int, int, int], train: int, test: int) -> DomainSpec:
  return DomainSpec(
      info=DomainInfo(
          name=f"digits/{config}", modality="image", num_classes=10, label_names=DIGIT_NAMES,
          image_shape=image_shape, split_sizes={"train": train, "test": test}),
      make_builder=lambda data_dir: builders.Digits(
          config=config, data_dir=data_dir, file_format="array_record"),
  )


DOMAINS: dict[str, DomainSpec] = {
    "digits/mnist": _digits("mnist", (28, 28, 1), 4000, 1000),
    "digits/uci": _digits("uci", (8, 8, 1), 1438, 359),
    "digits/mnist_m": _digits("mnist_m", (28, 28, 3), 4000, 1000),
}


def list_domains() -> list[str]:
  """Names of every registered domain (image and text), sorted.

  ``conll:<path>`` names (a user's CoNLL files) are accepted everywhere a
  domain is, without being listed.
  """
  return sorted([*DOMAINS, *text_builders.TEXT_DOMAINS])


def is_text_domain(name: str) -> bool:
  """True for the shipped text domains and ``conll:<path>`` names."""
  return (name in text_builders.TEXT_DOMAINS
          or name.startswith(text_builders.CONLL_PREFIX))


def _spec(name: str) -> DomainSpec:
  if name not in DOMAINS:
    raise ValueError(
        f"Unknown domain {name!r}; known domains: {', '.join(list_domains())}, or"
        f" {text_builders.CONLL_PREFIX}/path/to/train.txt for CoNLL files")
  return DOMAINS[name]


def domain_info(name: str) -> DomainInfo | text_builders.TextDomainInfo:
  """Static facts about domain ``name`` (no data is prepared).

  Text domains give a ``text_builders.TextDomainInfo`` (``modality='text'``,
  ``task`` 'classification' or 'tagging'); for ``conll:`` names the files are
  read to find the tag set.
  """
  if is_text_domain(name):
    return text_builders.text_domain_info(name)
  return _spec(name).info


def _object_array(values) -> np.ndarray:
  if isinstance(values, np.ndarray):
    return values
  array = np.empty(len(values), dtype=object)
  array[:] = list(values)
  return array


def check_split(split: str) -> None:
  """Raises ValueError unless ``split`` is one of ``SPLITS``."""
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
  """``data_dir``, else ``$XDOMAIN_DATA_DIR``, else ``~/tensorflow_datasets``."""
  if data_dir is None:
    data_dir = os.environ.get(DATA_DIR_ENV) or os.path.join("~", "tensorflow_datasets")
  return os.path.expanduser(os.fspath(data_dir))


def load_domain(name: str, split: str, *, data_dir: str | os.PathLike | None = None
                ) -> dict[str, np.ndarray]:
  """Reads one split of a domain into memory, preparing it on first use.

  Args:
    name: a registered domain (see ``list_domains()``).
    split: ``'train'`` or ``'test'``.
    data_dir: tfds data dir; default ``$XDOMAIN_DATA_DIR`` or
      ``~/tensorflow_datasets``.

  Returns:
    For image domains ``{'image': uint8[n, H, W, C], 'label': int32[n]}`` in
    the split's fixed order; for text domains what
    ``text_builders.load_text_domain`` returns (``{'text': n str, 'label':
    int32[n]}`` or ``{'tokens': n token lists, 'tags': n int32 arrays}``).
  """
  check_split(split)
  data_dir = resolve_data_dir(data_dir)
  if is_text_domain(name):
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, ".xdomain.lock"), "w") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)  # one process prepares, as below
      rows = text_builders.load_text_domain(name, split, data_dir=data_dir)
    # numpy arrays (object arrays of str / token lists), so rows can be picked
    # with an index array as for images.
    return {key: _object_array(value) for key, value in rows.items()}
  spec = _spec(name)
  builder = spec.make_builder(data_dir)
  if not builder.is_prepared():
    # Processes sharing a data dir (several hosts' processes on one machine)
    # prepare one after the other; the later ones find the data ready.
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, ".xdomain.lock"), "w") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      builder = spec.make_builder(data_dir)
      builder.download_and_prepare()
  source = builder.as_data_source(split)
  examples = source.__getitems__(list(range(len(source))))
  out = {key: np.stack([np.asarray(ex[key]) for ex in examples]) for key in examples[0]}
  for key in spec.info.label_keys:
    out[key] = out[key].astype(np.int32)
  return out
