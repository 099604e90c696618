"""General distillation, DistilBERT's recipe (the main job): a cut of the teacher's layers
trained against the teacher on unlabeled text."""

from __future__ import annotations

from distilkit.methods.general.config import DistillConfig as Config
from distilkit.methods.general.job import run_distillation as run

__all__ = ["Config", "run"]
