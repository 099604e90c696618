"""Task distillation from a fine-tuned teacher: logit KD, TinyBERT (two stages), Patient KD."""

from __future__ import annotations

from distilkit.methods.task.job import TaskDistillConfig as Config
from distilkit.methods.task.job import run_task_distill as run

__all__ = ["Config", "run"]
