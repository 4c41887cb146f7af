"""Case 3: Voynov-Babenko discovery step, and N vmapped restarts vs N sequential runs.

Step: ``jaxlatent.directions.voynov.make_train_step`` (frozen DCGAN in eval mode, proj
deformator, LeNet reconstructor, K = 100, batch 128) vs ``torch_refs.DiscoveryStep``,
a loop written like GANLatentDiscovery's ``Trainer.train`` with the same networks.
Both sides render G(z) and G(z + shift) and back-propagate through G to the shift.
Two PyTorch loops: ``torch_step`` freezes G's parameters (the fastest form, the same
work as the JAX step) and ``torch_reference_step`` is the reference as written (G's
parameters keep ``requires_grad``, so its weight gradients are computed for both
renders, and the shifts are filled one sample at a time).
The frozen DCGAN is case 1's schedule at 64x64 with C = 128 at 4x4 (G's FLOPs / 16 of
case 1's C = 512, which would make this case's many steps too long on a CPU).

Restarts: ``run_voynov_restarts(keys[N])`` on one device (``batching`` 'vmap', one
vmapped program, and 'map', the jitted single-restart step dispatched per restart, are
both timed; with several devices, e.g. ``run.py --host-devices 2``
on a CPU, also spread over them: ``devices='auto'``, 'map' on CPU) vs N calls of
``run_voynov`` (same config: ``steps`` steps then one held-out RCA evaluation).  The
speedup is sequential time / restarts time; the target is >= 0.8 N.  On a
compute-bound CPU the restarts do the same FLOPs as the sequential runs, so expect
~1x there at best; the gain comes from filling an accelerator.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp

import common


def _generator(size: int, c4: int):
  import case_dcgan  # pylint: disable=g-import-not-at-top
  from jaxlatent.training.trainers import make_trainer  # pylint: disable=g-import-not-at-top
  # The library's default network (Schön's DCGAN), as torch_refs' with schon=True.
  trainer = make_trainer(case_dcgan._lib_config(size, c4, "subpixel", "space_to_depth"))  # pylint: disable=protected-access
  return trainer.generator(trainer.init(jax.random.key(0)))


def shapes(quick: bool) -> tuple[int, int, int, int]:
  """(image size, channels at 4x4, batch, K) of the timed step."""
  return (16, 32, 8, 10) if quick else (64, 128, 128, 100)


def shape_text(size: int, c4: int, batch: int, k: int) -> str:
  """The ``shape`` of the step's rows, e.g. ``'DCGAN 64x64 C128, K100, batch 128'``."""
  return f"DCGAN {size}x{size} C{c4}, K{k}, batch {batch}"


def jax_step(gen, batch: int, k: int):
  """(call, stats, compiled) for the jitted discovery step on ``gen``; ``call()`` runs
  one step, threading the state."""
  from jaxlatent.directions import voynov  # pylint: disable=g-import-not-at-top
  # The GroupNorm LeNet and bias-free proj deformator that torch_refs.DiscoveryStep mirrors.
  cfg = voynov.VoynovConfig(num_directions=k, deformator="proj",
                            reconstructor="lenet_groupnorm", deformator_bias=False,
                            deformator_init="scaled", batch_size=batch, steps=1,
                            eval_every=1)
  step = voynov.make_train_step(gen, cfg)
  state = jax.jit(voynov.init_state, static_argnames=("config",))(
      gen, jax.random.key(1), config=cfg)
  # make_train_step's jitted function takes the config as a static keyword.
  lowered = step.jitted.lower(gen, state, jax.random.key(2), config=cfg)
  t0 = time.perf_counter()
  compiled = lowered.compile()
  stats = {"compile_s": time.perf_counter() - t0, **common.cost_of(compiled)}
  box = [state]

  def call():
    box[0], metrics = compiled(gen, box[0], jax.random.key(3))
    return metrics["loss"]

  return call, stats, compiled


