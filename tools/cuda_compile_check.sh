#!/usr/bin/env bash
# Compiles and links the CUDA build against CUDA builds of torch, with nvcc;
# fails on any error. Runs nothing: no GPU needed. (The C++ tests hold no CUDA
# code: the CPU build compiles them.) Against the newest torch supported it
# builds everything (kernels, library and Python extension); against the
# oldest, the library with its CUDA kernels (what differs between torch
# versions; tools/check_torch_versions.sh builds and tests the rest there).
#   tools/cuda_compile_check.sh
# Environment: UNROLLOPT_CUDA_VENV (default .venv-cuda, created if missing),
# UNROLLOPT_CUDA_TORCH (default torch==2.14.1, a CUDA 13 build),
# UNROLLOPT_CUDA_VENV_OLDEST (default .venv-cuda-2.11.0),
# UNROLLOPT_CUDA_TORCH_OLDEST (default torch==2.11.0, the oldest supported and
# what the GPU machines have; a download of several GB; empty: skip), CUDA_HOME
# (default /usr/local/cuda), TORCH_CUDA_ARCH_LIST (default the build's:
# 8.0;9.0+PTX). Build folders: build/<venv name>-nvcc.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cuda_home=${CUDA_HOME:-/usr/local/cuda}
# torch's CMake finds CUDA through the nvcc on PATH (/usr/local/bin/nvcc may be
# a wrapper it cannot use).
export PATH="$cuda_home/bin:$PATH"
nvcc --version | tail -n 2

# compile_check VENV TORCH_SPEC [TARGET]: the CUDA build against that torch.
compile_check() {
  local venv=$1 spec=$2 target=${3:-all} start=$SECONDS
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "$spec" nanobind scikit-build-core ninja 2>&1 |
    { grep -v "^WARNING: Location" || true; }
  # The toolkit here lacks nvrtc, which torch's CMake wants: the pip runtime's.
  local nvrtc
  nvrtc=$("$venv/bin/python" -c "
import glob, os, sysconfig
hits = glob.glob(os.path.join(sysconfig.get_paths()['purelib'], 'nvidia', '*', 'lib', 'libnvrtc.so*'))
print(sorted(hits)[0] if hits else '')")
  local build
  build="$root/build/$(basename "$venv")-nvcc"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DPython_EXECUTABLE="$venv/bin/python" -DUNROLLOPT_WITH_CUDA=ON \
    -DUNROLLOPT_BUILD_PYTHON=ON -DUNROLLOPT_BUILD_TESTS=OFF \
    ${nvrtc:+-DCUDA_nvrtc_LIBRARY="$nvrtc"}
  cmake --build "$build" --target "$target"
  echo "CUDA build ($target) compiled and linked against torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') in $build ($((SECONDS - start)) s)"
}

compile_check "${UNROLLOPT_CUDA_VENV:-$root/.venv-cuda}" "${UNROLLOPT_CUDA_TORCH:-torch==2.14.1}"
oldest=${UNROLLOPT_CUDA_TORCH_OLDEST-torch==2.11.0}
if [[ -n "$oldest" ]]; then
  compile_check "${UNROLLOPT_CUDA_VENV_OLDEST:-$root/.venv-cuda-${oldest##*==}}" "$oldest" unrollopt
fi
