"""What every part of `xdomain.data` shares: a domain's description, its
splits, and where prepared data lives."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

SPLITS = ("train", "test")
DATA_DIR_ENV = "XDOMAIN_DATA_DIR"


@dataclasses.dataclass(frozen=True)
class DomainInfo:
  """Static description of a domain (image or text), available without
  preparing its data.

  Attributes:
    name: registry name, e.g. ``'digits/mnist'``, ``'brown/news'``, or a
      ``conll:`` name.
    modality: ``'image'`` or ``'text'``.
    task: ``'classification'`` (one ``label`` per example), ``'tagging'``
      (``tags`` per token) or ``'detection'`` (``boxes`` and ``classes``).
    label_names: class or tag names in id order; two domains can be paired
      only if these are equal.
    split_sizes: examples per split, e.g. ``{'train': 4000, 'test': 1000}``.
    image_shape: native ``(H, W, C)`` of the stored images, None for text.
    description: one line on where the data comes from.
  """
  name: str
  modality: str
  task: str
  label_names: tuple[str, ...]
  split_sizes: Mapping[str, int]
  image_shape: tuple[int, ...] | None = None
  description: str = ""

  @property
  def num_classes(self) -> int:
    return len(self.label_names)

  @property
  def label_keys(self) -> tuple[str, ...]:
    """The example keys that carry supervision (the loader drops them from the
    target part of training batches)."""
    return {"classification": ("label",), "tagging": ("tags",),
            "detection": ("boxes", "classes")}[self.task]


def check_split(split: str) -> None:
  """Raises ValueError unless ``split`` is one of ``SPLITS``."""
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
  """``data_dir``, else ``$XDOMAIN_DATA_DIR``, else ``~/tensorflow_datasets``."""
  if data_dir is None:
    data_dir = os.environ.get(DATA_DIR_ENV) or os.path.join("~", "tensorflow_datasets")
  return os.path.expanduser(os.fspath(data_dir))
