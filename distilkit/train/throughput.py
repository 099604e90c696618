"""The training loop's throughput accounting: tokens counted on the host, time measured
after the first steps, the figures that MFU is computed from.

The trainer counts every micro-batch's ``attention_mask`` before it moves to the device
(counting costs the device nothing): real ``tokens``, ``padded`` positions and ``pairs``
(sum of batch x length^2, for the attention's FLOPs). The first :data:`WARMUP_STEPS`
steps (kernel choice, caches) are left out of the run's figure; a log window's tokens/s
counts every rank's tokens. :func:`distilkit.evaluate.mfu.distillation_mfu` turns
:meth:`ThroughputMeter.summary` into achieved FLOP/s and MFU.
"""

from __future__ import annotations

import time

import torch

WARMUP_STEPS = 5  # steps left out of a run's throughput figure (kernel choice, caches)
MIN_MEASURED_STEPS = 10  # the warm-up is left out only when more steps than this follow


class ThroughputMeter:
    """Counts one rank's work and times it; ``world_size`` ranks train alike."""

    def __init__(self, world_size: int = 1):
        self.world_size = world_size
        self.counts: dict[str, float] = {"tokens": 0, "padded": 0, "pairs": 0, "seconds": 0.0}
        self.steps = 0
        self.first_step = self.measured_step = 0  # where the loop and the measurement began
        self.window_tokens = 0  # every rank's real tokens since the last log
        self.window_start = self.measured_from = time.perf_counter()

    def count(self, attention_mask: torch.Tensor) -> None:
        """Count one micro-batch by its ``(batch, seq)`` host-side attention mask."""
        tokens, padded = int(attention_mask.sum()), attention_mask.numel()
        self.window_tokens += tokens * self.world_size
        self.counts["tokens"] += tokens
        self.counts["padded"] += padded
        self.counts["pairs"] += padded * attention_mask.shape[-1]

    def start(self, first_step: int) -> None:
        """The loop starts (or resumes) at ``first_step``: the window and the run's
        measurement start now."""
        self.first_step = self.measured_step = first_step
        self.window_tokens = 0
        self.window_start = self.measured_from = time.perf_counter()

    def step_done(self, step: int, max_steps: int) -> None:
        """After ``step``: past the warm-up steps, start the measurement afresh (when
        enough steps remain to measure)."""
        warmed_up = step - self.first_step == WARMUP_STEPS
        if warmed_up and max_steps - step > MIN_MEASURED_STEPS:
            self.measured_from, self.measured_step = time.perf_counter(), step
            self.counts = {key: 0 for key in self.counts}
            self.counts["seconds"] = 0.0

    def window_rate(self) -> float:
        """Every rank's tokens/s since the last call (or the start); opens a new window."""
        now = time.perf_counter()
        rate = self.window_tokens / max(now - self.window_start, 1e-9)
        self.window_tokens, self.window_start = 0, now
        return rate

    def stop(self, step: int) -> None:
        """The loop ended after ``step`` (the device synchronised by the caller)."""
        self.counts["seconds"] = time.perf_counter() - self.measured_from
        self.steps = step - self.measured_step

    def summary(self) -> dict[str, float]:
        """This rank's measured work after the first steps: ``tokens`` (real) and
        ``padded`` tokens, ``pairs``, ``seconds`` and ``steps``; and ``tokens_per_s``
        over all ranks."""
        counts = {**self.counts, "steps": self.steps}
        counts["tokens_per_s"] = counts["tokens"] * self.world_size / max(counts["seconds"], 1e-9)
        return counts


__all__ = ["MIN_MEASURED_STEPS", "WARMUP_STEPS", "ThroughputMeter"]
