"""Model shapes, parameter layout, domain-specific batch norm and argument errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdomain import models
from xdomain.models import cnn

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


@pytest.mark.parametrize("shape", [(3, 8, 6, 4), (2, 7, 5, 3)])
def test_max_pool_2x2_equals_flax_max_pool_with_its_gradient(shape):
  """Exact forward and gradient, ties included (the first maximum gets it)."""
  rng = np.random.default_rng(0)
  # Few distinct values: most windows hold ties, as ReLU's zeros make.
  x = jnp.asarray(rng.integers(-1, 3, shape).clip(0), jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=(shape[0], shape[1] // 2, shape[2] // 2, shape[3])),
                          jnp.float32)
  flax_pool = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(cnn.max_pool_2x2(x), flax_pool(x))
  grad = lambda pool: jax.grad(lambda v: jnp.sum(pool(v) * cotangent))(x)
  np.testing.assert_array_equal(grad(cnn.max_pool_2x2), grad(flax_pool))
  for row, col in ((0, 0), (1, 1)):  # NaN first or last in its window propagates
    with_nan = x.at[0, row, col, 0].set(jnp.nan)
    assert jnp.isnan(cnn.max_pool_2x2(with_nan)[0, 0, 0, 0])


@pytest.mark.parametrize("model, inputs, logits_shape, feats_shape", [
    (models.TextCNN(20, 3, embed_dim=4, widths=(2, 3), num_filters=5),
     (_TOKENS, _LENGTHS), (3, 3), (3, 10)),
    (models.RNNClassifier(20, 3, embed_dim=4, hidden_size=5, num_layers=2),
     (_TOKENS, _LENGTHS), (3, 3), (3, 10)),
    (models.RNNClassifier(20, 3, embed_dim=4, hidden_size=5, cell="gru",
                          bidirectional=False, pooling="max"),
     (_TOKENS, _LENGTHS), (3, 3), (3, 5)),
    (models.RNNTagger(20, 4, embed_dim=4, hidden_size=5, use_crf=True),
     (_TOKENS, _LENGTHS), (3, 4, 4), (3, 4, 10)),
    (models.RowRNNClassifier(7, hidden_size=6, bidirectional=True),
     (jnp.zeros((2, 5, 4, 3)),), (2, 7), (2, 12)),
])
def test_shapes_and_backbone_head_split(model, inputs, logits_shape, feats_shape):
  (logits, feats), variables = model.init_with_output(
      _KEY, *inputs, train=False, return_features=True)
  assert (logits.shape, feats.shape) == (logits_shape, feats_shape)
  assert set(variables["params"]) == {"backbone", "head"}
  # The features method and return_features come from the same backbone.
  np.testing.assert_allclose(
      model.apply(variables, *inputs, method="features"), feats, atol=1e-6)


def test_tagger_exposes_crf_parameters_and_matches_pure_functions():
  model = models.RNNTagger(20, 4, embed_dim=4, hidden_size=5, use_crf=True)
  variables = model.init(_KEY, _TOKENS, _LENGTHS)
  crf = variables["params"]["head"]["crf"]
  assert jax.tree.map(jnp.shape, crf) == {
      "transitions": (4, 4), "start_transitions": (4,), "end_transitions": (4,)}
  crf = jax.tree.map(lambda p: p + jnp.arange(p.size).reshape(p.shape) * 0.3, crf)
  variables["params"]["head"]["crf"] = crf
  tags = np.array([[1, 3, 0, 2], [2, 1, 1, 1], [0, 0, 0, 0]], np.int32)
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
  model = models.RNNTagger(20, 4, embed_dim=4, hidden_size=5)
  variables = model.init(_KEY, _TOKENS, _LENGTHS)
  tags = np.array([[1, 3, 0, 2], [2, 1, 1, 1], [0, 0, 0, 0]], np.int32)
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


def _reference_norm(x, mean, var, scale, bias):
  return (x - mean) / np.sqrt(var + 1e-5) * scale + bias


def test_domain_batch_norm_matches_numpy_per_domain():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 2, 2, 3)).astype(np.float32)
  x[3:] = x[3:] * 4.0 + 2.0  # the target domain is shifted
  domain = np.array([0, 0, 0, 1, 1], np.int32)
  norm = models.DomainBatchNorm(momentum=0.9)
  variables = norm.init(_KEY, x, domain)
  scale, bias = rng.normal(size=(2, 3)).astype(np.float32)
  variables = {"params": {"scale": scale, "bias": bias},
               "batch_stats": variables["batch_stats"]}
  out, updates = norm.apply(variables, x, domain, train=True, mutable=["batch_stats"])
  stats = updates["batch_stats"]
  for name, rows in (("source", slice(0, 3)), ("target", slice(3, 5))):
    mean, var = x[rows].mean((0, 1, 2)), x[rows].var((0, 1, 2))
    # Each domain is normalised by its own batch statistics only.
    np.testing.assert_allclose(out[rows], _reference_norm(x[rows], mean, var, scale, bias),
                               atol=1e-5)
    np.testing.assert_allclose(stats[f"mean_{name}"], 0.1 * mean, atol=1e-6)
    np.testing.assert_allclose(stats[f"var_{name}"], 0.9 + 0.1 * var, atol=1e-6)
  # A batch with no source example leaves the source statistics alone.
  _, only_target = norm.apply({**variables, **updates}, x, np.ones(5, np.int32),
                              train=True, mutable=["batch_stats"])
  np.testing.assert_array_equal(only_target["batch_stats"]["mean_source"],
                                stats["mean_source"])
  # At test time each example uses its domain's running statistics (AdaBN).
  test_out = norm.apply({**variables, **updates}, x, domain)
  for name, rows in (("source", slice(0, 3)), ("target", slice(3, 5))):
    np.testing.assert_allclose(
        test_out[rows], _reference_norm(x[rows], stats[f"mean_{name}"],
                                        stats[f"var_{name}"], scale, bias), atol=1e-5)


def test_resnet_domain_specific_batch_norm():
  images = jnp.zeros((2, 8, 8, 3))
  model = models.ResNet(7, stage_sizes=(1, 1), width=4, domain_specific_bn=True)
  (logits, feats), variables = model.init_with_output(
      _KEY, images, domain="target", return_features=True)
  assert (logits.shape, feats.shape) == ((2, 7), (2, 8))
  assert set(variables["params"]) == {"backbone", "head"}
  stem = variables["batch_stats"]["backbone"]["stem_norm"]
  assert set(stem) == {"mean_source", "var_source", "mean_target", "var_target"}
  # Same parameter paths as the shared-statistics ResNet: each restores the other.
  shared = models.ResNet(7, stage_sizes=(1, 1), width=4).init(_KEY, images)
  assert jax.tree.structure(shared["params"]) == jax.tree.structure(variables["params"])
  with pytest.raises(ValueError, match="domain is required"):
    model.apply(variables, images)
  with pytest.raises(ValueError, match=r"int array \[B\] = \(2,\)"):
    model.apply(variables, images, domain=np.zeros(3, np.int32))


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


def test_weight_norm_layer_matches_numpy_and_starts_as_its_dense_layer():
  from xdomain.models.heads import WeightNormDense
  layer = WeightNormDense(3)
  x = jax.random.normal(jax.random.key(0), (5, 4))
  params = layer.init(jax.random.key(1), x)["params"]
  v = np.asarray(params["direction"])
  np.testing.assert_allclose(params["scale"], np.linalg.norm(v, axis=0), rtol=1e-6)
  np.testing.assert_allclose(layer.apply({"params": params}, x), np.asarray(x) @ v, rtol=1e-5,
                             atol=1e-6)
  g, b = np.array([0.5, 2.0, 1.0], np.float32), np.array([0.1, -0.2, 0.3], np.float32)
  params = {"direction": jnp.asarray(3.0 * v), "scale": jnp.asarray(g), "bias": jnp.asarray(b)}
  expected = np.asarray(x) @ (v / np.linalg.norm(v, axis=0) * g) + b
  np.testing.assert_allclose(layer.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-6)
  # Only the directions' angles count, not their lengths: no gradient along v.
  grad = jax.grad(lambda d: jnp.sum(layer.apply(
      {"params": dict(params, direction=d)}, x) ** 2))(params["direction"])
  np.testing.assert_allclose(np.sum(grad * params["direction"], axis=0), 0.0, atol=1e-4)


@pytest.mark.parametrize("model", ["seed_cnn", "resnet"])
def test_shot_model_has_a_normalised_bottleneck_and_a_weight_normalised_head(model):
  from xdomain.config import Config
  from xdomain.models import zoo
  config = Config(model=model, weight_norm_head=True, bottleneck_size=6)
  net = zoo.MODELS[model].build(config, 10)
  images = jax.random.normal(jax.random.key(0), (4, 16, 16, 1))
  variables = net.init(jax.random.key(1), images)
  assert set(variables["params"]["head"]["logits"]) == {"direction", "scale", "bias"}
  assert variables["params"]["backbone"]["bottleneck"]["kernel"].shape[1] == 6
  assert "bottleneck_norm" in variables["batch_stats"]["backbone"]
  (logits, features), updates = net.apply(variables, images, train=True, return_features=True,
                                          mutable=["batch_stats"])
  assert logits.shape == (4, 10) and features.shape == (4, 6)
  # Batch norm, no nonlinearity: in training the features are centred per unit.
  np.testing.assert_allclose(np.mean(np.asarray(features), axis=0), 0.0, atol=1e-4)
  assert np.any(np.asarray(features) < 0)
