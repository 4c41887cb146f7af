"""Case 6: the measured f32 peak of this device, the yardstick of achieved FLOP/s.

A large square f32 matmul (2048^3 on CPU; 8192^3 on an accelerator) jitted and timed
like every other figure.  ``run.py`` then divides each JAX row's achieved FLOP/s
(XLA ``cost_analysis()`` FLOPs / median time) by this peak (column ``%pk``).
"""

from __future__ import annotations

from typing import Any

import jax

import common


def run(ctx: dict[str, Any]) -> list[dict[str, Any]]:
  cpu = jax.devices()[0].platform == "cpu"
  n = 512 if ctx["quick"] else (2048 if cpu else 8192)
  p = common.peak_matmul_flops(n, repeats=ctx["repeats"])
  return [{"case": "flops", "variant": "peak_matmul_f32", "shape": f"{n}x{n}x{n}",
           "what": "jnp.matmul f32, 2 n^3 FLOPs", **p}]
