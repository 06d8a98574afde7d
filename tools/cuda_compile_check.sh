#!/usr/bin/env bash
# Compiles and links the CUDA build (kernels, library and Python extension)
# against the CUDA build of torch, with nvcc; fails on any error. Runs nothing:
# no GPU needed. (The C++ tests hold no CUDA code: the CPU build compiles them.)
#   tools/cuda_compile_check.sh
# Environment: UNROLLOPT_CUDA_VENV (default .venv-cuda, created if missing),
# UNROLLOPT_CUDA_TORCH (default torch==2.14.1, a CUDA 13 build), CUDA_HOME
# (default /usr/local/cuda), TORCH_CUDA_ARCH_LIST (default the build's:
# 8.0;9.0+PTX).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${UNROLLOPT_CUDA_VENV:-$root/.venv-cuda}
cuda_home=${CUDA_HOME:-/usr/local/cuda}
# torch's CMake finds CUDA through the nvcc on PATH (/usr/local/bin/nvcc may be
# a wrapper it cannot use).
export PATH="$cuda_home/bin:$PATH"
nvcc --version | tail -n 2

[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check \
  "${UNROLLOPT_CUDA_TORCH:-torch==2.14.1}" nanobind scikit-build-core ninja
# The toolkit here lacks nvrtc, which torch's CMake wants: the pip runtime's.
nvrtc=$("$venv/bin/python" -c "
import glob, os, sysconfig
hits = glob.glob(os.path.join(sysconfig.get_paths()['purelib'], 'nvidia', '*', 'lib', 'libnvrtc.so*'))
print(sorted(hits)[0] if hits else '')")

build="$root/build/$(basename "$venv")"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$venv/bin/python" -DUNROLLOPT_WITH_CUDA=ON \
  -DUNROLLOPT_BUILD_PYTHON=ON -DUNROLLOPT_BUILD_TESTS=OFF \
  ${nvrtc:+-DCUDA_nvrtc_LIBRARY="$nvrtc"}
cmake --build "$build"
echo "CUDA build compiled and linked in $build"
