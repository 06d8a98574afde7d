#!/usr/bin/env bash
# Builds and tests unrollopt against a given torch as a user of that torch would:
# in a virtual environment of its own that has torch and the test tools, by the
# README's own-environment install exactly as written (the bash block after the
# marker "<!-- ci: own-environment install -->"; it installs the build tools);
# then
#   - checks what the build says it built, and accelerated_op_available("cuda");
#   - builds and runs a C++ program against the installed package with
#     find_package(unrollopt) (examples/cpp/unrolled_adam);
#   - runs pytest: the whole suite, or the arguments given.
# Without a toolkit (the default) no nvcc is on PATH, so the build has the CPU
# kernels, whether torch is a CPU or a CUDA build; with UNROLLOPT_CUDA_HOME, that
# toolkit's nvcc is first on PATH and a CUDA torch gives the CUDA kernels too
# (what the GPU machines build; with no GPU here their tests skip).
#   tools/check_torch_versions.sh [pytest arguments]
#   e.g. UNROLLOPT_TORCH=torch==2.14.1 tools/check_torch_versions.sh
# Environment: UNROLLOPT_TORCH (default torch==2.11.0, the oldest torch
# supported; from the package index, a CUDA build of several GB), UNROLLOPT_VENV
# (default .venv-<version>, e.g. .venv-2.11.0; created if missing; its build
# folder is build/<venv name>), UNROLLOPT_CUDA_HOME (default none: no toolkit).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
torch_spec=${UNROLLOPT_TORCH:-torch==2.11.0}
venv=${UNROLLOPT_VENV:-$root/.venv-${torch_spec##*==}}
cuda_home=${UNROLLOPT_CUDA_HOME:-}
build="$root/build/$(basename "$venv")"
py="$venv/bin/python"
say() { echo "[check_torch_versions $(date +%H:%M:%S)] $*"; }
start=$SECONDS

commands=$(awk '/<!-- ci: own-environment install -->/ {found = 1; next}
                found && /^```bash/ {inside = 1; next}
                inside && /^```/ {exit}
                inside {print}' "$root/README.md")
[[ -n "$commands" ]] || { echo "README.md: no bash block after the own-environment marker" >&2; exit 1; }

# PATH without the folders that hold an nvcc; then the toolkit's, if one is given.
path=$(tr : '\n' <<<"$PATH" | while read -r dir; do [[ -x "$dir/nvcc" ]] || echo "$dir"; done | paste -sd:)
unset CUDACXX CUDA_HOME CUDA_PATH
if [[ -n "$cuda_home" ]]; then
  export PATH="$venv/bin:$cuda_home/bin:$path"
  expected="unrollopt: building the CPU and CUDA kernels"
else
  export PATH="$venv/bin:$path"
  ! command -v nvcc >/dev/null || { echo "nvcc is still on PATH: $(command -v nvcc)" >&2; exit 1; }
  expected="unrollopt: building the CPU kernels only"
fi

[[ -x "$py" ]] || python3 -m venv "$venv"
say "installing $torch_spec and the test tools into $venv"
pip() { "$py" -m pip -q --disable-pip-version-check "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
# (What tools/setup.sh --with-tests installs but the build tools, which the
# README's commands install: the tests run the examples too.)
pip install "$torch_spec" numpy matplotlib tqdm scikit-learn pytest
# TorchOpt, which the migration tests compare against, without its dependencies.
pip install --no-deps torchopt==0.7.3 optree graphviz
"$py" -c "import torch; print('torch', torch.__version__, '(CUDA build)' if torch.version.cuda else '(CPU build)')"

say "the README's own-environment install (build folder $build), with nvcc: ${cuda_home:-none}"
echo "$commands"
log="$build.log"
mkdir -p "$(dirname "$log")"
# pip -v shows CMake's messages; SKBUILD_BUILD_DIR keeps the build folder, so
# that running this again rebuilds only what changed.
(unset -f pip && cd "$root" && export PIP_VERBOSE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 SKBUILD_BUILD_DIR="$build" &&
  eval "$commands") >"$log" 2>&1 || { tail -n 60 "$log"; exit 1; }
grep -h "unrollopt: building" "$log" | sed 's/^ *//'
grep -q "$expected" "$log" || { echo "expected: $expected" >&2; exit 1; }
say "built in $((SECONDS - start)) s"

cd "$venv"  # (outside the checkout: the installed package, not python/unrollopt)
UNROLLOPT_EXPECT_CUDA_KERNELS=$([[ -n "$cuda_home" ]] && echo 1 || echo 0) "$py" - <<'PY'
import os
import torch
import unrollopt
from unrollopt import _build_info

cuda_kernels = os.environ["UNROLLOPT_EXPECT_CUDA_KERNELS"] == "1" and torch.version.cuda is not None
assert _build_info.CUDA_KERNELS == cuda_kernels, _build_info.NO_CUDA_REASON
gpu = cuda_kernels and torch.cuda.is_available()
assert unrollopt.accelerated_op_available(torch.device("cuda")) == gpu
assert unrollopt.accelerated_op_available("cuda:0") == gpu
assert unrollopt.accelerated_op_available("cpu")
kernels = "CPU and CUDA kernels" if cuda_kernels else "CPU kernels"
print(f"unrollopt {unrollopt.__version__} imports with torch {torch.__version__}: {kernels}, "
      f"accelerated_op_available('cuda') is {gpu}")
PY

say "building examples/cpp/unrolled_adam against the installed package (find_package(unrollopt))"
prefixes="$("$py" -c 'import unrollopt; print(unrollopt.cmake_prefix_path)');$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
cmake -S "$root/examples/cpp" -B "$build-example" -G Ninja -DCMAKE_PREFIX_PATH="$prefixes" >"$build-example.log" 2>&1 ||
  { tail -n 40 "$build-example.log"; exit 1; }
cmake --build "$build-example" --target unrolled_adam >>"$build-example.log" 2>&1 ||
  { tail -n 40 "$build-example.log"; exit 1; }
"$build-example/unrolled_adam" | tail -n 2

say "pytest ${*:-python/tests}"
cd "$root"
tests_start=$SECONDS
"$py" -m pytest -q -p no:cacheprovider "${@:-python/tests}"
say "tests took $((SECONDS - tests_start)) s; $((SECONDS - start)) s in all"
