"""The settings of ``distilkit compress`` (:class:`CompressConfig`), saved as
``compress_config.json`` beside the report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from distilkit.methods.general.config import DEFAULT_CORPUS
from distilkit.model.device import AUTO, resolve_device
from distilkit.model.hub import DEFAULT_MODEL
from distilkit.settings import ConfigError, from_dict, load_json

# The deployable forms of a transformer candidate: eager PyTorch in fp32, bf16 (only where
# the CPU has native bf16) and int8 blocks; the exported ONNX graph in fp32 and int8.
TRANSFORMER_FORMS = ("fp32", "bf16", "int8", "onnx-fp32", "onnx-int8")
STATIC_FORM = "numpy"  # a static table averaged in numpy: its one form
SUITES = ("quick", "full")


@dataclass
class CompressConfig:
    """What ``compress`` builds, how it scores and how it picks.

    The rule: among the candidate forms whose mean dev-suite retention of the teacher
    (% over the six tasks) is at least ``100 * keep``, the one with the most sentences/s;
    when none is, the one with the highest mean retention (the report says the target
    was not kept).
    """

    teacher: str = DEFAULT_MODEL
    keep: float = 0.97  # fraction of the teacher's mean dev-suite score to keep, in (0, 1]
    corpus: list[str] = field(default_factory=lambda: [str(DEFAULT_CORPUS)])
    time_budget: float = 2400.0  # seconds for the whole search, this invocation
    static_dims: list[int] = field(default_factory=lambda: [256, 128])
    student_layers: list[int] = field(default_factory=lambda: [1, 2, 3])
    mobilebert: bool = False  # also a MobileBERT student (a share of the training time)
    forms: list[str] = field(default_factory=lambda: list(TRANSFORMER_FORMS))
    suite: str = "quick"  # quick | full: how much of the dev suite scores each form
    data_root: str | None = None  # the dev suite's SICK / TREC / MRPC (None: the default)
    heldout_lines: int = 512  # corpus sentences kept out of training: agreement and timing
    timing_lines: int = 256  # of those, the sentences every form is timed on
    batch_size: int = 64
    timing_repeats: int = 3
    max_training_seconds: float | None = None  # cap on one student's training (None: its share)
    min_training_seconds: float = 30.0  # a student that would get less is not trained
    max_len: int = 128
    seed: int = 0
    # where the students train (auto: the GPU when there is one); every form is scored
    # and timed on the CPU, where the forms deploy
    device: str = AUTO

    def __post_init__(self) -> None:
        if not (math.isfinite(self.keep) and 0 < self.keep <= 1):
            raise ConfigError(
                f"keep (--keep) must be a fraction in (0, 1], such as 0.97, got {self.keep}"
            )
        if not (math.isfinite(self.time_budget) and self.time_budget > 0):
            raise ConfigError(
                f"time_budget (--time-budget) must be a finite time > 0, got {self.time_budget}"
            )
        if not self.corpus:
            raise ConfigError("corpus (--corpus) must name at least one file or folder")
        for name in ("static_dims", "student_layers"):
            values = getattr(self, name)
            if any(v < 1 for v in values) or len(set(values)) != len(values):
                raise ConfigError(f"{name} must be distinct numbers >= 1, got {values}")
        unknown = [form for form in self.forms if form not in TRANSFORMER_FORMS]
        if unknown or not self.forms:
            raise ConfigError(
                f"forms must be some of {', '.join(TRANSFORMER_FORMS)}, got {self.forms}"
            )
        if self.suite not in SUITES:
            raise ConfigError(f"suite must be one of {SUITES}, got {self.suite!r}")
        if not 2 <= self.timing_lines <= self.heldout_lines:
            raise ConfigError(
                f"timing_lines must be from 2 to heldout_lines ({self.heldout_lines}), "
                f"got {self.timing_lines}"
            )
        for name in ("batch_size", "timing_repeats", "max_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_training_seconds", "min_training_seconds"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number of seconds > 0, got {value}")
        resolve_device(self.device)  # a device that is not there: an error before any work

    @classmethod
    def load(cls, path: str | Path) -> CompressConfig:
        return from_dict(cls, load_json(path))


__all__ = ["STATIC_FORM", "SUITES", "TRANSFORMER_FORMS", "CompressConfig"]
