"""The cross-domain training loader and the evaluation batches.

Sharding: every process builds the same global order from the same seeds and
takes rows ``[p * b, (p + 1) * b)`` of each global batch, ``b = batch_size //
process_count``, so the batches of all processes, stacked in process order,
are exactly the single-process batch, whatever the number of processes.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import grain
import numpy as np

from xdomain.data import domains
from xdomain.data import text
from xdomain.data import subsets


class Preprocessor(Protocol):
  """What the loader needs from a preprocessing config (see preprocess.py).

  Make it a frozen dataclass: its ``repr`` is part of the loader state, to
  refuse restoring a stream made with other settings.
  """

  def prepare(self, data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

  def sample_augmentation(self, rng: np.random.Generator, n: int) -> Any: ...

  def apply_augmentation(self, batch: Mapping[str, np.ndarray], params: Any) -> dict[str, np.ndarray]: ...


def _process_rows(batch_size: int, process_index: int | None, process_count: int | None
                  ) -> tuple[int, int]:
  """This process's rows ``[lo, hi)`` of every global batch of ``batch_size``."""
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(
        f"need 0 <= process_index < process_count, got process_index={process_index}, "
        f"process_count={process_count}")
  if batch_size % process_count:
    raise ValueError(
        f"batch_size={batch_size} (global) must be divisible by process_count={process_count}")
  b = batch_size // process_count
  return process_index * b, (process_index + 1) * b


def _shuffled_rows(n: int, seed: int, start: int, stop: int) -> np.ndarray:
  """Positions ``[start, stop)`` of an endless stream of rows ``0..n-1``,
  reshuffled every epoch: the stream of
  ``grain.MapDataset.range(n).shuffle(seed=seed).repeat()``.

  Calls grain's index permutation directly: through the dataset layers each row
  cost 2-5x as much (measured), most of an image batch's cost (tests pin the order to
  grain's, the order every table was made with).
  """
  # As grain does: epoch e is permuted with seed + e, so epoch e of one domain
  # never equals epoch e' of the other (seeds far apart).
  permute = grain.experimental.index_shuffle
  pieces = []
  while start < stop:
    epoch, first = divmod(start, n)
    last = min(n, first + stop - start)
    epoch_seed = (seed + epoch) % 2**32
    pieces.append(np.fromiter((permute(i, n - 1, epoch_seed, 4) for i in range(first, last)),
                              np.int64, last - first))
    start += last - first
  return np.concatenate(pieces)


def _index_stream(n: int, seed: int, batch_size: int) -> Callable[[int], np.ndarray]:
  """Global batch ``step`` of row indices, reshuffled every epoch."""
  return lambda step: _shuffled_rows(n, seed, step * batch_size, (step + 1) * batch_size)


def _length_grouped_stream(lengths: np.ndarray, seed: int, batch_size: int, window: int,
                           order_seed: int) -> Callable[[int], np.ndarray]:
  """Like `_index_stream`, but each run of `window` consecutive batches is re-cut
  into batches of similar lengths, so that they pad to shorter buckets.

  The rows of a window are sorted by length and cut into `window` batches,
  which then come in an order drawn from `order_seed` and the window's index:
  the same order for both domains (one `order_seed`), so that at each step the
  source and the target batch are of about the same length rank and their
  common bucket stays short.
  """
  rows_per_window = batch_size * window

  @functools.lru_cache(maxsize=2)  # batches are read in order: one window at a time
  def window_batches(index: int) -> np.ndarray:
    rows = _shuffled_rows(len(lengths), seed, index * rows_per_window,
                          (index + 1) * rows_per_window)
    by_length = rows[np.argsort(lengths[rows], kind="stable")].reshape(window, batch_size)
    return by_length[np.random.default_rng([order_seed, index]).permutation(window)]

  def batch(step: int) -> np.ndarray:
    index, position = divmod(step, window)
    return window_batches(index)[position]

  return batch


