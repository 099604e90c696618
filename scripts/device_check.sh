#!/usr/bin/env bash
# Issue 21's device check: one command, a printed summary and device_check.json.
#   bash scripts/device_check.sh                          # the GPU (under 8 minutes on an H100)
#   bash scripts/device_check.sh --device cpu --tiny      # tiny sizes, end to end on a CPU
# Uses the python on PATH unless PYTHON is set; run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "${PYTHON:-python}" benchmarks/device_check.py "$@"
