"""Tang et al. (2019): a BiLSTM student trained on a teacher's logits over an augmented
transfer set."""

from __future__ import annotations

from distilkit.methods.bilstm.job import BiLSTMDistillConfig as Config
from distilkit.methods.bilstm.job import run_bilstm_distillation as run

__all__ = ["Config", "run"]
