"""Convolutional image classifiers: the seed CNN and a small ResNet.

Both take images float32 [B, H, W, C] and are split into a `backbone` (the
features) and a `head` (the logits):
`apply(variables, images, train=..., return_features=False)`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from xdomain.models import heads
from xdomain.models import inputs as inputs_lib

# Domain ids of the domain-specific batch norm.
DOMAINS = {"source": 0, "target": 1}


def max_pool_2x2(x):
  """`nn.max_pool(x, (2, 2), strides=(2, 2))` of x [B, H, W, C], equal in value
  and, for finite inputs, in gradient.

  The gradient goes to the first maximum of each window in row-major order, as
  XLA's select-and-scatter sends it; NaN propagates forward. Written as three
  `where`s because XLA:CPU's gradient of `reduce_window` is far slower than
  theirs (57-69 ms against 1 ms for the seed CNN's first pool at batch 128): it
  was the largest part of the seed CNN's step at 28x28.

  Args:
    x: [B, H, W, C]; an odd last row or column is dropped (VALID).

  Returns:
    [B, H // 2, W // 2, C].
  """
  batch, height, width, channels = x.shape
  x = x[:, :height // 2 * 2, :width // 2 * 2]
  windows = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
  pooled = windows[:, :, 0, :, 0]
  for row, col in ((0, 1), (1, 0), (1, 1)):
    candidate = windows[:, :, row, :, col]
    pooled = jnp.where((candidate > pooled) | jnp.isnan(candidate), candidate, pooled)
  return pooled


class SeedCNNBackbone(nn.Module):
  """Conv32 3x3 ReLU, max-pool 2, Conv64 3x3 ReLU, max-pool 2, Dense 128 ReLU
  (then the optional `bottleneck`)."""
  feature_size: int = 128
  bottleneck_size: int = 0

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    x = nn.relu(nn.Conv(32, (3, 3), padding="VALID", name="conv_0")(images))
    x = max_pool_2x2(x)
    x = nn.relu(nn.Conv(64, (3, 3), padding="VALID", name="conv_1")(x))
    x = max_pool_2x2(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.feature_size, name="dense")(x))
    if self.bottleneck_size:
      x = bottleneck(x, self.bottleneck_size, None, train=train, domain_specific=False,
                     momentum=0.9)
    return x


class SeedCNN(nn.Module):
  """The project's original Keras-style CNN (VALID padding).

  On 28x28x1 inputs with 10 classes it has 225,034 parameters.

  Attributes:
    num_classes: number of classes.
    dropout_rate: dropout on the 128 features before the head (0 = none, as
      in the original).
    weight_norm_head: weight-normalise the classifier (SHOT's source model).
    bottleneck_size: > 0 adds a Dense layer of this size with batch norm after
      the 128 features (`bottleneck`; SHOT's source model); its outputs are
      the features.
  """
  num_classes: int
  dropout_rate: float = 0.0
  weight_norm_head: bool = False
  bottleneck_size: int = 0

  def setup(self):
    self.backbone = SeedCNNBackbone(bottleneck_size=self.bottleneck_size)
    self.head = heads.ClassifierHead(self.num_classes, dropout_rate=self.dropout_rate,
                                     weight_norm=self.weight_norm_head)

  def features(self, images, *, train: bool = False):
    """Features [B, 128] of images [B, H, W, C]."""
    inputs_lib.check_images(images)
    return self.backbone(images, train=train)

  def __call__(self, images, *, train: bool = False,
               return_features: bool = False):
    """Logits [B, num_classes], or (logits, features [B, 128])."""
    features = self.features(images, train=train)
    logits = self.head(features, train=train)
    return (logits, features) if return_features else logits


def domain_ids(domain, batch: int):
  """Per-example domain ids int32 [B] from 'source', 'target' or an int array [B].

  Args:
    domain: 'source', 'target' (the whole batch), or int [B] with 0 = source
      and 1 = target.
    batch: B.

  Returns:
    int32 [B].
  """
  if isinstance(domain, str):
    if domain not in DOMAINS:
      raise ValueError(
          f"domain must be one of {sorted(DOMAINS)} or an int array [B]; got {domain!r}.")
    return jnp.full((batch,), DOMAINS[domain], jnp.int32)
  if getattr(domain, "shape", None) != (batch,):
    raise ValueError(
        f"domain must be 'source', 'target' or an int array [B] = ({batch},) of "
        f"0 (source) / 1 (target); got shape {getattr(domain, 'shape', None)}.")
  return jnp.asarray(domain, jnp.int32)


class DomainBatchNorm(nn.Module):
  """Batch norm with separate statistics for source and target examples.

  The affine `scale` and `bias` are shared (as in AdaBN); the normalising
  statistics are per domain. In training each domain's examples of the batch
  are normalised by that domain's batch mean and variance, and the running
  averages `mean_source`/`var_source` and `mean_target`/`var_target` in
  'batch_stats' are updated from the domain's examples (left unchanged when the
  batch has none). At test time the running statistics of each example's domain
  are used.

  Attributes:
    momentum: decay of the running averages.
    epsilon: added to the variance.

  References:
    Li et al. Revisiting Batch Normalization For Practical Domain Adaptation
      (AdaBN). ICLR workshop 2017.
    Chang et al. Domain-Specific Batch Normalization for Unsupervised Domain
      Adaptation. CVPR 2019.
  """
  momentum: float = 0.9
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, domain, *, train: bool = False):
    """Normalises x [B, ..., C] given domain ids int [B] (0 source, 1 target)."""
    channels = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (channels,))
    bias = self.param("bias", nn.initializers.zeros, (channels,))
    running = {
        name: (self.variable("batch_stats", f"mean_{name}", jnp.zeros, (channels,)),
               self.variable("batch_stats", f"var_{name}", jnp.ones, (channels,)))
        for name in DOMAINS
    }
    is_target = (domain == DOMAINS["target"]).reshape((-1,) + (1,) * (x.ndim - 1))
    stats = {}
    if train:
      axes = tuple(range(x.ndim - 1))
      for name, selected in (("source", ~is_target), ("target", is_target)):
        weight = jnp.broadcast_to(selected, x.shape[:-1] + (1,)).astype(x.dtype)
        count = jnp.sum(weight, axes)
        mean = jnp.sum(x * weight, axes) / jnp.maximum(count, 1.0)
        var = jnp.sum(jnp.square(x - mean) * weight, axes) / jnp.maximum(count, 1.0)
        stats[name] = (mean, var)
        if not self.is_initializing():
          seen = count > 0
          for average, value in zip(running[name], (mean, var)):
            average.value = jnp.where(
                seen, self.momentum * average.value + (1 - self.momentum) * value,
                average.value)
    else:
      stats = {name: (m.value, v.value) for name, (m, v) in running.items()}
    mean = jnp.where(is_target, stats["target"][0], stats["source"][0])
    var = jnp.where(is_target, stats["target"][1], stats["source"][1])
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


def _normalize(x, domain, *, train: bool, domain_specific: bool, momentum: float,
               name: str):
  """Batch norm named `name` in the calling module: shared or per domain."""
  if domain_specific:
    return DomainBatchNorm(momentum=momentum, name=name)(x, domain, train=train)
  return nn.BatchNorm(use_running_average=not train, momentum=momentum,
                      name=name)(x)


def bottleneck(x, size: int, domain, *, train: bool, domain_specific: bool, momentum: float):
  """SHOT's bottleneck: Dense `size`, then batch norm and no nonlinearity, so
  the features are centred (their cosine clusters give SHOT's pseudo-labels).
  Parameters `bottleneck` and `bottleneck_norm` of the calling module."""
  x = nn.Dense(size, name="bottleneck")(x)
  return _normalize(x, domain, train=train, domain_specific=domain_specific,
                    momentum=momentum, name="bottleneck_norm")


class ResNetBlock(nn.Module):
  """Basic residual block: two 3x3 convs with batch norm, projection shortcut."""
  features: int
  strides: int = 1
  domain_specific_bn: bool = False
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, domain, *, train: bool = False):
    norm = lambda y, name: _normalize(
        y, domain, train=train, domain_specific=self.domain_specific_bn,
        momentum=self.bn_momentum, name=name)
    strides = (self.strides, self.strides)
    y = nn.Conv(self.features, (3, 3), strides, use_bias=False, name="conv_0")(x)
    y = nn.relu(norm(y, "norm_0"))
    y = nn.Conv(self.features, (3, 3), use_bias=False, name="conv_1")(y)
    y = norm(y, "norm_1")
    if x.shape != y.shape:
      x = nn.Conv(self.features, (1, 1), strides, use_bias=False,
                  name="shortcut_conv")(x)
      x = norm(x, "shortcut_norm")
    return nn.relu(x + y)


class ResNetBackbone(nn.Module):
  """CIFAR-style ResNet: 3x3 stem, stages of basic blocks, global average pool
  (then the optional `bottleneck`)."""
  stage_sizes: Sequence[int] = (3, 3, 3)
  width: int = 16
  domain_specific_bn: bool = False
  bn_momentum: float = 0.9
  bottleneck_size: int = 0

  @nn.compact
  def __call__(self, images, domain, *, train: bool = False):
    x = nn.Conv(self.width, (3, 3), use_bias=False, name="stem_conv")(images)
    x = nn.relu(_normalize(
        x, domain, train=train, domain_specific=self.domain_specific_bn,
        momentum=self.bn_momentum, name="stem_norm"))
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        x = ResNetBlock(
            self.width * 2**i, strides=2 if i > 0 and j == 0 else 1,
            domain_specific_bn=self.domain_specific_bn,
            bn_momentum=self.bn_momentum,
            name=f"stage_{i}_block_{j}")(x, domain, train=train)
    x = jnp.mean(x, axis=(1, 2))
    if self.bottleneck_size:
      x = bottleneck(x, self.bottleneck_size, domain, train=train,
                     domain_specific=self.domain_specific_bn, momentum=self.bn_momentum)
    return x


class ResNet(nn.Module):
  """Small ResNet for image pairs harder than digits (default ResNet-20 shape).

  Features are the globally pooled last stage, [B, width * 2**(stages - 1)].
  Batch norm keeps its running statistics in 'batch_stats': pass
  `mutable=['batch_stats']` when `train=True`.

  Domain-specific batch norm (`domain_specific_bn=True`): every call needs
  `domain=`, either 'source' or 'target' for a whole batch or an int array [B]
  (0 source, 1 target) for a mixed batch, e.g.
  `jnp.concatenate([jnp.zeros(n_s), jnp.ones(n_t)]).astype(jnp.int32)` for
  `concatenate([source_images, target_images])`: in training each domain is
  normalised by its own batch statistics within one forward pass. Evaluate the
  target test split with `domain='target'` and the source one with
  `domain='source'`. AdaBN at test time: train on source batches only, then
  run `apply(..., train=True, domain='target', mutable=['batch_stats'])` over
  target data (no gradient step) to fill the target running statistics, and
  evaluate with `domain='target'`; the engine can also let them accumulate
  from the target part of each training batch. With `domain_specific_bn=False`
  `domain` is ignored. Parameters (`scale`, `bias`) have the same paths in both
  variants, so either restores the other's params.

  Attributes:
    num_classes: number of classes.
    stage_sizes: blocks per stage; stage i has width * 2**i channels and
      stride 2 from stage 1 on.
    width: channels of the stem and the first stage.
    domain_specific_bn: separate source/target batch-norm statistics.
    bn_momentum: decay of the running averages.
    dropout_rate: dropout on the features before the head.
    weight_norm_head: weight-normalise the classifier (SHOT's source model).
    bottleneck_size: > 0 adds a Dense layer of this size with batch norm after
      the pooled features (`bottleneck`; SHOT's source model); its outputs
      are the features.
  """
  num_classes: int
  stage_sizes: Sequence[int] = (3, 3, 3)
  width: int = 16
  domain_specific_bn: bool = False
  bn_momentum: float = 0.9
  dropout_rate: float = 0.0
  weight_norm_head: bool = False
  bottleneck_size: int = 0

  def setup(self):
    self.backbone = ResNetBackbone(
        tuple(self.stage_sizes), self.width, self.domain_specific_bn,
        self.bn_momentum, self.bottleneck_size)
    self.head = heads.ClassifierHead(self.num_classes, dropout_rate=self.dropout_rate,
                                     weight_norm=self.weight_norm_head)

  def features(self, images, *, train: bool = False, domain=None):
    """Features [B, D] of images [B, H, W, C] (see the class docstring for `domain`)."""
    inputs_lib.check_images(images)
    if self.domain_specific_bn:
      if domain is None:
        raise ValueError(
            "domain is required when domain_specific_bn=True: pass 'source', "
            "'target' or an int array [B] of 0 (source) / 1 (target).")
      domain = domain_ids(domain, images.shape[0])
    else:
      domain = None
    return self.backbone(images, domain, train=train)

  def __call__(self, images, *, train: bool = False,
               return_features: bool = False, domain=None):
    """Logits [B, num_classes], or (logits, features)."""
    features = self.features(images, train=train, domain=domain)
    logits = self.head(features, train=train)
    return (logits, features) if return_features else logits
