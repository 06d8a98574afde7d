#!/usr/bin/env bash
# Builds the C++ core, its tests and the Python extension with AddressSanitizer
# and UndefinedBehaviorSanitizer, then runs ctest and the Python operator and
# error tests against that build. Any report fails the run.
#   tools/sanitize.sh [extra pytest arguments]
# Needs the environment of tools/setup.sh --with-tests (UNROLLOPT_VENV, default
# .venv: torch, nanobind, CMake, ninja, pytest) and GCC's libasan and libubsan.
#
# Flags: -fsanitize=address,undefined -fno-sanitize-recover=undefined (UB is an
# error, not a message) -fno-omit-frame-pointer (readable stacks), -O1 -g.
# Python is not built with ASan, so the runtime is preloaded into it; leak
# detection is on for ctest and off under Python (whose interpreter and torch
# keep memory until exit by design).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${UNROLLOPT_VENV:-$root/.venv}
build=$root/build/sanitize
py="$venv/bin/python"
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
start=$SECONDS
say() { echo "[sanitize $(date +%H:%M:%S)] $*"; }

say "configuring and building in $build (about 20 minutes on 2 cores; the run about 26 in all)"
PATH="$venv/bin:$PATH" cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags" \
  -DUNROLLOPT_WITH_CUDA=OFF -DUNROLLOPT_BUILD_TESTS=ON -DUNROLLOPT_BUILD_PYTHON=ON \
  -DPython_EXECUTABLE="$py" >/dev/null
PATH="$venv/bin:$PATH" cmake --build "$build"

say "ctest"
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 PATH="$venv/bin:$PATH" \
  ctest --test-dir "$build" --output-on-failure -E installed_package_example

say "pytest (operators and bad input) with the sanitized extension"
# The package as installed: the Python sources, the extension and the library.
pkg=$(mktemp -d)
trap 'rm -rf "$pkg"' EXIT
mkdir -p "$pkg/unrollopt/lib"
cp "$root"/python/unrollopt/*.py "$root"/python/unrollopt/py.typed "$pkg/unrollopt/"
cp "$build"/python/_C*.so "$build"/python/_build_info.py "$pkg/unrollopt/"
cp "$build"/cpp/libunrollopt.so* "$pkg/unrollopt/lib/"
preload="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
(
  cd "$root"
  LD_PRELOAD="$preload" ASAN_OPTIONS=detect_leaks=0 PYTHONPATH="$pkg" \
    "$py" -m pytest -q -p no:cacheprovider python/tests/test_ops.py python/tests/test_errors.py \
    "$@"
)
say "clean: no sanitizer report ($((SECONDS - start)) s)"
