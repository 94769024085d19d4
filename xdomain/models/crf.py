"""Linear-chain CRF: log-likelihood by the forward algorithm, Viterbi decoding.

A tag path y_0..y_{n-1} of a sequence of length n scores

  s(y) = start[y_0] + sum_t emissions[t, y_t]
         + sum_{t>=1} transitions[y_{t-1}, y_t] + end[y_{n-1}],

and p(y) = exp(s(y)) / Z with Z summed over all T^n paths. Positions t >= n
are ignored. A sequence of length 0 has the empty path only: log-likelihood 0,
decoded tags all 0.

References:
  Lafferty, McCallum, Pereira. Conditional Random Fields. ICML 2001.
  Lample et al. Neural Architectures for Named Entity Recognition. NAACL 2016.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from xdomain.models import inputs as inputs_lib


def _check(emissions, lengths, transitions, start_transitions, end_transitions,
           tags=None):
  """Validates shapes; returns (start, end) with zeros where None was given."""
  if getattr(emissions, "ndim", None) != 3:
    raise ValueError(
        f"emissions must be [B, L, T]; got shape {getattr(emissions, 'shape', None)}.")
  batch, max_length, num_tags = emissions.shape
  if max_length < 1 or num_tags < 1:
    raise ValueError(
        f"emissions must have L >= 1 and T >= 1; got shape {emissions.shape}.")
  if getattr(lengths, "shape", None) != (batch,):
    raise ValueError(
        f"lengths must be [B] = ({batch},); got shape {getattr(lengths, 'shape', None)}.")
  if getattr(transitions, "shape", None) != (num_tags, num_tags):
    raise ValueError(
        f"transitions must be [T, T] = ({num_tags}, {num_tags}); got shape "
        f"{getattr(transitions, 'shape', None)}.")
  if tags is not None and getattr(tags, "shape", None) != (batch, max_length):
    raise ValueError(
        f"tags must be [B, L] = ({batch}, {max_length}); got shape "
        f"{getattr(tags, 'shape', None)}.")
  zeros = jnp.zeros((num_tags,), emissions.dtype)
  start = zeros if start_transitions is None else start_transitions
  end = zeros if end_transitions is None else end_transitions
  for name, value in (("start_transitions", start), ("end_transitions", end)):
    if value.shape != (num_tags,):
      raise ValueError(
          f"{name} must be [T] = ({num_tags},); got shape {value.shape}.")
  return start, end


def crf_log_partition(emissions, lengths, transitions, start_transitions=None,
                      end_transitions=None):
  """Log of the partition function Z by the forward algorithm.

  Args:
    emissions: float [B, L, T], per-token tag scores.
    lengths: int [B], valid tokens per sequence (clipped to [0, L]).
    transitions: float [T, T], score of tag i followed by tag j at [i, j].
    start_transitions: optional float [T], score of the first tag.
    end_transitions: optional float [T], score of the last tag.

  Returns:
    float [B], log Z (0 for length 0).
  """
  start, end = _check(emissions, lengths, transitions, start_transitions,
                      end_transitions)
  max_length = emissions.shape[1]
  lengths = jnp.clip(lengths, 0, max_length)

  def step(alpha, xs):
    emission, t = xs  # [B, T], scalar
    scores = alpha[:, :, None] + transitions[None] + emission[:, None, :]
    new_alpha = jax.nn.logsumexp(scores, axis=1)
    return jnp.where((t < lengths)[:, None], new_alpha, alpha), None

  alpha0 = start[None] + emissions[:, 0]
  alpha, _ = jax.lax.scan(
      step, alpha0,
      (jnp.swapaxes(emissions[:, 1:], 0, 1), jnp.arange(1, max_length)))
  log_z = jax.nn.logsumexp(alpha + end[None], axis=-1)
  return jnp.where(lengths > 0, log_z, 0.0)


def crf_sequence_score(emissions, tags, lengths, transitions,
                       start_transitions=None, end_transitions=None):
  """Score s(y) of the given tag paths (see the module docstring).

  Args:
    emissions: float [B, L, T].
    tags: int [B, L]; positions t >= length are ignored.
    lengths: int [B].
    transitions: float [T, T].
    start_transitions: optional float [T].
    end_transitions: optional float [T].

  Returns:
    float [B] (0 for length 0).
  """
  start, end = _check(emissions, lengths, transitions, start_transitions,
                      end_transitions, tags)
  max_length = emissions.shape[1]
  lengths = jnp.clip(lengths, 0, max_length)
  mask = inputs_lib.sequence_mask(lengths, max_length)
  tags = jnp.where(mask, tags, 0)
  emitted = jnp.take_along_axis(emissions, tags[..., None], axis=-1)[..., 0]
  score = jnp.sum(jnp.where(mask, emitted, 0.0), axis=1)
  moves = transitions[tags[:, :-1], tags[:, 1:]]
  score += jnp.sum(jnp.where(mask[:, 1:], moves, 0.0), axis=1)
  last = jnp.take_along_axis(tags, jnp.maximum(lengths - 1, 0)[:, None], 1)[:, 0]
  score += start[tags[:, 0]] + end[last]
  return jnp.where(lengths > 0, score, 0.0)


def crf_log_likelihood(emissions, tags, lengths, transitions,
                       start_transitions=None, end_transitions=None):
  """Log-likelihood log p(tags | emissions) of each sequence.

  Args:
    emissions: float [B, L, T], per-token tag scores (the tagger's logits).
    tags: int [B, L], gold tags; positions t >= length are ignored.
    lengths: int [B], valid tokens (clipped to [0, L]).
    transitions: float [T, T], score of tag i followed by tag j at [i, j].
    start_transitions: optional float [T].
    end_transitions: optional float [T].

  Returns:
    float [B], s(tags) - log Z (<= 0; 0 for length 0). Negate for the loss.
  """
  return (crf_sequence_score(emissions, tags, lengths, transitions,
                             start_transitions, end_transitions)
          - crf_log_partition(emissions, lengths, transitions,
                              start_transitions, end_transitions))


def crf_decode(emissions, lengths, transitions, start_transitions=None,
               end_transitions=None):
  """Viterbi decoding: the highest-scoring tag path of each sequence.

  Args:
    emissions: float [B, L, T].
    lengths: int [B].
    transitions: float [T, T].
    start_transitions: optional float [T].
    end_transitions: optional float [T].

  Returns:
    int32 [B, L], the best path, 0 at positions t >= length.
  """
  start, end = _check(emissions, lengths, transitions, start_transitions,
                      end_transitions)
  batch, max_length, num_tags = emissions.shape
  lengths = jnp.clip(lengths, 0, max_length)
  identity = jnp.broadcast_to(jnp.arange(num_tags), (batch, num_tags))

  def forward(score, xs):
    emission, t = xs
    candidates = score[:, :, None] + transitions[None]  # [B, from, to]
    best_prev = jnp.argmax(candidates, axis=1)
    new_score = jnp.max(candidates, axis=1) + emission
    valid = (t < lengths)[:, None]
    # Past the end the path stays on its tag, so backtracking passes through.
    return (jnp.where(valid, new_score, score),
            jnp.where(valid, best_prev, identity))

  score0 = start[None] + emissions[:, 0]
  score, backpointers = jax.lax.scan(
      forward, score0,
      (jnp.swapaxes(emissions[:, 1:], 0, 1), jnp.arange(1, max_length)))
  last = jnp.argmax(score + end[None], axis=-1)

  def backward(tag, pointers):
    previous = jnp.take_along_axis(pointers, tag[:, None], axis=1)[:, 0]
    return previous, previous

  _, earlier = jax.lax.scan(backward, last, backpointers, reverse=True)
  path = jnp.concatenate([jnp.swapaxes(earlier, 0, 1), last[:, None]], axis=1)
  mask = inputs_lib.sequence_mask(lengths, max_length)
  return jnp.where(mask, path, 0).astype(jnp.int32)


class CRF(nn.Module):
  """CRF layer with `transitions [T, T]`, `start_transitions`, `end_transitions [T]`.

  All three start at zero (the CRF then equals independent per-token softmax).

  Attributes:
    num_tags: T.
  """
  num_tags: int

  def setup(self):
    zeros = nn.initializers.zeros
    self.transitions = self.param("transitions", zeros, (self.num_tags,) * 2)
    self.start_transitions = self.param("start_transitions", zeros, (self.num_tags,))
    self.end_transitions = self.param("end_transitions", zeros, (self.num_tags,))

  def log_likelihood(self, emissions, tags, lengths):
    """`crf_log_likelihood` with this layer's parameters: float [B]."""
    return crf_log_likelihood(emissions, tags, lengths, self.transitions,
                              self.start_transitions, self.end_transitions)

  def decode(self, emissions, lengths):
    """`crf_decode` with this layer's parameters: int32 [B, L]."""
    return crf_decode(emissions, lengths, self.transitions,
                      self.start_transitions, self.end_transitions)

  def __call__(self, emissions, lengths):
    """Same as `decode` (so that `init` creates the parameters)."""
    return self.decode(emissions, lengths)
