"""Forward+backward throughput and compile time of each model at typical sizes.

Each row jits one training gradient step (loss and gradients with respect to
the parameters, dropout on, batch statistics updated) on random inputs,
reports the time to lower and compile it, then examples per second over
repeated steps. Prints a markdown table.

  python benchmarks/models.py [--only=seed_cnn,bilstm] [--min_seconds=3]

`bilstm_layer` is the recurrent layer alone (no embedding), beside which
`python benchmarks/torch_twin.py --rows=lstm_layer` times PyTorch's `nn.LSTM`.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from typing import Any, Callable

from absl import app
from absl import flags
import flax.linen as nn
import jax
import numpy as np
import optax

from xdomain import host_memory
from xdomain import models

_ONLY = flags.DEFINE_list("only", [], "Rows to run (default: all).")
_MIN_SECONDS = flags.DEFINE_float(
    "min_seconds", 3.0, "Time each row for at least this long (after warm-up).")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the table to this file.")
_RUNNER_SETTINGS = flags.DEFINE_bool(
    "runner_settings", True,
    "Time with experiments/main.py's CPU settings (YNNPACK fusions off, freed host memory"
    " kept for reuse); false: XLA's and glibc's defaults, as a program importing xdomain"
    " gets them.")


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark row: a model, its inputs, and how its loss is computed."""
  description: str
  model: Any
  make_inputs: Callable[[np.random.Generator], tuple]
  num_outputs: int
  batch: int
  tagger: bool = False
  apply_kwargs: dict = dataclasses.field(default_factory=dict)


def _images(batch, height, width, channels):
  return lambda rng: (rng.random((batch, height, width, channels), np.float32),)


