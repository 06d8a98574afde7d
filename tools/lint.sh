#!/usr/bin/env bash
# Lint and formatting with pinned tools: ruff (Python: pyproject.toml's
# [tool.ruff]) and clang-format (C++ and CUDA: .clang-format).
#   tools/lint.sh          check, changing nothing (what .ci/run runs)
#   tools/lint.sh --fix    apply ruff's safe fixes and both formatters
# Environment: UNROLLOPT_VENV (default .venv; made if missing).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${UNROLLOPT_VENV:-$root/.venv}
cd "$root"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check ruff==0.17.6 clang-format==23.1.5
mapfile -t cpp < <(git ls-files -co --exclude-standard -- '*.h' '*.cpp' '*.cu' '*.cuh')
if [[ "${1:-}" == "--fix" ]]; then
  "$venv/bin/ruff" check --fix .
  "$venv/bin/ruff" format .
  "$venv/bin/clang-format" -i "${cpp[@]}"
else
  "$venv/bin/ruff" check .
  "$venv/bin/ruff" format --check .
  "$venv/bin/clang-format" --dry-run -Werror "${cpp[@]}"
  echo "lint: ruff and clang-format clean (${#cpp[@]} C++/CUDA files)"
fi
