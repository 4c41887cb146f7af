"""Case 2: StyleGAN2 train step at 64x64, lazy R1 / path-length amortised (JAX only).

The library's step (``make_trainer`` with ``model.name='stylegan2'``), jitted once
with the state donated.  One timed repeat = 16 consecutive steps starting at a
multiple of 16, so it holds exactly one R1 step (``r1_interval=16``) and four
path-length steps (``pl_interval=4``): the per-step figure is the amortised cost of
training.  The regularised and plain steps are also timed alone.

Size: the stylegan2-ada 64x64 network has 512 channels at every resolution (~0.5
TFLOP per batch-32 step), minutes per step on 2 CPU cores; the CPU default here is a
narrower network (``channel_base=2048, channel_max=128``, 8 mapping layers, z = w =
256, batch 16).  ``ctx['stylegan_full']`` (``--full`` on a GPU) runs the ada defaults.

No PyTorch reference yet: stylegan2-ada's ``networks.py`` + ``loss.py`` would be the
fair baseline; the figures are JAX-only absolute numbers.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp

import common


def _config(size: int, quick: bool, full: bool):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxlatent.models import default_model_config, default_optim_config  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict()
  c.image_size = size
  c.model = default_model_config("stylegan2")
  c.optim = default_optim_config("stylegan2")
  if quick:
    c.model.latent_dim = c.model.w_dim = 16
    c.model.num_mapping_layers = 2
    c.model.channel_base, c.model.channel_max = 256, 16
  elif not full:
    c.model.latent_dim = c.model.w_dim = 256
    c.model.channel_base, c.model.channel_max = 2048, 128
  return c


def run(ctx: dict[str, Any]) -> list[dict[str, Any]]:
  from jaxlatent.training.trainers import make_trainer  # pylint: disable=g-import-not-at-top
  quick, full = ctx["quick"], ctx.get("stylegan_full", False)
  size = 16 if quick else 64
  batch = 4 if quick else (32 if full else 16)
  cfg = _config(size, quick, full)
  m = cfg.model
  period = int(m.r1_interval)  # 16: covers one R1 and period / pl_interval PL steps
  trainer = make_trainer(cfg)
  state = jax.jit(trainer.init)(jax.random.key(0))  # as training/loop.py: distinct buffers
  batch_ = {"image": jax.random.uniform(jax.random.key(1), (batch, size, size, 1),
                                        jnp.float32, -1, 1)}
  compiled, stats = common.compile_stats(trainer.train_step, state, batch_,
                                         jax.random.key(2), donate_argnums=(0,))
  box = [state]
  reg_times, plain_times = [], []

  def period_call():
    """16 steps, each blocked and timed, from a step count that is a multiple of 16."""
    out = None
    for i in range(period):
      t0 = time.perf_counter()
      box[0], metrics = compiled(box[0], batch_, jax.random.key(i))
      out = jax.block_until_ready(metrics["g_loss"])
      dt = time.perf_counter() - t0
      if i == 0:
        reg_times.append(dt)  # step % 16 == 0: R1 and path length
      elif i % int(m.pl_interval) != 0:
        plain_times.append(dt)  # neither
    return out

  # The warm-up period leaves the step count at 16, so every timed period holds the
  # same phases (1 R1 + 4 PL steps).
  t = common.time_calls(period_call, repeats=ctx["repeats"], warmup=1)
  n_plain = sum(1 for i in range(1, period) if i % int(m.pl_interval) != 0)
  reg_times, plain_times = reg_times[1:], plain_times[n_plain:]  # drop the warm-up
  amort = common.Timing([x / period for x in t.times], t.warmup)
  shape = (f"{size}x{size} b{batch} cb{m.channel_base} cmax{m.channel_max} "
           f"z{m.latent_dim}")
  flops = stats.get("flops")
  note = ("flops: XLA's count for the whole program, which holds the R1 and PL "
          "lax.cond branches; not divided by a time (branches run 1/16 and 1/4 of steps)")
  rows = [
      {"case": "stylegan", "variant": "jax_step_amortised_16", "shape": shape,
       "what": "mean step over 16 steps (1 R1 + 4 PL)", **amort.as_dict(),
       "images_per_s": batch / amort.median, "compile_s": stats.get("compile_s"),
       "flops": flops, "note": note, "torch": "not written (JAX-only figures)"},
      {"case": "stylegan", "variant": "jax_step_plain", "shape": shape,
       "what": "a step without regularisation (step % 4 != 0)",
       **common.Timing(plain_times, 0).as_dict(),
       "images_per_s": batch / common.Timing(plain_times, 0).median},
      {"case": "stylegan", "variant": "jax_step_r1_pl", "shape": shape,
       "what": "the step with both R1 and path length (step % 16 == 0)",
       **common.Timing(reg_times, 0).as_dict(),
       "images_per_s": batch / common.Timing(reg_times, 0).median},
  ]
  return rows
