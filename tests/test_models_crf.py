"""Linear-chain CRF against brute-force enumeration of every tag path."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdomain import models


def _score(em, trans, start, end, path):
  s = start[path[0]] + end[path[-1]] + sum(em[t, y] for t, y in enumerate(path))
  return s + sum(trans[a, b] for a, b in zip(path[:-1], path[1:]))


@pytest.fixture(name="problem")
def _problem():
  rng = np.random.default_rng(0)
  num_tags, max_length = 3, 4
  emissions = rng.normal(size=(5, max_length, num_tags))
  lengths = np.array([4, 3, 1, 0, 2], np.int32)
  tags = rng.integers(0, num_tags, size=(5, max_length)).astype(np.int32)
  trans, start, end = (rng.normal(size=s) for s in ((3, 3), (3,), (3,)))
  return emissions, lengths, tags, trans, start, end


def test_log_likelihood_and_partition_match_enumeration(problem):
  emissions, lengths, tags, trans, start, end = problem
  args = [jnp.asarray(a, jnp.float32) for a in (trans, start, end)]
  log_z = models.crf_log_partition(jnp.asarray(emissions, jnp.float32), lengths, *args)
  ll = models.crf_log_likelihood(jnp.asarray(emissions, jnp.float32), tags, lengths,
                                 *args)
  for b, n in enumerate(lengths):
    if n == 0:
      expected_z, expected_ll = 0.0, 0.0
    else:
      scores = [_score(emissions[b], trans, start, end, p)
                for p in itertools.product(range(3), repeat=n)]
      expected_z = np.log(np.sum(np.exp(scores)))
      expected_ll = _score(emissions[b], trans, start, end, tags[b, :n]) - expected_z
    np.testing.assert_allclose(log_z[b], expected_z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ll[b], expected_ll, rtol=1e-5, atol=1e-5)


def test_viterbi_matches_enumeration(problem):
  emissions, lengths, _, trans, start, end = problem
  decoded = models.crf_decode(jnp.asarray(emissions, jnp.float32), lengths,
                              *(jnp.asarray(a, jnp.float32) for a in (trans, start, end)))
  assert decoded.dtype == jnp.int32
  for b, n in enumerate(lengths):
    expected = np.zeros(emissions.shape[1], np.int32)
    if n:
      paths = list(itertools.product(range(3), repeat=n))
      expected[:n] = max(paths, key=lambda p: _score(emissions[b], trans, start, end, p))
    np.testing.assert_array_equal(decoded[b], expected)


def test_gradient_is_finite_with_empty_sequences(problem):
  emissions, lengths, tags, trans, _, _ = problem
  grad = jax.grad(lambda e, t: -models.crf_log_likelihood(e, tags, lengths, t).sum(),
                  argnums=(0, 1))(jnp.asarray(emissions, jnp.float32),
                                  jnp.asarray(trans, jnp.float32))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in grad)
  # Emissions past a sequence's length get no gradient.
  assert float(jnp.abs(grad[0][3]).sum()) == 0.0
  assert float(jnp.abs(grad[0][1, 3:]).sum()) == 0.0


def test_rejects_mismatched_transitions(problem):
  emissions, lengths, tags, _, _, _ = problem
  with pytest.raises(ValueError, match=r"transitions must be \[T, T\] = \(3, 3\)"):
    models.crf_log_likelihood(jnp.asarray(emissions), tags, lengths, jnp.zeros((4, 4)))
