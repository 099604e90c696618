"""``python -m distilkit`` (what ``torchrun -m distilkit`` runs on every process)."""

from __future__ import annotations

import sys

from distilkit.cli.main import main

sys.exit(main())
