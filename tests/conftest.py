"""Test-session settings.

XLA's CPU backend optimisation level 0 roughly halves compile time, which dominates
these tiny-shape tests (measured: the StyleGAN2 + VAE model tests, 46 -> 19 CPU-s).
It changes how fast the compiled code runs, not what it computes; the library itself
never sets it. Set before jax is imported; flags the caller already set are kept.
"""

import os

_FAST_COMPILE = "--xla_backend_optimization_level=0"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip()
