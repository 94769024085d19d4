"""Pretraining objectives on unlabelled text: a bidirectional language model (ELMo style)
and skip-gram word vectors (word2vec)."""

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


def skipgram_negative_sampling(
    center: jax.Array,
    context: jax.Array,
    negatives: jax.Array,
    *,
    where: jax.Array | None = None,
) -> jax.Array:
  r"""Per-pair skip-gram loss with negative sampling (word2vec's SGNS).

  For a centre word's input vector c, the output vector o of a word seen in its
  context, and output vectors n_1 .. n_K of K words drawn as noise:

  .. math::
    \ell = -\log \sigma(c^\top o) - \sum_{k=1}^{K} \log \sigma(-c^\top n_k)

  Args:
    center: [n, E] input vectors of the centre words.
    context: [n, E] output vectors of their context words.
    negatives: [n, K, E] output vectors of the noise words of each pair.
    where: optional boolean [n]; masked pairs get 0 (and no gradient).

  Returns:
    float32 [n], the loss of each pair; the usual loss is their mean over the
    valid pairs.

  Example:
    >>> import jax.numpy as jnp
    >>> from xdomain import losses
    >>> c, o = jnp.array([[2.0, 0.0]]), jnp.array([[2.0, 0.0]])
    >>> noise = jnp.array([[[-2.0, 0.0]]])  # already far: little loss
    >>> round(float(losses.skipgram_negative_sampling(c, o, noise)[0]), 4)
    0.0363

  References:
    Mikolov et al., "Distributed Representations of Words and Phrases and their
    Compositionality", NeurIPS 2013.
  """
  center, context, negatives = (_checks.as_float(x) for x in (center, context, negatives))
  _checks.check_ndim(center, 2, "center", "[n, E]")
  _checks.check_ndim(negatives, 3, "negatives", "[n, K, E]")
  if context.shape != center.shape or negatives.shape[::2] != center.shape:
    raise ValueError(
        "center [n, E], context [n, E] and negatives [n, K, E] must agree; got shapes"
        f" {tuple(center.shape)}, {tuple(context.shape)} and {tuple(negatives.shape)}.")
  keep = _checks.mask(where, center.shape[:1], "where")
  # Zeroed first, so that what masked rows hold reaches no gradient.
  center, context = (jnp.where(keep[:, None], x, 0.0) for x in (center, context))
  negatives = jnp.where(keep[:, None, None], negatives, 0.0)
  positive = jnp.sum(center * context, axis=-1)
  noise = jnp.einsum("ne,nke->nk", center, negatives)
  loss = -jax.nn.log_sigmoid(positive) - jnp.sum(jax.nn.log_sigmoid(-noise), axis=-1)
  return jnp.where(keep, loss, 0.0)
