"""Text and sequence models: TextCNN, RNN classifier, RNN(-CRF) tagger, row-RNN on images.

Text models take `(tokens int32 [B, L], lengths int32 [B])`, padding id 0,
lengths in [0, L]. Nothing at a position t >= length (appended padding or any
token there) changes an output, a pooled feature or a loss. All models are a
`backbone` (features) and a `head`:
`apply(variables, *inputs, train=..., return_features=False)`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from xdomain.models import cnn
from xdomain.models import crf as crf_lib
from xdomain.models import heads
from xdomain.models import inputs as inputs_lib
from xdomain.models import recurrent


def masked_mean(x, mask):
  """Mean of x [B, L, D] over the positions where mask [B, L]; 0 for empty rows."""
  weight = mask[..., None].astype(x.dtype)
  count = jnp.maximum(jnp.sum(weight, axis=1), 1.0)
  return jnp.sum(x * weight, axis=1) / count


def masked_max(x, mask):
  """Max of x [B, L, D] over the positions where mask [B, L]; 0 for empty rows."""
  lowest = jnp.finfo(x.dtype).min
  pooled = jnp.max(jnp.where(mask[..., None], x, lowest), axis=1)
  return jnp.where(jnp.any(mask, axis=1)[:, None], pooled, 0.0)


# pooling name -> f(outputs [B, L, D], final [B, D], mask [B, L]) -> [B, D]
POOLINGS = {
    "last": lambda outputs, final, mask: final,
    "mean": lambda outputs, final, mask: masked_mean(outputs, mask),
    "max": lambda outputs, final, mask: masked_max(outputs, mask),
}


def _check_choice(name: str, value: str, choices) -> None:
  if value not in choices:
    raise ValueError(f"{name} must be one of {sorted(choices)}; got {value!r}.")


def _conv_max_over_time(x, mask, width: int, num_filters: int, name: str):
  """ReLU convolution of width `width` over x, max-pooled over valid windows.

  Positions where mask is False must already be zero in x. The convolution is
  zero-padded by width - 1 on both sides (so sequences shorter than the width
  still have windows), and only windows that overlap a valid position enter
  the max; with none the result is 0.

  Args:
    x: float [N, L, E], zero where mask is False.
    mask: bool [N, L].
    width: convolution width.
    num_filters: output channels.
    name: name of the nn.Conv in the calling module.

  Returns:
    float [N, num_filters].
  """
  y = nn.relu(nn.Conv(num_filters, (width,), padding=[(width - 1, width - 1)],
                      name=name)(x))
  padded = jnp.pad(mask.astype(jnp.int32), ((0, 0), (width, width - 1)))
  cumulative = jnp.cumsum(padded, axis=1)
  # Window j covers positions j - width + 1 .. j of the unpadded sequence.
  in_window = cumulative[:, width:] - cumulative[:, :-width]
  return masked_max(y, in_window > 0)


class TextCNNBackbone(nn.Module):
  """Embeddings, parallel 1-D convolutions, max over time ignoring padding
  (then the optional SHOT `bottleneck`). Dropout sits in the head, on the
  pooled features (as Kim)."""
  vocab_size: int
  embed_dim: int = 128
  widths: Sequence[int] = (3, 4, 5)
  num_filters: int = 100
  bottleneck_size: int = 0

  @nn.compact
  def __call__(self, tokens, lengths, *, train: bool = False):
    mask = inputs_lib.sequence_mask(jnp.clip(lengths, 0, tokens.shape[1]),
                                    tokens.shape[1])
    x = nn.Embed(self.vocab_size, self.embed_dim, name="embed")(tokens)
    x = jnp.where(mask[..., None], x, 0.0)
    x = jnp.concatenate([
        _conv_max_over_time(x, mask, w, self.num_filters, name=f"conv_{w}")
        for w in self.widths], axis=-1)
    if self.bottleneck_size:
      x = cnn.bottleneck(x, self.bottleneck_size, None, train=train, domain_specific=False,
                         momentum=0.9)
    return x


class TextCNN(nn.Module):
  """Kim (2014) CNN sentence classifier.

  Features are the max-pooled filters, [B, len(widths) * num_filters].

  Attributes:
    vocab_size: size of the token vocabulary (id 0 is padding).
    num_classes: number of classes.
    embed_dim: embedding size.
    widths: convolution widths.
    num_filters: filters per width.
    dropout_rate: dropout on the features before the head.
    weight_norm_head: weight-normalise the classifier (SHOT's source model).
    bottleneck_size: > 0 adds SHOT's bottleneck (Dense + batch norm) to the
      backbone; its outputs are the features.

  References:
    Kim. Convolutional Neural Networks for Sentence Classification. EMNLP 2014.
  """
  vocab_size: int
  num_classes: int
  embed_dim: int = 128
  widths: Sequence[int] = (3, 4, 5)
  num_filters: int = 100
  dropout_rate: float = 0.5
  weight_norm_head: bool = False
  bottleneck_size: int = 0

  def setup(self):
    self.backbone = TextCNNBackbone(self.vocab_size, self.embed_dim,
                                    tuple(self.widths), self.num_filters, self.bottleneck_size)
    self.head = heads.ClassifierHead(self.num_classes, dropout_rate=self.dropout_rate,
                                     weight_norm=self.weight_norm_head)

  def features(self, tokens, lengths, *, train: bool = False):
    """Features [B, len(widths) * num_filters]."""
    inputs_lib.check_tokens(tokens, lengths)
    return self.backbone(tokens, lengths, train=train)

  def __call__(self, tokens, lengths, *, train: bool = False,
               return_features: bool = False):
    """Logits [B, num_classes], or (logits, features)."""
    features = self.features(tokens, lengths, train=train)
    logits = self.head(features, train=train)
    return (logits, features) if return_features else logits


class RNNBackbone(nn.Module):
  """Optional embeddings, then a (bi)LSTM/GRU encoder, then pooling.

  With `vocab_size` > 0 it reads token ids [B, L]; with 0 it reads float
  vectors [B, L, D] directly (rows of an image). `bottleneck_size` > 0 adds
  SHOT's bottleneck (`cnn.bottleneck`) after the pooling.
  """
  vocab_size: int = 0
  embed_dim: int = 128
  cell: str = "lstm"
  hidden_size: int = 128
  num_layers: int = 1
  bidirectional: bool = True
  pooling: str = "last"
  dropout_rate: float = 0.0
  bottleneck_size: int = 0

  def setup(self):
    _check_choice("cell", self.cell, recurrent.CELLS)
    _check_choice("pooling", self.pooling, POOLINGS)
    if self.vocab_size:
      self.embed = nn.Embed(self.vocab_size, self.embed_dim)
    self.encoder = recurrent.RNNEncoder(
        self.cell, self.hidden_size, self.num_layers, self.bidirectional,
        self.dropout_rate)
    self.dropout = nn.Dropout(self.dropout_rate)
    if self.bottleneck_size:
      self.bottleneck = nn.Dense(self.bottleneck_size)
      self.bottleneck_norm = nn.BatchNorm(momentum=0.9)

  def encode(self, inputs, lengths, *, train: bool = False):
    """Per-step outputs [B, L, D_out] (0 past each length), final state [B, D_out]."""
    x = self.embed(inputs) if self.vocab_size else inputs
    x = self.dropout(x, deterministic=not train)
    return self.encoder(x, lengths, train=train)

  def __call__(self, inputs, lengths, *, train: bool = False):
    """Pooled features [B, D_out], D_out = hidden_size * (2 if bidirectional else 1)."""
    outputs, final = self.encode(inputs, lengths, train=train)
    mask = inputs_lib.sequence_mask(jnp.clip(lengths, 0, inputs.shape[1]),
                                    inputs.shape[1])
    pooled = POOLINGS[self.pooling](outputs, final, mask)
    if self.bottleneck_size:
      pooled = self.bottleneck_norm(self.bottleneck(pooled), use_running_average=not train)
    return pooled


class RNNClassifier(nn.Module):
  """Sequence classifier: embeddings, (bi)LSTM/GRU, pooling, head.

  Pooling 'last' joins the forward state after the last valid token with the
  backward state after reading back to the first token; 'mean' and 'max' pool
  the per-token outputs over valid tokens (0 for length 0).

  Attributes:
    vocab_size: size of the token vocabulary (id 0 is padding).
    num_classes: number of classes.
    embed_dim: embedding size.
    cell: 'lstm' or 'gru'.
    hidden_size: units per direction.
    num_layers: stacked layers.
    bidirectional: add a backward direction.
    pooling: 'last', 'mean' or 'max'.
    dropout_rate: dropout on embeddings, between layers and before the head.
    head_hidden_sizes: hidden layers of the head.
    weight_norm_head: weight-normalise the classifier (SHOT's source model).
    bottleneck_size: > 0 adds SHOT's bottleneck (Dense + batch norm) to the
      backbone; its outputs are the features.
  """
  vocab_size: int
  num_classes: int
  embed_dim: int = 128
  cell: str = "lstm"
  hidden_size: int = 128
  num_layers: int = 1
  bidirectional: bool = True
  pooling: str = "last"
  dropout_rate: float = 0.0
  head_hidden_sizes: Sequence[int] = ()
  weight_norm_head: bool = False
  bottleneck_size: int = 0

  def setup(self):
    if self.vocab_size < 1:
      raise ValueError(f"vocab_size must be >= 1; got {self.vocab_size}.")
    self.backbone = RNNBackbone(
        self.vocab_size, self.embed_dim, self.cell, self.hidden_size,
        self.num_layers, self.bidirectional, self.pooling, self.dropout_rate,
        self.bottleneck_size)
    self.head = heads.ClassifierHead(
        self.num_classes, tuple(self.head_hidden_sizes), self.dropout_rate,
        weight_norm=self.weight_norm_head)

  def features(self, tokens, lengths, *, train: bool = False):
    """Pooled features [B, hidden_size * (2 if bidirectional else 1)]."""
    inputs_lib.check_tokens(tokens, lengths)
    return self.backbone(tokens, lengths, train=train)

  def token_features(self, tokens, lengths, *, train: bool = False):
    """Per-token encoder outputs [B, L, D_out], zero past each length.

    The last layer's `[forward | backward]` halves, e.g. for language-model
    pretraining (forward half predicts the next token, backward the previous).
    """
    inputs_lib.check_tokens(tokens, lengths)
    return self.backbone.encode(tokens, lengths, train=train)[0]

  def __call__(self, tokens, lengths, *, train: bool = False,
               return_features: bool = False):
    """Logits [B, num_classes], or (logits, features)."""
    features = self.features(tokens, lengths, train=train)
    logits = self.head(features, train=train)
    return (logits, features) if return_features else logits


class RowRNNClassifier(nn.Module):
  """Reads an image [B, H, W, C] row by row (H steps of W * C values) with a (bi)LSTM/GRU.

  Same call signature as the CNNs, so CNN and RNN compare on the same image pair.

  Attributes:
    num_classes: number of classes.
    cell: 'lstm' or 'gru'.
    hidden_size: units per direction.
    num_layers: stacked layers.
    bidirectional: add a backward direction (bottom row to top).
    pooling: 'last', 'mean' or 'max' over rows.
    dropout_rate: dropout on the rows, between layers and before the head.
    weight_norm_head: weight-normalise the classifier (SHOT's source model).
    bottleneck_size: > 0 adds SHOT's bottleneck (Dense + batch norm) to the
      backbone; its outputs are the features.
  """
  num_classes: int
  cell: str = "lstm"
  hidden_size: int = 128
  num_layers: int = 1
  bidirectional: bool = False
  pooling: str = "last"
  dropout_rate: float = 0.0
  weight_norm_head: bool = False
  bottleneck_size: int = 0

  def setup(self):
    self.backbone = RNNBackbone(
        0, 0, self.cell, self.hidden_size, self.num_layers, self.bidirectional,
        self.pooling, self.dropout_rate, self.bottleneck_size)
    self.head = heads.ClassifierHead(self.num_classes, dropout_rate=self.dropout_rate,
                                     weight_norm=self.weight_norm_head)

  def features(self, images, *, train: bool = False):
    """Features [B, hidden_size * (2 if bidirectional else 1)]."""
    inputs_lib.check_images(images)
    batch, height = images.shape[:2]
    rows = images.reshape(batch, height, -1)
    return self.backbone(rows, jnp.full((batch,), height, jnp.int32),
                         train=train)

  def __call__(self, images, *, train: bool = False,
               return_features: bool = False):
    """Logits [B, num_classes], or (logits, features)."""
    features = self.features(images, train=train)
    logits = self.head(features, train=train)
    return (logits, features) if return_features else logits


class CharCNN(nn.Module):
  """Character-level word features: char embeddings, one convolution, max over chars.

  Attributes:
    char_vocab_size: character vocabulary (id 0 is padding).
    embed_dim: character embedding size.
    num_filters: output features per word.
    width: convolution width.

  References:
    Ma, Hovy. End-to-end Sequence Labeling via Bi-directional LSTM-CNNs-CRF.
      ACL 2016.
  """
  char_vocab_size: int
  embed_dim: int = 30
  num_filters: int = 30
  width: int = 3

  @nn.compact
  def __call__(self, chars):
    """Maps chars int [B, L, W] (0 = padding) to word features [B, L, num_filters]."""
    batch, length, word = chars.shape
    mask = (chars != 0).reshape(batch * length, word)
    x = nn.Embed(self.char_vocab_size, self.embed_dim, name="embed")(chars)
    x = jnp.where(mask[..., None], x.reshape(batch * length, word, -1), 0.0)
    pooled = _conv_max_over_time(x, mask, self.width, self.num_filters, "conv")
    return pooled.reshape(batch, length, self.num_filters)


class TaggerBackbone(nn.Module):
  """Word embeddings (+ char CNN), dropout, (bi)LSTM/GRU: token features [B, L, D]."""
  vocab_size: int
  embed_dim: int = 100
  cell: str = "lstm"
  hidden_size: int = 128
  num_layers: int = 1
  bidirectional: bool = True
  dropout_rate: float = 0.5
  char_vocab_size: int = 0
  char_embed_dim: int = 30
  char_filters: int = 30
  char_width: int = 3

  @nn.compact
  def __call__(self, tokens, lengths, chars=None, *, train: bool = False):
    x = nn.Embed(self.vocab_size, self.embed_dim, name="embed")(tokens)
    if self.char_vocab_size:
      x = jnp.concatenate([x, CharCNN(
          self.char_vocab_size, self.char_embed_dim, self.char_filters,
          self.char_width, name="char_cnn")(chars)], axis=-1)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    outputs, _ = recurrent.RNNEncoder(
        self.cell, self.hidden_size, self.num_layers, self.bidirectional,
        self.dropout_rate, name="encoder")(x, lengths, train=train)
    return outputs


class TaggerHead(nn.Module):
  """Token features -> emissions [B, L, T] (0 past each length), plus an optional CRF.

  Parameters: `logits/kernel`, `logits/bias` and, with `use_crf`,
  `crf/transitions [T, T]`, `crf/start_transitions [T]`, `crf/end_transitions [T]`.
  """
  num_tags: int
  use_crf: bool = False
  dropout_rate: float = 0.5

  def setup(self):
    self.dropout = nn.Dropout(self.dropout_rate)
    self.logits = nn.Dense(self.num_tags)
    if self.use_crf:
      self.crf = crf_lib.CRF(self.num_tags)

  def __call__(self, features, lengths, *, train: bool = False):
    x = self.dropout(features, deterministic=not train)
    mask = inputs_lib.sequence_mask(jnp.clip(lengths, 0, x.shape[1]), x.shape[1])
    emissions = jnp.where(mask[..., None], self.logits(x), 0.0)
    if self.use_crf and self.is_initializing():
      self.crf(emissions, lengths)  # creates the CRF parameters
    return emissions

  def nll(self, emissions, tags, lengths):
    """Negative log-likelihood [B] of each tag sequence (see RNNTagger)."""
    if self.use_crf:
      return -self.crf.log_likelihood(emissions, tags, lengths)
    mask = inputs_lib.sequence_mask(jnp.clip(lengths, 0, tags.shape[1]),
                                    tags.shape[1])
    log_probs = jax.nn.log_softmax(emissions, axis=-1)
    gold = jnp.take_along_axis(log_probs, jnp.where(mask, tags, 0)[..., None],
                               axis=-1)[..., 0]
    return -jnp.sum(jnp.where(mask, gold, 0.0), axis=1)

  def decode(self, emissions, lengths):
    """Best tags int32 [B, L] (Viterbi with the CRF, else argmax), 0 past each length."""
    if self.use_crf:
      return self.crf.decode(emissions, lengths)
    mask = inputs_lib.sequence_mask(jnp.clip(lengths, 0, emissions.shape[1]),
                                    emissions.shape[1])
    return jnp.where(mask, jnp.argmax(emissions, axis=-1), 0).astype(jnp.int32)


class RNNTagger(nn.Module):
  """Sequence tagger: (bi)LSTM/GRU token features, per-token logits, optional CRF.

  Inputs are `(tokens, lengths)`, or `(tokens, lengths, chars)` with
  `char_vocab_size > 0`, chars int32 [B, L, W] holding each word's character
  ids (0 = padding). Calls, all through `apply(variables, ..., method=...)`:

  - `__call__(tokens, lengths, chars=None, *, train, return_features)`:
    emissions (per-token logits) [B, L, num_tags], 0 past each length; with
    `return_features` also token features [B, L, D], 0 past each length.
  - `negative_log_likelihood(tokens, lengths, tags, chars=None, *, train)`:
    float [B], summed over each sequence's tokens: the CRF's -log p(tags) with
    `use_crf`, else the sum of per-token softmax cross-entropies.
  - `nll_from_emissions(emissions, tags, lengths)`: the same from emissions
    already computed (no second forward pass): with `return_features=True`
    get `(emissions, features)` once, then call this.
  - `decode(tokens, lengths, chars=None)` / `decode_emissions(emissions,
    lengths)`: int32 [B, L] tags (Viterbi with the CRF, else argmax), 0 past
    each length; no dropout.

  The CRF parameters are `params['head']['crf']` with `transitions [T, T]`
  (from tag i to tag j at [i, j]), `start_transitions [T]`,
  `end_transitions [T]`, usable with `xdomain.models.crf_log_likelihood` and
  `crf_decode` directly.

  Attributes:
    vocab_size: size of the token vocabulary (id 0 is padding).
    num_tags: number of tags.
    embed_dim: word embedding size.
    cell: 'lstm' or 'gru'.
    hidden_size: units per direction.
    num_layers: stacked layers.
    bidirectional: add a backward direction.
    dropout_rate: dropout on the word representations, between layers and
      on the token features before the head (0.5 as Lample et al.).
    use_crf: add a linear-chain CRF on the emissions.
    char_vocab_size: > 0 adds the character CNN (then `chars` is required).
    char_embed_dim: character embedding size.
    char_filters: character-CNN features per word.
    char_width: character-CNN width.

  References:
    Lample et al. Neural Architectures for Named Entity Recognition. NAACL 2016.
    Ma, Hovy. End-to-end Sequence Labeling via Bi-directional LSTM-CNNs-CRF.
      ACL 2016.
  """
  vocab_size: int
  num_tags: int
  embed_dim: int = 100
  cell: str = "lstm"
  hidden_size: int = 128
  num_layers: int = 1
  bidirectional: bool = True
  dropout_rate: float = 0.5
  use_crf: bool = False
  char_vocab_size: int = 0
  char_embed_dim: int = 30
  char_filters: int = 30
  char_width: int = 3

  def setup(self):
    _check_choice("cell", self.cell, recurrent.CELLS)
    self.backbone = TaggerBackbone(
        self.vocab_size, self.embed_dim, self.cell, self.hidden_size,
        self.num_layers, self.bidirectional, self.dropout_rate,
        self.char_vocab_size, self.char_embed_dim, self.char_filters,
        self.char_width)
    self.head = TaggerHead(self.num_tags, self.use_crf, self.dropout_rate)

  def _check_chars(self, tokens, chars):
    if not self.char_vocab_size:
      if chars is not None:
        raise ValueError("chars given but char_vocab_size is 0 (no character CNN).")
      return
    if getattr(chars, "ndim", None) != 3 or chars.shape[:2] != tokens.shape:
      raise ValueError(
          f"chars must be an int array [B, L, W] with [B, L] = {tokens.shape} "
          f"when char_vocab_size > 0; got shape {getattr(chars, 'shape', None)}.")
    if not jnp.issubdtype(chars.dtype, jnp.integer):
      raise ValueError(f"chars must be integer ids; got dtype {chars.dtype}.")

  def features(self, tokens, lengths, chars=None, *, train: bool = False):
    """Token features [B, L, hidden_size * (2 if bidirectional else 1)], 0 past lengths."""
    inputs_lib.check_tokens(tokens, lengths)
    self._check_chars(tokens, chars)
    return self.backbone(tokens, lengths, chars, train=train)

  def __call__(self, tokens, lengths, chars=None, *, train: bool = False,
               return_features: bool = False):
    """Emissions [B, L, num_tags], or (emissions, token features)."""
    features = self.features(tokens, lengths, chars, train=train)
    emissions = self.head(features, lengths, train=train)
    return (emissions, features) if return_features else emissions

  def _check_tags(self, tags, expected_shape):
    if getattr(tags, "shape", None) != tuple(expected_shape):
      raise ValueError(
          f"tags must be an int array [B, L] = {tuple(expected_shape)}; got "
          f"shape {getattr(tags, 'shape', None)}.")

  def nll_from_emissions(self, emissions, tags, lengths):
    """Negative log-likelihood float [B] of tags [B, L] given emissions [B, L, T]."""
    self._check_tags(tags, emissions.shape[:2])
    return self.head.nll(emissions, tags, lengths)

  def negative_log_likelihood(self, tokens, lengths, tags, chars=None, *,
                              train: bool = False):
    """Negative log-likelihood float [B] of tags [B, L] (see the class docstring)."""
    self._check_tags(tags, tokens.shape)
    emissions = self(tokens, lengths, chars, train=train)
    return self.head.nll(emissions, tags, lengths)

  def decode_emissions(self, emissions, lengths):
    """Best tags int32 [B, L] for emissions [B, L, T], 0 past each length."""
    return self.head.decode(emissions, lengths)

  def decode(self, tokens, lengths, chars=None):
    """Best tags int32 [B, L] for the inputs (no dropout), 0 past each length."""
    return self.head.decode(self(tokens, lengths, chars, train=False), lengths)
