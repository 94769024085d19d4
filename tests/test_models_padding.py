"""Padding invariance: nothing past a sequence's length changes any output."""

from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from xdomain import models

_LENGTHS = np.array([5, 2, 0, 1], np.int32)


def _batches(vocab=20, max_length=5, extra=3, char_vocab=9, word=4):
  """A padded batch and the same batch with longer padding and junk past each length."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, vocab, size=(4, max_length)).astype(np.int32)
  chars = rng.integers(1, char_vocab, size=(4, max_length, word)).astype(np.int32)
  chars[..., 3:] = 0  # words of 3 characters, padded to 4
  mask = np.arange(max_length)[None] < _LENGTHS[:, None]
  tokens = np.where(mask, tokens, 0)
  chars = np.where(mask[..., None], chars, 0)
  junk = rng.integers(1, vocab, size=(4, max_length + extra)).astype(np.int32)
  long_mask = np.arange(max_length + extra)[None] < _LENGTHS[:, None]
  long_tokens = np.where(long_mask, np.pad(tokens, ((0, 0), (0, extra))), junk)
  long_chars = np.where(
      long_mask[..., None], np.pad(chars, ((0, 0), (0, extra), (0, 0))),
      rng.integers(1, char_vocab, size=(4, max_length + extra, word)))
  return (tokens, chars), (long_tokens, long_chars.astype(np.int32))


class PaddingTest(parameterized.TestCase):

  @parameterized.parameters(("lstm", "last"), ("gru", "mean"), ("lstm", "max"))
  def test_rnn_classifier(self, cell, pooling):
    (tokens, _), (long_tokens, _) = _batches()
    model = models.RNNClassifier(20, 3, embed_dim=4, hidden_size=5, cell=cell,
                                 pooling=pooling, num_layers=2)
    variables = model.init(jax.random.key(0), tokens, _LENGTHS)
    logits, feats = model.apply(variables, tokens, _LENGTHS, return_features=True)
    long_logits, long_feats = model.apply(variables, long_tokens, _LENGTHS,
                                          return_features=True)
    np.testing.assert_allclose(logits, long_logits, atol=1e-6)
    np.testing.assert_allclose(feats, long_feats, atol=1e-6)
    # The empty sequence pools to exactly zero (no -inf from masked max).
    np.testing.assert_array_equal(feats[2], 0.0)

  def test_text_cnn(self):
    (tokens, _), (long_tokens, _) = _batches()
    model = models.TextCNN(20, 3, embed_dim=4, widths=(2, 3), num_filters=5)
    variables = model.init(jax.random.key(0), tokens, _LENGTHS)
    feats = model.apply(variables, tokens, _LENGTHS, method="features")
    long_feats = model.apply(variables, long_tokens, _LENGTHS, method="features")
    np.testing.assert_allclose(feats, long_feats, atol=1e-6)
    np.testing.assert_array_equal(feats[2], 0.0)

  def test_text_cnn_pooling_matches_unpadded_sequence(self):
    """A padded row pools exactly as the same sentence alone without padding."""
    (tokens, _), _ = _batches()
    model = models.TextCNN(20, 3, embed_dim=4, widths=(2, 3), num_filters=5)
    variables = model.init(jax.random.key(0), tokens, _LENGTHS)
    feats = model.apply(variables, tokens, _LENGTHS, method="features")
    alone = model.apply(variables, tokens[1:2, :2], _LENGTHS[1:2],
                        method="features")
    np.testing.assert_allclose(feats[1:2], alone, atol=1e-6)

  @parameterized.parameters(True, False)
  def test_tagger(self, use_crf):
    (tokens, chars), (long_tokens, long_chars) = _batches()
    rng = np.random.default_rng(1)
    tags = rng.integers(0, 4, size=long_tokens.shape).astype(np.int32)
    model = models.RNNTagger(20, 4, embed_dim=4, hidden_size=5, use_crf=use_crf,
                             char_vocab_size=9, char_embed_dim=3, char_filters=4)
    variables = model.init(jax.random.key(0), tokens, _LENGTHS, chars)
    if use_crf:  # non-zero transitions so the CRF takes part
      crf = variables["params"]["head"]["crf"]
      variables["params"]["head"]["crf"] = jax.tree.map(
          lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), crf)
    emissions, feats = model.apply(variables, tokens, _LENGTHS, chars,
                                   return_features=True)
    long_emissions, long_feats = model.apply(variables, long_tokens, _LENGTHS,
                                             long_chars, return_features=True)
    np.testing.assert_allclose(emissions, long_emissions[:, :5], atol=1e-6)
    np.testing.assert_allclose(feats, long_feats[:, :5], atol=1e-6)
    np.testing.assert_array_equal(long_emissions[:, 5:], 0.0)
    nll = model.apply(variables, tokens, _LENGTHS, tags[:, :5], chars,
                      method="negative_log_likelihood")
    long_nll = model.apply(variables, long_tokens, _LENGTHS, tags, long_chars,
                           method="negative_log_likelihood")
    np.testing.assert_allclose(nll, long_nll, rtol=1e-6)
    self.assertEqual(float(nll[2]), 0.0)
    decoded = model.apply(variables, tokens, _LENGTHS, chars, method="decode")
    long_decoded = model.apply(variables, long_tokens, _LENGTHS, long_chars,
                               method="decode")
    np.testing.assert_array_equal(decoded, long_decoded[:, :5])
    np.testing.assert_array_equal(long_decoded[:, 5:], 0)
