"""Metrics out of a run: `metrics.jsonl`, TensorBoard events, the console.

Only process 0 writes; the other processes get a writer that does nothing.
`metrics.jsonl` is only appended to, one whole line per event; the one rewrite,
on resume, replaces it atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from absl import logging

from xdomain import workdir as workdir_lib

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
  """Appends one JSON object per event to `metrics.jsonl` and mirrors scalars
  to TensorBoard (tensorboardX: no tensorflow needed).

  `resume_step`: the checkpoint's step; the events logged after it are dropped
  (-1 drops all: a fresh start after attempts that saved no checkpoint).
  """

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
  """On resume, forgets events logged after the checkpoint being resumed (and a
  line torn by a kill), so the file reads like one unbroken run. The file is
  replaced atomically: a kill during the rewrite leaves the old one whole."""
  if not os.path.exists(path):
    return
  events, torn = _read_events(path)
  kept = [event for event in events if event["step"] <= step]
  if len(kept) == len(events) and not torn:
    return
  if len(kept) != len(events):
    logging.info("Dropping %d events after %s from %s.", len(events) - len(kept),
                 f"step {step}" if step >= 0 else "the start", path)
  workdir_lib.write_atomic(path, "".join(json.dumps(event) + "\n" for event in kept))


def _read_events(path: str) -> tuple[list[dict], bool]:
  """The events of a `metrics.jsonl` and whether its last line was torn.

  Writes only append whole lines, so a kill can cut the last line short (no
  newline, JSON cut off): it is ignored with a warning. Any other line that is
  not a JSON event is damage that no kill makes.

  Raises:
    WorkdirError: a line before the last is not a JSON event.
  """
  with open(path) as f:
    lines = f.read().split("\n")
  # After a final newline, split() leaves "": the last line is whole.
  last, lines = lines[-1], lines[:-1]
  events = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    event = _parse(line)
    if event is None:
      raise workdir_lib.WorkdirError(
          f"line {number} of {path} is not a JSON event: {line[:80]!r}; fix or delete"
          " that line.")
    events.append(event)
  if not last.strip():
    return events, False
  event = _parse(last)
  if event is None:
    logging.warning("Ignoring the torn last line of %s (a run was killed while writing"
                    " it): %r.", path, last[:80])
    return events, True
  events.append(event)  # whole, only its newline is missing
  return events, True


def _parse(line: str) -> dict | None:
  try:
    event = json.loads(line)
  except ValueError:
    return None
  return event if isinstance(event, dict) and "step" in event else None


def read_metrics(workdir: str) -> list[dict]:
  """The events of a run's `metrics.jsonl`, in order (a torn last line, left by
  a kill, is ignored with a warning)."""
  return _read_events(os.path.join(workdir, METRICS_FILE))[0]
