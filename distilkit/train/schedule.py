"""The learning-rate schedule: linear warmup, then linear decay to 0 at the last step,
and its refit when a run with a time budget learns how many steps fit in it."""

from __future__ import annotations

from collections.abc import Callable

import torch

REFIT_EVERY = 25  # steps between refits of the schedule to a time budget


def linear_schedule(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warmup from 0 to 1, then linear decay to 0 at ``total_steps``."""

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return multiplier


def make_scheduler(
    optimizer: torch.optim.Optimizer, warmup_fraction: float, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A :func:`linear_schedule` over ``total_steps`` whose first ``warmup_fraction`` warms up."""
    warmup = int(warmup_fraction * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, total_steps))


def refit_scheduler(
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    optimizer: torch.optim.Optimizer,
    warmup_fraction: float,
    total_steps: int,
) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule laid out again over ``total_steps``, at the step ``scheduler`` has
    reached, with the optimizer's learning rates set to the new schedule's."""
    last = scheduler.last_epoch
    scheduler = make_scheduler(optimizer, warmup_fraction, total_steps)
    scheduler.last_epoch = last
    for group, base, fn in zip(
        optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base * fn(last)
    return scheduler


def steps_in_budget(step: int, elapsed: float, budget: float, seconds_per_step: float) -> int:
    """The step count at which a run at ``step`` after ``elapsed`` seconds runs out of its
    ``budget`` at ``seconds_per_step``."""
    return step + int((budget - elapsed) / max(seconds_per_step, 1e-9))


__all__ = [
    "REFIT_EVERY",
    "linear_schedule",
    "make_scheduler",
    "refit_scheduler",
    "steps_in_budget",
]
