"""Task fine-tuning (the teachers of task distillation), with dev scoring each epoch."""

from __future__ import annotations

from distilkit.methods.finetune.job import FineTuneConfig as Config
from distilkit.methods.finetune.job import run_finetune as run

__all__ = ["Config", "run"]
