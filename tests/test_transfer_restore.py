"""Partial restore, freezing, per-group optimizers, L2-SP and labelled subsets."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from xdomain import transfer
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.train.experiment import validate_config


def _params(rng=0, hidden=4):
  keys = jax.random.split(jax.random.key(rng), 4)
  return {
      "backbone": {"conv": {"kernel": jax.random.normal(keys[0], (3, 3, 1, hidden)),
                            "bias": jax.random.normal(keys[1], (hidden,))}},
      "head": {"logits": {"kernel": jax.random.normal(keys[2], (hidden, 10)),
                          "bias": jax.random.normal(keys[3], (10,))}},
  }


def test_restore_subset_takes_matched_paths_from_the_checkpoint():
  fresh, saved = _params(0), _params(1)
  restored, paths = transfer.restore_subset(fresh, saved, pattern="backbone/.*")
  assert paths == ["backbone/conv/bias", "backbone/conv/kernel"]
  np.testing.assert_array_equal(restored["backbone"]["conv"]["kernel"],
                                saved["backbone"]["conv"]["kernel"])
  np.testing.assert_array_equal(restored["backbone"]["conv"]["bias"],
                                saved["backbone"]["conv"]["bias"])
  np.testing.assert_array_equal(restored["head"]["logits"]["kernel"],
                                fresh["head"]["logits"]["kernel"])


def test_shape_mismatch_names_every_path():
  fresh, saved = _params(0, hidden=4), _params(1, hidden=8)
  with pytest.raises(transfer.RestoreError) as e:
    transfer.restore_subset(fresh, saved, pattern=".*")
  message = str(e.value)
  for path, theirs, ours in (("backbone/conv/kernel", [3, 3, 1, 8], [3, 3, 1, 4]),
                             ("backbone/conv/bias", [8], [4]),
                             ("head/logits/kernel", [8, 10], [4, 10])):
    assert f"{path}: checkpoint {theirs}, model {ours}" in message
  assert "head/logits/bias" not in message  # same shape: restorable
  assert "3 of the 4" in message


def test_missing_path_and_empty_match_are_errors():
  fresh, saved = _params(0), _params(1)
  del saved["head"]
  with pytest.raises(transfer.RestoreError, match="head/logits/bias: missing from the checkpoint"):
    transfer.restore_subset(fresh, saved, pattern="head/.*")
  with pytest.raises(transfer.RestoreError, match="matches none of the model's parameters"):
    transfer.restore_subset(fresh, saved, pattern="encoder/.*")


def test_l2sp_gradient_matches_its_formula():
  params, anchor_full = _params(0), _params(1)
  anchor = {"backbone": anchor_full["backbone"]}
  alpha, beta = 0.3, 0.05

  grads = jax.grad(lambda p: transfer.l2sp_penalty(p, anchor, alpha=alpha, beta=beta))(params)
  for name in ("kernel", "bias"):
    w, w0 = params["backbone"]["conv"][name], anchor["backbone"]["conv"][name]
    np.testing.assert_allclose(grads["backbone"]["conv"][name], alpha * (w - w0), rtol=1e-6)
    np.testing.assert_allclose(grads["head"]["logits"][name],
                               beta * params["head"]["logits"][name], rtol=1e-6)
  value = transfer.l2sp_penalty(params, anchor, alpha=alpha, beta=beta)
  conv, conv0 = params["backbone"]["conv"], anchor["backbone"]["conv"]
  expected = 0.5 * alpha * sum(
      np.sum((np.asarray(conv[n]) - np.asarray(conv0[n])) ** 2) for n in ("kernel", "bias"))
  expected += 0.5 * beta * sum(
      np.sum(np.asarray(params["head"]["logits"][n]) ** 2) for n in ("kernel", "bias"))
  np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_frozen_group_keeps_no_optimizer_state_and_zero_updates():
  params = {"model": _params(0), "aux": {"w": jnp.ones(3)}}
  config = Config(freeze="backbone/.*", backbone_lr_multiplier=1.0, learning_rate=0.1)
  tx = transfer.make_optimizer(config, transfer.learning_rate_groups(config, lambda step: 0.1),
                               optax.adam)
  state = tx.init(params)
  adam_state = state.inner_states["other"].inner_state
  mu = adam_state[0].mu
  assert isinstance(mu["model"]["backbone"]["conv"]["kernel"], optax.MaskedNode)
  assert mu["model"]["head"]["logits"]["kernel"].shape == (4, 10)
  assert set(state.inner_states) == {"frozen", "other"}
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new["model"]["backbone"]["conv"]["kernel"],
                                params["model"]["backbone"]["conv"]["kernel"])
  assert not np.allclose(new["model"]["head"]["logits"]["kernel"],
                         params["model"]["head"]["logits"]["kernel"])


def test_backbone_learning_rate_multiplier_scales_backbone_updates():
  params = {"model": _params(0), "aux": {}}
  config = Config(backbone_lr_multiplier=0.1, learning_rate=1.0)
  tx = transfer.make_optimizer(config, transfer.learning_rate_groups(config, lambda step: 1.0),
                               optax.sgd)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["model"]["backbone"]["conv"]["bias"], -0.1, rtol=1e-6)
  np.testing.assert_allclose(updates["model"]["head"]["logits"]["bias"], -1.0, rtol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    ({"l2sp": 0.1}, "set --init_from"),
    ({"freeze": "backbone/(("}, "--freeze="),
    ({"target_labelled_fraction": 1.5}, "--target_labelled_fraction"),
    ({"method": "distill"}, "needs --teacher"),
    ({"teacher_source": "oracle"}, "--teacher_source"),
    ({"init_from": "/nonexistent/run"}, "--init_from"),
    ({"remove_domain_direction": True}, "set --init_from"),
    ({"remove_domain_direction": True, "init_from": "."}, "acts on word vectors; digits/mnist"),
])
def test_bad_transfer_flags_fail_validation(overrides, message):
  with pytest.raises(ConfigError, match=message):
    validate_config(Config(**overrides))


def test_remove_domain_direction_matches_numpy_row_by_row():
  rng = np.random.default_rng(0)
  vocab, dim = 12, 5
  embedding = rng.normal(size=(vocab, dim)).astype(np.float32)
  source, target = rng.random(vocab), rng.random(vocab)
  source[0] = target[0] = 0.0  # padding is never a token
  got = transfer.remove_domain_direction(embedding, 1000 * source, 10 * target)
  source, target = source / source.sum(), target / target.sum()

  e = embedding.astype(np.float64)
  d = np.zeros(dim)
  for w in range(vocab):
    d += (target[w] - source[w]) * e[w]
  d /= np.sqrt(np.sum(d * d))
  mean = e[2:].mean(axis=0)
  rows = []
  for w in range(2, vocab):
    x = e[w] - mean
    rows.append(x - np.dot(x, d) * d)
  rows = np.array(rows)
  scale = np.mean([np.linalg.norm(r) for r in e[2:]]) / np.mean(
      [np.linalg.norm(r) for r in rows])
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got[:2], embedding[:2])  # <pad>, <unk> untouched
  np.testing.assert_allclose(got[2:], scale * rows, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[2:] @ d, 0.0, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(got[2:], axis=1).mean(),
                             np.linalg.norm(embedding[2:], axis=1).mean(), rtol=1e-5)


def test_remove_domain_direction_refuses_domains_with_the_same_mean_vector():
  embedding = np.ones((4, 3), np.float32)
  with pytest.raises(ValueError, match="no domain direction"):
    transfer.remove_domain_direction(embedding, np.full(4, 0.25), np.array([0, 0.5, 0.5, 0]))
