"""Metrics out of a run: `metrics.jsonl`, TensorBoard events, the console.

Only process 0 writes; the other processes get a writer that does nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from absl import logging

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
  """Appends one JSON object per event to `metrics.jsonl` and mirrors scalars
  to TensorBoard (tensorboardX: no tensorflow needed)."""

  def __init__(self, workdir: str, *, enabled: bool, resume_step: int = 0):
    self.enabled = enabled
    self._path = os.path.join(workdir, METRICS_FILE)
    self._tensorboard = None
    if not enabled:
      return
    _drop_events_after(self._path, resume_step)
    from tensorboardX import SummaryWriter  # heavy import, process 0 only
    self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), **{k: _plain(v) for k, v in values.items()}}
    with open(self._path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for name, value in record.items():
      if name != "step" and isinstance(value, (int, float)):
        self._tensorboard.add_scalar(name, value, step)

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


def _plain(value):
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, (str, bool, int)) or value is None:
    return value
  return float(value)


def _drop_events_after(path: str, step: int) -> None:
  """On resume, forgets events logged after the checkpoint being resumed, so the
  file reads like one unbroken run."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  kept = [line for line in lines if json.loads(line)["step"] <= step]
  if len(kept) != len(lines):
    logging.info("Dropping %d events after step %d from %s.",
                 len(lines) - len(kept), step, path)
    with open(path, "w") as f:
      f.writelines(kept)


def read_metrics(workdir: str) -> list[dict]:
  """The events of a run's `metrics.jsonl`, in order."""
  with open(os.path.join(workdir, METRICS_FILE)) as f:
    return [json.loads(line) for line in f if line.strip()]
