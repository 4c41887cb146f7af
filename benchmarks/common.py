"""Timing and reporting helpers shared by every benchmark case.

Rules every case follows (so figures from different cases mean the same thing):
  * warm-up calls first (compile, caches, thread pools), then >= 5 timed repeats;
  * every JAX call is closed by ``jax.block_until_ready`` inside the timed region
    (async dispatch would otherwise time only the enqueue);
  * the figure is the median; min and max are the spread;
  * compile time is measured apart, with ``jax.jit(f).lower(*args).compile()``;
  * FLOPs come from XLA's own ``compiled.cost_analysis()`` (the count XLA plans to
    run), so achieved FLOP/s = flops / median time.

Nothing here imports torch: PyTorch is an optional extra (``pip install -e .[bench]``)
and only ``torch_refs.py`` touches it.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import socket
import statistics
import subprocess
import time
from typing import Any, Callable

import jax
import numpy as np


@dataclasses.dataclass
class Timing:
  """Wall times of ``repeats`` timed calls (seconds), after ``warmup`` untimed ones.

  ``cpu_times``: this process's CPU time (user + system, all threads) over each call.
  On a shared machine the wall time swings with other jobs' load while the CPU time
  of a process pinned to one core (``taskset -c 1``, torch with 1 thread) counts only
  its own work, so the CPU-time ratio is the steadier comparison there.  With several
  threads it also counts spin-waiting (PyTorch's OpenMP spins at barriers).
  """

  times: list[float]
  warmup: int
  cpu_times: list[float] = dataclasses.field(default_factory=list)

  @property
  def median(self) -> float:
    return float(statistics.median(self.times))

  @property
  def min(self) -> float:
    return float(min(self.times))

  @property
  def max(self) -> float:
    return float(max(self.times))

  def as_dict(self) -> dict[str, Any]:
    return {
        "median_s": self.median, "min_s": self.min, "max_s": self.max,
        "repeats": len(self.times), "warmup": self.warmup,
        "times_s": [round(t, 6) for t in self.times],
        **({"cpu_median_s": float(statistics.median(self.cpu_times)),
            "cpu_times_s": [round(t, 6) for t in self.cpu_times]} if self.cpu_times else {}),
    }

  def cpu(self) -> "Timing":
    """The CPU times as a Timing (for :func:`paired_ratio` on CPU time)."""
    return Timing(list(self.cpu_times), self.warmup)


def time_calls(call: Callable[[], Any], *, repeats: int = 5, warmup: int = 2,
               block: bool = True) -> Timing:
  """Times ``call()`` ``repeats`` times after ``warmup`` untimed calls.

  ``call`` takes no arguments; a stateful loop (a train step threading its state)
  keeps its state in a closure.  With ``block`` the result is passed through
  ``jax.block_until_ready`` inside the timed region (harmless for NumPy / torch
  results, which are ready on return).
  """
  for _ in range(warmup):
    out = call()
    if block:
      jax.block_until_ready(out)
  times, cpu = [], []
  for _ in range(max(1, repeats)):
    c0, t0 = time.process_time(), time.perf_counter()
    out = call()
    if block:
      jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  return Timing(times, warmup, cpu)


def compile_stats(fn: Callable, *args, static_argnums=(), donate_argnums=(),
                  **kwargs) -> tuple[Callable, dict[str, Any]]:
  """AOT-compiles ``jax.jit(fn)`` for ``args``; returns (compiled, stats).

  stats: ``lower_s`` (tracing + lowering), ``compile_s`` (XLA compile), ``flops``
  and ``bytes_accessed`` from ``cost_analysis()``, and the buffer sizes of
  ``memory_analysis()`` (``temp_bytes`` is the scratch XLA needs at peak).
  """
  jitted = jax.jit(fn, static_argnums=static_argnums, donate_argnums=donate_argnums)
  t0 = time.perf_counter()
  lowered = jitted.lower(*args, **kwargs)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  stats: dict[str, Any] = {"lower_s": t1 - t0, "compile_s": t2 - t1}
  stats.update(cost_of(compiled))
  stats.update(memory_of(compiled))
  return compiled, stats


def cost_of(compiled) -> dict[str, Any]:
  """FLOPs and bytes accessed that XLA's cost model assigns to ``compiled``."""
  try:
    cost = compiled.cost_analysis()
  except Exception as e:  # pylint: disable=broad-except
    return {"flops": None, "cost_error": repr(e)}
  if isinstance(cost, (list, tuple)):  # older jax: one dict per device program
    cost = cost[0] if cost else {}
  cost = cost or {}
  return {"flops": _num(cost.get("flops")),
          "bytes_accessed": _num(cost.get("bytes accessed"))}


def memory_of(compiled) -> dict[str, Any]:
  """Argument / output / temp buffer sizes of ``compiled`` in bytes."""
  try:
    mem = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return {}
  if mem is None:
    return {}
  out = {}
  for name in ("argument_size_in_bytes", "output_size_in_bytes",
               "temp_size_in_bytes", "alias_size_in_bytes",
               "generated_code_size_in_bytes"):
    v = getattr(mem, name, None)
    if v is not None:
      out[name.replace("_size_in_bytes", "_bytes")] = int(v)
  return out


def _num(v):
  if v is None:
    return None
  v = float(v)
  return v if v >= 0 else None


def cpu_model() -> str:
  """The CPU model name as lscpu prints it ('AMD EPYC', 'Intel Xeon ...')."""
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    for line in out.splitlines():
      if line.startswith("Model name:"):
        return line.split(":", 1)[1].strip()
  except Exception:  # pylint: disable=broad-except
    pass
  return platform.processor() or "unknown"


def cpu_flags_of_interest() -> list[str]:
  """ISA extensions that decide which kernels XLA / oneDNN can use."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          flags = set(line.split(":", 1)[1].split())
          keep = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                  "amx_tile", "amx_fp16"]
          return [k for k in keep if k in flags]
  except OSError:
    pass
  return []


def environment() -> dict[str, Any]:
  """Where and with what the figures were measured."""
  dev = jax.devices()[0]
  env: dict[str, Any] = {
      "host": socket.gethostname(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "platform": dev.platform,
      "device_kind": dev.device_kind,
      "device_count": jax.device_count(),
      "cpu_model": cpu_model(),
      "cpu_count": os.cpu_count(),
      "cpus_usable": len(os.sched_getaffinity(0)),
      "cpu_flags": cpu_flags_of_interest(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": _version("jaxlib"),
      "flax": _version("flax"),
      "optax": _version("optax"),
      "numpy": np.__version__,
      "torch": _version("torch"),
      "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
      "XLA_PYTHON_CLIENT_MEM_FRACTION": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", ""),
      # glibc.malloc.hugetlb=1 changes XLA:CPU's timings (page faults on fresh buffers).
      "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", ""),
      "load_average_start": _loadavg(),
  }
  return env


def _version(module: str) -> str | None:
  try:
    from importlib import metadata
    return metadata.version(module)
  except Exception:  # pylint: disable=broad-except
    return None


def _loadavg() -> list[float] | None:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def not_available(reason: str) -> dict[str, Any]:
  """The entry a case writes when the library code it benches has not landed."""
  return {"status": "not available", "reason": reason}


def ratio(a: float | None, b: float | None) -> float | None:
  """a / b, or None where either side is missing."""
  if a is None or b is None or b == 0:
    return None
  return a / b


def peak_matmul_flops(n: int = 2048, repeats: int = 5, dtype: str = "float32"
                      ) -> dict[str, Any]:
  """Measured matmul peak of this device: an n x n x n matmul, 2 n^3 FLOPs per call.

  At JAX's default precision, as the benchmarked steps run (on NVIDIA GPUs since
  Ampere a float32 matmul then uses TF32 tensor cores).
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  compiled, stats = compile_stats(jnp.matmul, a, b)
  t = time_calls(lambda: compiled(a, b), repeats=repeats, warmup=2)
  flops = 2.0 * n ** 3
  return {"n": n, "dtype": dtype, "precision": "default", "flops": flops, **t.as_dict(),
          "flops_per_s": flops / t.median, "xla_flops": stats.get("flops")}


