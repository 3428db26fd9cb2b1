# Shared set-up of the GPU scripts (sourced by gpu.sh and gpu_train.sh; not run on its own).
#
#   gpu_machine_info FILE                 date, host, Python and nvidia-smi's GPU list, into FILE
#   gpu_install_missing FILE MOD=PKG ...  pip-installs the packages whose modules are missing,
#                                         --no-deps into /tmp/diffux2ct-site (never into the
#                                         interpreter's site-packages, so its CUDA torch is kept),
#                                         from the wheels in $WHEELS if any, else from pip's index
#   gpu_check FILE IMPORTS                asserts CUDA (unless REQUIRE_CUDA=0), prints the torch,
#                                         CUDA and GPU names, then runs the python IMPORTS line
#
# Uses $PY (the interpreter), $WHEELS and $SETUP_TIMEOUT from the calling script.

gpu_machine_info() {
  {
    echo "date: $(date -u +%FT%TZ)  host: $(hostname)  python: $("$PY" --version 2>&1)"
    if command -v nvidia-smi >/dev/null 2>&1; then
      nvidia-smi --query-gpu=name,memory.total --format=csv
    else
      echo "nvidia-smi: not found"
    fi
  } 2>&1 | tee "$1"
}

gpu_install_missing() {
  local info=$1
  shift
  local missing
  missing=$("$PY" - "$@" <<'PYEOF'
import importlib.util, sys
pairs = [arg.split("=", 1) for arg in sys.argv[1:]]
print(" ".join(pkg for mod, pkg in pairs if importlib.util.find_spec(mod) is None))
PYEOF
)
  [ -z "$missing" ] && return 0
  echo "missing Python packages: $missing" | tee -a "$info"
  local site=/tmp/diffux2ct-site src
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
}

gpu_check() {
  REQUIRE_CUDA="${REQUIRE_CUDA:-1}" GPU_IMPORTS="$2" "$PY" - <<'PYEOF' 2>&1 | tee -a "$1"
import os
import torch
if os.environ["REQUIRE_CUDA"] != "0":  # REQUIRE_CUDA=0 only to try a script on a CPU machine
    assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA device"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
          f"{torch.cuda.get_device_name()}")
exec(os.environ["GPU_IMPORTS"])
PYEOF
  return "${PIPESTATUS[0]}"
}
