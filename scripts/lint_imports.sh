#!/usr/bin/env bash
# Check the layer contracts of pyproject.toml ([tool.importlinter]) with import-linter.
#
# The package installs from several top-level folders (fusionrank/, training/, export/,
# model_repository/, client/: see [tool.setuptools.package-dir]), and import-linter reads a
# package from one folder on disk. So the installed layout is assembled in a temporary folder
# first, and checked there.
#
# Usage: scripts/lint_imports.sh [SOURCE_ROOT]   (default: this repository)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source_root=${1:-$repo}
lint_imports=${LINT_IMPORTS:-$repo/.venv/bin/lint-imports}
layout=$(mktemp -d)
trap 'rm -rf "$layout"' EXIT

mkdir -p "$layout/fusionrank"
cp -r "$source_root/fusionrank/." "$layout/fusionrank/"
for layer in training export model_repository client; do
    cp -r "$source_root/$layer" "$layout/fusionrank/$layer"
done
find "$layout" -name __pycache__ -prune -exec rm -rf {} +
cd "$layout"
PYTHONPATH="$layout" "$lint_imports" "$repo/pyproject.toml" --no-cache
