"""Tests of xdomain.tasks.image_classification's strong augmentation (FixMatch)."""

import jax
import jax.numpy as jnp
import numpy as np

from xdomain.config import Config
from xdomain.tasks import image_classification as ic

SHAPE = (16, 16, 16, 2)  # one shape: one compilation for every test here


@jax.jit
def strong_view(images, key):
  return ic.ImageClassification().strong_view((images,), key, Config())[0]


def ramps():
  """Images whose values rise left to right (channel 0) and top to bottom (channel 1)."""
  ramp = np.linspace(-1.0, 1.0, SHAPE[1], dtype=np.float32)
  horizontal = np.broadcast_to(ramp[None, :], SHAPE[1:3])
  return np.broadcast_to(np.stack([horizontal, horizontal.T], -1), SHAPE).copy()


def test_strong_view_shapes_dtype_and_determinism_per_key():
  images = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
  one, again = strong_view(images, jax.random.key(1)), strong_view(images, jax.random.key(1))
  other = strong_view(images, jax.random.key(2))
  assert one.shape == images.shape and one.dtype == images.dtype
  np.testing.assert_array_equal(one, again)
  assert not np.allclose(one, other)
  assert np.all(np.isfinite(one))
  # Each image draws its own ops: the views of identical images differ.
  same = strong_view(np.repeat(images[:1], SHAPE[0], axis=0), jax.random.key(3))
  assert not np.allclose(same[0], same[1])


def test_no_flips():
  """Rotations (<= 30 degrees), shears, shifts and contrast (> 0) keep a left-to-right
  (top-to-bottom) ramp rising; a horizontal (vertical) flip would reverse it."""
  for seed in range(2):
    inner = np.asarray(strong_view(ramps(), jax.random.key(seed)))[:, 4:12, 4:12]
    for channel, axis in ((0, 2), (1, 1)):
      slope = np.mean(np.diff(inner[..., channel], axis=axis), axis=(1, 2))
      assert np.all(slope > 0), (channel, slope)


def test_warp_clips_what_leaves_the_frame():
  warp = jax.jit(ic.warp_affine)
  image = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
  shifted = warp(image, jnp.eye(2), jnp.array([0.0, 2.0]), jnp.array([-1.0]))
  # Two columns to the right: the left two take the fill, the right two hold
  # what were the left two; the old right columns are gone, not wrapped round.
  np.testing.assert_allclose(shifted[:, :2, 0], -1.0)
  np.testing.assert_allclose(shifted[:, 2:, 0], image[:, :2, 0])
  gone = warp(image, jnp.eye(2), jnp.array([0.0, 9.0]), jnp.array([5.0]))
  np.testing.assert_allclose(gone, 5.0)
  # Ink at the very edge of the frame: the views stay finite, within the
  # range that contrast and brightness can reach.
  edge = np.zeros(SHAPE, np.float32)
  edge[:, :, -1] = 1.0
  views = np.asarray(strong_view(edge, jax.random.key(7)))
  assert np.all(np.isfinite(views)) and np.abs(views).max() < 3.0


def test_label_smoothing_is_cross_entropy_against_smoothed_targets():
  from xdomain.models import zoo
  logits = jax.random.normal(jax.random.key(0), (6, 4)) * 3
  labels = jnp.array([0, 1, 2, 3, 0, 1])
  task, spec = ic.ImageClassification(), zoo.MODELS["seed_cnn"]
  loss, correct, count = task.supervised_loss(spec, None, None, logits, labels, None,
                                              label_smoothing=0.2)
  log_p = np.asarray(jax.nn.log_softmax(logits))
  targets = 0.8 * np.eye(4)[np.asarray(labels)] + 0.2 / 4
  np.testing.assert_allclose(loss, -np.mean(np.sum(targets * log_p, axis=1)), rtol=1e-5)
  assert count == 6 and correct == np.sum(np.argmax(log_p, 1) == np.asarray(labels))
  plain, _, _ = task.supervised_loss(spec, None, None, logits, labels, None)
  np.testing.assert_allclose(plain, -np.mean(log_p[np.arange(6), np.asarray(labels)]),
                             rtol=1e-5)
