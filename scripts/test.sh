#!/usr/bin/env bash
# Set up (first time) and run the test suite: the fast tests by default; pass -m slow
# (or "" for everything) as arguments to pytest to choose others.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # tests never touch the network
ruff check distilkit tests benchmarks scripts
if [ "$#" -eq 0 ]; then
  set -- -m "not slow"
fi
exec python -m pytest -q -p no:cacheprovider "$@"
