"""Process-level setting of the host's memory allocator, for the driver scripts.

XLA:CPU takes every step's buffers (activations, gradients, scratch) from ``malloc``
and frees them when the step ends.  glibc hands out blocks above its mmap threshold
(which adapts up to 32 MiB by default), and large blocks asked for by XLA's worker
threads (served by per-thread arenas), as freshly mapped pages, and returns them to the
kernel on free.  So every step page-faults and zero-fills its buffers anew: 74k
faults (~300 MB) per 64x64 DCGAN step, 188k per 128x128 step.

``configure_malloc('retain')`` makes glibc keep freed memory for reuse: one arena, no
mmap below 1 GiB, no trimming below 1 GiB free.  On one core that cut the DCGAN step's
CPU time by 8% (64) and 12% (128), the discovery step's by ~12%, and the eigen-analysis
by 2x (benchmarks/RESULTS.md, "Host allocator").  The cost: the process keeps its peak
heap until it exits (its peak RSS did not grow in those runs).

It changes the whole process, so the library never calls it itself: ``train.py``,
``analyze.py``, the demo and ``benchmarks/run.py`` do, from ``--malloc`` (default
'retain').  In your own script call it first thing, or start Python with the same
settings as ``GLIBC_TUNABLES`` (:data:`GLIBC_TUNABLES_RETAIN`).  Off glibc (macOS,
musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import platform

from jaxlatent.errors import ConfigError

MALLOC_MODES = ("retain", "system")
_ONE_GIB = 1 << 30
# mallopt(3) parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_RETAIN = ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, _ONE_GIB), (_M_TRIM_THRESHOLD, _ONE_GIB))
MALLOC_HELP = ("host allocator: 'retain' (reuse freed memory: no fresh page faults per step) "
               "or 'system' (glibc's defaults); see jaxlatent/host.py")
# The same settings for a process started from a shell.
GLIBC_TUNABLES_RETAIN = (f"glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold={_ONE_GIB}"
                         f":glibc.malloc.trim_threshold={_ONE_GIB}")


def configure_malloc(mode: str) -> bool:
  """Sets the process's allocator: 'retain' (see module doc) or 'system' (as it is).

  Call it before JAX starts its backend (its threads pick their arenas on their first
  allocation).  Returns whether glibc took the 'retain' settings (False for 'system'
  and off glibc).  Raises ConfigError naming ``--malloc`` for any other ``mode``.
  """
  if mode not in MALLOC_MODES:
    raise ConfigError(f"--malloc={mode!r}: expected one of {MALLOC_MODES}")
  if mode == "system" or platform.libc_ver()[0] != "glibc":
    return False
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return False
  return all(libc.mallopt(param, value) == 1 for param, value in _RETAIN)
