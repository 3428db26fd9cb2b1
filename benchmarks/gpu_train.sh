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

# shellcheck source=benchmarks/_gpu_env.sh
source benchmarks/_gpu_env.sh
gpu_machine_info "$OUT_DIR/gpu_train_info.txt"
# what the benchmark imports
gpu_install_missing "$OUT_DIR/gpu_train_info.txt" numpy=numpy monai=monai einops=einops diffusers=diffusers safetensors=safetensors SimpleITK=SimpleITK importlib_metadata=importlib-metadata
gpu_check "$OUT_DIR/gpu_train_info.txt" "import monai.networks.nets, DiffuX2CTLib.network.model, training.objective"

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
