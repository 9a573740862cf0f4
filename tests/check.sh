#!/usr/bin/env bash
# Runs every check CI runs: ruff (lint + format), mypy (strict, the four packages), import-linter
# (the layering contracts in pyproject.toml), pytest
# (unit + integration, real Redis/Orthanc/dcmtk/dicom3tools). Fails on any error, and when
# pytest collects no test at all (exit code 5).
#   bash tests/check.sh [extra pytest arguments]
set -uo pipefail
cd "$(dirname "$0")/.."
venv=${LARC_VENV:-.venv}
export PATH="$PWD/$venv/bin:$PATH"

status=0
echo "== ruff check";  ruff check . || status=1
echo "== ruff format"; ruff format --check . || status=1
echo "== mypy";        mypy || status=1
echo "== import-linter"; lint-imports --no-cache || status=1
echo "== pytest"
mkdir -p test-artifacts
python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: that is a failure" >&2; rc=1; fi
[ "$rc" -ne 0 ] && status=1
if [ "$status" -ne 0 ]; then echo "== checks FAILED"; else echo "== all checks passed"; fi
exit "$status"
