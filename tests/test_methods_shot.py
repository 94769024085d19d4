"""SHOT (xdomain.methods.source_free): its terms, its pseudo-labels of the
whole target split, and the source-free engine path it runs on."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import flagfiles
from xdomain import checkpoint
from xdomain import data
from xdomain import losses
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.data import domains
from xdomain.methods import METHODS
from xdomain.methods import Outputs
from xdomain.train import train_and_evaluate
from xdomain.train.experiment import Experiment
from xdomain.train.experiment import validate_config
from xdomain.train.writer import read_metrics

MODEL = dict(weight_norm_head=True, bottleneck_size=8, dropout_rate=0.5)


def tiny(data_dir, **overrides) -> Config:
  values = dict(flagfiles.SMOKE_OVERRIDES, data_dir=data_dir, **MODEL)
  values.update(overrides)
  return Config(**values)


@pytest.fixture(scope="module")
def source_run(data_dir, tmp_path_factory):
  """The workdir of a (tiny) SHOT source stage: digits/mnist -> digits/uci."""
  workdir = str(tmp_path_factory.mktemp("shot_source"))
  train_and_evaluate(tiny(data_dir, method="source_only", label_smoothing=0.1, steps=4),
                     workdir, devices=flagfiles.smoke_devices())
  return workdir


def shot(data_dir, source_run, **overrides) -> Config:
  values = dict(method="shot", init_from=source_run, restore=".*", freeze="head/.*",
                steps=4, shot_refresh_every=2, optimizer="sgd", learning_rate=0.01)
  values.update(overrides)
  return tiny(data_dir, **values)


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_terms_are_information_maximization_and_pseudo_label_cross_entropy():
  method = METHODS["shot"](Config(method="shot", shot_pseudo_weight=0.3))
  rng = np.random.default_rng(0)
  logits = 2 * rng.normal(size=(12, 4)).astype(np.float32)
  labels = rng.integers(0, 4, 12)
  out = Outputs(source_logits=None, source_features=None, source_labels=None,
                source_mask=None, target_logits=jnp.asarray(logits),
                target_features=jnp.zeros((12, 3)), target_labels=jnp.asarray(labels))
  terms = method.terms(out, {}, jax.random.key(0), 0)
  p = softmax(logits.astype(np.float64))
  mean = p.mean(0)
  im = -np.mean(np.sum(p * np.log(p), 1)) + np.sum(mean * np.log(mean))
  np.testing.assert_allclose(terms["information_maximization"], im, rtol=1e-5)
  np.testing.assert_allclose(terms["pseudo_label"], -np.mean(np.log(p[np.arange(12), labels])),
                             rtol=1e-5)
  assert method.weights["pseudo_label"] == 0.3 and method.task_weight == 0.0
  assert not method.uses_source
  # SHOT-IM: no pseudo-labels, so no pass over the target split either.
  im_only = METHODS["shot"](Config(method="shot", shot_pseudo_weight=0.0))
  assert im_only.target_labels is None
  assert set(im_only.terms(out.replace(target_labels=None), {}, jax.random.key(0), 0)) == {
      "information_maximization"}


def test_default_refresh_is_one_target_epoch():
  method = METHODS["shot"](Config(method="shot", target="digits/uci", batch_size=64))
  rows = domains.domain_info("digits/uci").split_sizes["train"]
  assert method.target_labels.every == -(-rows // 64)


def test_target_labels_are_the_centroid_labels_of_the_model_on_the_whole_split(
    data_dir, source_run, tmp_path):
  experiment = Experiment(shot(data_dir, source_run), str(tmp_path))
  state = experiment.refresh_target_labels(experiment.prepare_state())
  split = experiment.preprocess.prepare(data.load_domain("digits/uci", "train",
                                                         data_dir=data_dir))
  variables = {"params": state.params["model"], "batch_stats": state.batch_stats}
  logits, features = experiment.model.apply(variables, jnp.asarray(split["image"]),
                                            return_features=True)
  expected = losses.centroid_pseudo_labels(features, jax.nn.softmax(logits))
  labels = np.asarray(state.untrained["target_labels"])
  assert labels.shape == (domains.domain_info("digits/uci").split_sizes["train"],)
  # Near-ties in the cosine distance can resolve either way in a different
  # program (8 of 3,823 rows on an AMD EPYC), and one flip moves a centroid:
  # 99% agreement, where the classifier's own argmax agrees far less.
  assert np.mean(labels == np.asarray(expected)) > 0.99
  assert np.mean(labels == np.argmax(logits, -1)) < 0.95


def test_target_stage_never_opens_the_source_data(data_dir, source_run, tmp_path, monkeypatch):
  load = domains.load_domain

  def load_target_only(name, split, **kwargs):
    if name == "digits/mnist":
      raise AssertionError(f"the source-free stage opened {name}/{split}")
    return load(name, split, **kwargs)

  monkeypatch.setattr(domains, "load_domain", load_target_only)
  monkeypatch.setattr(data, "load_domain", load_target_only)
  results = train_and_evaluate(shot(data_dir, source_run), str(tmp_path),
                               devices=flagfiles.smoke_devices())
  assert results["step"] == 4 and 0 <= results["target_test_accuracy"] <= 1
  assert not [name for name in results if name.startswith(("source_", "validator/source"))]
  assert {"validator/snd", "validator/entropy"} <= set(results)
  logged = [e for e in read_metrics(str(tmp_path)) if "total" in e]
  assert {"information_maximization", "pseudo_label"} <= set(logged[0])
  assert "source_train_accuracy" not in logged[0]
  # The hypothesis (classifier) is the source model's; the features moved.
  source = checkpoint.flatten_paths(checkpoint.load_params(source_run))
  adapted = checkpoint.flatten_paths(checkpoint.load_params(str(tmp_path)))
  for path in source:
    same = np.array_equal(source[path], adapted[path])
    assert same == path.startswith("head/"), path


def test_resume_at_a_refresh_ends_where_an_unbroken_run_ends(data_dir, source_run, tmp_path):
  config = shot(data_dir, source_run, steps=6, shot_refresh_every=3, checkpoint_every=3)
  one = flagfiles.smoke_devices()
  train_and_evaluate(config, str(tmp_path / "unbroken"), devices=one)
  train_and_evaluate(dataclasses.replace(config, steps=3), str(tmp_path / "resumed"),
                     devices=one)
  train_and_evaluate(dataclasses.replace(config, allow_config_change=True),
                     str(tmp_path / "resumed"), devices=one)
  unbroken = checkpoint.flatten_paths(checkpoint.load_params(tmp_path / "unbroken"))
  resumed = checkpoint.flatten_paths(checkpoint.load_params(tmp_path / "resumed"))
  for path in unbroken:
    np.testing.assert_array_equal(unbroken[path], resumed[path], err_msg=path)


@pytest.mark.parametrize("overrides, message", [
    (dict(init_from=None), "set --init_from=<workdir of a run of experiments/digits/shot_source"),
    (dict(freeze=None), "must be kept fixed (the source hypothesis); --freeze=''"),
    (dict(restore="backbone/.*"), "must be restored from the source model"),
    (dict(source="digits/uci", target="digits/mnist"), "set --source=digits/mnist"),
    (dict(source_val_fraction=0.1), "--method=shot reads no source data"),
    (dict(plots=True), "plot the source run instead"),
    (dict(weight_norm_head=False), "needs --weight_norm_head"),
    (dict(model="bilstm_crf", source="brown/news", target="brown/fiction", weight_norm_head=False,
          bottleneck_size=0), "adapts classifiers"),
])
def test_bad_config_names_the_fix(overrides, message, data_dir, source_run):
  with pytest.raises(ConfigError) as error:
    validate_config(shot(data_dir, source_run, **overrides))
  assert message in str(error.value)


def test_a_source_model_without_a_weight_normalised_classifier_is_refused(data_dir, tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(
      {"source": "digits/mnist", "weight_norm_head": False}))
  with pytest.raises(ConfigError, match="train the source model with experiments/digits/"
                                        "shot_source.flags"):
    validate_config(shot(data_dir, str(tmp_path)))


def test_one_and_eight_devices_agree(data_dir, source_run, tmp_path):
  assert jax.device_count() == 8
  config = shot(data_dir, source_run)
  one = train_and_evaluate(config, str(tmp_path / "one"), devices=jax.devices()[:1])
  eight = train_and_evaluate(config, str(tmp_path / "eight"))
  losses_of = lambda run: [e["total"] for e in read_metrics(str(tmp_path / run)) if "total" in e]
  np.testing.assert_allclose(losses_of("one"), losses_of("eight"), rtol=1e-4)
  assert one["target_test_accuracy"] == pytest.approx(eight["target_test_accuracy"], abs=0.01)
