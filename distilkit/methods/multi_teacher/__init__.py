"""MT-DNN's ensemble distillation: several teachers, one multi-task student."""

from __future__ import annotations

from distilkit.methods.multi_teacher.job import MultiTeacherConfig as Config
from distilkit.methods.multi_teacher.job import run_multi_teacher_distillation as run

__all__ = ["Config", "run"]
