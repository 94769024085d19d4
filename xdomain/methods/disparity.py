"""Margin disparity discrepancy (MDD): an adversarial auxiliary classifier.

An auxiliary head F' (the shape of TLlib's: Dense + ReLU + dropout 0.5 +
Dense to the classes) reads the features through a gradient-reversal layer
whose coefficient follows the adaptation schedule (`--adapt_weight`,
`--adapt_schedule`; TLlib warms it from 0 to 0.1). F' learns to agree with
the classifier on the source and to disagree with it on the target
(`losses.margin_disparity_discrepancy`, margin `--mdd_margin`); the reversed
gradient makes the features deny it that disagreement. The paper's and TLlib's
bottleneck layer is left out: F' reads the model's own features.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from xdomain import losses
from xdomain.config import Config
from xdomain.methods import base


class AdversarialHead(nn.Module):
  """F': features [N, D] -> logits [N, num_classes] through one hidden layer
  (Dense + ReLU + dropout), as the reference implementations' adversarial head."""
  num_classes: int
  hidden_size: int
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, features, *, train: bool = False):
    x = nn.relu(nn.Dense(self.hidden_size, name="hidden")(features))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name="logits")(x)


def make_mdd(config: Config) -> base.Method:
  """MDD: Zhang et al., "Bridging Theory and Algorithm for Domain Adaptation", ICML 2019."""
  reversal = base.adaptation_weight(config)

  def adversarial_head(num_classes):
    return AdversarialHead(num_classes, config.discriminator_hidden)

  def init_aux(rng, feature_dim, num_classes):
    return {"adversarial_head": adversarial_head(num_classes).init(
        rng, jnp.zeros((1, feature_dim)), train=False)["params"]}

  def terms(outputs, aux_params, rng, step):
    fs, ms, ft, mt = base.features_of_both(outputs)
    ls, _, lt, _ = base.logits_of_both(outputs)
    scale = reversal(step)
    head = adversarial_head(ls.shape[-1])
    joint = jnp.concatenate([losses.gradient_reversal(fs, scale),
                             losses.gradient_reversal(ft, scale)], axis=0)
    adversarial = head.apply({"params": aux_params["adversarial_head"]}, joint, train=True,
                             rngs={"dropout": rng})
    source, target = losses.margin_disparity_discrepancy(
        ls, adversarial[:fs.shape[0]], lt, adversarial[fs.shape[0]:],
        margin=config.mdd_margin, source_where=ms, target_where=mt)
    return {"mdd": base.masked_mean(source, ms) + base.masked_mean(target, mt)}

  return base.Method(name="mdd", terms=terms, weights={"mdd": 1.0}, init_aux=init_aux,
                     logged_schedules={"gradient_reversal": reversal})
