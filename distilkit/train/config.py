"""A training run's settings: :class:`TrainingConfig` (saved with every checkpoint), the
precision a run resolves to on its device, and the one-line summary of the optimisation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from distilkit.model.device import bf16_supported
from distilkit.settings import ConfigError

MAX_SEED = 2**32 - 1  # numpy's seeds are unsigned 32-bit
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainingConfig:
    """Optimisation and bookkeeping settings of a run (saved with every checkpoint)."""

    max_steps: int = 1000
    time_budget: float | None = None  # seconds; the schedule is fitted to it
    batch_size: int = 32
    grad_accumulation: int = 1
    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    adam_epsilon: float = 1e-6
    warmup_fraction: float = 0.05
    max_grad_norm: float = 5.0
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16 (CUDA)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    fused_adamw: bool = True  # the fused AdamW kernel (CPU and CUDA)
    compile: bool = False  # torch.compile the objective (CUDA is where it pays)
    num_workers: int | None = None  # DataLoader workers; None: 2 on CUDA, 0 (in-process) on CPU
    seed: int = 56
    log_every: int = 10
    eval_every: int = 200
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.batch_size < 1 or self.grad_accumulation < 1:
            raise ConfigError("batch_size and grad_accumulation must be >= 1")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(
                f"learning_rate must be a finite number > 0, got {self.learning_rate}"
            )
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed (--seed) must be from 0 to {MAX_SEED}, got {self.seed}")
        if self.time_budget is not None and not (
            math.isfinite(self.time_budget) and self.time_budget > 0
        ):
            raise ConfigError(
                f"time_budget (--time-budget) must be a finite number of seconds > 0, "
                f"got {self.time_budget}"
            )
        for name in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")


def resolve_precision(precision: str, device: torch.device) -> str:
    """The autocast dtype a run uses: ``auto`` is bf16 on CUDA and fp32 elsewhere; bf16 on
    a GPU without it becomes fp16 (with a gradient scaler); fp16 needs CUDA."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16" and not bf16_supported(device):
        return "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device: use bf16 or fp32 on the CPU")
    return precision


def schedule_summary(config: TrainingConfig) -> str:
    """One line describing the optimisation, for logs and reports."""
    tokens = config.batch_size * config.grad_accumulation
    return (
        f"AdamW lr {config.learning_rate:g}, warmup {config.warmup_fraction:.0%}, "
        f"linear decay over {config.max_steps} steps, {tokens} sequences/step, "
        f"clip {config.max_grad_norm:g}, {config.precision}"
    )


__all__ = ["MAX_SEED", "PRECISIONS", "TrainingConfig", "resolve_precision", "schedule_summary"]
