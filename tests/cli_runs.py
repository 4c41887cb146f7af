"""The command-line drivers run in-process, for the tests of their exit status and output."""

from __future__ import annotations

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(path: str, name: str):
  """A script file (``analyze.py``, ``benchmarks/profile_ops.py``) as a module."""
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def call_main(main, argv, capsys) -> tuple[int, str, str]:
  """``main(argv)`` in-process -> (exit status, its stdout, its stderr)."""
  capsys.readouterr()  # only this call's output
  try:
    code = main(argv)
  except SystemExit as e:
    code = e.code
  out = capsys.readouterr()
  return code, out.out, out.err


def run_convert_cli(argv, capsys) -> tuple[int, str, str]:
  """``python -m jaxlatent.convert`` in-process -> (exit status, stdout, stderr)."""
  from jaxlatent.convert import cli  # pylint: disable=g-import-not-at-top
  return call_main(cli.main, argv, capsys)


def run_analyze(argv) -> int:
  """``analyze.py`` in-process; the exit status (0 or SystemExit's code)."""
  module = load_script(os.path.join(REPO, "analyze.py"), "analyze_cli")
  try:
    return module.main(["analyze.py"] + list(argv))
  except SystemExit as e:
    return e.code
