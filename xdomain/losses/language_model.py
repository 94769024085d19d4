"""Language-model pretraining objective of a bidirectional recurrent encoder (ELMo style)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from xdomain.losses import _checks

Projection = Callable[[jax.Array], jax.Array]


def bidirectional_language_model(
    token_features: jax.Array,
    tokens: jax.Array,
    embedding: jax.Array,
    *,
    projections: tuple[Projection, Projection] | None = None,
    where: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  r"""Per-token next-token (forward) and previous-token (backward) cross-entropies, tied output.

  The encoder's features are `[forward | backward]` halves h^f, h^b of width H
  each; the output layer is the transposed input embedding E [V, E] (Press &
  Wolf 2017), after an optional projection per direction P^f, P^b ([..., H] ->
  [..., E]):

  .. math::
    \ell^f_{b,t} = -\log \mathrm{softmax}\left(P^f(h^f_{b,t}) E^\top\right)_{x_{b,t+1}},
    \qquad
    \ell^b_{b,t} = -\log \mathrm{softmax}\left(P^b(h^b_{b,t+1}) E^\top\right)_{x_{b,t}}

  for t = 0 .. L-2: the state at t predicts token t + 1 forward, the state at
  t + 1 predicts token t backward (as ELMo). The usual loss is the mean over
  the valid pairs, `sum(loss) / sum(where[:, :-1] & where[:, 1:])`, per
  direction.

  Args:
    token_features: [B, L, 2H] outputs of a bidirectional encoder, `[forward |
      backward]`.
    tokens: [B, L] integer token ids.
    embedding: [V, E] input embeddings (the tied output layer).
    projections: optional `(forward, backward)` functions [..., H] -> [..., E]
      (e.g. a Dense layer's apply); without them H must equal E.
    where: optional boolean [B, L] mask of the real tokens (e.g.
      `jnp.arange(L) < lengths[:, None]`); a pair counts when both its tokens
      are real.

  Returns:
    `(forward, backward)`: [B, L - 1] per-pair losses (float32 for f32/bf16
    inputs), 0 (with zero gradients) at pairs that are not both real.

  Raises:
    ValueError: for features that are not [B, L, 2H] with tokens [B, L], an
      embedding that is not [V, E], or (without projections) H != E.

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> features = jnp.zeros((1, 3, 4)); tokens = jnp.array([[0, 1, 2]])
    >>> forward, backward = losses.bidirectional_language_model(
    ...     features, tokens, jnp.ones((5, 2)), where=jnp.array([[True, True, False]]))
    >>> [round(v, 4) for v in forward[0].tolist()]  # uniform over 5 words: log 5, then padding
    [1.6094, 0.0]

  References:
    Peters et al., "Deep contextualized word representations", NAACL 2018.
    Press & Wolf, "Using the Output Embedding to Improve Language Models", EACL 2017.
  """
  token_features = jnp.asarray(token_features)
  tokens = jnp.asarray(tokens)
  embedding = jnp.asarray(embedding)
  if token_features.ndim != 3 or token_features.shape[:2] != tokens.shape:
    raise ValueError(
        f"token_features must have shape [B, L, 2H] matching tokens {tuple(tokens.shape)}, "
        f"got shape {tuple(token_features.shape)}.")
  _checks.check_ndim(embedding, 2, "embedding", "[V, E]")
  hidden = token_features.shape[-1] // 2
  if projections is None:
    if hidden != embedding.shape[1]:
      raise ValueError(
          f"without projections each direction's width H = {hidden} must equal the embedding "
          f"width E = {embedding.shape[1]}; pass projections=(forward, backward).")
    projections = (lambda h: h, lambda h: h)
  keep = _checks.mask(where, tokens.shape, "where")
  pairs = keep[:, :-1] & keep[:, 1:]
  if where is not None:  # Whatever padding holds reaches neither values nor gradients.
    token_features = jnp.where(keep[..., None], token_features, 0)
  forward, backward = projections

  def loss(states, targets):
    logits = _checks.as_float(states) @ _checks.as_float(embedding).T
    per_token = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return jnp.where(pairs, per_token, 0.0)

  return (loss(forward(token_features[:, :-1, :hidden]), tokens[:, 1:]),
          loss(backward(token_features[:, 1:, hidden:]), tokens[:, :-1]))
