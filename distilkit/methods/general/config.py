"""The main job's settings (:class:`DistillConfig`), saved as ``distill_config.json``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from distilkit.data.corpus import UNITS
from distilkit.data.target_cache import DTYPES
from distilkit.methods.general.objectives import GeneralDistillationConfig
from distilkit.model.hub import DEFAULT_MODEL
from distilkit.resources import RESOURCES
from distilkit.settings import ConfigError, build_nested, from_dict, load_json
from distilkit.train.trainer import TrainingConfig

DEMO_CORPUS = RESOURCES / "corpus"  # 4 books + WikiText-2 test (the MLM head's corpus)


# 48,653 sentences of seven genres (questions, Wikipedia, captions and headlines, reviews,
# books), built by data/mixed_corpus.py. The default transfer text: at equal steps its
# student keeps 0.8 points more of the teacher's dev-suite mean than the demo corpus's
# (docs/RESULTS.md, the fixed-step ablations of 2026-12-06).
MIXED_CORPUS = RESOURCES / "mixed"
DEFAULT_CORPUS = MIXED_CORPUS


AUTO_TOKENS = 64  # tokens per sequence scored by the auto layer choice


MIN_AUTO_WINDOWS = 8  # fewer held-out sequences give no usable similarity structure


DEFAULT_JOB_BUDGET = 840.0  # the no-argument job: 14 minutes in all, inside the 15 promised

# `distill --time-budget S` without --max-steps: the budget alone sets the length (the
# schedule is fitted to it at step 10), so the default 2000-step cap does not end it early
BUDGET_ONLY_MAX_STEPS = 10_000_000


@dataclass
class DistillConfig:
    """Everything a general-distillation run needs; saved as ``distill_config.json``."""

    teacher: str = DEFAULT_MODEL
    corpus: list[str] = field(default_factory=lambda: [str(DEFAULT_CORPUS)])
    num_layers: int = 3
    layers: list[int] | None = None  # explicit teacher layers; else chosen by `strategy`
    strategy: str = "auto"  # auto | uniform | alternate | first | last
    layout: str | None = None  # None keeps the teacher's; "distilbert" converts
    student_init: str = "teacher"  # teacher | random (ablation)
    freeze_embeddings: bool = False  # keep the student's (teacher-copied) embeddings fixed
    dropout: float | None = None  # the student's dropout while it trains (None: its config's)
    train_blocks: list[int] | None = None  # student blocks to train (None: all)
    max_len: int = 128
    # One sentence per sequence by default: a sentence encoder is used on short texts, and
    # 128-token packed paragraphs moved the student away from that (docs/RESULTS.md).
    corpus_unit: str = "sentence"  # paragraph | sentence: the text unit of a sequence
    pack: bool = False  # fill sequences with consecutive units (False: one unit each)
    heldout_fraction: float = 0.02
    auto_sample: int = 96  # sequences scored per candidate layer subset
    # Seconds for the whole job, evaluation included: training gets what is left after
    # the setup and a measured estimate of the evaluation (None: the training budget
    # alone). The CLI's no-argument job sets DEFAULT_JOB_BUDGET.
    job_time_budget: float | None = None
    # The teacher's last hidden states cached beside the corpus cache (used when the inputs
    # are unmasked and every loss needs only them); float16 halves the disk. Off by
    # default: with the embedded 6-layer teacher it saved 6% of a step's time on a 2-core
    # CPU for 1.5 GB of disk (docs/RESULTS.md); it pays with teachers large beside the student
    target_cache: bool = False
    target_cache_dtype: str = "float32"  # float32 (exact) | float16
    objective: GeneralDistillationConfig = field(default_factory=GeneralDistillationConfig)
    training: TrainingConfig = field(
        default_factory=lambda: TrainingConfig(
            max_steps=2000,
            # 10 minutes; `distill` sets None when a job deadline applies (the no-argument
            # job's DEFAULT_JOB_BUDGET or --job-time-budget) and no --time-budget is given:
            # training then gets all the time the deadline leaves
            time_budget=600.0,
            batch_size=64,
            # 5e-5..1.6e-3 at 300 steps on the dev suite: 8e-4 and 1.6e-3 tie, 5e-5 kept 1.4
            # points less of the teacher's mean; in the 15-minute job 1.6e-3 kept 98.91%
            # (TREC 95.9%) against 8e-4's 98.38% (TREC 94.5%): docs/RESULTS.md, 2026-12-06
            learning_rate=1.6e-3,
            eval_every=100,
            checkpoint_every=100,
        )
    )

    def __post_init__(self) -> None:
        if self.layers is not None:
            self.num_layers = len(self.layers)  # an explicit list sets the depth
        build_nested(self)
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.student_init not in ("teacher", "random"):
            raise ConfigError(
                f"student_init must be 'teacher' or 'random', got {self.student_init!r}"
            )
        if not 0 < self.heldout_fraction < 0.5:
            raise ConfigError("heldout_fraction must be between 0 and 0.5")
        if self.auto_sample < MIN_AUTO_WINDOWS:
            raise ConfigError(
                f"auto_sample must be at least {MIN_AUTO_WINDOWS} sequences, got {self.auto_sample}"
            )
        if self.job_time_budget is not None and not (
            math.isfinite(self.job_time_budget) and self.job_time_budget > 0
        ):
            raise ConfigError(
                "job_time_budget (--job-time-budget) must be a finite number of seconds > 0, "
                f"got {self.job_time_budget}"
            )
        if self.target_cache_dtype not in DTYPES:
            raise ConfigError(
                f"target_cache_dtype must be one of {DTYPES}, got {self.target_cache_dtype!r}"
            )
        if self.corpus_unit not in UNITS:
            raise ConfigError(f"corpus_unit must be one of {UNITS}, got {self.corpus_unit!r}")

    @classmethod
    def load(cls, path: str | Path) -> DistillConfig:
        return from_dict(cls, load_json(path))
