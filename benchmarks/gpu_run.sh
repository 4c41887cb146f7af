#!/usr/bin/env bash
# The GPU benchmark run, as ONE command of at most 10 minutes on a GPU machine: after
# `bash benchmarks/gpu_prepare.sh` on this machine,
#   run(command="bash benchmarks/gpu_run.sh", carry=[".whl"], timeout_s=600)
# It installs the carried wheels, then runs benchmarks/run.py in three stages, each
# under its own time limit (520 s in all), with the PyTorch references on
# the same GPU (--torch-device auto).  Each stage writes <stage>.json and <stage>.log to
# $OUT; a stage cut short keeps the cases it finished (run.py rewrites its JSON after
# every case).  Seven files come back: env.txt and the three stages' JSON and log.
# Naming stages runs only those, e.g. a second call for what a first one cut short:
#   bash benchmarks/gpu_run.sh stylegan256_full
#
# A smoke test on a CPU machine (tiny shapes, JAX and PyTorch on the CPU):
#   OUT=/tmp/gpu-smoke PY=.venv/bin/python bash benchmarks/gpu_run.sh --quick
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/jaxlatent-gpu}
PY=${PY:-python3}
mkdir -p "$OUT"
quick=()
small=64 big=256 slack=1
if [[ "${1:-}" == "--quick" ]]; then  # tiny shapes; a CPU compiles slower: 3x the limits
  quick=(--quick)
  small=16 big=16 slack=3
  shift
fi
stages=("$@")
if [[ ${#stages[@]} -eq 0 ]]; then
  stages=(core "stylegan$small" "stylegan${big}_full")
fi
for name in "${stages[@]}"; do
  case " core stylegan$small stylegan${big}_full " in
    *" $name "*) ;;
    *) echo "unknown stage '$name' (core, stylegan$small, stylegan${big}_full)"; exit 2 ;;
  esac
done
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/jaxlatent-site .whl/*.whl || { echo "installing .whl/ failed"; exit 3; }
  export PYTHONPATH=/tmp/jaxlatent-site${PYTHONPATH:+:$PYTHONPATH}
fi

{
  date -u
  nvidia-smi 2>&1 | head -15
  "$PY" - <<'PYEOF'
import importlib.metadata as md
for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "torch",
             "ml_collections", "nibabel", "dm-pix"):
  try:
    print(name, md.version(name))
  except md.PackageNotFoundError:
    print(name, "MISSING")
import jax
print("jax devices:", jax.devices())
try:
  import torch
  print("torch cuda:", torch.cuda.is_available(),
        torch.cuda.get_device_name() if torch.cuda.is_available() else "")
except ImportError:
  print("torch: not installed")
PYEOF
} > "$OUT/env.txt" 2>&1

stage() {  # stage NAME SECONDS run.py-arguments...; skipped unless NAME was asked for
  local name=$1 secs=$(($2 * slack)) t0=$SECONDS rc
  shift 2
  [[ " ${stages[*]} " == *" $name "* ]] || return 0
  timeout --signal=INT --kill-after=20 "$secs" \
    "$PY" benchmarks/run.py "${quick[@]}" --json-out "$OUT/$name.json" "$@" \
    > "$OUT/$name.log" 2>&1
  rc=$?
  echo "stage $name: rc=$rc, $((SECONDS - t0)) s (limit $secs s)"
  tail -n 40 "$OUT/$name.log"
}

# Cases 1 and 3-6 first (the short eigen-analysis and inversion cases before the DCGAN
# and discovery steps, whose compiles take longest), then StyleGAN2 at 64 (the CPU
# network, comparable with the CPU rows) and at 256 (stylegan2-ada's 512-channel
# network, batch 32: the achieved-FLOP/s figure).
stage core 260 --cases flops,eigen,inversion,dcgan,discovery
stage stylegan$small 95 --cases flops,stylegan --stylegan-sizes "$small"
stage stylegan${big}_full 165 --cases flops,stylegan --stylegan-sizes "$big" --stylegan-full
