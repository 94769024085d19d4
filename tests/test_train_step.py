"""The pure train step against plain JAX: the task loss, the methods' terms, NaN guard."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from xdomain import checkpoint
from xdomain import losses
from xdomain import tasks
from xdomain.config import Config
from xdomain.methods import adversarial
from xdomain.methods import base
from xdomain.train import Experiment

NUM_CLASSES = 10


def _setup(method_name: str, **overrides):
  config = Config(method=method_name, optimizer="sgd", momentum=0.0, learning_rate=0.1,
                  discriminator_hidden=16, **overrides)
  experiment = Experiment(config, "unused: image runs keep nothing in their workdir",
                          devices=jax.devices()[:1])
  rng = np.random.default_rng(0)
  batch = {
      "source": {"image": rng.uniform(size=(8, 28, 28, 1)).astype(np.float32),
                 "label": rng.integers(0, NUM_CLASSES, 8).astype(np.int32)},
      "target": {"image": rng.uniform(size=(8, 28, 28, 1)).astype(np.float32)},
  }
  train_step = jax.jit(experiment.make_train_step())
  return experiment.model, experiment.init_state(), batch, train_step


def test_source_only_step_is_one_sgd_step_on_the_cross_entropy():
  model, state, batch, train_step = _setup("source_only")

  def reference_loss(params):
    logits = model.apply({"params": params}, batch["source"]["image"], train=True)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["source"]["label"]).mean()

  params = state.params["model"]
  loss, grads = jax.value_and_grad(reference_loss)(params)
  expected = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
  new_state, metrics = train_step(state, batch, jax.random.key(1))
  np.testing.assert_allclose(metrics["task"], loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["total"], loss, rtol=1e-5)
  # The logged gradient norm (each leaf's sum of squares as a dot product).
  reference_norm = np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64)))
                               for g in jax.tree.leaves(grads)))
  np.testing.assert_allclose(metrics["grad_norm"], reference_norm, rtol=1e-5)
  assert int(new_state.step) == 1
  for got, want in zip(jax.tree.leaves(new_state.params["model"]), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method_name, term, reference", [
    ("dan", "mmd", lambda fs, ft, ls, lt: losses.mmd(
        fs, ft, bandwidth_heuristic="median", kernel_reduction="mean")),
    ("coral", "coral", lambda fs, ft, ls, lt: losses.coral(fs, ft)),
    ("jan", "jmmd", lambda fs, ft, ls, lt: losses.jmmd(
        [fs, jax.nn.softmax(ls)], [ft, jax.nn.softmax(lt)], bandwidth_heuristic="median",
        kernel_reduction="mean")),
    ("entropy", "entropy", lambda fs, ft, ls, lt: losses.entropy(lt).mean()),
    ("mcc", "mcc", lambda fs, ft, ls, lt: losses.mcc(lt, temperature=2.5)),
])
def test_logged_term_is_the_loss_of_the_model_outputs(method_name, term, reference):
  model, state, batch, train_step = _setup(method_name, adapt_weight=0.5)
  images = jnp.concatenate([batch["source"]["image"], batch["target"]["image"]])
  logits, features = model.apply({"params": state.params["model"]}, images, train=True,
                                 return_features=True)
  expected = reference(features[:8], features[8:], logits[:8], logits[8:])
  _, metrics = train_step(state, batch, jax.random.key(1))
  np.testing.assert_allclose(metrics[term], expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(metrics["total"],
                             metrics["task"] + metrics[f"weight/{term}"] * metrics[term],
                             rtol=1e-5)
  assert float(metrics[f"weight/{term}"]) == 0.5


def test_dann_logs_the_reversal_schedule_and_trains_the_discriminator():
  _, state, batch, train_step = _setup("dann", adapt_schedule="dann", steps=100)
  new_state, metrics = train_step(state, batch, jax.random.key(1))
  assert float(metrics["schedule/gradient_reversal"]) == 0.0  # p = 0 at the first step
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                         state.params["aux"], new_state.params["aux"])
  assert all(jax.tree.leaves(changed))


def test_iwdan_trains_on_the_class_weighted_cross_entropy_and_keeps_its_statistics():
  model, state, batch, train_step = _setup("iwdan", label_shift_decay=0.5)
  images = jnp.concatenate([batch["source"]["image"], batch["target"]["image"]])
  logits = model.apply({"params": state.params["model"]}, images, train=True)
  labels = batch["source"]["label"]
  probs = jax.nn.softmax(logits)
  confusion = probs[:8].T @ jax.nn.one_hot(labels, NUM_CLASSES) / 8
  weights = losses.class_importance_weights(confusion, probs[8:].mean(0))
  cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits[:8], labels)
  new_state, metrics = train_step(state, batch, jax.random.key(1))
  np.testing.assert_allclose(adversarial.class_weights(new_state.untrained["statistics"]), weights,
                             rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(metrics["task"] + metrics["source_reweighting"],
                             jnp.mean(weights[labels] * cross_entropy), rtol=1e-4)
  np.testing.assert_allclose(metrics[f"label_shift/weight_{int(labels[0])}"],
                             weights[labels[0]], rtol=1e-3, atol=1e-5)
  # The next step adds its batch to the running sums (decay 0.5).
  newer_state, _ = train_step(new_state, batch, jax.random.key(2))
  np.testing.assert_allclose(newer_state.untrained["statistics"]["source_count"], 8 * 1.5)


def test_mean_teacher_moves_the_teacher_by_its_decay():
  _, state, batch, train_step = _setup("mean_teacher", ema_decay=0.9)
  new_state, _ = train_step(state, batch, jax.random.key(1))
  expected = jax.tree.map(lambda t, s: 0.9 * t + 0.1 * s, state.ema["params"],
                          new_state.params["model"])
  for got, want in zip(jax.tree.leaves(new_state.ema["params"]), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_a_non_finite_step_leaves_the_state_unchanged():
  _, state, batch, train_step = _setup("source_only")
  batch["source"]["image"][0, 0, 0, 0] = np.nan
  new_state, metrics = train_step(state, batch, jax.random.key(1))
  assert not bool(metrics["finite"])
  for got, want in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(got, want)
  assert int(new_state.step) == 1


def test_mean_teacher_views_of_text_drop_student_tokens_only():
  views = {rate: functools.partial(tasks.Tagging().consistency_views,
                                   config=Config(token_dropout=rate))
           for rate in (0.0, 0.25)}
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(2, 50, (64, 40)), jnp.int32)
  tokens = tokens.at[:, 30:].set(0)  # padding
  lengths = jnp.full((64,), 30, jnp.int32)
  chars = jnp.asarray(rng.integers(1, 200, (64, 40, 5)), jnp.int32)
  chars = chars.at[:, 30:].set(0)
  inputs = (tokens, lengths, chars)
  student, teacher = views[0.25](inputs, jax.random.key(0))
  assert teacher is inputs
  student_tokens, student_lengths, student_chars = student
  np.testing.assert_array_equal(student_lengths, lengths)
  changed = np.asarray(student_tokens != tokens)
  assert not changed[:, 30:].any()  # padding stays padding
  np.testing.assert_array_equal(np.asarray(student_tokens)[changed], 1)  # <unk>
  assert abs(changed[:, :30].mean() - 0.25) < 0.03
  # A dropped word's characters are hidden too; the others are kept.
  np.testing.assert_array_equal(np.asarray(student_chars)[changed], 0)
  np.testing.assert_array_equal(np.asarray(student_chars)[~changed], np.asarray(chars)[~changed])
  (student_tokens, _), _ = views[0.25]((tokens, lengths), jax.random.key(0))
  np.testing.assert_array_equal(student_tokens != tokens, changed)  # without chars
  student, teacher = views[0.0](inputs, jax.random.key(0))
  assert student is inputs
  images = jnp.zeros((2, 8, 8, 1))
  (student,), (teacher,) = tasks.ImageClassification().consistency_views(
      (images,), jax.random.key(0), Config())
  assert not np.array_equal(student, teacher)  # independent noisy views


def test_frozen_batch_norm_layers_keep_their_weights_and_follow_the_batch():
  # As the README says (--freeze): parameters stay, running statistics move.
  _, state, batch, train_step = _setup("source_only", model="resnet", freeze="backbone/.*")
  new_state, _ = train_step(state, batch, jax.random.key(1))
  before, after = (checkpoint.flatten_paths(jax.device_get(s))
                   for s in (state.params["model"], new_state.params["model"]))
  for path in before:
    if path.startswith("backbone/"):
      np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    else:
      assert not np.array_equal(after[path], before[path]), path
  stats_before, stats_after = (checkpoint.flatten_paths(jax.device_get(s))
                               for s in (state.batch_stats, new_state.batch_stats))
  assert any("norm" in path for path in stats_before)
  for path in stats_before:
    assert not np.allclose(stats_after[path], stats_before[path]), path


def test_each_optimizer_group_logs_its_own_learning_rate():
  _, state, batch, train_step = _setup("source_only", backbone_lr_multiplier=0.1)
  _, metrics = train_step(state, batch, jax.random.key(1))
  np.testing.assert_allclose(metrics["learning_rate"], 0.1, rtol=1e-6)
  np.testing.assert_allclose(metrics["learning_rate/backbone"], 0.01, rtol=1e-6)


@pytest.mark.parametrize("method_name", ["lm_pretrain", "skipgram"])
def test_pretraining_skips_the_joint_pass_and_trains_as_if_it_had_run(method_name, data_dir,
                                                                      tmp_path):
  # The joint pass feeds only the task loss, of weight 0: skipping it may change
  # no parameter. The comparison runs it, as the step did before it was skipped.
  config = Config(method=method_name, model="bilstm", source="sentiment/movies",
                  target="sentiment/tweets", data_dir=data_dir, embed_size=8, hidden_size=8,
                  max_length=16, optimizer="sgd", momentum=0.0, learning_rate=0.5)
  experiment = Experiment(config, str(tmp_path), devices=jax.devices()[:1])
  state = experiment.init_state()
  vocab_size = state.params["model"]["backbone"]["embed"]["embedding"].shape[0]
  rng = np.random.default_rng(0)

  def part(n):
    lengths = rng.integers(2, 17, n).astype(np.int32)
    tokens = rng.integers(2, vocab_size, (n, 16)).astype(np.int32)
    return {"tokens": np.where(np.arange(16) < lengths[:, None], tokens, 0), "lengths": lengths}

  batch = {"source": dict(part(6), label=rng.integers(0, 2, 6).astype(np.int32)),
           "target": part(6)}
  assert not experiment.method.reads_outputs
  skipping = jax.jit(experiment.make_train_step())
  experiment.method = dataclasses.replace(experiment.method, reads_outputs=True)
  running = jax.jit(experiment.make_train_step())
  skipped, ran = state, state
  for step in range(2):
    skipped, skipped_metrics = skipping(skipped, batch, jax.random.key(step))
    ran, ran_metrics = running(ran, batch, jax.random.key(step))
  # Only the run with the joint pass scores the source (its untrained head).
  assert float(ran_metrics["source_train_count"]) == 6
  assert float(skipped_metrics["source_train_count"]) == 0
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), skipped.params, state.params)
  assert any(jax.tree.leaves(changed))
  for got, want in zip(jax.tree.leaves(skipped.params), jax.tree.leaves(ran.params)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method_name", ["lm_pretrain", "skipgram"])
def test_general_text_trains_as_more_target_rows_would(method_name, data_dir, tmp_path):
  # --general_text's part joins the pretraining text after both domains'.
  config = Config(method=method_name, model="bilstm", source="sentiment/movies",
                  target="sentiment/tweets", data_dir=data_dir, embed_size=8, hidden_size=8,
                  max_length=16, optimizer="sgd", momentum=0.0, learning_rate=0.5,
                  general_text="brown/news")
  experiment = Experiment(config, str(tmp_path), devices=jax.devices()[:1])
  state = experiment.init_state()
  batch = next(experiment.training_loader())
  assert set(batch) == {"source", "target", "general"}
  as_target = {"source": batch["source"], "target": {
      key: np.concatenate([batch["target"][key], batch["general"][key]])
      for key in ("tokens", "lengths")}}
  without = {"source": batch["source"], "target": batch["target"]}
  train_step = jax.jit(experiment.make_train_step())
  after = {name: train_step(state, b, jax.random.key(0))[0].params
           for name, b in (("general", batch), ("as_target", as_target), ("without", without))}
  for got, want in zip(jax.tree.leaves(after["general"]), jax.tree.leaves(after["as_target"])):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert any(not np.allclose(got, other) for got, other in zip(
      jax.tree.leaves(after["general"]), jax.tree.leaves(after["without"])))


def test_a_method_that_skips_the_joint_pass_may_not_read_it():
  with pytest.raises(ValueError, match="reads_outputs=False"):
    base.Method(name="broken", reads_outputs=False,
                model_terms=lambda *args: {}, terms=lambda outputs, aux, rng, step: {})
  with pytest.raises(ValueError, match="no task loss"):
    base.Method(name="broken", reads_outputs=False, model_terms=lambda *args: {})
