#!/usr/bin/env bash
# The test command (`make test`): install what is missing, run the static checks, then
# every test tier — unit and property tests, integration with a real Prometheus, chart
# rendering with a real Helm, and end-to-end on a real control plane built from Go modules.
#
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not e2e"` or `-k hpa`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
scripts/lint.sh
RLSCALE_TOOLS_BIN=$(tools/build-tools.sh --print-dir | tail -n 1)
export RLSCALE_TOOLS_BIN
# Undo what a real node of an earlier, killed run left on the host (docs/real-node.md).
.venv/bin/rlscale cluster clean
echo "== pytest"
exec .venv/bin/pytest "$@"