def _text(batch, length, vocab, chars_per_word=0, char_vocab=0):
  def make(rng):
    lengths = rng.integers(length // 4, length + 1, size=batch).astype(np.int32)
    mask = np.arange(length)[None] < lengths[:, None]
    tokens = np.where(mask, rng.integers(1, vocab, (batch, length)), 0).astype(np.int32)
    if not chars_per_word:
      return tokens, lengths
    chars = rng.integers(1, char_vocab, (batch, length, chars_per_word))
    return tokens, lengths, np.where(mask[..., None], chars, 0).astype(np.int32)
  return make


def _features(batch, length, size):
  def make(rng):
    lengths = rng.integers(length // 2, length + 1, size=batch).astype(np.int32)
    return rng.normal(size=(batch, length, size)).astype(np.float32), lengths
  return make


class _BiLSTMLayer(nn.Module):
  """The BiLSTM layer of `RNNClassifier` on given input vectors, max-pooled
  over the valid steps, and a linear head: the recurrence without the
  embedding, dropout and the embedding's optimizer update."""
  hidden_size: int = 128

  @nn.compact
  def __call__(self, inputs, lengths, train: bool = False):
    del train
    encoder = models.RNNEncoder("lstm", self.hidden_size, bidirectional=True)
    outputs, _ = encoder(inputs, lengths)
    mask = np.arange(inputs.shape[1])[None] < lengths[:, None]
    return nn.Dense(2)(models.masked_max(outputs, mask))


CASES = {
    "seed_cnn": Case("SeedCNN, 28x28x1, batch 128", models.SeedCNN(10),
                     _images(128, 28, 28, 1), 10, 128),
    "resnet20": Case("ResNet-20 (3,3,3)x16, 32x32x3, batch 128",
                     models.ResNet(10), _images(128, 32, 32, 3), 10, 128),
    "resnet20_dsbn": Case(
        "ResNet-20, domain-specific BN (64 source + 64 target), 32x32x3, batch 128",
        models.ResNet(10, domain_specific_bn=True), _images(128, 32, 32, 3), 10,
        128, apply_kwargs={"domain": np.repeat(np.arange(2, dtype=np.int32), 64)}),
    "row_lstm": Case("RowRNNClassifier LSTM 128, 28x28x1 (28 steps), batch 128",
                     models.RowRNNClassifier(10, hidden_size=128),
                     _images(128, 28, 28, 1), 10, 128),
    "text_cnn": Case("TextCNN 3/4/5x100, emb 128, vocab 20k, L=64, batch 64",
                     models.TextCNN(20_000, 2), _text(64, 64, 20_000), 2, 64),
    "bilstm": Case("RNNClassifier BiLSTM 128, emb 128, vocab 20k, L=64, batch 64",
                   models.RNNClassifier(20_000, 2), _text(64, 64, 20_000), 2, 64),
    "bilstm_layer": Case("BiLSTM layer 128 alone, inputs 128, L=40, batch 64",
                         _BiLSTMLayer(), _features(64, 40, 128), 2, 64),
    "bigru": Case("RNNClassifier BiGRU 128, emb 128, vocab 20k, L=64, batch 64",
                  models.RNNClassifier(20_000, 2, cell="gru"),
                  _text(64, 64, 20_000), 2, 64),
    "bilstm_crf": Case(
        "RNNTagger BiLSTM 128 + char CNN + CRF, 17 tags, vocab 20k, L=40, batch 32",
        models.RNNTagger(20_000, 17, use_crf=True, char_vocab_size=100),
        _text(32, 40, 20_000, chars_per_word=12, char_vocab=100), 17, 32,
        tagger=True),
}


def _make_step(case: Case, variables):
  """Returns a jitted step(params, state, inputs, labels, rng) -> (loss, grads, state)."""
  mutable = ["batch_stats"] if "batch_stats" in variables else False

  def loss_fn(params, state, inputs, labels, rng):
    rngs = {"dropout": rng}
    if case.tagger:
      emissions, _ = case.model.apply(
          {"params": params, **state}, *inputs, train=True, return_features=True,
          rngs=rngs)
      nll = case.model.apply({"params": params}, emissions, labels, inputs[1],
                             method="nll_from_emissions")
      return nll.mean(), state
    out = case.model.apply({"params": params, **state}, *inputs, train=True,
                           rngs=rngs, mutable=mutable, **case.apply_kwargs)
    logits, state = out if mutable else (out, state)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, state

  def step(params, state, inputs, labels, rng):
    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, state, inputs, labels, rng)
    return loss, grads, state

  return jax.jit(step)


def run_case(case: Case, min_seconds: float) -> tuple[float, float, int]:
  """Returns (compile seconds, examples per second, parameter count)."""
  rng = np.random.default_rng(0)
  inputs = case.make_inputs(rng)
  label_shape = inputs[0].shape[:2] if case.tagger else (case.batch,)
  labels = rng.integers(0, case.num_outputs, label_shape).astype(np.int32)
  variables = jax.jit(
      lambda key: case.model.init(key, *inputs, **case.apply_kwargs))(
          jax.random.key(0))
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}
  step = _make_step(case, variables)
  key = jax.random.key(1)
  start = time.perf_counter()
  compiled = step.lower(params, state, inputs, labels, key).compile()
  compile_seconds = time.perf_counter() - start
  jax.block_until_ready(compiled(params, state, inputs, labels, key))  # warm-up
  steps, start = 0, time.perf_counter()
  while True:
    loss, _, _ = compiled(params, state, inputs, labels, jax.random.fold_in(key, steps))
    loss.block_until_ready()
    steps += 1
    elapsed = time.perf_counter() - start
    if elapsed >= min_seconds and steps >= 3:
      break
  if not np.isfinite(float(loss)):
    raise RuntimeError(f"{case.description}: non-finite loss {loss}.")
  num_params = sum(x.size for x in jax.tree.leaves(params))
  return compile_seconds, steps * case.batch / elapsed, num_params


def main(argv):
  del argv
  if _RUNNER_SETTINGS.value:  # before JAX starts (experiments/main.py's CPU_XLA_FLAGS)
    os.environ["XLA_FLAGS"] = " ".join(
        filter(None, [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_experimental_ynn_fusion_type="]))
    host_memory.reuse_freed_memory()
  unknown = sorted(set(_ONLY.value) - set(CASES))
  if unknown:
    raise app.UsageError(f"--only: unknown rows {unknown}; choose from {sorted(CASES)}.")
  names = _ONLY.value or list(CASES)
  lines = [
      f"Forward+backward on {jax.devices()[0].platform.upper()} "
      f"({platform.processor() or platform.machine()}, {jax.device_count()} "
      f"device(s)), jax {jax.__version__}, float32, "
      f"{'the runner' if _RUNNER_SETTINGS.value else 'XLA'}'s CPU settings.",
      "",
      "| model | params | compile (s) | examples/s |",
      "| --- | ---: | ---: | ---: |",
  ]
  print("\n".join(lines), flush=True)
  for name in names:
    compile_seconds, throughput, num_params = run_case(CASES[name], _MIN_SECONDS.value)
    line = (f"| {CASES[name].description} | {num_params:,} | "
            f"{compile_seconds:.1f} | {throughput:,.0f} |")
    print(line, flush=True)
    lines.append(line)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(main)
