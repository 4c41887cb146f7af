"""The command-line drivers run in-process, for the tests of their exit status and output."""

from __future__ import annotations

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_convert_cli(argv, capsys) -> tuple[int, str, str]:
  """``python -m jaxlatent.convert`` in-process -> (exit status, stdout, stderr)."""
  from jaxlatent.convert import cli  # pylint: disable=g-import-not-at-top
  try:
    code = cli.main(argv)
  except SystemExit as e:
    code = e.code
  out = capsys.readouterr()
  return code, out.out, out.err


def run_analyze(argv) -> int:
  """``analyze.py`` in-process; the exit status (0 or SystemExit's code)."""
  spec = importlib.util.spec_from_file_location("analyze_cli", os.path.join(REPO, "analyze.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  try:
    return module.main(["analyze.py"] + list(argv))
  except SystemExit as e:
    return e.code
