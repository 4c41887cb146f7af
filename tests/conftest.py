"""Test-session settings.

XLA's CPU backend optimisation level 0 roughly halves compile time, which dominates
these tiny-shape tests (measured: the StyleGAN2 + VAE model tests, 46 -> 19 CPU-s).
It changes how fast the compiled code runs, not what it computes; the library itself
never sets it. Set before jax is imported; flags the caller already set are kept.
"""

import os
import subprocess
import sys

import pytest

_FAST_COMPILE = "--xla_backend_optimization_level=0"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip()


@pytest.fixture
def run_test_script(tmp_path):
  """Runs Python source in a fresh process, with the tests folder as ``sys.argv[1]`` (for
  imports from the test modules): for tests that set ``XLA_FLAGS`` before jax starts,
  e.g. several host devices.  Returns the ``CompletedProcess``."""
  tests_dir = os.path.dirname(os.path.abspath(__file__))

  def run(source: str, timeout: int = 900) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(source)
    return subprocess.run([sys.executable, str(script), tests_dir], capture_output=True,
                          text=True, timeout=timeout)

  return run
