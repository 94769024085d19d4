"""Throughput of the cross-domain loader alone (no model), in examples/s.

Usage: python benchmarks/data_loader.py [--steps 300] [--batch_size 128]
         [--data_dir DIR] [--source digits/mnist] [--target digits/mnist_m]

Counts source + target examples per second over ``--steps`` batches after a
warm-up, for a few preprocessing settings.
"""

from __future__ import annotations

import argparse
import time

from xdomain import data


def measure(loader: data.CrossDomainLoader, steps: int) -> float:
  """Examples (both domains) per second over ``steps`` batches."""
  for _ in range(10):
    next(loader)
  start = time.perf_counter()
  for _ in range(steps):
    batch = next(loader)
  elapsed = time.perf_counter() - start
  return steps * (len(batch["source"]["image"]) + len(batch["target"]["image"])) / elapsed


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--source", default="digits/mnist")
  parser.add_argument("--target", default="digits/mnist_m")
  args = parser.parse_args()
  settings = {
      "28x28x1 unit": data.ImagePreprocess(size=(28, 28), channels=1),
      "28x28x3 standardize": data.ImagePreprocess(size=(28, 28), channels=3,
                                                  normalize="standardize"),
      "28x28x3 standardize + augment": data.ImagePreprocess(
          size=(28, 28), channels=3, normalize="standardize", augment=True),
      "32x32x3 unit + augment": data.ImagePreprocess(size=(32, 32), channels=3, augment=True),
  }
  for label, preprocess in settings.items():
    start = time.perf_counter()
    loader = data.CrossDomainLoader(
        args.source, args.target, batch_size=args.batch_size, preprocess=preprocess, seed=0,
        data_dir=args.data_dir, process_index=0, process_count=1)
    built = time.perf_counter() - start
    rate = measure(loader, args.steps)
    print(f"{args.source} -> {args.target}, {label}, batch 2x{args.batch_size}: "
          f"{rate:,.0f} examples/s ({rate / (2 * args.batch_size):,.0f} steps/s), "
          f"built in {built:.2f} s")


if __name__ == "__main__":
  main()
