"""Renders result JSONs of ``run.py`` as Markdown tables (for benchmarks/RESULTS.md).

  python benchmarks/report.py benchmarks/results/<file>.json [more.json ...]
"""

from __future__ import annotations

import json
import sys


# A row's headline speedup: the first of these keys it has.  Dict values are paired
# per-round ratios (median, min, max); numbers are ratios of median times.
SPEEDUP_KEYS = ("speedup_vs_torch_nchw", "speedup_vs_torch", "speedup", "speedup_vs_sequential",
                "speedup_vs_numpy", "max_speedup_vs_numpy", "speedup_vs_one_at_a_time")
# A row's throughput: the first of these keys it has (else its bytes per second).
THROUGHPUT_KEYS = (("images_per_s", "img/s"), ("steps_per_s", "steps/s"),
                   ("items_per_s", "traversals/s"))


def speedup_text(r: dict, spread: bool = True) -> str:
  """The row's headline speedup, ``'1.23x (1.10-1.30)'`` (``spread``: with min-max)."""
  for k in SPEEDUP_KEYS:
    v = r.get(k)
    if isinstance(v, dict):
      return f"{v['median']:.2f}x" + (f" ({v['min']:.2f}-{v['max']:.2f})" if spread else "")
    if isinstance(v, (int, float)):
      return f"{v:.2f}x"
  return ""


def throughput_text(r: dict) -> str:
  """The row's throughput with its unit, e.g. ``'207 img/s'``."""
  for k, unit in THROUGHPUT_KEYS:
    if r.get(k):
      return f"{r[k]:.3g} {unit}"
  if r.get("bytes_per_s"):
    return f"{r['bytes_per_s'] / 1e9:.3g} GB/s"
  return ""


def render(result: dict) -> str:
  env = result["environment"]
  out = [f"Run `{result['command']}` on {env['host']} at {env['date']}: "
         f"{env['cpu_model']} x{env['cpu_count']} ({env['device_kind']}; "
         f"{', '.join(env.get('cpu_flags', []))}), jax {env['jax']}, flax {env['flax']}, "
         f"torch {env['torch']} ({env.get('torch_threads', '?')} threads), "
         f"XLA_FLAGS='{env['XLA_FLAGS']}', GLIBC_TUNABLES='{env.get('GLIBC_TUNABLES', '')}', "
         f"malloc {env.get('malloc', 'system')}, load average {env['load_average_start']} -> "
         f"{env.get('load_average_end')}.", "",
         "| case | variant | shape | median s (min-max) | compile s | throughput | "
         "speedup (paired, min-max) | GFLOP/s | % peak |",
         "|---|---|---|---|---|---|---|---|---|"]
  mem = []
  for r in result["rows"]:
    if r.get("case") == "eigen_memory":
      mem.append(r)
      continue
    if "median_s" not in r:
      out.append(f"| {r.get('case', '')} | {r.get('variant', '')} | {r.get('shape', '')} | "
                 f"{r.get('status', '')}: {r.get('reason', '')[:100]} | | | | | |")
      continue
    gf = f"{r['flops_per_s'] / 1e9:.1f}" if r.get("flops_per_s") else ""
    pk = f"{100 * r['fraction_of_peak']:.0f}" if r.get("fraction_of_peak") else ""
    comp = f"{r['compile_s']:.1f}" if r.get("compile_s") else ""
    out.append(f"| {r['case']} | {r['variant']} | {r.get('shape', '')} | "
               f"{r['median_s']:.4g} ({r['min_s']:.4g}-{r['max_s']:.4g}) | {comp} | "
               f"{throughput_text(r)} | {speedup_text(r)} | {gf} | {pk} |")
  if mem:
    out += ["", "| memory | shape | in-memory temp MiB | chunked temp MiB | stream per-chunk "
            "temp MiB | T^2+chunk*T MiB |", "|---|---|---|---|---|---|"]
    mib = lambda v: "" if v is None else f"{v / 2**20:.2f}"
    for r in mem:
      out.append(f"| {r['variant']} | {r['shape']} | {mib(r.get('in_memory_temp_bytes'))} | "
                 f"{mib(r.get('chunked_temp_bytes'))} | "
                 f"{mib(r.get('stream_moments_temp_bytes'))} | "
                 f"{mib(r.get('o_t2_plus_chunk_bytes'))} |")
  return "\n".join(out)


def main(argv) -> int:
  for path in argv[1:]:
    with open(path) as f:
      print(render(json.load(f)))
      print()
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
