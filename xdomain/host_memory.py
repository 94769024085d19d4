"""glibc malloc settings under which XLA:CPU's steps reuse their memory.

XLA:CPU allocates each execution's temporary buffer (tens of MiB for a train
step) with malloc and frees it when the step ends. glibc serves a request
above its mmap threshold (32 MiB at most), or above 64 MiB from a thread's own
arena, with a fresh `mmap` and unmaps it on free, so every step page-faults
its whole temporary buffer in again, zero-filled by the kernel: 17,500 faults
(68 MiB) per step of the BiLSTM sentence classifier at batch 64, 8,800 for the
seed CNN's DANN step, a fifth to a quarter of either step's time on a 2-core
CPU (README, "Speed"). `reuse_freed_memory` has every thread allocate from
the main heap, never from `mmap`, and keep what it frees, so that each step
reuses the memory of the step before it; numbers do not change.

The library never calls it: `experiments/main.py` does, before JAX starts
(`--reuse_host_memory`), as it sets its XLA:CPU flags. It is for a process
that trains: the heap then keeps its peak size until the process ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# Free memory at the top of the heap beyond this goes back to the system.
_TRIM_THRESHOLD_BYTES = 1 << 30


def reuse_freed_memory() -> bool:
  """Sets glibc's malloc to keep and reuse freed memory in one heap.

  mallopt(M_MMAP_MAX, 0): no request is served by `mmap`, however large;
  mallopt(M_ARENA_MAX, 1): threads share the main heap, which, unlike a
  thread's arena (64 MiB at most), grows to any size; mallopt(M_TRIM_THRESHOLD,
  1 GiB): free memory stays in the heap up to 1 GiB. Call it before JAX starts
  (M_ARENA_MAX holds for threads that have not yet allocated).

  Returns:
    True where it was set; False without glibc (macOS, musl), where nothing
    changes.
  """
  path = ctypes.util.find_library("c")
  try:
    libc = ctypes.CDLL(path)
    libc.gnu_get_libc_version  # glibc's own symbol: musl also has a mallopt that does nothing
    mallopt = libc.mallopt
  except (OSError, AttributeError, TypeError):
    return False
  return all(mallopt(parameter, value) == 1 for parameter, value in (
      (_M_MMAP_MAX, 0), (_M_ARENA_MAX, 1), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)))
