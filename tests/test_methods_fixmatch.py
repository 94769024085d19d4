"""Tests of xdomain.methods.fixmatch: the views and the term against numpy."""

import jax
import jax.numpy as jnp
import numpy as np

from xdomain.config import Config
from xdomain.methods import METHODS
from xdomain.methods import Outputs
from xdomain.methods import fixmatch
from xdomain.tasks import ImageClassification


def np_fixmatch(weak, strong, tau):
  pw = np.exp(weak - weak.max(1, keepdims=True))
  pw /= pw.sum(1, keepdims=True)
  log_ps = strong - strong.max(1, keepdims=True)
  log_ps = log_ps - np.log(np.exp(log_ps).sum(1, keepdims=True))
  kept = pw.max(1) >= tau
  ce = -log_ps[np.arange(len(weak)), weak.argmax(1)]
  return np.sum(ce * kept) / len(weak), kept.mean()


def outputs(target_logits):
  return Outputs(source_logits=jnp.zeros((2, 3)), source_features=jnp.zeros((2, 4)),
                 source_labels=jnp.zeros(2, jnp.int32), source_mask=None,
                 target_logits=target_logits, target_features=jnp.zeros((8, 4)))


def test_term_matches_numpy_and_trains_only_the_strong_view():
  rng = np.random.default_rng(0)
  weak = (4 * rng.normal(size=(4, 3))).astype(np.float32)
  strong = rng.normal(size=(4, 3)).astype(np.float32)
  method = METHODS["fixmatch"](Config(method="fixmatch", confidence_threshold=0.9))
  assert method.weights["fixmatch_kept"] == 0.0

  def term(logits):
    values = method.terms(outputs(logits), {}, jax.random.key(0), 0)
    return values["fixmatch"], values["fixmatch_kept"]

  (loss, kept), grad = jax.jit(jax.value_and_grad(term, has_aux=True))(
      np.concatenate([weak, strong]))
  expected, expected_kept = np_fixmatch(weak, strong, 0.9)
  assert 0 < expected_kept < 1  # the tiny batch has both kinds
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(kept, expected_kept)
  assert np.all(grad[:4] == 0) and np.any(grad[4:] != 0)
  # Unset means FixMatch's own threshold; 0 keeps every example, as for every method.
  for threshold, tau in ((None, 0.95), (0.0, 0.0)):
    method = METHODS["fixmatch"](Config(method="fixmatch", confidence_threshold=threshold))
    values = method.terms(outputs(jnp.concatenate([weak, strong])), {}, jax.random.key(0), 0)
    np.testing.assert_allclose(values["fixmatch"], np_fixmatch(weak, strong, tau)[0], rtol=1e-5)
  assert float(values["fixmatch_kept"]) == 1.0


def test_class_balance_weighs_each_pseudo_class_alike():
  # Three confident examples of class 0, one of class 2, one not confident.
  weak = np.array([[9, 0, 0], [9, 0, 0], [9, 0, 0], [0, 0, 9], [0, 0, 0]], np.float32)
  strong = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
  method = METHODS["fixmatch"](Config(method="fixmatch", class_balance=True))
  values = method.terms(outputs(jnp.asarray(np.concatenate([weak, strong]))), {},
                        jax.random.key(0), 0)
  log_ps = strong - np.log(np.exp(strong).sum(1, keepdims=True))
  ce = -log_ps[np.arange(5), weak.argmax(1)]
  weights = np.array([4 / (2 * 3)] * 3 + [4 / (2 * 1), 0])  # K / (C+ n_c), K = 4 kept
  np.testing.assert_allclose(values["fixmatch"], np.sum(weights * ce) / 5, rtol=1e-5)
  np.testing.assert_allclose(values["fixmatch_kept"], 0.8)


def test_views_put_weak_then_strong_in_the_target_part():
  images = np.random.default_rng(1).normal(size=(3, 16, 16, 1)).astype(np.float32)
  task, config = ImageClassification(), Config(method="fixmatch")
  joint, weak = jax.jit(lambda x, k: fixmatch.fixmatch_views(task, (x,), k, config))(
      images, jax.random.key(4))
  assert joint[0].shape == (6, 16, 16, 1)
  # The weak view is the batch as loaded (the source's own augmentation), not shifted again.
  np.testing.assert_array_equal(weak[0], images)
  np.testing.assert_array_equal(joint[0][:3], images)
  assert not np.allclose(joint[0][3:], images)
