#!/usr/bin/env bash
# DiffuX2CT training-throughput benchmark on one GPU, one command, under 10 minutes (no internet needed).
#
#   bash benchmarks/gpu_train.sh [extra benchmarks/training.py options]
#
# Runs benchmarks/training.py on CUDA at 128^3 with the paper network (NetworkConfig.paper(),
# ~82 M parameters) against MONAI's DiffusionModelUNet of about the same size, one training step
# = forward + backward + AdamW, for the variants fp32, bf16 (autocast), bf16+ckpt (activation
# checkpointing, ours only) and bf16+compile (torch.compile(model)). Each case runs in its own
# process, 3 warm-up + 10 timed steps (median), under a per-case timeout and a total budget, so
# the script always ends with the JSON summary line.
#
# Needs torch with CUDA and numpy. The repo is used in place (PYTHONPATH=.). The machine has no
# internet: missing pure-python dependencies (monai, einops, diffusers, safetensors, SimpleITK,
# importlib-metadata) are installed with --no-deps into /tmp/diffux2ct-site (never into the
# interpreter's site-packages) from the wheels in $WHEELS (default .whl, git-ignored) if that
# folder has any, else from pip's configured index / PIP_FIND_LINKS. To carry them, on a machine
# with internet run e.g.
#     pip download --no-deps -d .whl monai==1.6.1 einops diffusers safetensors SimpleITK importlib-metadata
# (SimpleITK's wheel must match the GPU machine's Python version and platform) and pass `.whl` along
# with the working tree.
# PYTHON selects the interpreter (default python3, the one holding CUDA torch).
# Outputs: ${OUT:-.bench}/gpu_train_info.txt and gpu_train.txt (ending with the one-line JSON
# {"training_throughput": {...}}). Timeouts (s): SETUP_TIMEOUT 60, CASE_TIMEOUT 120 per case,
# COMPILE_TIMEOUT 240 per compiled case (compilation included), BUDGET 470 for all cases,
# BENCH_TIMEOUT 500 hard stop (under 10 minutes in all). Cases run in the order fp32, bf16,
# bf16+ckpt, bf16+compile, so a slow compilation only costs the last rows.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT_DIR="${OUT:-.bench}"
PY="${PYTHON:-python3}"
WHEELS="${WHEELS:-.whl}"
SETUP_TIMEOUT="${SETUP_TIMEOUT:-60}"
CASE_TIMEOUT="${CASE_TIMEOUT:-120}"
COMPILE_TIMEOUT="${COMPILE_TIMEOUT:-240}"
BUDGET="${BUDGET:-470}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-500}"
DEVICE="${DEVICE:-cuda}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export DIFFUX2CT_CACHE="${DIFFUX2CT_CACHE:-/tmp/diffux2ct-cache}"  # DRR system matrix: built once, shared by the cases
started=$SECONDS

{
  echo "date: $(date -u +%FT%TZ)  host: $(hostname)  python: $("$PY" --version 2>&1)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total --format=csv
  else
    echo "nvidia-smi: not found"
  fi
} 2>&1 | tee "$OUT_DIR/gpu_train_info.txt"

# --- dependencies ------------------------------------------------------------------------------
missing=$("$PY" - <<'EOF'
import importlib.util
# what the benchmark imports (MONAI's attention blocks need einops)
need = {"numpy": "numpy", "monai": "monai", "einops": "einops", "diffusers": "diffusers",
        "safetensors": "safetensors", "SimpleITK": "SimpleITK", "importlib_metadata": "importlib-metadata"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "missing Python packages: $missing" | tee -a "$OUT_DIR/gpu_train_info.txt"
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
REQUIRE_CUDA="${REQUIRE_CUDA:-1}" "$PY" - <<'EOF' 2>&1 | tee -a "$OUT_DIR/gpu_train_info.txt"
import os
import torch
if os.environ["REQUIRE_CUDA"] != "0":  # REQUIRE_CUDA=0 only to try this script on a CPU machine
    assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA device"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
          f"{torch.cuda.get_device_name()}")
import monai.networks.nets, DiffuX2CTLib.network.model, training.objective  # noqa: E401,F401
EOF

# --- the benchmark --------------------------------------------------------------------------------
if [ "$DEVICE" = cuda ]; then
  args=(--device cuda --size 128 --network paper --variants fp32,bf16,bf16+ckpt,bf16+compile
        --batch 1 --warmup 3 --steps 10)
else  # DEVICE=cpu REQUIRE_CUDA=0: a smoke run of this script on a CPU machine
  args=(--device cpu --quick --variants fp32,bf16,bf16+ckpt)
fi
rc=0
echo "== benchmarks/training.py ${args[*]} $* (case timeout ${CASE_TIMEOUT} s, compiled ${COMPILE_TIMEOUT} s, budget ${BUDGET} s)"
timeout --kill-after=15 "$BENCH_TIMEOUT" "$PY" benchmarks/training.py "${args[@]}" \
    --case-timeout "$CASE_TIMEOUT" --compile-timeout "$COMPILE_TIMEOUT" --budget "$BUDGET" "$@" >"$OUT_DIR/gpu_train.txt" 2>&1 || rc=$?
cat "$OUT_DIR/gpu_train.txt"
if [ "$rc" -ne 0 ]; then
  echo "== exit code $rc$([ "$rc" -eq 124 ] && echo ' (timed out; the figures printed so far are above)')" \
    | tee -a "$OUT_DIR/gpu_train.txt"
fi
echo "== done in $((SECONDS - started)) s; outputs in $OUT_DIR/gpu_train_info.txt and $OUT_DIR/gpu_train.txt"
