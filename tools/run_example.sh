#!/usr/bin/env bash
# Sets up (tools/setup.sh), then runs the main example. Extra arguments go to it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${UNROLLOPT_VENV:-$root/.venv}
"$root/tools/setup.sh"
"$venv/bin/python" "$root/examples/meta_learn_adam.py" "$@"
