#!/usr/bin/env bash
# Builds the CUDA kernels with the CUDA toolkit from pip (no system toolkit):
# in a virtual environment with a CUDA build of torch, installs the toolkit
# matching torch's CUDA (cuda-toolkit[nvcc,cccl] at the version torch pins:
# nvidia-cuda-nvcc, -crt, nvidia-nvvm, nvidia-cuda-cccl), puts its bin folder
# (site-packages/nvidia/cu13/bin) on PATH with every other nvcc taken off, and
#   - without arguments: the README's own-environment install (pip install
#     --no-build-isolation --no-deps .), then checks that the build says it
#     built the CUDA kernels and that unrollopt._build_info.CUDA_KERNELS is True;
#   - with a CMake target (e.g. unrollopt_cuda): configures and builds that
#     target only (the quick check: compiles kernels.cu).
# Fails on any error. Runs nothing on a GPU: none needed.
#   tools/check_pip_toolkit.sh [cmake target]
# Environment: UNROLLOPT_TORCH (default torch==2.14.1, a CUDA 13 build),
# UNROLLOPT_VENV (default .venv-pipnvcc; created if missing), TORCH_CUDA_ARCH_LIST
# (default 9.0, one architecture, to keep the CUDA compile short). Build folder:
# build/<venv name> (with a target: build/<venv name>-cmake).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
torch_spec=${UNROLLOPT_TORCH:-torch==2.14.1}
venv=${UNROLLOPT_VENV:-$root/.venv-pipnvcc}
target=${1:-}
arch=${TORCH_CUDA_ARCH_LIST:-9.0}
build="$root/build/$(basename "$venv")"
py="$venv/bin/python"
say() { echo "[check_pip_toolkit $(date +%H:%M:%S)] $*"; }
start=$SECONDS

[[ -x "$py" ]] || python3 -m venv "$venv"
pip() { "$py" -m pip -q --disable-pip-version-check "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
say "installing $torch_spec and the build tools into $venv"
pip install "$torch_spec" nanobind scikit-build-core ninja "cmake>=3.24" numpy
# The toolkit of torch's own CUDA: cuda-toolkit is what torch's wheel depends on
# (for its runtime libraries); its extras nvcc and cccl add the compiler and the
# headers (nv/target, cuda/std) that CUDA 13's own headers include.
toolkit=$("$py" -c 'import importlib.metadata as m; print(m.version("cuda-toolkit"))' 2>/dev/null) ||
  { echo "$torch_spec does not depend on cuda-toolkit (not a CUDA 13 build of torch?)" >&2; exit 1; }
say "installing cuda-toolkit[nvcc,cccl]==$toolkit"
pip install "cuda-toolkit[nvcc,cccl]==$toolkit"
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
toolkit_bin=$(dirname "$(ls "$site"/nvidia/cu*/bin/nvcc | head -n 1)")

# PATH without the folders that hold an nvcc; then the venv's and pip's nvcc.
path=$(tr : '\n' <<<"$PATH" | while read -r dir; do [[ -x "$dir/nvcc" ]] || echo "$dir"; done | paste -sd:)
unset CUDACXX CUDA_HOME CUDA_PATH
export PATH="$venv/bin:$toolkit_bin:$path"
[[ "$(command -v nvcc)" == "$toolkit_bin/nvcc" ]] || { echo "nvcc on PATH: $(command -v nvcc)" >&2; exit 1; }
nvcc --version | tail -n 2
"$py" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
expected="unrollopt: building the CPU and CUDA kernels"

if [[ -n "$target" ]]; then
  build="$build-cmake"
  say "configure and build $target in $build"
  torch_prefix=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix" \
    -DPython_EXECUTABLE="$py" -DUNROLLOPT_BUILD_PYTHON=ON -DUNROLLOPT_BUILD_TESTS=OFF \
    -DUNROLLOPT_WITH_CUDA=AUTO -DTORCH_CUDA_ARCH_LIST="$arch" | tee "$build.log"
  grep -q "$expected" "$build.log" || { echo "expected: $expected" >&2; exit 1; }
  cmake --build "$build" --target "$target"
  say "$target built with $toolkit_bin/nvcc in $((SECONDS - start)) s"
  exit 0
fi

say "the own-environment install (build folder $build), TORCH_CUDA_ARCH_LIST=$arch"
log="$build.log"
mkdir -p "$(dirname "$log")"
(unset -f pip && cd "$root" && pip install -v --no-build-isolation --no-deps . -Cbuild-dir="$build" \
  -Ccmake.define.TORCH_CUDA_ARCH_LIST="$arch") >"$log" 2>&1 || { tail -n 60 "$log"; exit 1; }
grep -h "unrollopt: building" "$log" | sed 's/^ *//'
grep -q "$expected" "$log" || { echo "expected: $expected" >&2; exit 1; }
cd "$venv"  # (outside the checkout: the installed package, not python/unrollopt)
"$py" -c 'from unrollopt import _build_info as b; assert b.CUDA_KERNELS, b.NO_CUDA_REASON; print("CUDA_KERNELS", b.CUDA_KERNELS)'
say "built and installed with $toolkit_bin/nvcc in $((SECONDS - start)) s"
