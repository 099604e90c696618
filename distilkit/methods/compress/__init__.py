"""``distilkit compress``: candidate students of a teacher (static tables, 1/2/3-layer
students of the main job, MobileBERT), each scored in its deployable forms (eager fp32,
bf16 where native, int8; ONNX fp32 and int8) on the dev suite and on agreement with the
teacher on the user's text, timed on this machine beside the teacher, and the fastest that
keeps the target saved, with a frontier plot and a report; all within a time budget."""

from __future__ import annotations

from distilkit.methods.compress.config import CompressConfig as Config
from distilkit.methods.compress.job import run_compress as run

__all__ = ["Config", "run"]
