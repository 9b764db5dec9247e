#!/usr/bin/env bash
# The ten-minute CUDA validation kit (issue 14): CUDA tests, GPU step cost, demo on the GPU.
# Installs nothing beyond `make install`; idempotent; writes work/bench/gpu.json.
# Options are those of bench/gpu_check.py (--help lists them); VENV=path picks the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
for arg in "$@"; do
  case "$arg" in
    -h|--help|--dry-run)  # no install needed to read the help or the plan
      PY="$VENV/bin/python"; [ -x "$PY" ] || PY=python3
      exec "$PY" bench/gpu_check.py "$@" ;;
  esac
done
make install VENV="$VENV"
exec "$VENV/bin/python" bench/gpu_check.py "$@"
