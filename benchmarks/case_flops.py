"""Case 6: the measured f32 peak of this device, the yardstick of achieved FLOP/s.

A large square f32 matmul (2048^3 on CPU; 8192^3 on an accelerator) jitted and timed
like every other figure, at JAX's default precision (TF32 on recent NVIDIA GPUs, as
the benchmarked float32 steps).  ``run.py`` then divides each JAX row's achieved
FLOP/s (XLA ``cost_analysis()`` FLOPs / median time) by this peak (column ``%pk``).
On an accelerator a bfloat16 matmul of the same size is timed too: the dense
bfloat16 peak, for the mixed-precision figures.
"""

from __future__ import annotations

from typing import Any

import jax

import common


def run(ctx: dict[str, Any]) -> list[dict[str, Any]]:
  cpu = jax.devices()[0].platform == "cpu"
  n = 512 if ctx["quick"] else (2048 if cpu else 8192)
  p = common.peak_matmul_flops(n, repeats=ctx["repeats"])
  rows = [{"case": "flops", "variant": "peak_matmul_f32", "shape": f"{n}x{n}x{n}",
           "what": "jnp.matmul f32 (default precision), 2 n^3 FLOPs", **p}]
  if not cpu:
    p = common.peak_matmul_flops(n, repeats=ctx["repeats"], dtype="bfloat16")
    rows.append({"case": "flops", "variant": "peak_matmul_bf16", "shape": f"{n}x{n}x{n}",
                 "what": "jnp.matmul bfloat16, 2 n^3 FLOPs", **p})
  return rows
