#!/usr/bin/env bash
# Set up (first time) and run a distilkit command; with no arguments, the main job:
# distill the embedded all-MiniLM-L6-v2 into a 3-layer student and report on both.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if [ "$#" -eq 0 ]; then
  set -- distill
fi
exec distilkit "$@"
