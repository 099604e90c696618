"""Batches drawn from several tasks' transfer sets in proportion, resumably."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from distilkit.data.batching import LengthGroupedSampler, ResumableBatchSampler
from distilkit.data.transfer import (
    DistillationDataset,
)
from distilkit.settings import ConfigError


# ----------------------------------------------------------------------------- batching
class TaskDatasets:
    """Several tasks' datasets behind one index: task 0's examples, then task 1's, ..."""

    def __init__(self, datasets: Sequence[DistillationDataset]):
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        task = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.datasets[task][index - int(self.offsets[task])]


class TaskBatchSampler(ResumableBatchSampler):
    """Length-grouped batches that each hold one task's examples (indices into a
    :class:`TaskDatasets`). An epoch covers every task's data once, its batches in an
    order drawn from (seed, epoch); resumable like ``LengthGroupedSampler``."""

    resume_error = ConfigError

    def __init__(self, task_lengths: Sequence[np.ndarray], batch_size: int, seed: int = 0):
        super().__init__()
        self.samplers = [
            LengthGroupedSampler(lengths, batch_size, seed=seed + index)
            for index, lengths in enumerate(task_lengths)
        ]
        self.offsets = np.cumsum([0] + [len(lengths) for lengths in task_lengths])
        self.batch_size = batch_size
        self.seed = seed

    def __len__(self) -> int:
        return sum(len(sampler) for sampler in self.samplers)

    def rank_batches(self, epoch: int) -> list[list[int]]:
        """Every task's batches of ``epoch``, as indices into the joined datasets, shuffled."""
        batches = [
            [int(self.offsets[task]) + i for i in batch]
            for task, sampler in enumerate(self.samplers)
            for batch in sampler.rank_batches(epoch)
        ]
        order = np.random.default_rng([self.seed, epoch]).permutation(len(batches))
        return [batches[i] for i in order]

    def resume_settings(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "task_sizes": np.diff(self.offsets).tolist(),
        }
