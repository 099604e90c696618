"""The training loop's data feed: sampler -> this rank's index lists -> collated batches
on the device.

The sampler hands out the *global* batches (the same on every rank); each step's
``grad_accumulation`` batches are shared out among the ranks (:func:`shard_step`). With
workers, batches are collated in DataLoader worker processes (into pinned memory on
CUDA) while the device computes; the feed queues the sampler's state after each step's
draw, so a checkpoint records the position after the last step *trained*, however far
the loader has read ahead.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from distilkit.model.device import to_device
from distilkit.train.distributed import shard_step
from distilkit.train.throughput import ThroughputMeter

PREFETCH_FACTOR = 4  # batches each worker collates ahead


def default_num_workers(num_workers: int | None, device: torch.device) -> int:
    """``num_workers`` as asked; by default 2 collating workers on CUDA, none elsewhere."""
    if num_workers is not None:
        return num_workers
    return 2 if device.type == "cuda" else 0


class _Plan:
    """An iterable of index lists for a DataLoader's ``batch_sampler`` (any iterator)."""

    def __init__(self, iterator: Iterator[list[int]]):
        self.iterator = iterator

    def __iter__(self) -> Iterator[list[int]]:
        return self.iterator


@dataclass(eq=False)
class BatchFeed:
    """This rank's batches of ``dataset`` in the order of ``sampler``, step after step.

    ``dataset[i]`` returns one example; ``collate`` turns a list of examples into a batch
    dict of tensors with an ``attention_mask`` (``(batch, seq)``), which ``meter`` counts
    on the host. ``sampler`` offers ``state_dict``/``load_state_dict``/``set_epoch``.
    """

    dataset: Any
    sampler: Any
    collate: Callable[[list[Any]], dict[str, torch.Tensor]]
    grad_accumulation: int
    device: torch.device
    num_workers: int
    meter: ThroughputMeter
    rank: int = 0
    world_size: int = 1
    micro_steps: int = field(init=False)  # each rank's micro-batches per step (shard_step)
    _sampler_states: collections.deque[dict[str, Any]] = field(
        init=False, default_factory=collections.deque
    )
    _sampler_state: dict[str, Any] | None = field(init=False, default=None)  # last step's

    def __post_init__(self) -> None:
        accumulation, ranks = self.grad_accumulation, self.world_size
        self.micro_steps = accumulation // ranks if accumulation % ranks == 0 else accumulation

    def _sampler_batches(self) -> Iterator[list[int]]:
        while True:
            epoch = self.sampler.epoch
            yield from self.sampler
            if self.sampler.epoch == epoch:  # a sampler that does not advance by itself
                self.sampler.set_epoch(epoch + 1)

    def _plan(self) -> Iterator[list[int]]:
        """This rank's micro-batches (index lists), step after step; after drawing a
        step's global batches the sampler's state is queued."""
        batches = self._sampler_batches()
        while True:
            step = [next(batches) for _ in range(self.grad_accumulation)]
            self._sampler_states.append(self.sampler.state_dict())
            yield from shard_step(step, self.world_size, self.rank)

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Collated batches on the device, counted by the meter before they move."""
        self._sampler_states.clear()
        pin = self.device.type == "cuda"
        if self.num_workers == 0:
            stream: Any = (self.collate([self.dataset[i] for i in part]) for part in self._plan())
        else:
            stream = DataLoader(
                self.dataset,
                batch_sampler=_Plan(self._plan()),
                collate_fn=self.collate,
                num_workers=self.num_workers,
                pin_memory=pin,
                prefetch_factor=PREFETCH_FACTOR,
            )
        for batch in stream:
            self.meter.count(batch["attention_mask"])  # on the host: free for the device
            yield to_device(batch, self.device, non_blocking=pin)

    def step_done(self) -> None:
        """A step was trained: its data position becomes the one to save."""
        self._sampler_state = self._sampler_states.popleft()

    def state_dict(self) -> dict[str, Any]:
        """The sampler's position after the last step trained (for a checkpoint)."""
        return self._sampler_state or self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        self._sampler_state = self.sampler.state_dict()


__all__ = ["BatchFeed", "default_num_workers"]
