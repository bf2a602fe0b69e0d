# Sourced by the other scripts: where vephys keeps its caches and how to find libtorch.
# Everything lives outside the clone so repeat runs are fast; nothing here assumes it exists.
export VEPHYS_CACHE="${VEPHYS_CACHE:-${HOME:-/root}/.cache/vephys}"
export VEPHYS_VENV="${VEPHYS_VENV:-$VEPHYS_CACHE/venv}"
export VEPHYS_WEIGHTS_DIR="${VEPHYS_WEIGHTS_DIR:-$VEPHYS_CACHE/weights}"
export VEPHYS_FIXTURES="${VEPHYS_FIXTURES:-$VEPHYS_CACHE/fixtures}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$VEPHYS_CACHE/target}"
# tch builds against the PyTorch wheel in the venv (torch 2.11.0 for tch 0.24.0).
export LIBTORCH_USE_PYTORCH=1
export PATH="$VEPHYS_VENV/bin:$PATH"
if [ -d "$VEPHYS_VENV" ]; then
  _torch_lib="$(ls -d "$VEPHYS_VENV"/lib/python3*/site-packages/torch/lib 2>/dev/null | head -n1)"
  if [ -n "$_torch_lib" ]; then
    export LD_LIBRARY_PATH="$_torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi
