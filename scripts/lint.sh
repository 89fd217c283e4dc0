#!/usr/bin/env bash
# Static checks: ruff (lint + format), mypy (strict for policy/), import-linter contracts
# (policy imports nothing of ours; the operator never imports training; the top-level and operator/ layers)
# and shellcheck on every shell script.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=$root/.venv/bin
echo "== ruff"
"$venv/ruff" check .
"$venv/ruff" format --check .
echo "== mypy"
scripts/typecheck.sh
echo "== import contracts"
# Like mypy, grimp cannot see setuptools' package-dir mapping: check a symlinked layout.
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/rlscale"
for f in src/rlscale/*; do ln -s "$root/$f" "$tree/rlscale/"; done
for pkg in policy training operator; do ln -s "$root/$pkg" "$tree/rlscale/$pkg"; done
(cd "$tree" && PYTHONPATH=$tree "$venv/lint-imports" --config "$root/.importlinter" --no-cache)
echo "== shellcheck"
mapfile -t scripts < <(git ls-files '*.sh' .ci/run)
shellcheck "${scripts[@]}"
