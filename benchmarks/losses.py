"""Time and memory of the MMD estimators of `xdomain.losses.mmd`.

For every batch size n (both samples of size n), feature dimension d and
estimator, it compiles `jax.jit(mmd)` (and `jax.jit(jax.value_and_grad(mmd))`),
times the compiled call (median of --reps runs, after a warm-up), and reads the
memory XLA's buffer assignment reserves for temporaries from
`compiled.memory_analysis()` (the CPU backend reports no liveness-based peak;
arguments and outputs come on top: 2 n d * 4 bytes of inputs, and as much again
for gradients). Writes a Markdown table.

    python benchmarks/losses.py                       # default grid, a few minutes on 2 CPU cores
    python benchmarks/losses.py --full                # n 256..65536, d 64..2048 (accelerator)
    python benchmarks/losses.py --ns 16384,65536 --ds 64 --estimators linear,unbiased-blocked
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from xdomain import losses

# name -> (estimator, blocked): dense kernel matrices (block_size=None), blocks
# of --block_size rows (the library's default is 1024), or the linear estimator.
ESTIMATORS = {
    "biased-dense": ("biased", False),
    "unbiased-dense": ("unbiased", False),
    "unbiased-blocked": ("unbiased", True),
    "linear": ("linear", False),
}
DEFAULT_NS = (256, 1024, 4096)
DEFAULT_DS = (64, 512)
FULL_NS = (256, 1024, 4096, 16384, 65536)
FULL_DS = (64, 256, 1024, 2048)


def _ints(text: str) -> tuple[int, ...]:
  return tuple(int(v) for v in text.split(","))


def _mib(num_bytes: float) -> str:
  return f"{num_bytes / 2**20:,.1f}"


def _time(fn, *args, reps: int) -> float:
  jax.block_until_ready(fn(*args))  # warm-up
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure(n: int, d: int, name: str, *, block_size: int, bandwidths, heuristic: str,
            reps: int, grad: bool, max_dense_gib: float) -> dict:
  """Compiles and times one configuration; returns a row of the table."""
  estimator, blocked = ESTIMATORS[name]
  row = {"n": n, "d": d, "estimator": name + (f" (B={block_size})" if blocked else "")}
  # Three n x n float32 kernel matrices and their squared distances, at least.
  if name.endswith("-dense") and 6 * n * n * 4 > max_dense_gib * 2**30:
    row["note"] = f"skipped: dense n x n kernels > {max_dense_gib:g} GiB"
    return row
  fn = functools.partial(losses.mmd, bandwidths=bandwidths, bandwidth_heuristic=heuristic,
                         estimator=estimator, block_size=block_size if blocked else None)
  kx, ky = jax.random.split(jax.random.key(n * 7919 + d))
  x = jax.random.normal(kx, (n, d), jnp.float32)
  y = jax.random.normal(ky, (n, d), jnp.float32) + 0.1
  for label, f in [("fwd", jax.jit(fn))] + ([("grad", jax.jit(jax.value_and_grad(fn, (0, 1))))]
                                           if grad else []):
    compiled = f.lower(x, y).compile()
    memory = compiled.memory_analysis()
    row[f"{label}_ms"] = 1e3 * _time(compiled, x, y, reps=reps)
    row[f"{label}_temp"] = memory.temp_size_in_bytes if memory is not None else float("nan")
  return row


def table(rows: list[dict], grad: bool) -> str:
  header = ["n", "d", "estimator", "forward ms", "forward temp MiB"]
  if grad:
    header += ["value+grad ms", "value+grad temp MiB"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in rows:
    if "note" in row:
      cells = [row["n"], row["d"], row["estimator"], row["note"], ""] + (["", ""] if grad else [])
    else:
      cells = [row["n"], row["d"], row["estimator"], f"{row['fwd_ms']:,.2f}", _mib(row["fwd_temp"])]
      if grad:
        cells += [f"{row['grad_ms']:,.2f}", _mib(row["grad_temp"])]
    lines.append("| " + " | ".join(str(c) for c in cells) + " |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--ns", type=_ints, default=DEFAULT_NS, help="batch sizes n (= m)")
  parser.add_argument("--ds", type=_ints, default=DEFAULT_DS, help="feature dimensions d")
  parser.add_argument("--full", action="store_true",
                      help=f"the full grid: n in {FULL_NS}, d in {FULL_DS}")
  parser.add_argument("--estimators", default=",".join(ESTIMATORS),
                      help=f"comma-separated subset of {list(ESTIMATORS)}")
  parser.add_argument("--block_size", type=int, default=1024, help="rows per block (blocked)")
  parser.add_argument("--bandwidths", choices=("fixed", "mean", "median"), default="fixed",
                      help="fixed: five widths 0.5..2 x sqrt(d) (the estimator's own cost); "
                           "mean: the default, DAN's mean heuristic (exact, O(n d)); "
                           "median: the median heuristic (adds an O(1) 1024-point sort)")
  parser.add_argument("--reps", type=int, default=3, help="timed runs per configuration")
  parser.add_argument("--no_grad", dest="grad", action="store_false",
                      help="time the forward pass only")
  parser.add_argument("--max_dense_gib", type=float, default=8.0,
                      help="skip dense estimators whose kernel matrices exceed this")
  parser.add_argument("--output", help="also write the table to this Markdown file")
  args = parser.parse_args(argv)
  ns, ds = (FULL_NS, FULL_DS) if args.full else (args.ns, args.ds)
  names = args.estimators.split(",")
  for name in names:
    if name not in ESTIMATORS:
      parser.error(f"unknown estimator {name!r}; choose from {list(ESTIMATORS)}")

  device = jax.devices()[0]
  title = (f"MMD estimators on {device.platform.upper()} ({device.device_kind}, "
           f"{platform.processor() or platform.machine()}), jax {jax.__version__}, "
           f"bandwidths={args.bandwidths}, median of {args.reps} runs")
  print(title, flush=True)
  rows = []
  for d in ds:
    # Widths scaled with sqrt(d), where Gaussian-feature distances live.
    bandwidths = (None if args.bandwidths in ("mean", "median") else
                  [s * d**0.5 for s in losses.DEFAULT_BANDWIDTH_MULTIPLIERS])
    for n in ns:
      for name in names:
        row = measure(n, d, name, block_size=args.block_size, bandwidths=bandwidths,
                      heuristic="median" if args.bandwidths == "median" else "mean",
                      reps=args.reps, grad=args.grad, max_dense_gib=args.max_dense_gib)
        rows.append(row)
        print(table([row], args.grad).splitlines()[-1], flush=True)
  text = f"{title}\n\n{table(rows, args.grad)}\n"
  print("\n" + text)
  if args.output:
    with open(args.output, "w") as f:
      f.write(text)


if __name__ == "__main__":
  main(sys.argv[1:])
