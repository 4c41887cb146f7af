"""jaxlatent.host: the 'retain' allocator setting stops fresh page faults on reuse."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxlatent import host  # noqa: E402
from jaxlatent.errors import ConfigError  # noqa: E402

# Mallocs, touches and frees a 64 MiB block twice (from the main thread and from a
# worker thread, as XLA:CPU does; numpy would madvise huge pages, so plain malloc) and
# prints the minor page faults of the second round.
_FAULTS = """
import ctypes, resource, sys, threading
from jaxlatent import host
print(host.configure_malloc(sys.argv[1]))
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def round_trip():
  p = libc.malloc(64 << 20); ctypes.memset(p, 1, 64 << 20); libc.free(p)
def faults(fn):
  f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt; fn()
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
def in_thread():
  t = threading.Thread(target=round_trip); t.start(); t.join()
round_trip(); in_thread()
print(faults(round_trip), faults(in_thread))
"""


def _faults(mode: str) -> tuple[str, list[int]]:
  out = subprocess.run([sys.executable, "-c", _FAULTS, mode], cwd=ROOT, check=True,
                       capture_output=True, text=True, timeout=120).stdout.split("\n")
  return out[0], [int(x) for x in out[1].split()]


def test_bad_mode_names_the_flag():
  with pytest.raises(ConfigError, match=r"--malloc='lots': expected one of"):
    host.configure_malloc("lots")


def test_system_changes_nothing():
  assert host.configure_malloc("system") is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_retain_reuses_freed_memory_without_page_faults():
  applied, (main_faults, thread_faults) = _faults("retain")
  assert applied == "True"
  # 64 MiB is 16384 pages: with 'system' every round faults them all in again.
  assert main_faults < 1000 and thread_faults < 1000, (main_faults, thread_faults)
  applied, (main_faults, thread_faults) = _faults("system")
  assert applied == "False"
  assert main_faults > 15000 and thread_faults > 15000, (main_faults, thread_faults)
