"""Tests of xdomain.losses.information: SHOT's information maximisation and centroid labels."""

import jax
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.spatial.distance import cdist

from xdomain import losses


def logits(seed, *shape):
  return (2 * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def np_softmax(z):
  p = np.exp(z - z.max(-1, keepdims=True))
  return p / p.sum(-1, keepdims=True)


def np_information_maximization(z):
  p = np_softmax(z.astype(np.float64))
  mean = p.mean(0)
  return -(p * np.log(p)).sum(1).mean() + (mean * np.log(mean)).sum()


def np_shot_labels(features, probabilities):
  """SHOT's `obtain_label` (image_target.py), distance='cosine', threshold=0."""
  f = np.concatenate([features, np.ones((len(features), 1))], 1).astype(np.float64)
  f = (f.T / np.linalg.norm(f, axis=1)).T
  k = probabilities.shape[1]
  aff = probabilities.astype(np.float64)
  initc = aff.T.dot(f) / (1e-8 + aff.sum(0)[:, None])
  labelset = np.where(np.eye(k)[aff.argmax(1)].sum(0) > 0)[0]
  pred = labelset[cdist(f, initc[labelset], "cosine").argmin(1)]
  aff = np.eye(k)[pred]
  initc = aff.T.dot(f) / (1e-8 + aff.sum(0)[:, None])
  return labelset[cdist(f, initc[labelset], "cosine").argmin(1)]


def test_information_maximization_matches_numpy():
  z = logits(0, 16, 5)
  np.testing.assert_allclose(jax.jit(losses.information_maximization)(z),
                             np_information_maximization(z), rtol=1e-5)


def test_information_maximization_gradients_and_mask():
  z = logits(1, 6, 4)
  check_grads(jax.jit(losses.information_maximization), (z,), order=1, modes=("rev",),
              atol=1e-2, rtol=1e-2)
  where = np.array([1, 0, 1, 1, 0, 1], bool)
  bad = np.where(where[:, None], z, np.nan).astype(np.float32)
  value, grad = jax.jit(jax.value_and_grad(
      lambda a: losses.information_maximization(a, where=where)))(bad)
  np.testing.assert_allclose(value, np_information_maximization(z[where]), rtol=1e-5)
  assert np.all(np.isfinite(grad)) and np.all(grad[~where] == 0)
  value, grad = jax.jit(jax.value_and_grad(
      lambda a: losses.information_maximization(a, where=np.zeros(6, bool))))(z)
  assert value == 0 and np.all(grad == 0)


def test_centroid_pseudo_labels_match_shot():
  rng = np.random.default_rng(2)
  centres = 3 * rng.normal(size=(4, 8))
  truth = rng.integers(0, 4, 64)
  features = (centres[truth] + rng.normal(size=(64, 8))).astype(np.float32)
  # Noisy predictions that never name class 3: it must not be a candidate.
  probabilities = np_softmax(2 * np.eye(4)[truth] + rng.normal(size=(64, 4))
                             - 9 * np.eye(4)[3]).astype(np.float32)
  got = jax.jit(losses.centroid_pseudo_labels)(features, probabilities)
  expected = np_shot_labels(features, probabilities)
  np.testing.assert_array_equal(got, expected)
  assert 3 not in set(np.asarray(got).tolist())


def test_centroid_pseudo_labels_mask_equals_subset():
  rng = np.random.default_rng(3)
  features = rng.normal(size=(20, 6)).astype(np.float32)
  probabilities = np_softmax(2 * rng.normal(size=(20, 3))).astype(np.float32)
  where = rng.random(20) < 0.6
  bad = np.where(where[:, None], features, 1e6).astype(np.float32)
  got = jax.jit(losses.centroid_pseudo_labels)(bad, probabilities, where=where)
  np.testing.assert_array_equal(np.asarray(got)[where],
                                np_shot_labels(features[where], probabilities[where]))


def test_bad_shapes_are_named():
  with pytest.raises(ValueError, match="same n"):
    losses.centroid_pseudo_labels(np.zeros((3, 2)), np.zeros((4, 2)))