class CrossDomainLoader:
  """Infinite stream of ``{'source': {...}, 'target': {...}}`` training batches.

  Each batch holds ``batch_size // process_count`` rows of each domain (the
  source part with labels, the target part without: the label keys of the
  target domain are dropped when the loader is built, so they cannot reach a
  training batch). Each domain is shuffled with its own seed derived from
  ``seed`` and reshuffled every epoch; the smaller domain simply cycles faster.
  Augmentation parameters are drawn per global batch from a generator seeded by
  ``seed`` and the step, so the stream is a pure function of the arguments.

  Image domains give ``{'source': {'image': f32[b, H, W, C], 'label': i32[b]},
  'target': {'image': f32[b, H, W, C]}}``.

  ``get_state()`` returns a JSON-serialisable dict; ``set_state()`` on a loader
  with the same domains, splits, seed, batch size and preprocessing resumes the
  exact stream (the process count may differ: the stream is global).
  """

  def __init__(self, source: str | None, target: str, *, batch_size: int,
               preprocess: Preprocessor,
               seed: int, data_dir: str | os.PathLike | None = None,
               process_index: int | None = None, process_count: int | None = None,
               source_split: str = "train", target_split: str = "train",
               source_fraction: float = 1.0, source_holdout: float = 0.0,
               buckets: Sequence[int] | None = None,
               length_grouping: int = 0, target_index: bool = False,
               general: Sequence[str] = ()):
    """Loads both domains, preprocesses them once and builds the grain pipeline.

    Args:
      source: labelled domain name (see ``list_domains()``), or None for a
        source-free stream: batches hold only the ``'target'`` part and the
        source domain is never opened.
      target: unlabelled domain name.
      batch_size: GLOBAL batch size per domain.
      preprocess: e.g. ``ImagePreprocess``; applied to both domains.
      seed: int in [0, 2**32), the only source of randomness.
      data_dir: tfds data dir (default ``$XDOMAIN_DATA_DIR`` or
        ``~/tensorflow_datasets``).
      process_index: this process; default ``jax.process_index()``.
      process_count: number of processes; default ``jax.process_count()``.
      source_split: split of the source domain.
      target_split: split of the target domain.
      source_holdout: hold out this fraction of the source rows (it never
        trains; the validators read it; see ``subsets.labelled_rows``).
      source_fraction: train on a stratified random fraction (in (0, 1]) of
        the source split, drawn with ``seed`` (see ``subsets.stratified_subset``),
        less its ``source_holdout``; with ``source == target`` this is the
        few-target-labels setting.
      buckets: sequence data (prepared rows with ``lengths``, e.g. by
        ``TextPreprocess``): increasing lengths; the sequence arrays of BOTH
        parts of every batch are cut to the smallest bucket that holds the
        longest sequence of the GLOBAL batch (both parts), so every process
        and both parts agree on one shape and jit sees few shapes.
      length_grouping: with `buckets`, > 1 re-cuts each run of this many
        batches of the shuffled stream into batches of similar lengths (see
        `_length_grouped_stream`), so that fewer of them pad to the longest
        bucket; 0 (or 1) keeps the batches as drawn.
      target_index: the target part also holds ``'index'``, int32 [b], each
        row's position in the target split (e.g. to look up per-row labels
        that a method computed over the whole split).
      general: text domains whose training splits, pooled and without labels
        or tags, give every batch a third part, ``'general'``, of
        ``batch_size`` rows (general text for pretraining, e.g. the Brown
        corpus's genres); bucketed with the other two.
    """
    target_info = domains.domain_info(target)
    source_info = None if source is None else domains.domain_info(source)
    domains.check_split(source_split)
    domains.check_split(target_split)
    if source_info is not None and source_info.label_names != target_info.label_names:
      raise ValueError(
          f"source {source!r} and target {target!r} have different label sets: "
          f"{source_info.label_names} vs {target_info.label_names}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
      raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    if length_grouping < 0 or (length_grouping > 1 and buckets is None):
      raise ValueError(f"length_grouping={length_grouping} needs sequence data with"
                       " buckets and must be >= 0")
    self._lo, self._hi = _process_rows(batch_size, process_index, process_count)
    self._batch_size = batch_size
    self._preprocess = preprocess
    self.source_info, self.target_info = source_info, target_info
    self._config = {
        "source": source, "target": target, "source_split": source_split,
        "target_split": target_split, "seed": int(seed), "batch_size": batch_size,
        "preprocess": repr(preprocess), "source_fraction": float(source_fraction),
    }
    if length_grouping > 1:  # absent otherwise: older checkpoints still resume
      self._config["length_grouping"] = int(length_grouping)
    if source_holdout:  # likewise
      self._config["source_holdout"] = float(source_holdout)
      if source_fraction != 1.0:  # held out of the subset, not (as before) of the split
        self._config["holdout_of_subset"] = True
    if target_index:  # likewise
      self._config["target_index"] = True
    if general:  # likewise
      self._config["general"] = list(general)
    self._buckets = None if buckets is None else tuple(int(b) for b in buckets)

    self._source = None
    if source is not None:
      source_data = domains.load_domain(source, source_split, data_dir=data_dir)
      rows, _ = subsets.labelled_rows(source_data, fraction=source_fraction,
                                      holdout=source_holdout, seed=int(seed))
      source_data = {k: v[rows] for k, v in source_data.items()}
      self._source = preprocess.prepare(source_data)
    target_data = domains.load_domain(target, target_split, data_dir=data_dir)
    self._target = preprocess.prepare(
        {k: v for k, v in target_data.items() if k not in target_info.label_keys})
    if target_index:
      self._target["index"] = np.arange(_num_rows(self._target), dtype=np.int32)

    self._general = None
    if general:  # sentences ('text') or tagged tokens ('tokens'), encoded to one width
      prepared = [preprocess.prepare({k: v for k, v in domains.load_domain(
          name, "train", data_dir=data_dir).items() if k in ("text", "tokens")})
                  for name in general]
      self._general = {k: np.concatenate([part[k] for part in prepared])
                       for k in prepared[0]}

    # The fifth seed extends the sequence: the first four, and so the streams
    # of runs without general text, are unchanged.
    source_seed, target_seed, augment_seed, order_seed, general_seed = (
        int(s) for s in np.random.SeedSequence(int(seed)).generate_state(5))
    def order(part, part_seed):
      if part is None:
        return None
      if length_grouping > 1:
        return _length_grouped_stream(part["lengths"], part_seed, batch_size, length_grouping,
                                      order_seed)
      return _index_stream(_num_rows(part), part_seed, batch_size)

    self._source_order = order(self._source, source_seed)
    self._target_order = order(self._target, target_seed)
    self._general_order = order(self._general, general_seed)
    steps = grain.MapDataset.range(sys.maxsize).random_map(self._make_batch, seed=augment_seed)
    # One reader thread overlaps batch assembly with the training step; the
    # arrays are in memory, so more threads would only contend for the GIL.
    self._iterator = iter(steps.to_iter_dataset(
        grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)))

  @property
  def local_batch_size(self) -> int:
    """Rows of each domain in this process's batches."""
    return self._hi - self._lo

  def _make_batch(self, step: int, rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """Batch ``step``: this process's rows of every part, augmented."""
    batch = {}
    parts = [("source", self._source, self._source_order),
             ("target", self._target, self._target_order),
             ("general", self._general, self._general_order)]
    parts = [(part, data, order) for part, data, order in parts if data is not None]
    longest = 0
    for part, data, order in parts:
      global_rows = order(step)
      if self._buckets is not None:
        longest = max(longest, int(np.max(data["lengths"][global_rows])))
      rows = global_rows[self._lo:self._hi]
      # Drawn for the whole global batch so that every process agrees.
      params = self._preprocess.sample_augmentation(rng, self._batch_size)
      local = {k: v[rows] for k, v in data.items()}
      if params is not None:
        local = self._preprocess.apply_augmentation(local, params[self._lo:self._hi])
      batch[part] = local
    if self._buckets is not None:
      length = text.bucket_length(np.array([longest]), self._buckets)
      batch = {part: text.pad_to_bucket(local, length=length) for part, local in batch.items()}
    return batch

  def __iter__(self) -> CrossDomainLoader:
    return self

  def __next__(self) -> dict[str, dict[str, np.ndarray]]:
    return next(self._iterator)

  def get_state(self) -> dict[str, Any]:
    """The position in the stream plus the configuration it belongs to (JSON)."""
    return {"iterator": json.loads(json.dumps(self._iterator.get_state())),
            "config": dict(self._config)}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Resumes from ``get_state()`` of a loader with the same configuration."""
    if not isinstance(state, Mapping) or set(state) != {"iterator", "config"}:
      raise ValueError(
          f"state must be a dict from CrossDomainLoader.get_state() with keys "
          f"'iterator' and 'config', got {state!r:.200}")
    theirs = state["config"]
    diff = {k: (theirs.get(k), self._config.get(k)) for k in {**theirs, **self._config}
            if theirs.get(k) != self._config.get(k)}
    if diff:
      raise ValueError(
          "loader state comes from a loader with a different configuration "
          f"(field: (saved, this loader)): {diff}")
    self._iterator.set_state(dict(state["iterator"]))


def _num_rows(data: Mapping[str, np.ndarray]) -> int:
  sizes = {k: len(v) for k, v in data.items()}
  if len(set(sizes.values())) != 1:
    raise ValueError(f"arrays of one domain must have the same leading size, got {sizes}")
  return next(iter(sizes.values()))


def num_eval_batches(name: str, split: str, *, batch_size: int) -> int:
  """Number of (global) evaluation batches of a split, the same on every process."""
  domains.check_split(split)
  _process_rows(batch_size, 0, 1)
  return math.ceil(domains.domain_info(name).split_sizes[split] / batch_size)


def eval_batches(name: str, split: str, *, batch_size: int, preprocess: Preprocessor,
                 data_dir: str | os.PathLike | None = None, process_index: int | None = None,
                 process_count: int | None = None, buckets: Sequence[int] | None = None,
                 rows: np.ndarray | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-shape batches covering every example of a split exactly once.

  The split is read in its fixed order; global batch ``k`` holds examples
  ``[k * batch_size, (k + 1) * batch_size)`` and this process gets rows
  ``[p * b, (p + 1) * b)`` of it. Rows past the end are zeros with ``mask``
  False. No augmentation. Every process yields ``num_eval_batches(...)``
  batches.

  Args:
    name: domain name.
    split: ``'train'`` or ``'test'``.
    batch_size: GLOBAL batch size.
    preprocess: as for the loader (no augmentation is applied).
    data_dir: tfds data dir.
    process_index: default ``jax.process_index()``.
    process_count: default ``jax.process_count()``.
    buckets: sequence data only: cut each batch's sequence arrays to the
      smallest of these lengths that holds the longest sequence of the global
      batch (the same on every process), as the training loader does.
    rows: only these rows of the split, in this order (default: all).

  Returns:
    Iterator of ``{'image': f32[b, H, W, C], 'label': i32[b], 'mask': bool[b]}``
    (for image domains; text domains give the arrays of their preprocessor,
    e.g. ``tokens``, ``lengths``, ``label`` or ``tags``, plus ``mask``).
  """
  domains.domain_info(name)
  domains.check_split(split)
  lo, hi = _process_rows(batch_size, process_index, process_count)
  data = domains.load_domain(name, split, data_dir=data_dir)
  if rows is not None:
    data = {key: value[rows] for key, value in data.items()}
  return _eval_iterator(preprocess.prepare(data), batch_size, lo, hi, buckets)


def _eval_iterator(data: dict[str, np.ndarray], batch_size: int, lo: int, hi: int,
                   buckets: Sequence[int] | None = None) -> Iterator[dict[str, np.ndarray]]:
  n = _num_rows(data)
  for start in range(0, n, batch_size):
    rows = np.arange(start + lo, start + hi)
    mask = rows < n
    batch = {}
    for key, value in data.items():
      part = value[np.where(mask, rows, 0)]
      part[~mask] = 0
      batch[key] = part
    if buckets is not None:
      length = text.bucket_length(data["lengths"][start:start + batch_size], buckets)
      batch = text.pad_to_bucket(batch, length=length)
    batch["mask"] = mask
    yield batch
