"""Case 2: StyleGAN2 train step (64x64; 256 on a GPU), lazy R1 / PL amortised, JAX vs PyTorch.

The library's step (``make_trainer`` with ``model.name='stylegan2_simple'``, the
architecture torch_stylegan.py ports, so both sides do the same work), jitted once
per phase (plain, path length, path length + R1; ``trainer.phase(step)`` as the
training loop does) with the state donated.  One timed repeat = 16 consecutive steps starting at a
multiple of 16, so it holds exactly one R1 step (``r1_interval=16``) and four
path-length steps (``pl_interval=4``): the per-step figure is the amortised cost of
training.  The regularised and plain steps are also timed alone.

Size: the stylegan2-ada 64x64 network has 512 channels at every resolution (~0.5
TFLOP per batch-32 step), far too large for a CPU; the CPU default here is a
narrower network (``channel_base=2048, channel_max=128``, 8 mapping layers, z = w =
256, batch 16).  ``--stylegan-full`` (for a GPU) runs the ada defaults at batch 32;
``--stylegan-sizes 64,256`` times each size in turn (default 64).

PyTorch reference: ``torch_stylegan.StyleGAN2Step``, the same network and step
written by us in PyTorch (NCHW; see its docstring for what matches and what differs),
built from the same config.  Its 16-step periods alternate round-robin with the JAX
ones (``common.time_interleaved``); ``speedup_vs_torch`` on the JAX rows is the
per-round paired ratio PyTorch / JAX (> 1: JAX is faster).  Without torch the
PyTorch rows say 'not available'.  stylegan2-ada's own ``networks.py`` + ``loss.py``
(FIR filters, custom CUDA ops) are not what is timed here.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp

import common


def _config(size: int, quick: bool, full: bool):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxlatent.models import default_model_config  # pylint: disable=g-import-not-at-top
  from jaxlatent.training import default_optim_config  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict()
  c.image_size = size
  c.model = default_model_config("stylegan2_simple")
  c.optim = default_optim_config("stylegan2_simple")
  if quick:
    c.model.latent_dim = c.model.w_dim = 16
    c.model.num_mapping_layers = 2
    c.model.channel_base, c.model.channel_max = 256, 16
  elif not full:
    c.model.latent_dim = c.model.w_dim = 256
    c.model.channel_base, c.model.channel_max = 2048, 128
  return c


def _period_call(step_once, period: int, periods: list[list[float]]):
  """A call running ``period`` steps, each timed; appends the step times to ``periods``."""

  def call():
    out, times = None, []
    for i in range(period):
      t0 = time.perf_counter()
      out = step_once(i)
      times.append(time.perf_counter() - t0)
    periods.append(times)
    return out

  return call


def _split(periods: list[list[float]], pl_interval: int) -> tuple[list[float], list[float]]:
  """(R1 + PL step times, plain step times) of the timed periods, in round order."""
  reg = [p[0] for p in periods]  # step % 16 == 0: R1 and path length
  plain = [t for p in periods for i, t in enumerate(p) if i % pl_interval != 0]
  return reg, plain


def run(ctx: dict[str, Any]) -> list[dict[str, Any]]:
  """Rows for every size of ``ctx['stylegan_sizes']`` (default 64; 16 when quick)."""
  sizes = ctx.get("stylegan_sizes") or ([16] if ctx["quick"] else [64])
  rows = []
  for size in sizes:
    rows += _run_size(ctx, int(size))
  return rows


def _run_size(ctx: dict[str, Any], size: int) -> list[dict[str, Any]]:
  from jaxlatent.training.trainers import make_trainer  # pylint: disable=g-import-not-at-top
  quick, full = ctx["quick"], ctx.get("stylegan_full", False)
  batch = 4 if quick else (32 if full else 16)
  cfg = _config(size, quick, full)
  m = cfg.model
  period = int(m.r1_interval)  # 16: covers one R1 and period / pl_interval PL steps
  pl_interval = int(m.pl_interval)
  trainer = make_trainer(cfg)
  state = jax.jit(trainer.init)(jax.random.key(0))  # as training/loop.py: distinct buffers
  batch_ = {"image": jax.random.uniform(jax.random.key(1), (batch, size, size, 1),
                                        jnp.float32, -1, 1)}
  # One program per phase (plain / PL / PL + R1), as training/loop.py runs them: XLA:CPU
  # runs the branches of the lax.cond form (trainer.train_step without phase=) far
  # slower than the same code at the top level.
  programs, phase_stats = {}, {}
  for i in range(period):
    ph = trainer.phase(i)
    if ph not in programs:
      programs[ph], phase_stats[ph] = common.compile_stats(
          functools.partial(trainer.train_step, phase=ph), state, batch_,
          jax.random.key(2), donate_argnums=(0,))
  stats = {"compile_s": sum(v["compile_s"] for v in phase_stats.values()),
           "flops_by_phase": {f"pl={a},r1={b}": v.get("flops")
                              for (a, b), v in phase_stats.items()}}
  box = [state]

  def jax_step(i):
    box[0], metrics = programs[trainer.phase(i)](box[0], batch_, jax.random.key(i))
    return jax.block_until_ready(metrics["g_loss"])

  periods: dict[str, list[list[float]]] = {"jax": [], "torch": []}
  calls = {"jax": _period_call(jax_step, period, periods["jax"])}
  torch_missing = None
  if ctx["torch"] is not None:
    try:
      import torch_stylegan  # pylint: disable=g-import-not-at-top
      torch_step = torch_stylegan.StyleGAN2Step.from_config(
          cfg, batch, device=ctx.get("torch_device") or "cpu")
      calls["torch"] = _period_call(lambda i: torch_step(), period, periods["torch"])
    except ImportError as e:
      torch_missing = f"not available: {e}"
  else:
    torch_missing = "not available: torch not installed (pip install -e .[bench])"

  # Both start at step 0; each warm-up period leaves the step count at a multiple of
  # 16, so every timed period holds the same phases (1 R1 + 4 PL steps).  JAX and
  # PyTorch periods alternate round-robin, so their per-round ratios share the load.
  warmup = max(1, ctx["warmup"])
  t = common.time_interleaved(calls, repeats=ctx["repeats"], warmup=warmup)
  timed = {k: v[warmup:] for k, v in periods.items() if k in calls}
  shape = (f"{size}x{size} b{batch} cb{m.channel_base} cmax{m.channel_max} "
           f"z{m.latent_dim} map{m.num_mapping_layers}")
  note = ("flops: XLA's counts, per program (flops_by_phase); the amortised row's is the "
          "mean over the 16 steps of a period; compile_s: the three phase programs "
          "together")
  step_flops = [phase_stats[trainer.phase(i)].get("flops") for i in range(period)]
  flops_of = {  # per-step FLOPs of each JAX row (None where XLA gave no count)
      "jax_step_amortised_16": (sum(step_flops) / period if all(step_flops) else None),
      "jax_step_plain": phase_stats[trainer.phase(1)].get("flops"),
      "jax_step_r1_pl": phase_stats[trainer.phase(0)].get("flops")}
  rows = []
  split = {k: _split(v, pl_interval) for k, v in timed.items()}
  amort = {k: common.Timing([x / period for x in t[k].times], warmup) for k in calls}
  for k in calls:  # process CPU time per period, where common.Timing records it
    cpu = getattr(t[k], "cpu_times", None)
    if cpu:
      amort[k].cpu_times = [x / period for x in cpu]
  for name in ("jax", "torch"):
    label = "JAX (jaxlatent)" if name == "jax" else "PyTorch reference (torch_stylegan.py)"
    if name not in calls:
      for variant in ("step_amortised_16", "step_plain", "step_r1_pl"):
        rows.append({"case": "stylegan", "variant": f"{name}_{variant}", "shape": shape,
                     **common.not_available(torch_missing or "not run")})
      continue
    reg, plain = split[name]
    reg_t, plain_t = common.Timing(reg, warmup), common.Timing(plain, warmup)
    rows += [
        {"case": "stylegan", "variant": f"{name}_step_amortised_16", "shape": shape,
         "what": f"{label}: mean step over 16 steps (1 R1 + 4 PL)", **amort[name].as_dict(),
         "images_per_s": batch / amort[name].median},
        {"case": "stylegan", "variant": f"{name}_step_plain", "shape": shape,
         "what": f"{label}: a step without regularisation (step % 4 != 0)",
         **plain_t.as_dict(), "images_per_s": batch / plain_t.median},
        {"case": "stylegan", "variant": f"{name}_step_r1_pl", "shape": shape,
         "what": f"{label}: the step with both R1 and path length (step % 16 == 0)",
         **reg_t.as_dict(), "images_per_s": batch / reg_t.median},
    ]
  jax_rows = {r["variant"]: r for r in rows if r["variant"].startswith("jax_")}
  jax_rows["jax_step_amortised_16"].update(compile_s=stats.get("compile_s"),
                                           flops_by_phase=stats["flops_by_phase"], note=note)
  for variant, row in jax_rows.items():  # achieved FLOP/s; run.py adds the peak fraction
    row["flops"] = flops_of[variant]
    row["flops_per_s"] = flops_of[variant] / row["median_s"] if flops_of[variant] else None
  if "torch" in calls:
    # Paired per round: the amortised step is the period time / 16 on both sides; the
    # plain and R1 + PL steps pair step i of round r with step i of the same round.
    jax_rows["jax_step_amortised_16"]["speedup_vs_torch"] = common.paired_ratio(
        amort["torch"], amort["jax"])
    if getattr(amort["jax"], "cpu_times", None) and getattr(amort["torch"], "cpu_times", None):
      # Steadier than wall time on a loaded machine (see common.Timing).
      jax_rows["jax_step_amortised_16"]["cpu_speedup_vs_torch"] = common.paired_ratio(
          amort["torch"].cpu(), amort["jax"].cpu())
    for variant, idx in (("jax_step_plain", 1), ("jax_step_r1_pl", 0)):
      jax_rows[variant]["speedup_vs_torch"] = common.paired_ratio(
          common.Timing(split["torch"][idx], warmup), common.Timing(split["jax"][idx], warmup))
  return rows
