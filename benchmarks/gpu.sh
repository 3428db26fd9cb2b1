#!/usr/bin/env bash
# DiffuX2CT sampling benchmark on one GPU, one command, under 10 minutes (no internet needed).
#
#   bash benchmarks/gpu.sh [extra benchmarks/sampling.py options]
#
# Runs benchmarks/sampling.py on CUDA in bfloat16 autocast at 128^3 (the paper network) twice,
# eager and with torch.compile, each under a `timeout`. Besides the per-evaluation figures, both
# runs MEASURE full paper-network reconstructions through DiffuX2CTLib.inference.reconstruct
# (untrained weights; DDIM / DPM-Solver++ at 10, 25, 50 steps; DDPM-1000 in the eager run only,
# cut off after DDPM_BUDGET seconds and extrapolated if slower). Set RECON=small to measure the
# small 64^3 network instead, as on the CPU.
#
# Needs torch with CUDA and numpy. The repo is used in place (PYTHONPATH=.); missing pure-python
# dependencies (monai, diffusers, SimpleITK, importlib-metadata) are installed with --no-deps into
# /tmp/diffux2ct-site (never into the interpreter's site-packages) from the wheels in $WHEELS
# (default .whl) if that folder has any, else from pip's configured index / PIP_FIND_LINKS.
# PYTHON selects the interpreter (default python3, the one holding CUDA torch).
# Outputs: ${OUT:-.bench}/gpu_info.txt, gpu_eager.txt, gpu_compile.txt; each benchmark output
# ends with a one-line JSON summary. Timeouts (s): SETUP_TIMEOUT 90, EAGER_TIMEOUT 220,
# COMPILE_TIMEOUT 270 (under 10 minutes in all).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT_DIR="${OUT:-.bench}"
PY="${PYTHON:-python3}"
WHEELS="${WHEELS:-.whl}"
RECON="${RECON:-paper}"
DDPM_BUDGET="${DDPM_BUDGET:-120}"
SETUP_TIMEOUT="${SETUP_TIMEOUT:-90}"
EAGER_TIMEOUT="${EAGER_TIMEOUT:-220}"
COMPILE_TIMEOUT="${COMPILE_TIMEOUT:-270}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
started=$SECONDS

# shellcheck source=benchmarks/_gpu_env.sh
source benchmarks/_gpu_env.sh
gpu_machine_info "$OUT_DIR/gpu_info.txt"
# what the benchmark imports
gpu_install_missing "$OUT_DIR/gpu_info.txt" numpy=numpy monai=monai diffusers=diffusers safetensors=safetensors SimpleITK=SimpleITK importlib_metadata=importlib-metadata
gpu_check "$OUT_DIR/gpu_info.txt" "import DiffuX2CTLib.inference, DiffuX2CTLib.network.model, DiffuX2CTLib.diffusion.samplers"

# --- the two benchmark runs ----------------------------------------------------------------------
bench() {  # bench NAME TIMEOUT ARGS...: run sampling.py, keep going when it fails or times out
  local name=$1 limit=$2
  shift 2
  local rc=0
  echo "== $name: benchmarks/sampling.py $* (timeout ${limit} s)"
  timeout --kill-after=15 "$limit" "$PY" benchmarks/sampling.py "$@" >"$OUT_DIR/gpu_$name.txt" 2>&1 || rc=$?
  cat "$OUT_DIR/gpu_$name.txt"
  if [ "$rc" -ne 0 ]; then
    echo "== $name: exit code $rc$([ "$rc" -eq 124 ] && echo ' (timed out; the figures printed so far are above)')" \
      | tee -a "$OUT_DIR/gpu_$name.txt"
  fi
  return 0
}

common=(--device cuda --dtype bfloat16 --sizes 128 --recon-config "$RECON")
bench eager "$EAGER_TIMEOUT" "${common[@]}" --ddpm-budget "$DDPM_BUDGET" "$@"
bench compile "$COMPILE_TIMEOUT" "${common[@]}" --compile --skip-ddpm "$@"

echo "== done in $((SECONDS - started)) s; outputs in $OUT_DIR/gpu_{info,eager,compile}.txt"
