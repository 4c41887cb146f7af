"""Figures for reports: curves, eigenvector shapes, change overlays, component maps, GIFs.

All functions take NumPy-convertible arrays, write one file and return its path.
matplotlib runs on the Agg backend (no screen needed); GIFs are written with Pillow
(a matplotlib dependency).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from jaxlatent import atomic_io


def _pyplot():
  import matplotlib
  matplotlib.use("Agg", force=False)
  import matplotlib.pyplot as plt
  return plt


def _ensure_parent(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  return path


def _savefig(fig, path) -> None:
  """``fig.savefig`` through a temporary file, so a crash never leaves half a figure."""
  with atomic_io.atomic_path(_ensure_parent(path)) as tmp:
    fig.savefig(tmp)


def plot_eigenvectors(alphas: np.ndarray, eigenvectors: np.ndarray, path: str, *,
                      explained: np.ndarray | None = None, num_components: int = 4,
                      title: str = "Eigenvectors of the traversal covariance") -> str:
  """Plots v_c against alpha for the first components (the polynomial-like pattern).

  Args:
    alphas: ``[T]`` traversal schedule.
    eigenvectors: ``[T, T]`` (columns = components, descending) or ``[N, T, T]``
      (several subjects/slices: drawn thin, their mean thick).
    explained: ``[T]`` explained variance ratio, shown in the legend.
  """
  plt = _pyplot()
  alphas = np.asarray(alphas)
  v = np.asarray(eigenvectors)
  if v.ndim == 2:
    v = v[None]
  k = min(num_components, v.shape[-1])
  fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for c in range(k):
    col = colors[c % len(colors)]
    if v.shape[0] > 1:
      for i in range(v.shape[0]):
        ax.plot(alphas, v[i, :, c], color=col, lw=0.5, alpha=0.3)
    label = f"component {c + 1}"
    if explained is not None:
      label += f" ({100 * float(np.asarray(explained)[c]):.1f}%)"
    ax.plot(alphas, v[:, :, c].mean(0), color=col, lw=2, label=label)
  ax.axhline(0, color="grey", lw=0.5)
  ax.set(title=title, xlabel="alpha", ylabel="eigenvector entry")
  ax.legend(fontsize=8)
  fig.tight_layout()
  _savefig(fig, path)
  plt.close(fig)
  return path


def plot_change_sequence(frames: np.ndarray, alphas: np.ndarray, path: str, *,
                         mask: np.ndarray | None = None, max_columns: int = 8,
                         threshold: float = 0.02) -> str:
  """Alpha sequence (top row) with the subtraction from alpha_0 overlaid (bottom row).

  Blue marks a decrease and red an increase of intensity, as in the MS abstract.

  Args:
    frames: ``[T, H, W]`` or ``[T, H, W, 1]`` images in [-1, 1].
    alphas: ``[T]``.
    mask: optional ``[H, W]`` foreground; the overlay is limited to it.
    threshold: |difference| below this is not coloured.
  """
  plt = _pyplot()
  frames = np.asarray(frames, np.float32)
  if frames.ndim == 4:
    frames = frames[..., 0]
  alphas = np.asarray(alphas)
  idx = np.unique(np.linspace(0, len(frames) - 1, min(max_columns, len(frames))).round().astype(int))
  diff = frames - frames[:1]
  if mask is not None:
    diff = diff * np.asarray(mask, np.float32)[None]
  vmax = max(float(np.abs(diff).max()), 1e-6)
  fig, axes = plt.subplots(2, len(idx), figsize=(1.6 * len(idx), 3.4), dpi=100, squeeze=False)
  for j, t in enumerate(idx):
    for row in range(2):
      ax = axes[row, j]
      ax.imshow(frames[t], cmap="gray", vmin=-1, vmax=1)
      ax.set_xticks([]), ax.set_yticks([])
    d = np.ma.masked_where(np.abs(diff[t]) < threshold * vmax, diff[t])
    axes[1, j].imshow(d, cmap="bwr", vmin=-vmax, vmax=vmax, alpha=0.8)
    axes[0, j].set_title(f"α={float(alphas[t]):.3g}", fontsize=8)
  axes[1, 0].set_ylabel("− α₀", fontsize=8)
  fig.tight_layout()
  _savefig(fig, path)
  plt.close(fig)
  return path


def plot_component_maps(anatomy: np.ndarray, maps: np.ndarray, path: str, *,
                        titles: Sequence[str] | None = None,
                        mask: np.ndarray | None = None) -> str:
  """Component (or subtraction) maps over the anatomy, each with a symmetric colour scale.

  Args:
    anatomy: ``[H, W]`` (or ``[H, W, 1]``) image in [-1, 1] shown in grey underneath.
    maps: ``[K, H, W]`` signed maps.
    titles: one per map.
    mask: optional ``[H, W]``; maps are shown only inside it.
  """
  plt = _pyplot()
  anatomy = np.asarray(anatomy, np.float32)
  if anatomy.ndim == 3:
    anatomy = anatomy[..., 0]
  maps = np.asarray(maps, np.float32)
  fig, axes = plt.subplots(1, len(maps), figsize=(2.4 * len(maps), 2.6), dpi=100, squeeze=False)
  for k, m in enumerate(maps):
    ax = axes[0, k]
    ax.imshow(anatomy, cmap="gray", vmin=-1, vmax=1)
    vmax = max(float(np.abs(m).max()), 1e-12)
    shown = np.ma.masked_where(~np.asarray(mask, bool), m) if mask is not None else m
    ax.imshow(shown, cmap="bwr", vmin=-vmax, vmax=vmax, alpha=0.7)
    ax.set_xticks([]), ax.set_yticks([])
    if titles is not None:
      ax.set_title(titles[k], fontsize=8)
  fig.tight_layout()
  _savefig(fig, path)
  plt.close(fig)
  return path


def save_gif(frames: np.ndarray, path: str, *, duration_ms: int = 120, scale: int = 2,
             bounce: bool = True) -> str:
  """Animated GIF of a traversal; ``frames[T, H, W(, 1)]`` in [-1, 1]."""
  from PIL import Image

  frames = np.asarray(frames, np.float32)
  if frames.ndim == 4:
    frames = frames[..., 0]
  pixels = np.round((np.clip(frames, -1, 1) + 1) * 127.5).astype(np.uint8)
  if scale > 1:
    pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
  seq = list(pixels) + (list(pixels[-2:0:-1]) if bounce and len(pixels) > 2 else [])
  images = [Image.fromarray(p, mode="L") for p in seq]
  with atomic_io.atomic_path(_ensure_parent(path)) as tmp:
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                   duration=duration_ms, loop=0)
  return path
