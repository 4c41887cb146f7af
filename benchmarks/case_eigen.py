"""Case 4: traversal eigen-analysis, subjects x slices x 15 steps, JAX vs a NumPy loop.

JAX: ``jaxlatent.analysis.eigen.eigen_analysis_batched`` (one jitted vmap over
subjects x slices) on rendered traversals ``[S, P, T, H, W, 1]`` with foreground
masks ``[S, P, H, W]``.  NumPy: what a researcher writes without it, a loop over
subjects and slices doing the abstract's recipe per traversal (M = foreground
voxels x steps, ``np.cov``, ``np.linalg.eigh``, sign fix, component maps ``M @ v``,
subtraction maps).  Both produce the same eigenvalues (checked: ``max_rel_err``).

Floor: the least memory traffic any implementation needs, one read of the traversals
and one write each of the component maps and the subtraction maps (both as large as
the input), timed as one jitted elementwise pass with those two outputs
(``memory_floor``).  ``numpy_loop`` time / floor time is the largest speedup this
device's memory allows (``max_speedup_vs_numpy``).

Streaming: XLA's ``memory_analysis()`` of the compiled programs gives the scratch
("temp") bytes each needs.  ``eigen_analysis`` (in memory) and
``eigen_analysis_chunked`` (scan over voxel chunks) are compiled for growing voxel
counts; the per-chunk programs of ``eigen_analysis_stream`` for growing chunk sizes.
O(T^2 + chunk) means the temp bytes stay flat as the voxel count grows.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import common


def numpy_reference(images: np.ndarray, masks: np.ndarray, alphas: np.ndarray):
  """Per-traversal NumPy loop; images [S, P, T, H, W, 1], masks [S, P, H, W]."""
  s_, p_, t = images.shape[:3]
  evals = np.zeros((s_, p_, t))
  maps = np.zeros((s_, p_, t) + images.shape[3:], np.float32)
  subs = np.zeros_like(images)
  for s in range(s_):
    for p in range(p_):
      x = images[s, p]  # [T, H, W, 1]
      m = masks[s, p].astype(bool)
      mat = x[:, m, 0].T  # [V, T]
      cov = np.cov(mat, rowvar=False)  # [T, T] float64
      w, v = np.linalg.eigh(cov)
      w, v = w[::-1], v[:, ::-1]  # descending
      a = alphas - alphas.mean()
      sign = np.where(a @ v < 0, -1.0, 1.0)
      sign[0] = 1.0 if v[:, 0].sum() >= 0 else -1.0
      v = v * sign
      evals[s, p] = w
      comp = mat @ v  # [V, T]
      maps[s, p][:, m, 0] = comp.T
      subs[s, p] = (x - x[:1]) * m[None, :, :, None]
  return evals, maps, subs


def _two_outputs_pass(images, masks):
  """The outputs' least memory traffic: read the traversals, write two arrays of their
  size (as the subtraction maps and the component maps)."""
  m = masks[..., None, :, :, None]
  return (images - images[..., :1, :, :, :]) * m, images * m * 1.5


def _inputs(subjects, slices, t, size, seed=0):
  rng = np.random.default_rng(seed)
  alphas = np.linspace(0.0, 50.0, t).astype(np.float32)
  base = rng.standard_normal((subjects, slices, 1, size, size, 1)).astype(np.float32)
  change = rng.standard_normal((subjects, slices, 1, size, size, 1)).astype(np.float32)
  noise = 0.1 * rng.standard_normal((subjects, slices, t, size, size, 1)).astype(np.float32)
  images = base + (alphas[:, None, None, None] / 50.0) * change + noise
  yy, xx = np.mgrid[:size, :size]
  disk = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.4 * size) ** 2
  masks = np.broadcast_to(disk, (subjects, slices, size, size)).astype(np.float32)
  return images, masks, alphas


def run(ctx: dict[str, Any]) -> list[dict[str, Any]]:
  from jaxlatent.analysis import eigen  # pylint: disable=g-import-not-at-top
  quick = ctx["quick"]
  t = 15
  configs = [(2, 2, 32)] if quick else [(8, 8, 128), (4, 8, 256)]
  rows = []
  for subjects, slices, size in configs:
    images, masks, alphas = _inputs(subjects, slices, t, size)
    ji, jm, ja = jnp.asarray(images), jnp.asarray(masks), jnp.asarray(alphas)
    compiled, stats = common.compile_stats(eigen.eigen_analysis_batched, ji, jm, ja)
    tj = common.time_calls(lambda: compiled(ji, jm, ja), repeats=ctx["repeats"],
                           warmup=ctx["warmup"])
    tn = common.time_calls(lambda: numpy_reference(images, masks, alphas),
                           repeats=max(5, ctx["repeats"]) if quick else 5, warmup=1,
                           block=False)
    floor = jax.jit(_two_outputs_pass)
    tf = common.time_calls(lambda: floor(ji, jm), repeats=ctx["repeats"],
                           warmup=ctx["warmup"])
    ev_np, _, _ = numpy_reference(images[:1, :1], masks[:1, :1], alphas)
    ev_j = np.asarray(compiled(ji, jm, ja).eigenvalues)[0, 0]
    rel = float(np.max(np.abs(ev_j - ev_np[0, 0])) / np.max(np.abs(ev_np[0, 0])))
    shape = f"{subjects}x{slices}x{t} @ {size}x{size}"
    n = subjects * slices
    rows.append({"case": "eigen", "variant": "jax_batched", "shape": shape,
                 "what": "eigen_analysis_batched (one jitted vmap)", **tj.as_dict(),
                 "items_per_s": n / tj.median, "compile_s": stats["compile_s"],
                 "flops": stats.get("flops"),
                 "flops_per_s": stats["flops"] / tj.median if stats.get("flops") else None,
                 "temp_bytes": stats.get("temp_bytes"),
                 "speedup_vs_numpy": tn.median / tj.median,
                 "eigenvalue_err_rel_to_largest": rel, "target_speedup": 20.0})
    rows.append({"case": "eigen", "variant": "numpy_loop", "shape": shape,
                 "what": "per-subject, per-slice NumPy loop (np.cov + eigh, float64)",
                 **tn.as_dict(), "items_per_s": n / tn.median})
    rows.append({"case": "eigen", "variant": "memory_floor", "shape": shape,
                 "what": "one read of the traversals, two writes of their size (the "
                         "outputs' least traffic)", **tf.as_dict(),
                 "bytes_moved": 3 * images.nbytes,
                 "bytes_per_s": 3 * images.nbytes / tf.median,
                 "max_speedup_vs_numpy": tn.median / tf.median})
  rows += _memory_rows(eigen, t, quick)
  return rows


def _memory_rows(eigen, t: int, quick: bool) -> list[dict[str, Any]]:
  """Compiled temp bytes: in-memory vs chunked vs the stream's per-chunk programs."""
  rows = []
  chunk = 4096
  grids = [(32, 32)] if quick else [(128, 128), (256, 256), (512, 512), (64, 64, 64),
                                     (128, 128, 128)]
  for grid in grids:
    v = int(np.prod(grid))
    img = jax.ShapeDtypeStruct((t, *grid), jnp.float32)
    mask = jax.ShapeDtypeStruct(grid, jnp.float32)
    al = jax.ShapeDtypeStruct((t,), jnp.float32)
    entry = {"case": "eigen_memory", "variant": f"voxels={v}",
             "shape": "x".join(map(str, grid)) + f" T={t}", "voxels": v,
             "input_bytes": 4 * t * v}
    if len(grid) == 2:  # eigen_analysis wants [T, H, W, C]
      img4 = jax.ShapeDtypeStruct((t, *grid, 1), jnp.float32)
      c = jax.jit(eigen.eigen_analysis).lower(img4, mask, al).compile()
      entry["in_memory_temp_bytes"] = common.memory_of(c).get("temp_bytes")
    c = eigen.eigen_analysis_chunked.lower(img, mask, al, chunk_size=chunk).compile()
    entry["chunked_temp_bytes"] = common.memory_of(c).get("temp_bytes")
    entry["chunk_size"] = chunk
    rows.append(entry)
  # eigen_analysis_stream's device programs see one chunk at a time.
  for cs in ([1024] if quick else [1024, 4096, 16384, 65536]):
    x = jax.ShapeDtypeStruct((cs, t), jnp.float32)
    m = jax.ShapeDtypeStruct((cs,), jnp.float32)
    c1 = jax.jit(eigen._chunk_moments, static_argnames=("center",)).lower(  # pylint: disable=protected-access
        x, m, center="voxels").compile()
    rows.append({"case": "eigen_memory", "variant": f"stream_chunk={cs}",
                 "shape": f"chunk {cs} x T={t}", "chunk_size": cs,
                 "stream_moments_temp_bytes": common.memory_of(c1).get("temp_bytes"),
                 "stream_moments_argument_bytes": common.memory_of(c1).get("argument_bytes"),
                 "o_t2_plus_chunk_bytes": 4 * (t * t + cs * t)})
  return rows
