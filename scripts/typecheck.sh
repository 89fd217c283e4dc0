#!/usr/bin/env bash
# Type-check rlscale: strict for the decision core (policy/), standard for the rest.
# mypy cannot follow setuptools' package-dir mapping, so lay the folders out as the
# `rlscale` package with symlinks in a scratch directory and check that.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mypy=${MYPY:-"$root/.venv/bin/mypy"}
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/rlscale"
for f in "$root"/src/rlscale/*; do ln -s "$f" "$tree/rlscale/"; done
for pkg in policy training operator; do ln -s "$root/$pkg" "$tree/rlscale/$pkg"; done
cd "$tree"
export MYPYPATH=$tree
"$mypy" --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" --strict -p rlscale.policy
"$mypy" --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" -p rlscale.operator -p rlscale.training -p rlscale.devstack -m rlscale.cli -m rlscale.history
