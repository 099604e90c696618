"""FastBERT: early-exit branches trained by self-distillation, with batched adaptive exit."""

from __future__ import annotations

from distilkit.methods.early_exit.job import EarlyExitConfig as Config
from distilkit.methods.early_exit.job import run_early_exit as run

__all__ = ["Config", "run"]
