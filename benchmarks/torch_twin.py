r"""PyTorch eager twins of two xdomain train steps, to set xdomain's speed beside.

  python benchmarks/torch_twin.py --rows=dann_seed_cnn,bilstm --batch_sizes=64 --device=cpu

PyTorch is no dependency of xdomain: run this where torch is installed (a venv
of its own here: `pip install torch==2.13.0`; the GPU image has it). Twins:
- `dann_seed_cnn`: the seed CNN (conv32 3x3, pool, conv64 3x3, pool, dense 128,
  head) on 28x28x1, source and target batches in one forward pass, cross-entropy
  on the source, the 1024-1024-1 discriminator (dropout 0.5) behind gradient
  reversal, Adam: `--method=dann` on the seed CNN;
- `bilstm`: embeddings 128, a one-layer bidirectional LSTM of 128 per direction,
  max-pooled over the valid tokens, linear head, Adam, on token batches of
  `--length` (lengths drawn in [length/2, length]): `--model=bilstm` source only
  as `experiments/sentiment/source_only.flags` trains it, whose defaults these
  are: a vocabulary of 15,300 (what the movies source builds), dropout 0.5 on
  the embeddings and on the pooled features, 10% of the tokens read as <unk>
  (`--vocab_size`, `--dropout`, `--word_dropout`);
- `lstm_layer`: that BiLSTM's layer alone on random input vectors of 128 (no
  embedding, dropout or optimizer), max-pooled, a linear head, the parameters'
  gradients: twin of `python benchmarks/models.py --only=bilstm_layer`.
  PyTorch runs the padded batch (its backward direction reads the padding
  first; xdomain's reads each sequence's own tokens, reversed within length).
On a GPU float32 matmuls run in TF32, as JAX's default precision does there.
Examples/s count the examples through the model (DANN: source + target). The
per-step time comes from two run lengths, (t(long) - t(short)) / (long - short),
so that start-up and warm-up cancel out, as in benchmarks/throughput.py. The
median of `--repeats` such differences is reported. Prints a markdown table
(`--json`: one JSON object per row).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F


class _ReverseGradient(torch.autograd.Function):

  @staticmethod
  def forward(ctx, x):
    return x.view_as(x)

  @staticmethod
  def backward(ctx, grad):
    return -grad


class SeedCNN(nn.Module):

  def __init__(self, num_classes: int = 10, channels: int = 1, image_size: int = 28):
    super().__init__()
    self.conv_0 = nn.Conv2d(channels, 32, 3)
    self.conv_1 = nn.Conv2d(32, 64, 3)
    side = ((image_size - 2) // 2 - 2) // 2
    self.dense = nn.Linear(64 * side * side, 128)
    self.head = nn.Linear(128, num_classes)

  def forward(self, images):
    x = F.max_pool2d(F.relu(self.conv_0(images)), 2)
    x = F.max_pool2d(F.relu(self.conv_1(x)), 2)
    features = F.relu(self.dense(x.flatten(1)))
    return self.head(features), features


class Discriminator(nn.Module):

  def __init__(self, features: int = 128, hidden: int = 1024, dropout: float = 0.5):
    super().__init__()
    self.layers = nn.Sequential(
        nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

  def forward(self, features):
    return self.layers(_ReverseGradient.apply(features)).squeeze(-1)


# xdomain.data.text.UNK_ID (this script does not import xdomain).
_UNK_ID = 1


class BiLSTMClassifier(nn.Module):

  def __init__(self, vocab_size: int, num_classes: int = 2, embed: int = 128, hidden: int = 128,
               dropout: float = 0.0, word_dropout: float = 0.0):
    super().__init__()
    self.embed = nn.Embedding(vocab_size, embed, padding_idx=0)
    self.lstm = nn.LSTM(embed, hidden, batch_first=True, bidirectional=True)
    self.head = nn.Linear(2 * hidden, num_classes)
    self.dropout = nn.Dropout(dropout)
    self.word_dropout = word_dropout

  def forward(self, tokens, lengths):
    if self.training and self.word_dropout:
      dropped = (torch.rand(tokens.shape, device=tokens.device) < self.word_dropout) & (tokens != 0)
      tokens = tokens.masked_fill(dropped, _UNK_ID)
    outputs, _ = self.lstm(self.dropout(self.embed(tokens)))
    valid = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths[:, None]
    pooled = outputs.masked_fill(~valid[..., None], float("-inf")).amax(dim=1)
    return self.head(self.dropout(pooled))


def dann_step(batch_size: int, device: torch.device):
  """(step function, examples per step) of DANN on the seed CNN."""
  model, discriminator = SeedCNN().to(device), Discriminator().to(device)
  optimizer = torch.optim.Adam([*model.parameters(), *discriminator.parameters()], lr=1e-3)
  images = torch.randn(2 * batch_size, 1, 28, 28, device=device)
  labels = torch.randint(0, 10, (batch_size,), device=device)
  domains = torch.cat([torch.zeros(batch_size), torch.ones(batch_size)]).to(device)

  def step():
    logits, features = model(images)
    loss = (F.cross_entropy(logits[:batch_size], labels)
            + F.binary_cross_entropy_with_logits(discriminator(features), domains))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()

  return step, 2 * batch_size


def bilstm_step(batch_size: int, device: torch.device, length: int, vocab_size: int,
                dropout: float, word_dropout: float):
  """(step function, examples per step) of the BiLSTM classifier, source only."""
  model = BiLSTMClassifier(vocab_size, dropout=dropout, word_dropout=word_dropout).to(device)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  lengths = torch.randint(length // 2, length + 1, (batch_size,), device=device)
  tokens = torch.randint(1, vocab_size, (batch_size, length), device=device)
  tokens = tokens * (torch.arange(length, device=device)[None, :] < lengths[:, None])
  labels = torch.randint(0, 2, (batch_size,), device=device)

  def step():
    loss = F.cross_entropy(model(tokens, lengths), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()

  return step, batch_size


def lstm_layer_step(batch_size: int, device: torch.device, length: int):
  """(forward+backward of the BiLSTM layer alone, examples per step)."""
  lstm = nn.LSTM(128, 128, batch_first=True, bidirectional=True).to(device)
  head = nn.Linear(256, 2).to(device)
  inputs = torch.randn(batch_size, length, 128, device=device)
  lengths = torch.randint(length // 2, length + 1, (batch_size,), device=device)
  valid = torch.arange(length, device=device)[None, :] < lengths[:, None]
  labels = torch.randint(0, 2, (batch_size,), device=device)

  def step():
    outputs, _ = lstm(inputs)
    pooled = outputs.masked_fill(~valid[..., None], float("-inf")).amax(dim=1)
    for parameter in (*lstm.parameters(), *head.parameters()):
      parameter.grad = None
    F.cross_entropy(head(pooled), labels).backward()

  return step, batch_size


def seconds_per_step(step, device: torch.device, short: int, long: int, repeats: int) -> float:
  """Median over `repeats` of (t(long steps) - t(short steps)) / (long - short)."""

  def timed(steps):
    if device.type == "cuda":
      torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
      step()
    if device.type == "cuda":
      torch.cuda.synchronize()
    return time.perf_counter() - started

  timed(short)  # warm-up: allocator, cuDNN's algorithm choice
  return statistics.median(
      (timed(long) - timed(short)) / (long - short) for _ in range(repeats))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", default="dann_seed_cnn,bilstm")
  parser.add_argument("--batch_sizes", default="64", help="Per domain for DANN.")
  parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
  parser.add_argument("--length", type=int, default=40, help="BiLSTM, LSTM layer: padded length.")
  parser.add_argument("--vocab_size", type=int, default=15300, help="BiLSTM: embedding rows.")
  parser.add_argument("--dropout", type=float, default=0.5,
                      help="BiLSTM: on the embeddings and the pooled features.")
  parser.add_argument("--word_dropout", type=float, default=0.1,
                      help="BiLSTM: share of the tokens read as <unk>.")
  parser.add_argument("--short", type=int, default=20, help="Steps of the short run.")
  parser.add_argument("--long", type=int, default=80, help="Steps of the long run.")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default).")
  parser.add_argument("--json", action="store_true", help="JSON lines, not a table.")
  args = parser.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  device = torch.device(args.device)
  # float32 matmuls in TF32 on the GPU, as XLA's default precision does there.
  torch.set_float32_matmul_precision("high")
  torch.manual_seed(0)
  device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                 else f"{torch.get_num_threads()} CPU threads")
  if not args.json:
    print(f"PyTorch {torch.__version__} eager on {device_name}; per step from runs of"
          f" {args.short} and {args.long} steps, median of {args.repeats}.\n")
    print("| row | batch | length | ms/step | ex/s |\n| --- | --- | --- | --- | --- |")
  for row in args.rows.split(","):
    for batch_size in map(int, args.batch_sizes.split(",")):
      if row == "dann_seed_cnn":
        step, examples = dann_step(batch_size, device)
      elif row == "bilstm":
        step, examples = bilstm_step(batch_size, device, args.length, args.vocab_size,
                                     args.dropout, args.word_dropout)
      elif row == "lstm_layer":
        step, examples = lstm_layer_step(batch_size, device, args.length)
      else:
        raise SystemExit(f"--rows: unknown row {row!r}; choose from dann_seed_cnn, bilstm,"
                         " lstm_layer.")
      seconds = seconds_per_step(step, device, args.short, args.long, args.repeats)
      length = args.length if row in ("bilstm", "lstm_layer") else "-"
      if args.json:
        print(json.dumps({
            "row": row, "batch_size": batch_size, "length": length, "device": device_name,
            "torch": torch.__version__, "seconds_per_step": seconds,
            "examples_per_sec": examples / seconds}), flush=True)
      else:
        print(f"| {row} | {batch_size} | {length} | {1000 * seconds:.2f} |"
              f" {examples / seconds:,.0f} |", flush=True)


if __name__ == "__main__":
  main()
