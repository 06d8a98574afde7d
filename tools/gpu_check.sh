#!/usr/bin/env bash
# For a machine with an NVIDIA GPU (no network needed): builds unrollopt from
# this checkout with its CUDA kernels (for the GPU present), runs the CUDA
# tests, then the short benchmark bench/cuda_step.py, which prints a table.
#   tools/gpu_check.sh
# Needs python3 with torch (CUDA build), pytest, nanobind, scikit-build-core,
# cmake and ninja, and nvcc (CUDA_HOME, default /usr/local/cuda). The package
# goes into a folder of its own (UNROLLOPT_GPU_SITE, default build/gpu-site),
# put on PYTHONPATH; nothing else is installed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
cuda_home=${CUDA_HOME:-/usr/local/cuda}
site=${UNROLLOPT_GPU_SITE:-$root/build/gpu-site}
export PATH="$cuda_home/bin:$PATH"  # torch's CMake finds CUDA through the nvcc on PATH
start=$SECONDS

"$py" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA GPU visible to torch"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {torch.cuda.get_device_name()}, "
      f"{torch.cuda.device_count()} GPU(s)")
PY
nvcc --version | tail -n 2
# Only the GPU present: a shorter build.
arch=$("$py" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
# torch's CMake wants nvrtc; take it from the pip CUDA runtime when the toolkit lacks it.
nvrtc=""
if ! ls "$cuda_home"/lib64/libnvrtc.so* >/dev/null 2>&1; then
  nvrtc=$("$py" -c "
import glob, os, sysconfig
hits = glob.glob(os.path.join(sysconfig.get_paths()['purelib'], 'nvidia', '*', 'lib', 'libnvrtc.so*'))
print(sorted(hits)[0] if hits else '')")
fi

echo "== build (TORCH_CUDA_ARCH_LIST=$arch)"
rm -rf "$site"
"$py" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps \
  --target "$site" "$root" -Cbuild-dir="$root/build/gpu" \
  -Ccmake.define.UNROLLOPT_WITH_CUDA=ON -Ccmake.define.UNROLLOPT_BUILD_TESTS=OFF \
  -Ccmake.define.TORCH_CUDA_ARCH_LIST="$arch" \
  ${nvrtc:+-Ccmake.define.CUDA_nvrtc_LIBRARY="$nvrtc"}
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
"$py" -c "
import torch, unrollopt
assert unrollopt.accelerated_op_available('cuda'), 'built, but without CUDA kernels'
print('unrollopt', unrollopt.__version__, 'from', unrollopt.__file__, ': CUDA kernels available')"
echo "== build done after $((SECONDS - start)) s"

echo "== CUDA tests"
"$py" -m pytest -q -p no:cacheprovider python/tests/test_cuda.py
echo "== tests done after $((SECONDS - start)) s"

echo "== benchmark"
"$py" bench/cuda_step.py
echo "== done after $((SECONDS - start)) s"
