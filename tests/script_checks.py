"""Checks that run in a fresh Python process (own XLA flags, e.g. several host devices
or another optimisation level), several to one process, each reported on its own line.

The script gets the tests folder as ``sys.argv[1]`` (to import from the test modules)
and ends with ``report_checks(...)``; each test asserts its own check's line with
:func:`assert_check_passed`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def run_script(source: str, folder, env: dict | None = None,
               timeout: int = 900) -> subprocess.CompletedProcess:
  """Writes ``source`` to ``<folder>/script.py`` and runs it; returns the finished process."""
  script = os.path.join(os.fspath(folder), "script.py")
  with open(script, "w") as f:
    f.write(source)
  return subprocess.run([sys.executable, script, TESTS_DIR], capture_output=True, text=True,
                        timeout=timeout, env=env)


def report_checks(checks) -> None:
  """In the script: runs each ``(name, fn)`` and prints ``PASS name`` or ``FAIL name
  <traceback on one line>``, so one failing check does not hide the others."""
  for name, fn in checks:
    try:
      fn()
      print("PASS", name, flush=True)
    except Exception:  # pylint: disable=broad-except
      print("FAIL", name, traceback.format_exc().replace("\n", " | "), flush=True)


def assert_check_passed(proc: subprocess.CompletedProcess, name: str) -> None:
  """The script printed exactly ``PASS name`` for the check and exited cleanly."""
  lines = [ln for ln in proc.stdout.splitlines() if ln.split(" ", 2)[1:2] == [name]]
  assert lines == [f"PASS {name}"], (lines, proc.stderr[-3000:])
  assert proc.returncode == 0, proc.stderr[-3000:]
