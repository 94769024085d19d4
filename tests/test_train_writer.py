"""metrics.jsonl: appended to, rewritten only atomically on resume, and readable
after a kill tore its last line."""

import json
import logging
import os

import pytest

from xdomain import workdir as workdir_lib
from xdomain.train import writer as writer_lib
from xdomain.train.writer import MetricWriter
from xdomain.train.writer import read_metrics

TORN = '{"step": 40, "total": 0.5, "source_test_accu'


def write_lines(tmp_path, lines, *, end="\n"):
  path = tmp_path / writer_lib.METRICS_FILE
  path.write_text("\n".join(lines) + end)
  return path


def events(*steps):
  return [json.dumps({"step": step, "total": step / 100}) for step in steps]


def test_writes_append_one_line_per_event(tmp_path):
  writer = MetricWriter(str(tmp_path), enabled=True)
  writer.write(1, {"total": 0.5})
  writer.write(2, {"total": 0.25, "per_class": [0.5, 1]})
  writer.close()
  writer = MetricWriter(str(tmp_path), enabled=True, resume_step=2)
  writer.write(3, {"total": 0.125})
  writer.close()
  assert read_metrics(str(tmp_path)) == [
      {"step": 1, "total": 0.5}, {"step": 2, "total": 0.25, "per_class": [0.5, 1.0]},
      {"step": 3, "total": 0.125}]


def test_resume_drops_events_after_the_checkpoint_by_replacing_the_file(tmp_path):
  path = write_lines(tmp_path, events(10, 20, 30, 40))
  before = os.stat(path).st_ino
  MetricWriter(str(tmp_path), enabled=True, resume_step=20).close()
  assert [e["step"] for e in read_metrics(str(tmp_path))] == [10, 20]
  assert os.stat(path).st_ino != before  # a new file renamed over the old one
  assert sorted(os.listdir(tmp_path)) == [writer_lib.METRICS_FILE, "tensorboard"]


def test_resume_with_nothing_to_drop_leaves_the_file_alone(tmp_path):
  path = write_lines(tmp_path, events(10, 20))
  before = os.stat(path).st_ino
  MetricWriter(str(tmp_path), enabled=True, resume_step=20).close()
  assert os.stat(path).st_ino == before


def test_a_kill_during_the_rewrite_leaves_the_old_file_whole(tmp_path, monkeypatch):
  path = write_lines(tmp_path, events(10, 20, 30))
  original = path.read_text()

  def killed(*args):
    raise KeyboardInterrupt  # the moment before the rename

  monkeypatch.setattr(os, "replace", killed)
  with pytest.raises(KeyboardInterrupt):
    MetricWriter(str(tmp_path), enabled=True, resume_step=10)
  assert path.read_text() == original
  assert os.listdir(tmp_path) == [writer_lib.METRICS_FILE]  # no temporary file left


def test_torn_last_line_is_ignored_with_a_warning_and_dropped_on_resume(tmp_path, caplog):
  path = write_lines(tmp_path, events(10, 20, 30) + [TORN], end="")
  with caplog.at_level(logging.WARNING):
    assert [e["step"] for e in read_metrics(str(tmp_path))] == [10, 20, 30]
  assert "torn last line" in caplog.text
  writer = MetricWriter(str(tmp_path), enabled=True, resume_step=30)
  writer.write(40, {"total": 0.1})
  writer.close()
  assert path.read_text().splitlines() == events(10, 20, 30) + [
      json.dumps({"step": 40, "total": 0.1})]


def test_last_line_missing_only_its_newline_is_kept(tmp_path):
  path = write_lines(tmp_path, events(10, 20), end="")
  MetricWriter(str(tmp_path), enabled=True, resume_step=20).close()
  assert path.read_text() == "\n".join(events(10, 20)) + "\n"


def test_a_bad_line_before_the_last_is_one_clear_error(tmp_path):
  write_lines(tmp_path, events(10) + ["garbage"] + events(20))
  with pytest.raises(workdir_lib.WorkdirError,
                     match=r"line 2 of .*metrics.jsonl is not a JSON event: 'garbage'"):
    read_metrics(str(tmp_path))


def test_disabled_writer_touches_nothing(tmp_path):
  path = write_lines(tmp_path, events(10, 20) + [TORN], end="")
  original = path.read_text()
  writer = MetricWriter(str(tmp_path), enabled=False, resume_step=10)
  writer.write(11, {"total": 1.0})
  writer.close()
  assert path.read_text() == original
