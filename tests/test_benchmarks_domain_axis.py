"""benchmarks/domain_axis.py: how much of the domains' word frequency ratio a
run's word vectors hold, and what removing the domain direction leaves."""

import numpy as np

from benchmarks import domain_axis
from tests import flagfiles
from tests.test_text_engine_flags import TINY
from xdomain.train import train_and_evaluate


def test_heldout_r2_is_one_for_a_linear_target_and_near_zero_for_noise():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(400, 3))
  assert domain_axis.heldout_r2(features, features @ [1.0, -2.0, 0.5] + 3.0) > 0.999
  assert abs(domain_axis.heldout_r2(features, rng.normal(size=400))) < 0.05


def test_a_planted_domain_axis_is_found_along_the_first_component_and_removed():
  rng = np.random.default_rng(0)
  vocab, dim = 2000, 8
  source_counts = rng.integers(1, 50, vocab).astype(float)
  target_counts = rng.integers(1, 50, vocab).astype(float)
  ratio = np.log(target_counts / target_counts.sum()) - np.log(source_counts / source_counts.sum())
  embedding = rng.normal(size=(vocab, dim)) * 0.3
  embedding[:, 0] += 3.0 * ratio  # the domain axis
  row = domain_axis.axis(embedding, source_counts, target_counts, min_tokens=5)
  assert row["words"] == np.sum(source_counts[2:] + target_counts[2:] >= 5)
  assert row["r2"] > 0.9 and abs(row["r2_random"]) < 0.05
  assert row["pc1_share"] > 0.8 and row["cos_pc1"] > 0.99
  assert row["r2_removed"] < 0.1


def test_a_text_run_gets_a_row(data_dir, tmp_path):
  config = flagfiles.config_from_flagfile("experiments/sentiment/source_only.flags", **TINY,
                                          data_dir=data_dir, vocab_from="both")
  train_and_evaluate(config, str(tmp_path), devices=flagfiles.smoke_devices())
  row = domain_axis.run_axis(str(tmp_path), min_tokens=1)
  assert row["words"] > 100
  assert set(row) == {"words", "r2", "r2_random", "pc1_share", "pc2_share", "cos_pc1",
                      "r2_removed"}
  assert all(np.isfinite(v) for v in row.values())
