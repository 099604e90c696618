"""Static students (model2vec's recipe, tokenlearn's training): every vocabulary entry
embedded by the teacher, PCA-reduced, SIF-weighted, optionally trained against the
teacher's sentence vectors; a sentence is the mean of its tokens' rows."""

from __future__ import annotations

from distilkit.methods.static.job import StaticConfig as Config
from distilkit.methods.static.job import run_static_distillation as run

__all__ = ["Config", "run"]
