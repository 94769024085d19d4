"""Language-model pretraining of a recurrent text backbone on both domains' text.

`--method=lm_pretrain` trains the (bi)LSTM/GRU backbone of `--model=bilstm`
or `bigru` to predict, at every real token of the source and target training
text (labels unused), the next token from the forward states and the previous
token from the backward states (as ELMo does), with a softmax over the whole
vocabulary. The output layer is tied to the input embeddings (Press & Wolf
2017): `logits = proj(h) @ E^T`, with one projection per direction as the
method's own parameters; the source task loss is switched off.

Its checkpoint then feeds `--init_from` (default `--restore='backbone/.*'`:
embeddings and encoder) of a fine-tuning run with any method on the same
`--source`/`--target` and vocabulary flags, so that token ids agree.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from xdomain import losses
from xdomain import models
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.methods import base

LM_MODELS = ("bilstm", "bigru")


def validate_config(config: Config, task: str) -> None:
  """Raises `ConfigError` unless the run has a recurrent text classifier."""
  if config.model not in LM_MODELS:
    raise ConfigError(
        f"--method=lm_pretrain pretrains a recurrent text backbone: use --model= one of"
        f" {', '.join(LM_MODELS)}, not {config.model}.")
  if task != "text_classification":
    raise ConfigError(
        f"--method=lm_pretrain reads sentence classification domains; {config.source} is"
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
                     weights={"lm_forward": 1.0, "lm_backward": 1.0}, task_weight=0.0)
