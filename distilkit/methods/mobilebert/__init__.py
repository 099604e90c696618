"""MobileBERT (Sun et al., 2020): a thin student of the teacher's depth, taught block by block.

``Config`` holds the run's settings (the student's shape, the transfer strategy and the
shared general-distillation settings); ``run(config, out_dir, resume=True)`` trains and
evaluates it and returns the metrics.
"""

from distilkit.methods.mobilebert.job import Config, run, stage_plan
from distilkit.methods.mobilebert.objective import AuxiliaryTransfer, LayerTransfer
from distilkit.methods.mobilebert.student import build_mobilebert_student, mobilebert_config

__all__ = [
    "AuxiliaryTransfer",
    "Config",
    "LayerTransfer",
    "build_mobilebert_student",
    "mobilebert_config",
    "run",
    "stage_plan",
]
