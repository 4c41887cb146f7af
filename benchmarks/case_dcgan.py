"""Case 1: one DCGAN train step (D + G), JAX vs the PyTorch reference, images/s.

Benched: the library's step (``jaxlatent.training.trainers.make_trainer``, jitted once
with the state donated, as ``training/loop.py`` does) with its default network,
Schön et al.'s DCGAN (``arch='schon'``: 4x4 stride-2 layers computed exactly, in the
forms ``jaxlatent.ops.conv4x4.transpose_form`` / ``conv_form`` pick), and the earlier ``arch='resample'`` variants
(sub-pixel / space-to-depth 2x2 layers, ``upsample='transpose'``/``downsample='strided'``);
candidate changes on the bench-local model (``jax_dcgan.py``: one G forward reused
through ``jax.vjp``, bf16 compute); the PyTorch reference, literally Schön et al.'s
network (``torch_refs.DCGANStep(schon=True)``: ConvTranspose2d / strided Conv2d, NCHW
as a user writes it, and channels_last).
All variants of one size run round-robin in one process, so their ratios share the
machine's load.

Widths: ``gen_channels = disc_channels = C`` at 4x4, halved per doubling
(jaxlatent's schedule).  The default C = 512 is the PyTorch DCGAN example's 64x64
network (ngf = ndf = 64); the paper's C = 2048 is ``--dcgan-channels 2048``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

import common


def _widths(size: int, c4: int) -> tuple[list[int], list[int]]:
  """G widths at 4, 8, ..., size/2 and D widths at size/2, ..., 4 (jaxlatent's schedule)."""
  g, res = [], 4
  while res < size:
    g.append(max(1, c4 * 4 // res))
    res *= 2
  return g, list(reversed(g))


def _lib_config(size: int, c4: int, upsample: str, downsample: str, norm: str = "batch",
                conv_grad: str = "auto", matmul_dtype: str = "float32", arch: str = "schon"):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxlatent.models import default_model_config  # pylint: disable=g-import-not-at-top
  from jaxlatent.training import default_optim_config  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict()
  c.image_size = size
  c.model = default_model_config("dcgan")
  c.model.arch = arch
  c.model.gen_channels = c4
  c.model.disc_channels = c4
  c.model.max_channels = max(c4, 2048)
  c.model.upsample = upsample
  c.model.downsample = downsample
  c.model.norm = norm
  c.model.conv_grad = conv_grad
  c.model.matmul_dtype = matmul_dtype
  c.optim = default_optim_config("dcgan")
  return c


def lib_step(size: int, batch: int, c4: int, upsample="subpixel",
             downsample="space_to_depth", precision: str | None = None, norm="batch",
             donate: bool = True, conv_grad: str = "auto", matmul_dtype: str = "float32",
             arch: str = "schon"):
  """(call, stats, compiled) for the library's jitted, donated DCGAN step; ``call()``
  runs one step, threading the state."""
  from jaxlatent.training.trainers import make_trainer  # pylint: disable=g-import-not-at-top
  trainer = make_trainer(_lib_config(size, c4, upsample, downsample, norm, conv_grad,
                                     matmul_dtype, arch))
  state = jax.jit(trainer.init)(jax.random.key(0))  # as training/loop.py: distinct buffers
  batch_ = {"image": jax.random.uniform(jax.random.key(1), (batch, size, size, 1),
                                        jnp.float32, -1, 1)}
  key = jax.random.key(2)
  donate_argnums = (0,) if donate else ()
  if precision:
    with jax.default_matmul_precision(precision):
      compiled, stats = common.compile_stats(trainer.train_step, state, batch_, key,
                                             donate_argnums=donate_argnums)
  else:
    compiled, stats = common.compile_stats(trainer.train_step, state, batch_, key,
                                           donate_argnums=donate_argnums)
  box = [state]

  def call():
    box[0], metrics = compiled(box[0], batch_, key)
    return metrics["g_loss"]

  return call, stats, compiled


def bench_step(size: int, batch: int, c4: int, **knobs):
  """(call, stats) for a candidate on the bench-local JAX DCGAN (jax_dcgan.py)."""
  import jax_dcgan  # pylint: disable=g-import-not-at-top
  gw, dw = _widths(size, c4)
  init, step = jax_dcgan.make_step(size, 32, gw, dw, batch, **knobs)
  state = init(jax.random.key(0))
  real = jax.random.uniform(jax.random.key(1), (batch, size, size, 1), jnp.float32, -1, 1)
  key = jax.random.key(2)
  compiled, stats = common.compile_stats(step, state, real, key, donate_argnums=(0,))
  box = [state]

  def call():
    box[0], loss = compiled(box[0], real, key)
    return loss

  return call, stats


def torch_step(size: int, batch: int, c4: int, channels_last: bool = False,
               reuse_fake: bool = True, autocast_bf16: bool = False, device: str = "cpu"):
  """A call running one step of the PyTorch reference (same widths as the library) on
  ``device``; ``autocast_bf16``: under ``torch.autocast(device, torch.bfloat16)``,
  PyTorch's mixed precision (on CPU oneDNN's bfloat16 convolutions; float32
  parameters)."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch_refs  # pylint: disable=g-import-not-at-top
  gw, dw = _widths(size, c4)
  step = torch_refs.DCGANStep(size, 32, gw, dw, batch, channels_last=channels_last,
                              reuse_fake=reuse_fake, device=device, schon=True)
  if not autocast_bf16:
    return step

  def call():
    with torch.autocast(device, dtype=torch.bfloat16):
      return step()

  return call


VARIANTS = {
    # name: (kind, kwargs, description)
    "jax_schon": ("lib", {}, "library default: Schön's network, exact 4x4 stride-2 layers: "
                  "transposed convs as 2x2 convs + depth-to-space with GEMM gradients, "
                  "strided convs by XLA's stride-2 conv with 2x2-form gradients"),
    "jax_subpixel": ("lib", {"arch": "resample"},
                     "arch='resample': sub-pixel 2x2 up, space-to-depth 2x2 down"),
    "jax_xla_grad": ("lib", {"conv_grad": "xla"},
                     "library default, but XLA's autodiff convs for the 2x2 conv gradients"),
    "jax_transpose": ("lib", {"arch": "resample", "upsample": "transpose",
                              "downsample": "strided"},
                      "arch='resample', nn.ConvTranspose up / 4x4 stride-2 conv down"),
    "jax_resize": ("lib", {"arch": "resample", "upsample": "resize",
                           "downsample": "space_to_depth"},
                   "arch='resample', nearest resize + 3x3 conv up (2.25x the up-conv FLOPs)"),
    "jax_no_donate": ("lib", {"donate": False},
                      "library default without donating the state buffers"),
    "jax_prec_bf16": ("lib", {"precision": "bfloat16"},
                      "library default under jax.default_matmul_precision('bfloat16')"),
    "jax_bf16": ("lib", {"matmul_dtype": "bfloat16"},
                 "library, model.matmul_dtype='bfloat16': 2x2 convs as GEMMs on bfloat16 "
                 "operands, float32 accumulation"),
    "cand_reuse_fake": ("bench", {"reuse_fake": True},
                        "candidate: one G forward, reused for the G update via jax.vjp"),
    "cand_two_g": ("bench", {"reuse_fake": False},
                   "candidate model, two G forwards (as the library step)"),
    "cand_bf16": ("bench", {"reuse_fake": True, "dtype": jnp.bfloat16},
                  "candidate + bf16 convs/matmuls (f32 params)"),
    "cand_im2col": ("bench", {"reuse_fake": True, "impl": "im2col"},
                    "candidate + 2x2 convs as one matmul on 4 shifted views"),
    "cand_shift": ("bench", {"reuse_fake": True, "impl": "shift"},
                   "candidate + 2x2 convs as one GEMM to 4 taps + shifted sum"),
    "cand_nonorm": ("bench", {"reuse_fake": True, "norm": False},
                    "diagnostic: candidate without BatchNorm (not the same network)"),
    "jax_nonorm": ("lib", {"norm": "none"},
                   "diagnostic: library with model.norm='none' (no BatchNorm)"),
    "torch_nchw": ("torch", {},
                   "PyTorch DCGAN-example loop (G(z) rendered once, as the library), NCHW"),
    "torch_channels_last": ("torch", {"channels_last": True},
                            "the same PyTorch loop, channels_last"),
    "torch_nchw_bf16": ("torch", {"autocast_bf16": True},
                        "the PyTorch NCHW loop under torch.autocast(device, bfloat16)"),
    "torch_channels_last_bf16": ("torch", {"channels_last": True, "autocast_bf16": True},
                                 "the channels_last loop under torch.autocast(device, "
                                 "bfloat16)"),
    "torch_two_g": ("torch", {"reuse_fake": False},
                    "PyTorch with a second G forward for the G update (as cand_two_g)"),
}
DEFAULT_VARIANTS = ("jax_schon", "jax_subpixel", "jax_transpose", "jax_bf16", "torch_nchw",
                    "torch_channels_last", "torch_nchw_bf16", "torch_channels_last_bf16")
QUICK_VARIANTS = ("jax_schon", "torch_nchw")


def shapes(quick: bool) -> tuple[list[int], int, int]:
  """The default (image sizes, batch, channels at 4x4) of the timed step."""
  return ([16], 8, 32) if quick else ([64, 128], 64, 512)


def shape_text(size: int, batch: int, c4: int) -> str:
  """The ``shape`` of a row, e.g. ``'64x64 b64 C512'``."""
  return f"{size}x{size} b{batch} C{c4}"


def run(ctx: dict[str, Any]) -> list[dict[str, Any]]:
  """Rows for every (size, variant); ratios are vs torch_nchw of the same round."""
  quick = ctx["quick"]
  default_sizes, default_batch, default_c4 = shapes(quick)
  sizes = ctx.get("dcgan_sizes") or default_sizes
  batch = ctx.get("dcgan_batch") or default_batch
  c4 = ctx.get("dcgan_channels") or default_c4
  names = ctx.get("dcgan_variants") or (QUICK_VARIANTS if quick else DEFAULT_VARIANTS)
  have_torch = ctx["torch"] is not None
  rows = []
  for size in sizes:
    calls, stats, missing = {}, {}, {}
    for name in names:
      kind, kw, _ = VARIANTS[name]
      if name == "jax_transpose" and size > ctx.get("transpose_max_size", 64):
        missing[name] = f"skipped at {size} (minutes per step; --transpose-max-size)"
        continue
      try:
        if kind == "lib":
          calls[name], stats[name], _ = lib_step(size, batch, c4, **kw)
        elif kind == "bench":
          calls[name], stats[name] = bench_step(size, batch, c4, **kw)
        elif have_torch:
          calls[name], stats[name] = torch_step(size, batch, c4, **kw,
                                                device=ctx.get("torch_device") or "cpu"), {}
        else:
          missing[name] = "not available: torch not installed (pip install -e .[bench])"
      except ImportError as e:
        missing[name] = f"not available: {e}"
    # The transposed conv is many times slower than the others: time it in its own
    # rounds so it does not stretch every round; it is paired with torch_nchw again.
    slow = {k: calls.pop(k) for k in list(calls) if k == "jax_transpose"}
    timings = common.time_interleaved(calls, repeats=ctx["repeats"], warmup=ctx["warmup"])
    if slow:
      pair = {**slow}
      if "torch_nchw" in calls:
        pair["torch_nchw_b"] = calls["torch_nchw"]
      t2 = common.time_interleaved(pair, repeats=ctx["repeats"], warmup=1)
      timings.update(t2)
    ref = timings.get("torch_nchw")
    for name in names:
      shape = shape_text(size, batch, c4)
      if name in missing:
        rows.append({"case": "dcgan", "variant": name, "shape": shape,
                     **common.not_available(missing[name])})
        continue
      t = timings[name]
      ref_t = timings.get("torch_nchw_b") if name == "jax_transpose" else ref
      st = stats.get(name, {})
      row = {"case": "dcgan", "variant": name, "shape": shape,
             "what": VARIANTS[name][2], **t.as_dict(),
             "images_per_s": batch / t.median,
             "compile_s": st.get("compile_s"), "flops": st.get("flops"),
             "flops_per_s": (st["flops"] / t.median) if st.get("flops") else None}
      if ref_t is not None and name != "torch_nchw":
        row["speedup_vs_torch_nchw"] = common.paired_ratio(ref_t, t)
        if ref_t.cpu_times and t.cpu_times:  # steadier under load when pinned to 1 core
          row["cpu_speedup_vs_torch_nchw"] = common.paired_ratio(ref_t.cpu(), t.cpu())
      refs = ["torch_channels_last"]
      if name.endswith("bf16"):  # mixed precision against PyTorch's mixed precision
        refs += ["torch_nchw_bf16", "torch_channels_last_bf16"]
      for other in refs:
        if other in timings and other != name and name.startswith(("jax", "cand")):
          row[f"speedup_vs_{other}"] = common.paired_ratio(timings[other], t)
          row[f"cpu_speedup_vs_{other}"] = common.paired_ratio(timings[other].cpu(), t.cpu())
      rows.append(row)
  return rows
