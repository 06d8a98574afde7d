#!/usr/bin/env bash
# Sets up (tools/setup.sh), then runs the main example (MAML on sinusoid
# regression, examples/maml_sinusoid.py). Extra arguments go to it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${UNROLLOPT_VENV:-$root/.venv}
"$root/tools/setup.sh"
"$venv/bin/python" "$root/examples/maml_sinusoid.py" "$@"