def run(ctx: dict[str, Any]) -> list[dict[str, Any]]:
  from jaxlatent.directions import voynov  # pylint: disable=g-import-not-at-top
  quick = ctx["quick"]
  size, c4, batch, k = shapes(quick)
  gen = _generator(size, c4)
  jax_call, stats, _ = jax_step(gen, batch, k)
  calls = {"jax_step": jax_call}
  shape = shape_text(size, c4, batch, k)
  if ctx["torch"] is not None:
    import case_dcgan  # pylint: disable=g-import-not-at-top
    import torch_refs  # pylint: disable=g-import-not-at-top
    gw, _ = case_dcgan._widths(size, c4)  # pylint: disable=protected-access
    dev = ctx.get("torch_device") or "cpu"
    tg = torch_refs.DCGANGenerator(32, gw, 1, project="convt", out_bias=False)
    calls["torch_step"] = torch_refs.DiscoveryStep(tg, 32, k, batch, size, device=dev)
    tg_ref = torch_refs.DCGANGenerator(32, gw, 1, project="convt", out_bias=False)
    calls["torch_reference_step"] = torch_refs.DiscoveryStep(tg_ref, 32, k, batch, size,
                                                             freeze_generator=False,
                                                             device=dev)
  t = common.time_interleaved(calls, repeats=ctx["repeats"], warmup=ctx["warmup"])
  rows = [{"case": "discovery", "variant": "jax_step", "shape": shape,
           "what": "voynov.make_train_step (jitted)", **t["jax_step"].as_dict(),
           "steps_per_s": 1 / t["jax_step"].median, "compile_s": stats.get("compile_s"),
           "flops": stats.get("flops"),
           "flops_per_s": stats["flops"] / t["jax_step"].median if stats.get("flops") else None}]
  if "torch_step" in t:
    rows[0]["speedup"] = common.paired_ratio(t["torch_step"], t["jax_step"])
    rows[0]["cpu_speedup"] = common.paired_ratio(t["torch_step"].cpu(), t["jax_step"].cpu())
    rows[0]["speedup_vs_torch_reference"] = common.paired_ratio(t["torch_reference_step"],
                                                                t["jax_step"])
    rows[0]["cpu_speedup_vs_torch_reference"] = common.paired_ratio(
        t["torch_reference_step"].cpu(), t["jax_step"].cpu())
    rows.append({"case": "discovery", "variant": "torch_step", "shape": shape,
                 "what": "GANLatentDiscovery-style loop, same networks, G frozen",
                 **t["torch_step"].as_dict(), "steps_per_s": 1 / t["torch_step"].median})
    rows.append({"case": "discovery", "variant": "torch_reference_step", "shape": shape,
                 "what": "GANLatentDiscovery's loop as written (G's weight gradients too)",
                 **t["torch_reference_step"].as_dict(),
                 "steps_per_s": 1 / t["torch_reference_step"].median})
  else:
    rows.append({"case": "discovery", "variant": "torch_step", "shape": shape,
                 **common.not_available("torch not installed")})
  rows += _restarts(ctx, gen, voynov, size, c4, k)
  return rows


def _restarts(ctx, gen, voynov, size, c4, k) -> list[dict[str, Any]]:
  """N vmapped restarts vs N sequential runs (each: ``steps`` steps + one RCA eval)."""
  import warnings  # pylint: disable=g-import-not-at-top
  quick = ctx["quick"]
  n = 2 if quick else 4
  rows = []
  # Two workloads: the paper's batch (compute-bound) and a small one (overhead-bound).
  for batch, steps in ([(8, 2)] if quick else [(128, 2), (16, 4)]):
    cfg = voynov.VoynovConfig(num_directions=k, deformator="proj",
                              reconstructor="lenet_groupnorm", deformator_bias=False,
                              deformator_init="scaled", batch_size=batch, steps=steps,
                              eval_every=steps, eval_batches=1)
    keys = jax.random.split(jax.random.key(4), n)

    def sequential():
      out = None
      for i in range(n):
        out = voynov.run_voynov(gen, cfg, keys[i]).state.params
      return out

    def restarts(batching, devices=None):
      return lambda: voynov.run_voynov_restarts(gen, cfg, keys, batching=batching,
                                                devices=devices).state.params

    calls = {"seq": sequential, "vmap": restarts("vmap"), "map": restarts("map")}
    spread = jax.device_count() > 1 and n % jax.device_count() == 0
    if spread:
      calls["spread"] = restarts("auto", "auto")
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # collapse warnings: a few steps never train
      t = common.time_interleaved(calls, repeats=ctx["repeats"], warmup=1)
    shape = f"N={n}, batch {batch}, {steps} steps + 1 eval, K{k}"
    rows.append({"case": "discovery", "variant": f"restarts_sequential_b{batch}",
                 "shape": shape, "what": f"{n} x run_voynov", **t["seq"].as_dict()})
    variants = [("vmap", "one vmapped program on one device (batching='vmap')"),
                ("map", "one restart after another on one device (batching='map')")]
    if spread:
      variants.append(("spread", f"split over the {jax.device_count()} devices "
                                 "(devices='auto', batching='auto' on each)"))
    for name, what in variants:
      sp = common.paired_ratio(t["seq"], t[name])
      rows.append({"case": "discovery", "variant": f"restarts_{name}_b{batch}",
                   "shape": shape, "what": f"run_voynov_restarts, {what}",
                   **t[name].as_dict(), "speedup_vs_sequential": sp,
                   "cpu_speedup_vs_sequential": common.paired_ratio(t["seq"].cpu(),
                                                                    t[name].cpu()),
                   "target_speedup": 0.8 * n, "speedup_over_N": sp["median"] / n})
  return rows
