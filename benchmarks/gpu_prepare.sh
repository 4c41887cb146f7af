#!/usr/bin/env bash
# Run on THIS machine (pip can reach PyPI), in any directory, before a GPU run with the
# `device` tool: downloads into .whl/ the wheels of jaxlatent's dependencies that the
# GPU machine's image lacks (it has jax, flax, optax, orbax, chex, torch, matplotlib,
# tqdm; see /work/.library/device/KINDS.md), and keeps .whl/ out of git.  Then:
#   run(command="bash benchmarks/gpu_run.sh", carry=[".whl"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
mkdir -p .whl
# Pure-Python wheels; their own needs (absl-py, PyYAML, chex, numpy, packaging,
# typing-extensions) are on the image.  Versions as in this project's .venv.
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  -d .whl ml_collections==1.1.0 nibabel==5.4.2 dm-pix==0.4.5
ls -l .whl
