"""Test-session settings.

XLA compile time dominates these tiny-shape tests, so XLA:CPU flags trade the
compiled code's speed for faster compiles: backend optimisation level 0, and XLA's
classic fusion code generator instead of its MLIR fusion emitters (the larger saving
of the two).  A third one compiles each program's LLVM module whole instead of split
into parts for a thread pool: the test workers already keep every core busy, so the
split only adds work.  They change how fast the compiled code runs, or how it is
compiled, not what it computes; the library itself never sets them.  Set before jax
is imported, so the processes that tests start inherit them; a flag the caller
already set is kept.

Tracing and lowering allocate many short-lived Python containers, so with the
default gen-0 threshold (700) the cyclic garbage collector runs thousands of times
per test module; a higher threshold runs it less often (what it collects is the
same), for about 4% of the tests' CPU time.
"""

import gc
import os
import subprocess

import pytest

_FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false",
                 "--xla_cpu_parallel_codegen_split_count=1")
for _flag in _FAST_COMPILE:
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

gc.set_threshold(10_000, 10, 10)

# The modules that take longest (`--durations`), longest first.  Under pytest-xdist's
# `--dist loadfile` (`make test`) each file goes whole to one worker in collection
# order, so the long ones start first and the workers finish close together.  A module
# with a test marked `slow` joins them; the others follow in their usual order.
_LONG_MODULES = (
    "test_train_cli.py", "test_trainers.py", "test_norm.py", "test_models_dcgan.py",
    "test_directions_voynov.py", "test_attr_models.py", "test_inversion_stylegan.py",
    "test_label_fraction.py", "test_edit_comparison.py", "test_analyze_cli.py",
    "test_models_stylegan2.py", "test_training_distributed.py", "test_directions_alignment.py",
)


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: i for i, name in enumerate(_LONG_MODULES)}
  slow = {item.path for item in items if item.get_closest_marker("slow")}

  def key(item):
    if item.path.name in rank:
      return rank[item.path.name]
    return len(rank) if item.path in slow else len(rank) + 1

  items.sort(key=key)  # stable: within a module, and among the rest, the order is kept


@pytest.fixture
def run_test_script(tmp_path):
  """Runs Python source in a fresh process, with the tests folder as ``sys.argv[1]`` (for
  imports from the test modules): for tests that set ``XLA_FLAGS`` before jax starts,
  e.g. several host devices.  Returns the ``CompletedProcess``."""
  from script_checks import run_script  # pylint: disable=g-import-not-at-top

  def run(source: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return run_script(source, tmp_path, timeout=timeout)

  return run
