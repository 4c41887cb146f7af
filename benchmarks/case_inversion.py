"""Case 5: batched GAN z inversion, images/s for 256 images vs one image at a time.

``jaxlatent.inversion.invert_z`` (Creswell & Bharath: RMSprop on MSE + a prior,
one jitted ``lax.scan`` over steps, vmapped over restarts, batched over images) on
case 1's DCGAN at 64x64.  Batched: 256 targets in one call.  One at a time: the same
function called per image (the compiled program is reused, so this is the loop a
user would write with it); timed over the first ``n_single`` images and reported as
images/s.  Both with ``restarts=1`` and the same number of steps.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

import common


def run(ctx: dict[str, Any]) -> list[dict[str, Any]]:
  from jaxlatent.inversion import invert_z  # pylint: disable=g-import-not-at-top
  import case_discovery  # pylint: disable=g-import-not-at-top
  quick = ctx["quick"]
  size, c4 = (16, 32) if quick else (64, 128)
  n, n_single, steps = (16, 4, 5) if quick else (256, 16, 10)
  gen = case_discovery._generator(size, c4)  # pylint: disable=protected-access
  targets = gen(jax.random.normal(jax.random.key(5), (n, 32)))  # [N, S, S, 1]
  key = jax.random.key(6)

  def batched():
    return invert_z(gen, targets, key, steps=steps, restarts=1).latents

  def one_at_a_time():
    out = None
    for i in range(n_single):
      out = invert_z(gen, targets[i:i + 1], key, steps=steps, restarts=1).latents
    return out

  tb = common.time_calls(batched, repeats=ctx["repeats"], warmup=ctx["warmup"])
  ts = common.time_calls(one_at_a_time, repeats=ctx["repeats"], warmup=1)
  ips_b, ips_s = n / tb.median, n_single / ts.median
  shape = f"DCGAN {size}x{size} C{c4}, {steps} RMSprop steps, restarts 1"
  return [
      {"case": "inversion", "variant": f"jax_batched_{n}", "shape": shape,
       "what": f"invert_z on {n} images at once", **tb.as_dict(), "images_per_s": ips_b,
       "speedup_vs_one_at_a_time": ips_b / ips_s},
      {"case": "inversion", "variant": "jax_one_at_a_time", "shape": shape,
       "what": f"invert_z per image (timed over {n_single} images)", **ts.as_dict(),
       "images_per_s": ips_s},
  ]
