"""Training metrics: a JSON-lines log, a loss plot and a one-line console summary.

``metrics.jsonl`` holds one JSON object per logged step::

  {"step": 100, "g_loss": 0.71, "d_loss": 1.32, ..., "images_per_sec": 812.5,
   "lr": 0.0002, "elapsed": 41.2}

and, at FD steps, ``"fd_random_features"``.  On resume, records after the restored
step are dropped so the file always describes one consistent run.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Sequence

from jaxlatent import atomic_io


def _jsonable(v: Any) -> Any:
  try:
    f = float(v)
  except (TypeError, ValueError):
    return v
  if isinstance(v, (bool, int)) and not isinstance(v, float):
    return v
  return f if math.isfinite(f) else str(f)  # NaN/Inf are not JSON: "nan", "inf"


class MetricWriter:
  """Appends records to a ``.jsonl`` file; a no-op when ``enabled`` is False (other hosts)."""

  def __init__(self, path: str, enabled: bool = True):
    self.path = path
    self.enabled = enabled

  def write(self, record: dict[str, Any]) -> None:
    """Appends one line; a failed write (e.g. a full disk) is cut off again, so the file
    keeps only whole records, and raised as OutputError."""
    if not self.enabled:
      return
    line = (json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n").encode()
    try:
      fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
      raise atomic_io.output_error(e, self.path) from None
    try:
      size = os.fstat(fd).st_size
      try:
        if os.write(fd, line) != len(line):
          raise OSError(28, "short write", self.path)
      except OSError as e:
        os.ftruncate(fd, size)
        raise atomic_io.output_error(e, self.path) from None
    finally:
      os.close(fd)

  def drop_after(self, step: int) -> None:
    """Removes the records of steps > ``step`` (written before an interruption)."""
    if not self.enabled or not os.path.exists(self.path):
      return
    records = read_metrics(self.path)
    kept = [r for r in records if r.get("step", 0) <= step]
    if len(kept) < len(records):
      atomic_io.atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def read_metrics(path: str) -> list[dict[str, Any]]:
  """All records of a ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


def plot_losses(records: Iterable[dict[str, Any]], terms: Sequence[str], path: str) -> None:
  """Plots ``terms`` (and ``fd_random_features`` when logged) against step into a PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  records = list(records)

  def series(name):
    pts = [(r["step"], r[name]) for r in records
           if isinstance(r.get(name), (int, float)) and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]

  fd_steps, fd = series("fd_random_features")
  ncols = 2 if fd else 1
  fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 3.8), squeeze=False)
  ax = axes[0, 0]
  for term in terms:
    x, y = series(term)
    if x:
      ax.plot(x, y, label=term, lw=1.2)
  ax.set_xlabel("step")
  ax.set_ylabel("loss")
  ax.set_title("training losses")
  ax.grid(alpha=0.3)
  if terms:
    ax.legend(fontsize=8)
  if fd:
    ax = axes[0, 1]
    ax.plot(fd_steps, fd, "o-", ms=3, color="tab:red")
    ax.set_xlabel("step")
    ax.set_title("fd_random_features (lower is better)")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  try:
    with atomic_io.atomic_path(path) as tmp:
      fig.savefig(tmp, dpi=100)
  finally:
    plt.close(fig)


def format_record(record: dict[str, Any], total_steps: int, terms: Sequence[str]) -> str:
  """One console line: ``step 100/1000 | g_loss 0.7100 d_loss 1.3200 | 812 img/s``."""
  parts = [f"step {record['step']}/{total_steps}"]
  losses = [f"{t} {record[t]:.4f}" for t in terms if isinstance(record.get(t), float)]
  if losses:
    parts.append(" ".join(losses))
  if "fd_random_features" in record:
    parts.append(f"fd {record['fd_random_features']:.4f}")
  if "images_per_sec" in record:
    parts.append(f"{record['images_per_sec']:.1f} img/s")
  return " | ".join(parts)
