#!/usr/bin/env bash
# Sets up (tools/setup.sh --with-tests), then runs the C++ tests (ctest) and the
# Python tests (pytest). Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${UNROLLOPT_VENV:-$root/.venv}
"$root/tools/setup.sh" --with-tests
cd "$root"
PATH="$venv/bin:$PATH" ctest --test-dir "build/$(basename "$venv")" --output-on-failure
"$venv/bin/python" -m pytest python/tests -q "$@"
