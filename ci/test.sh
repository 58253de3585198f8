#!/bin/bash
# The project's test command: lint, types, unit tests and the VM tests.
# Pass pytest options after it, e.g. `bash ci/test.sh -m "not vm"` for the fast half.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check memlayout tests tasks.py ci/benchmark.py ci/workflow.py ci/peer.py
.venv/bin/ruff format --check memlayout tests tasks.py ci/benchmark.py ci/workflow.py ci/peer.py
.venv/bin/mypy
# Temporary folders under runs/, so an uploaded runs/ artifact carries the tests' logs too.
mkdir -p runs
exec .venv/bin/pytest --basetemp=runs/pytest "$@"
