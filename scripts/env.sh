#!/usr/bin/env bash
# Build (once) and activate the project's virtual environment; sourced by run.sh and test.sh.
# The environment lives outside the clone (default ~/.cache/distilkit-venv) so CI and later
# runs reuse it; it is rebuilt from nothing when missing or when pyproject.toml changes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DISTILKIT_VENV:-$HOME/.cache/distilkit-venv}"
STAMP="$VENV/.distilkit-stamp"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/env.sh" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "setting up the environment in $VENV (first run only; a few minutes)..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # A local CPU build of PyTorch: pinned, so nothing pulls the multi-GB CUDA wheels.
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -e "$ROOT[all]"
  echo "$WANT" > "$STAMP"
fi
# The environment is shared between clones: point its editable install at this one.
if [ "$("$VENV/bin/python" -c 'import distilkit, pathlib; print(pathlib.Path(distilkit.__file__).parent.parent)' 2>/dev/null)" != "$ROOT" ]; then
  "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
