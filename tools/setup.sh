#!/usr/bin/env bash
# Sets up a fresh machine for unrollopt: a virtual environment with torch and the
# build tools, and unrollopt built from this checkout and installed into it.
#   tools/setup.sh [--with-tests]
# --with-tests also installs GoogleTest (Debian's libgtest-dev) and pytest and
# builds the C++ tests. Environment: UNROLLOPT_VENV (default .venv),
# UNROLLOPT_TORCH (default torch==2.13.0; any torch from 2.11 to 2.14, a CPU or
# a CUDA build, whichever pip resolves: a CUDA build gives the CUDA kernels too
# where the CUDA toolkit's nvcc is on PATH, and the CPU kernels where not).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${UNROLLOPT_VENV:-$root/.venv}
torch_spec=${UNROLLOPT_TORCH:-torch==2.13.0}
with_tests=OFF
[[ "${1:-}" == "--with-tests" ]] && with_tests=ON

say() { echo "[setup $(date +%H:%M:%S)] $*"; }
start=$SECONDS

if [[ $with_tests == ON ]] && ! dpkg -s libgtest-dev >/dev/null 2>&1; then
  say "installing GoogleTest (apt: libgtest-dev)"
  sudo_cmd=""
  [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq libgtest-dev >/dev/null
fi

if [[ ! -x "$venv/bin/python" ]]; then
  say "creating the virtual environment $venv"
  python3 -m venv "$venv" || { echo "python3 -m venv failed: install python3-venv (Debian, Ubuntu)" >&2; exit 1; }
fi
# CMake >= 3.24 and ninja from pip: distributions often ship an older CMake.
# (numpy, matplotlib, tqdm and scikit-learn: the examples, the package's `examples` extra.)
packages=("$torch_spec" nanobind scikit-build-core ninja "cmake>=3.24" numpy matplotlib tqdm scikit-learn)
[[ $with_tests == ON ]] && packages+=(pytest)
say "installing ${packages[*]} (pip; torch is a large download the first time)"
"$venv/bin/pip" install -q --disable-pip-version-check "${packages[@]}"
if [[ $with_tests == ON ]]; then
  # TorchOpt, which the migration tests compare against; without its own
  # dependencies (it would resolve another torch): its import needs optree and
  # graphviz.
  say "installing torchopt==0.7.3, optree and graphviz for the tests (pip, --no-deps)"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps torchopt==0.7.3 optree graphviz
fi

# No build isolation: the extension must be built against the torch installed
# above, never one resolved from the registry. One build folder per venv.
say "building unrollopt (tests: $with_tests): about 4 to 5 minutes on 2 cores from scratch (measured 4m15s with the tests), less when rebuilding"
PATH="$venv/bin:$PATH" "$venv/bin/pip" install -q --disable-pip-version-check \
  --no-build-isolation --no-deps --force-reinstall "$root" \
  -Cbuild-dir="$root/build/$(basename "$venv")" \
  -Ccmake.define.UNROLLOPT_BUILD_TESTS=$with_tests
# What was built (pip shows no build output): outside the checkout, so that the
# installed package is imported.
(cd "$venv" && "$venv/bin/python" -) <<'PY'
import torch
from unrollopt import _build_info as b
kind = "a CUDA build" if torch.version.cuda else "a CPU build"
kernels = "CPU and CUDA kernels" if b.CUDA_KERNELS else f"CPU kernels only ({b.NO_CUDA_REASON})"
print(f"[setup] torch {torch.__version__} ({kind}); unrollopt built with the {kernels}")
PY
say "unrollopt installed into $venv ($((SECONDS - start)) s in all)"
