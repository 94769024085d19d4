"""Pretraining a text backbone on both domains' unlabelled text: a language
model (`--method=lm_pretrain`) or skip-gram word vectors (`--method=skipgram`).

`--method=lm_pretrain` trains the (bi)LSTM/GRU backbone of `--model=bilstm`
or `bigru` to predict, at every real token of the source and target training
text (labels unused), the next token from the forward states and the previous
token from the backward states (as ELMo does), with a softmax over the whole
vocabulary. The output layer is tied to the input embeddings (Press & Wolf
2017): `logits = proj(h) @ E^T`, with one projection per direction as the
method's own parameters; the source task loss is switched off.

`--method=skipgram` trains only the word embeddings, as word2vec's skip-gram
with negative sampling: each real word predicts the words within
`--skipgram_window` of it against `--skipgram_negatives` noise words per pair,
drawn from the batch's own words (so by unigram frequency; word2vec raises it
to the power 0.75), with output vectors of the method's own. Words the source
never has get vectors from the contexts they share with it, which a
classifier trained on the source cannot give them.

Either checkpoint then feeds `--init_from` (`--restore='backbone/.*'`:
embeddings and encoder; `'backbone/embed/.*'`: the word vectors) of a
fine-tuning run with any method on the same `--source`/`--target` and
vocabulary flags, so that token ids agree.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from xdomain import losses
from xdomain import models
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.data import domains
from xdomain.data import text
from xdomain.methods import base
from xdomain.models import inputs as inputs_lib

# The models each pretraining method can pretrain.
PRETRAINED_MODELS = {"lm_pretrain": ("bilstm", "bigru"),
                     "skipgram": ("bilstm", "bigru", "textcnn")}


def general_text_domains(config: Config) -> tuple[str, ...]:
  """The domains named by --general_text, in order (none when it is empty)."""
  return tuple(name.strip() for name in config.general_text.split(",") if name.strip())


def validate_config(config: Config, task: str) -> None:
  """Raises `ConfigError` unless the run has a text classifier the method pretrains
  and --general_text names text domains."""
  if config.general_text and not general_text_domains(config):
    raise ConfigError(
        f"--general_text={config.general_text!r} names no domain: name text domains,"
        " e.g. brown/news,brown/fiction, or leave it empty.")
  for name in general_text_domains(config):
    try:
      modality = domains.domain_info(name).modality
    except ValueError as e:
      raise ConfigError(
          f"--general_text names {name!r}, which is not a known domain: {e}. Name text"
          " domains, e.g. brown/news,brown/fiction.") from e
    if modality != "text":
      raise ConfigError(
          f"--general_text names {name!r}, an {modality} domain; name text domains,"
          " e.g. brown/news,brown/fiction.")
  models_of = PRETRAINED_MODELS[config.method]
  if config.model not in models_of:
    raise ConfigError(
        f"--method={config.method} pretrains a text backbone: use --model= one of"
        f" {', '.join(models_of)}, not {config.model}.")
  if task != "text_classification":
    raise ConfigError(
        f"--method={config.method} reads sentence classification domains; {config.source} is"
        f" a {task} domain.")


def make_lm_pretrain(config: Config) -> base.Method:
  """Forward and backward language modelling on the text of both domains."""
  projection = nn.Dense(config.embed_size)

  def init_aux(rng, feature_dim, num_classes):
    del num_classes
    forward_rng, backward_rng = jax.random.split(rng)
    sample = jnp.zeros((1, feature_dim // 2))
    return {"forward": projection.init(forward_rng, sample)["params"],
            "backward": projection.init(backward_rng, sample)["params"]}

  def model_terms(model, variables, inputs, aux_params, rng):
    tokens, lengths = inputs[0], inputs[1]
    features = model.apply(variables, tokens, lengths, train=True, rngs={"dropout": rng},
                           method=models.RNNClassifier.token_features)
    embedding = variables["params"]["backbone"]["embed"]["embedding"]
    forward, backward = (
        lambda h, d=direction: projection.apply({"params": aux_params[d]}, h)
        for direction in ("forward", "backward"))
    real = jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]
    forward_loss, backward_loss = (
        base.masked_mean(per_pair, real[:, :-1] & real[:, 1:])
        for per_pair in losses.bidirectional_language_model(
            features, tokens, embedding, projections=(forward, backward), where=real))
    return {"lm_forward": forward_loss, "lm_backward": backward_loss}

  return base.Method(name="lm_pretrain", model_terms=model_terms, init_aux=init_aux,
                     weights={"lm_forward": 1.0, "lm_backward": 1.0}, task_weight=0.0,
                     reads_outputs=False)


# fold_in data of the noise words' key: the key that model_terms receives also
# draws the model's dropout.
NOISE_STREAM = 1


def _words(tokens: jax.Array, lengths: jax.Array) -> jax.Array:
  """bool [B, L]: the real words of tokens [B, L] (within the length, not <unk>)."""
  return inputs_lib.sequence_mask(lengths, tokens.shape[1]) & (tokens != text.UNK_ID)


def skipgram_pairs(tokens: jax.Array, lengths: jax.Array, window: int
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(centre ids, context ids, valid) [n] of every ordered pair of positions at
  most `window` apart in each row of tokens [B, L]; a pair is valid when both
  are real words (within the row's length, not <unk>)."""
  real = _words(tokens, lengths)
  centres, contexts, valid = [], [], []
  for offset in range(1, min(window, tokens.shape[1] - 1) + 1):
    both = (real[:, :-offset] & real[:, offset:]).reshape(-1)
    before, after = tokens[:, :-offset].reshape(-1), tokens[:, offset:].reshape(-1)
    centres += [before, after]
    contexts += [after, before]
    valid += [both, both]
  return jnp.concatenate(centres), jnp.concatenate(contexts), jnp.concatenate(valid)


def skipgram_noise(rng: jax.Array, tokens: jax.Array, lengths: jax.Array,
                   shape: tuple[int, ...]) -> jax.Array:
  """Noise word ids of `shape`, each a uniformly drawn real word (within its
  row's length, not <unk>) of tokens [B, L]: words by their frequency in the batch."""
  # The k-th real word sits at the first position where `seen` exceeds k.
  seen = jnp.cumsum(_words(tokens, lengths).reshape(-1))
  draws = jax.random.randint(rng, shape, 0, jnp.maximum(seen[-1], 1))
  return tokens.reshape(-1)[jnp.searchsorted(seen, draws, side="right")]


def make_skipgram(config: Config) -> base.Method:
  """Skip-gram with negative sampling on the text of both domains."""

  def init_aux(rng, feature_dim, num_classes):
    del rng, feature_dim, num_classes
    # word2vec's output vectors start at zero; ids are below --vocab_size.
    return {"context": jnp.zeros((config.vocab_size, config.embed_size))}

  def model_terms(model, variables, inputs, aux_params, rng):
    del model
    tokens, lengths = inputs[0], inputs[1]
    centres, contexts, valid = skipgram_pairs(tokens, lengths, config.skipgram_window)
    noise = skipgram_noise(jax.random.fold_in(rng, NOISE_STREAM), tokens, lengths,
                           (centres.shape[0], config.skipgram_negatives))
    embedding = variables["params"]["backbone"]["embed"]["embedding"]
    output = aux_params["context"]
    per_pair = losses.skipgram_negative_sampling(
        embedding[centres], output[contexts], output[noise], where=valid)
    return {"skipgram": base.masked_mean(per_pair, valid)}

  return base.Method(name="skipgram", model_terms=model_terms, init_aux=init_aux,
                     weights={"skipgram": 1.0}, task_weight=0.0,
                     reads_outputs=False)
