"""Tests of xdomain.methods.disparity: MDD's adversarial head behind gradient reversal."""

import jax
import jax.numpy as jnp
import numpy as np

from xdomain import losses
from xdomain.config import Config
from xdomain.methods import METHODS
from xdomain.methods import Outputs
from xdomain.methods.disparity import AdversarialHead


def test_features_get_the_reversed_scaled_gradient_of_the_head_loss():
  rng = np.random.default_rng(0)
  fs, ft = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
  ls, lt = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(3, 3)).astype(np.float32)
  config = Config(method="mdd", adapt_weight=0.1, adapt_schedule="constant",
                  discriminator_hidden=8, mdd_margin=2.0)
  method = METHODS["mdd"](config)
  aux = method.init_aux(jax.random.key(0), 4, 3)
  key = jax.random.key(1)

  def term(fs, ft, aux):
    out = Outputs(source_logits=ls, source_features=fs, source_labels=jnp.zeros(5, jnp.int32),
                  source_mask=None, target_logits=lt, target_features=ft)
    return method.terms(out, aux, key, 0)["mdd"]

  def direct(fs, ft, aux):  # the same loss with no reversal
    head = AdversarialHead(3, 8)
    adv = head.apply({"params": aux["adversarial_head"]}, jnp.concatenate([fs, ft]),
                     train=True, rngs={"dropout": key})
    s, t = losses.margin_disparity_discrepancy(ls, adv[:5], lt, adv[5:], margin=2.0)
    return s.mean() + t.mean()

  value, grads = jax.jit(jax.value_and_grad(term, argnums=(0, 1, 2)))(fs, ft, aux)
  expected, expected_grads = jax.jit(jax.value_and_grad(direct, argnums=(0, 1, 2)))(fs, ft, aux)
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  for got, want in zip(grads[:2], expected_grads[:2]):  # features: reversed, times 0.1
    np.testing.assert_allclose(got, -0.1 * want, rtol=1e-4, atol=1e-7)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7),
               grads[2], expected_grads[2])  # the head: its own gradient
