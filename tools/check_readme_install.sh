#!/usr/bin/env bash
# Runs the README's own-environment install exactly as written (the bash block
# after the marker "<!-- ci: own-environment install -->"), in a fresh virtual
# environment that already has torch, with CMake told that GoogleTest is absent;
# then imports the result and runs one fused step. Used by .ci/run.
#   tools/check_readme_install.sh
# Environment: UNROLLOPT_TORCH (default torch==2.13.0, the CPU build).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
commands=$(awk '/<!-- ci: own-environment install -->/ {found = 1; next}
                found && /^```bash/ {inside = 1; next}
                inside && /^```/ {exit}
                inside {print}' "$root/README.md")
[[ -n "$commands" ]] || { echo "README.md: no block after the own-environment marker" >&2; exit 1; }
echo "== the README's own-environment install, in a fresh venv:"
echo "$commands"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check "${UNROLLOPT_TORCH:-torch==2.13.0}"
# A copy of the checkout, so that its build folder is fresh too.
mkdir -p "$work/src"
(cd "$root" && git ls-files -z | tar --null -T - -cf -) | tar -xf - -C "$work/src"
(
  cd "$work/src"
  export PATH="$work/venv/bin:$PATH" PIP_DISABLE_PIP_VERSION_CHECK=1
  export CMAKE_ARGS="-DCMAKE_DISABLE_FIND_PACKAGE_GTest=ON"
  eval "$commands"
)
cd "$work"
"$work/venv/bin/python" - <<'PY'
import torch, unrollopt
opt = unrollopt.adam(0.1, use_accelerated_op=True)
p = torch.randn(5, dtype=torch.float64, requires_grad=True)
g = torch.randn(5, dtype=torch.float64)
u, _ = opt.update(g * p, opt.init(p), inplace=False)
(gp,) = torch.autograd.grad(u.sum(), p)
assert torch.isfinite(gp).all() and u.shape == p.shape
print(f"unrollopt {unrollopt.__version__} installed as the README says and imports "
      f"(torch {torch.__version__}); a fused differentiable step ran")
PY
