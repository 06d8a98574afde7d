#!/usr/bin/env bash
# Compiles the CUDA build against a CUDA build of torch, with nvcc; fails on any
# error. Runs nothing: no GPU needed. By default everything (kernels, library
# and Python extension, linked); CI compiles the CUDA kernels only against the
# newest torch (what differs from the CPU build, which it builds and tests
# there without nvcc), and builds, links and tests the whole CUDA build against
# the oldest with tools/check_torch_versions.sh (UNROLLOPT_CUDA_HOME set).
#   tools/cuda_compile_check.sh [cmake target, default all; e.g. unrollopt_cuda]
# Environment: UNROLLOPT_CUDA_VENV (default .venv-cuda, created if missing),
# UNROLLOPT_CUDA_TORCH (default torch==2.14.1, a CUDA 13 build), CUDA_HOME
# (default /usr/local/cuda), TORCH_CUDA_ARCH_LIST (default the build's:
# 8.0;9.0+PTX). Build folder: build/<venv name>-nvcc.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${UNROLLOPT_CUDA_VENV:-$root/.venv-cuda}
spec=${UNROLLOPT_CUDA_TORCH:-torch==2.14.1}
target=${1:-all}
cuda_home=${CUDA_HOME:-/usr/local/cuda}
# torch's CMake finds CUDA through the nvcc on PATH (/usr/local/bin/nvcc may be
# a wrapper it cannot use).
export PATH="$cuda_home/bin:$PATH"
nvcc --version | tail -n 2
start=$SECONDS

[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "$spec" nanobind scikit-build-core ninja "cmake>=3.24" 2>&1 |
  { grep -v "^WARNING: Location" || true; }
build="$root/build/$(basename "$venv")-nvcc"
# (nvrtc, which torch's CMake links and the toolkit here lacks: CMakeLists.txt
# takes the one pip installed beside torch.)
"$venv/bin/cmake" -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$venv/bin/python" -DUNROLLOPT_WITH_CUDA=ON \
  -DUNROLLOPT_BUILD_PYTHON=ON -DUNROLLOPT_BUILD_TESTS=OFF
"$venv/bin/cmake" --build "$build" --target "$target"
echo "CUDA build ($target) compiled against torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') in $build ($((SECONDS - start)) s)"