def time_interleaved(calls: dict[str, Callable[[], Any]], *, repeats: int = 5,
                     warmup: int = 1) -> dict[str, Timing]:
  """Times several calls round-robin: A B C, A B C, ... (``repeats`` rounds).

  On a shared, noisy machine the load changes over minutes; interleaving puts every
  variant under the same load in each round, so their ratios stay meaningful even
  when the absolute figures drift.  Use :func:`paired_ratio` for per-round ratios.
  """
  for _ in range(warmup):
    for call in calls.values():
      jax.block_until_ready(call())
  times: dict[str, list[float]] = {k: [] for k in calls}
  cpu: dict[str, list[float]] = {k: [] for k in calls}
  for _ in range(max(1, repeats)):
    for name, call in calls.items():
      c0, t0 = time.process_time(), time.perf_counter()
      jax.block_until_ready(call())
      times[name].append(time.perf_counter() - t0)
      cpu[name].append(time.process_time() - c0)
  return {k: Timing(v, warmup, cpu[k]) for k, v in times.items()}


def paired_ratio(slow: Timing, fast: Timing) -> dict[str, float]:
  """Median and spread of per-round ratios slow/fast (> 1: ``fast`` is faster)."""
  r = sorted(a / b for a, b in zip(slow.times, fast.times))
  return {"median": float(statistics.median(r)), "min": r[0], "max": r[-1]}
