"""A self-contained static HTML report (``report/index.html`` + PNG/GIF files beside it)."""

from __future__ import annotations

import dataclasses
import datetime
import html
import os
from typing import Any, Sequence

from jaxlatent import atomic_io


@dataclasses.dataclass
class Section:
  """One report section: a heading, paragraphs, tables and figures (paths under the report dir)."""

  title: str
  paragraphs: list[str] = dataclasses.field(default_factory=list)
  tables: list[tuple[str, Sequence[dict[str, Any]]]] = dataclasses.field(default_factory=list)
  figures: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (relpath, caption)
  links: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (relpath, text)


def _fmt(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  return str(v)


def table_html(rows: Sequence[dict[str, Any]]) -> str:
  """Rows of dicts -> an HTML table (columns = union of keys, in first-seen order)."""
  if not rows:
    return "<p><em>(empty)</em></p>"
  cols: list[str] = []
  for r in rows:
    cols += [k for k in r if k not in cols]
  head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
  body = "".join(
      "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>"
      for r in rows)
  return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def table_markdown(rows: Sequence[dict[str, Any]]) -> str:
  """Rows of dicts -> a GitHub Markdown table."""
  if not rows:
    return "(empty)\n"
  cols: list[str] = []
  for r in rows:
    cols += [k for k in r if k not in cols]
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
  return "\n".join(lines) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; image-rendering: pixelated; }
figcaption { font-size: 0.85em; color: #555; max-width: 520px; }
.meta { color: #666; font-size: 0.85em; }
"""


def write_report(report_dir: str, title: str, sections: Sequence[Section],
                 meta: dict[str, Any] | None = None) -> str:
  """Writes ``report_dir/index.html`` and returns its path.

  Figures and linked pages are referenced by path relative to ``report_dir``; a
  missing one is listed as missing rather than silently dropped.
  """
  os.makedirs(report_dir, exist_ok=True)
  parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
  stamp = datetime.datetime.now().isoformat(timespec="seconds")
  meta_items = {"generated": stamp, **(meta or {})}
  parts.append("<p class='meta'>" + " · ".join(
      f"{html.escape(str(k))}: {html.escape(_fmt(v))}" for k, v in meta_items.items()) + "</p>")
  for s in sections:
    parts.append(f"<h2>{html.escape(s.title)}</h2>")
    parts += [f"<p>{html.escape(p)}</p>" for p in s.paragraphs]
    for caption, rows in s.tables:
      if caption:
        parts.append(f"<p><strong>{html.escape(caption)}</strong></p>")
      parts.append(table_html(rows))
    if s.links:
      items = []
      for rel, text in s.links:
        if os.path.exists(os.path.join(report_dir, rel)):
          items.append(f"<li><a href='{html.escape(rel)}'>{html.escape(text)}</a></li>")
        else:
          items.append(f"<li><em>missing page: {html.escape(rel)}</em></li>")
      parts.append("<ul>" + "".join(items) + "</ul>")
    for rel, caption in s.figures:
      if os.path.exists(os.path.join(report_dir, rel)):
        parts.append(f"<figure><img src='{html.escape(rel)}' alt='{html.escape(caption)}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
      else:
        parts.append(f"<p><em>missing figure: {html.escape(rel)}</em></p>")
  parts.append("</body></html>")
  path = os.path.join(report_dir, "index.html")
  atomic_io.atomic_write_text(path, "\n".join(parts))
  return path
