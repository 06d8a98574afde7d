#!/usr/bin/env bash
# Builds and tests unrollopt against a given torch, as a user with that torch and
# no CUDA toolkit would: in a virtual environment of its own, with no nvcc on
# PATH (so the CPU kernels, whether torch is a CPU or a CUDA build), by the
# README's own-environment install (with a build folder of its own); then
#   - checks that the build says it built the CPU kernels only, and that
#     accelerated_op_available("cuda") is False;
#   - builds and runs a C++ program against the installed package with
#     find_package(unrollopt) (examples/cpp/unrolled_adam);
#   - runs pytest: the whole suite, or the arguments given.
#   tools/check_torch_versions.sh [pytest arguments]
#   e.g. UNROLLOPT_TORCH=torch==2.11.0 tools/check_torch_versions.sh
# Environment: UNROLLOPT_TORCH (default torch==2.11.0, the oldest torch
# supported; from the package index, a CUDA build of several GB), UNROLLOPT_VENV
# (default .venv-<version>, e.g. .venv-2.11.0; created if missing).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
torch_spec=${UNROLLOPT_TORCH:-torch==2.11.0}
venv=${UNROLLOPT_VENV:-$root/.venv-${torch_spec##*==}}
build="$root/build/$(basename "$venv")"
py="$venv/bin/python"
say() { echo "[check_torch_versions $(date +%H:%M:%S)] $*"; }
start=$SECONDS

# No CUDA compiler: PATH without the folders that hold an nvcc.
path=$(tr : '\n' <<<"$PATH" | while read -r dir; do [[ -x "$dir/nvcc" ]] || echo "$dir"; done | paste -sd:)
export PATH="$venv/bin:$path"
unset CUDACXX CUDA_HOME CUDA_PATH
! command -v nvcc >/dev/null || { echo "nvcc is still on PATH: $(command -v nvcc)" >&2; exit 1; }

[[ -x "$py" ]] || python3 -m venv "$venv"
say "installing $torch_spec and the build and test tools into $venv"
pip() { "$py" -m pip -q --disable-pip-version-check "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
# (What tools/setup.sh --with-tests installs: the tests run the examples too.)
pip install "$torch_spec" nanobind scikit-build-core ninja "cmake>=3.24" numpy matplotlib tqdm scikit-learn pytest
# TorchOpt, which the migration tests compare against, without its dependencies.
pip install --no-deps torchopt==0.7.3 optree graphviz
"$py" -c "import torch; print('torch', torch.__version__, '(CUDA build)' if torch.version.cuda else '(CPU build)')"

say "building unrollopt (the README's own-environment install) in $build"
log="$build.log"
mkdir -p "$(dirname "$log")"
(cd "$root" && "$py" -m pip install -v --disable-pip-version-check --no-build-isolation --no-deps \
  --force-reinstall . -Cbuild-dir="$build" >"$log" 2>&1) || { tail -n 60 "$log"; exit 1; }
grep -h "unrollopt: building" "$log" | sed 's/^ *//'
grep -q "unrollopt: building the CPU kernels only" "$log" || { echo "expected CPU kernels only" >&2; exit 1; }
say "built in $((SECONDS - start)) s"

cd "$venv"  # (outside the checkout: the installed package, not python/unrollopt)
"$py" - <<'PY'
import torch
import unrollopt
from unrollopt import _build_info

assert not _build_info.CUDA_KERNELS, _build_info.NO_CUDA_REASON
assert not unrollopt.accelerated_op_available(torch.device("cuda"))
assert not unrollopt.accelerated_op_available("cuda:0")
assert unrollopt.accelerated_op_available("cpu")
print(f"unrollopt {unrollopt.__version__} imports with torch {torch.__version__}: CPU kernels, "
      "accelerated_op_available('cuda') is False")
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
