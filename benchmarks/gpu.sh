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

{
  echo "date: $(date -u +%FT%TZ)  host: $(hostname)  python: $("$PY" --version 2>&1)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total --format=csv
  else
    echo "nvidia-smi: not found"
  fi
} 2>&1 | tee "$OUT_DIR/gpu_info.txt"

# --- dependencies ------------------------------------------------------------------------------
missing=$("$PY" - <<'EOF'
import importlib.util
# what the benchmark imports (diffusers also needs huggingface_hub, regex, requests, filelock, Pillow)
need = {"numpy": "numpy", "monai": "monai", "diffusers": "diffusers", "safetensors": "safetensors",
        "SimpleITK": "SimpleITK", "importlib_metadata": "importlib-metadata"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "missing Python packages: $missing" | tee -a "$OUT_DIR/gpu_info.txt"
  # Never into the interpreter's own site-packages and never with dependencies (they could
  # replace its torch): only the missing packages, into a throw-away folder put on PYTHONPATH.
  site=/tmp/diffux2ct-site
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    src=(--no-index "$WHEELS"/*.whl)
  else
    read -r -a src <<<"$missing"  # from the configured index / PIP_FIND_LINKS, if any
  fi
  timeout "$SETUP_TIMEOUT" "$PY" -m pip install -q --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "${src[@]}" || {
    echo "error: cannot install $missing (no usable wheels in $WHEELS, no package index); copy their wheels to $WHEELS" >&2
    exit 2
  }
  export PYTHONPATH="$PYTHONPATH:$site"
fi
REQUIRE_CUDA="${REQUIRE_CUDA:-1}" "$PY" - <<'EOF' 2>&1 | tee -a "$OUT_DIR/gpu_info.txt"
import os
import torch
if os.environ["REQUIRE_CUDA"] != "0":  # REQUIRE_CUDA=0 only to try this script on a CPU machine
    assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA device"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
          f"{torch.cuda.get_device_name()}")
import DiffuX2CTLib.inference, DiffuX2CTLib.network.model, DiffuX2CTLib.diffusion.samplers  # noqa: E401,F401
EOF

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
