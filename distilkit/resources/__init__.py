"""Files shipped inside the package: the demo corpus, the evaluation dev sets, the POS tagger."""

from __future__ import annotations

from pathlib import Path

RESOURCES = Path(__file__).resolve().parent
