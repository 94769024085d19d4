"""Model shapes, parameter layout, domain-specific batch norm and argument errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdomain import models

_KEY = jax.random.key(0)
_TOKENS = np.array([[3, 4, 5, 0], [2, 0, 0, 0], [0, 0, 0, 0]], np.int32)
_LENGTHS = np.array([3, 1, 0], np.int32)


def _num_params(variables):
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


def test_seed_cnn_has_keras_parameter_count():
  model = models.SeedCNN(10)
  (logits, feats), variables = model.init_with_output(
      _KEY, jnp.zeros((2, 28, 28, 1)), return_features=True)
  assert _num_params(variables) == 225_034
  assert (logits.shape, feats.shape) == ((2, 10), (2, 128))
  assert set(variables["params"]) == {"backbone", "head"}


@pytest.mark.parametrize("model, inputs, logits_shape, feats_shape", [
    (models.TextCNN(10, 3, embed_dim=4, widths=(2, 3), num_filters=5),
     (_TOKENS, _LENGTHS), (3, 3), (3, 10)),
    (models.RNNClassifier(10, 3, embed_dim=4, hidden_size=5, num_layers=2),
     (_TOKENS, _LENGTHS), (3, 3), (3, 10)),
    (models.RNNClassifier(10, 3, embed_dim=4, hidden_size=5, cell="gru",
                          bidirectional=False, pooling="max"),
     (_TOKENS, _LENGTHS), (3, 3), (3, 5)),
    (models.RNNTagger(10, 6, embed_dim=4, hidden_size=5, use_crf=True),
     (_TOKENS, _LENGTHS), (3, 4, 6), (3, 4, 10)),
    (models.RowRNNClassifier(7, hidden_size=6, bidirectional=True),
     (jnp.zeros((2, 5, 4, 3)),), (2, 7), (2, 12)),
    (models.ResNet(7, stage_sizes=(1, 1), width=4), (jnp.zeros((2, 8, 8, 3)),),
     (2, 7), (2, 8)),
])
def test_shapes_and_backbone_head_split(model, inputs, logits_shape, feats_shape):
  # jit compiles one program instead of one per eager op (faster tests).
  init = jax.jit(model.init_with_output, static_argnames=("train", "return_features"))
  (logits, feats), variables = init(_KEY, *inputs, train=False, return_features=True)
  assert (logits.shape, feats.shape) == (logits_shape, feats_shape)
  assert set(variables["params"]) == {"backbone", "head"}
  # The features method and return_features come from the same backbone.
  features = jax.jit(model.apply, static_argnames="method")(
      variables, *inputs, method="features")
  np.testing.assert_allclose(features, feats, atol=1e-6)


def test_tagger_exposes_crf_parameters_and_matches_pure_functions():
  model = models.RNNTagger(10, 3, embed_dim=4, hidden_size=5, use_crf=True)
  variables = model.init(_KEY, _TOKENS, _LENGTHS)
  crf = variables["params"]["head"]["crf"]
  assert jax.tree.map(jnp.shape, crf) == {
      "transitions": (3, 3), "start_transitions": (3,), "end_transitions": (3,)}
  crf = jax.tree.map(lambda p: p + jnp.arange(p.size).reshape(p.shape) * 0.3, crf)
  variables["params"]["head"]["crf"] = crf
  tags = np.array([[1, 2, 0, 2], [2, 1, 1, 1], [0, 0, 0, 0]], np.int32)
  emissions = model.apply(variables, _TOKENS, _LENGTHS)
  nll = model.apply(variables, _TOKENS, _LENGTHS, tags,
                    method="negative_log_likelihood")
  expected = -models.crf_log_likelihood(
      emissions, tags, _LENGTHS, crf["transitions"], crf["start_transitions"],
      crf["end_transitions"])
  np.testing.assert_allclose(nll, expected, rtol=1e-6)
  np.testing.assert_allclose(
      model.apply(variables, emissions, tags, _LENGTHS, method="nll_from_emissions"),
      expected, rtol=1e-6)


def test_tagger_without_crf_nll_is_summed_token_cross_entropy():
  model = models.RNNTagger(10, 3, embed_dim=4, hidden_size=5)
  variables = model.init(_KEY, _TOKENS, _LENGTHS)
  tags = np.array([[1, 2, 0, 2], [2, 1, 1, 1], [0, 0, 0, 0]], np.int32)
  emissions = np.asarray(model.apply(variables, _TOKENS, _LENGTHS), np.float64)
  nll = model.apply(variables, _TOKENS, _LENGTHS, tags,
                    method="negative_log_likelihood")
  log_probs = emissions - np.log(np.exp(emissions).sum(-1, keepdims=True))
  expected = [-sum(log_probs[b, t, tags[b, t]] for t in range(n))
              for b, n in enumerate(_LENGTHS)]
  np.testing.assert_allclose(nll, expected, rtol=1e-5)
  decoded = model.apply(variables, _TOKENS, _LENGTHS, method="decode")
  valid = np.arange(4) < _LENGTHS[:, None]
  np.testing.assert_array_equal(decoded, np.where(valid, emissions.argmax(-1), 0))


def test_domain_discriminator_shapes_and_dropout():
  disc = models.DomainDiscriminator(hidden_sizes=(8, 8))
  out, variables = disc.init_with_output(_KEY, jnp.ones((3, 5)))
  assert out.shape == (3,)
  assert disc.apply(variables, jnp.ones((2, 4, 5))).shape == (2, 4)
  train_a = disc.apply(variables, jnp.ones((3, 5)), train=True,
                       rngs={"dropout": jax.random.key(1)})
  train_b = disc.apply(variables, jnp.ones((3, 5)), train=True,
                       rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(train_a, train_b)


class TestDomainSpecificBatchNorm:

  model = models.ResNet(4, stage_sizes=(1,), width=4, domain_specific_bn=True)
  images = jax.random.normal(_KEY, (4, 6, 6, 3))
  domain = np.array([0, 0, 1, 1], np.int32)

  def _init(self):
    return self.model.init(_KEY, self.images, domain="source")

  def test_source_outputs_ignore_target_examples_in_training(self):
    variables = self._init()
    shifted = self.images.at[2:].mul(5.0).at[2:].add(3.0)
    outputs = [self.model.apply(variables, x, train=True, domain=self.domain,
                                mutable=["batch_stats"])[0]
               for x in (self.images, shifted)]
    np.testing.assert_allclose(outputs[0][:2], outputs[1][:2], atol=1e-5)
    # A shared batch norm mixes the domains: the same change moves the source rows.
    shared = models.ResNet(4, stage_sizes=(1,), width=4)
    shared_vars = shared.init(_KEY, self.images)
    shared_out = [shared.apply(shared_vars, x, train=True, mutable=["batch_stats"])[0]
                  for x in (self.images, shifted)]
    assert not np.allclose(shared_out[0][:2], shared_out[1][:2], atol=1e-3)
    # The two variants have the same parameter paths (restorable both ways).
    assert (jax.tree.structure(shared_vars["params"])
            == jax.tree.structure(variables["params"]))

  def test_running_statistics_follow_each_domain(self):
    variables = self._init()
    _, updates = self.model.apply(variables, self.images, train=True,
                                  domain="target", mutable=["batch_stats"])
    stem = updates["batch_stats"]["backbone"]["stem_norm"]
    np.testing.assert_array_equal(stem["mean_source"], 0.0)
    np.testing.assert_array_equal(stem["var_source"], 1.0)
    assert np.abs(stem["mean_target"]).sum() > 0
    # AdaBN at test time: domain='target' uses the target statistics, which is
    # what the source path computes once it is given those statistics.
    variables = {**variables, **updates}
    swapped = jax.tree.map(lambda x: x, variables)
    for norm in jax.tree.leaves(swapped["batch_stats"], is_leaf=lambda d: "mean_source" in d):
      norm["mean_source"], norm["var_source"] = norm["mean_target"], norm["var_target"]
    np.testing.assert_allclose(
        self.model.apply(variables, self.images, domain="target"),
        self.model.apply(swapped, self.images, domain="source"), atol=1e-6)
    assert not np.allclose(
        self.model.apply(variables, self.images, domain="target"),
        self.model.apply(variables, self.images, domain="source"), atol=1e-4)

  def test_domain_is_required(self):
    with pytest.raises(ValueError, match="domain is required"):
      self.model.init(_KEY, self.images)
    with pytest.raises(ValueError, match=r"int array \[B\] = \(4,\)"):
      self.model.init(_KEY, self.images, domain=np.zeros(3, np.int32))


@pytest.mark.parametrize("call, message", [
    (lambda: models.SeedCNN(3).init(_KEY, jnp.zeros((28, 28, 1))),
     r"images must be a float array \[B, H, W, C\]; got shape \(28, 28, 1\)"),
    (lambda: models.RNNClassifier(10, 2).init(_KEY, _TOKENS[0], _LENGTHS),
     r"tokens must be an int32 array \[B, L\]"),
    (lambda: models.TextCNN(10, 2).init(_KEY, _TOKENS, _LENGTHS[:2]),
     r"lengths must be an int32 array \[B\] = \(3,\)"),
    (lambda: models.TextCNN(10, 2).init(_KEY, _TOKENS, np.array([3, 9, 0], np.int32)),
     r"lengths must lie in \[0, L=4\]"),
    (lambda: models.RNNClassifier(10, 2, pooling="sum").init(_KEY, _TOKENS, _LENGTHS),
     r"pooling must be one of \['last', 'max', 'mean'\]; got 'sum'"),
    (lambda: models.RNNTagger(10, 2, char_vocab_size=5).init(_KEY, _TOKENS, _LENGTHS),
     r"chars must be an int array \[B, L, W\]"),
])
def test_errors_name_the_argument(call, message):
  with pytest.raises(ValueError, match=message):
    call()
