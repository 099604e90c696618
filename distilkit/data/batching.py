"""Batches of token sequences: padding collation, a resumable length-grouped sampler, and
length-sorted batches of raw texts for inference (:func:`sorted_batches`).

Grouping sequences of similar length into a batch cuts the padding a model has to
read; the sampler does it while staying random, deterministic per (seed, epoch),
shardable across DDP ranks and resumable mid-epoch. :class:`ResumableBatchSampler` holds
the resuming part, shared with other batch samplers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Sampler

if TYPE_CHECKING:
    from distilkit.data.corpus import PackedCorpus
    from distilkit.model.tokenizer import Batch, Tokenizer


def collate_sequences(
    sequences: Sequence[np.ndarray | Sequence[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Pad token sequences on the right into a batch.

    Returns ``input_ids`` and ``attention_mask``, both (batch, longest) int64.
    """
    if len(sequences) == 0:
        raise ValueError("cannot collate an empty list of sequences")
    lengths = [len(sequence) for sequence in sequences]
    input_ids = np.full((len(sequences), max(lengths)), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(sequences), max(lengths)), dtype=np.int64)
    for row, (sequence, length) in enumerate(zip(sequences, lengths, strict=True)):
        input_ids[row, :length] = sequence
        attention_mask[row, :length] = 1
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention_mask),
    }


class IndexedSequences:
    """A corpus (or a view of one) whose items carry their sequence number in the whole
    corpus: ``dataset[i]`` is ``(row, token ids)``, for caches kept per sequence."""

    def __init__(self, corpus: PackedCorpus):
        self.corpus = corpus
        self.rows = corpus.rows  # (len(corpus),) int64

    def __len__(self) -> int:
        return len(self.corpus)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
        return int(self.rows[index]), self.corpus[index]


def collate_indexed(
    items: Sequence[tuple[int, np.ndarray | Sequence[int]]], pad_id: int
) -> dict[str, torch.Tensor]:
    """:func:`collate_sequences` of ``(row, token ids)`` items, plus ``sequence_index``:
    (batch,) int64, each sequence's number in the whole corpus."""
    rows = [row for row, _ in items]
    batch = collate_sequences([sequence for _, sequence in items], pad_id)
    batch["sequence_index"] = torch.tensor(rows, dtype=torch.int64)
    return batch


class ResumableBatchSampler(Sampler[list[int]]):
    """A batch sampler whose position (epoch, batches consumed in it) can be saved and restored.

    Subclasses provide :meth:`rank_batches` (the batches of an epoch for this rank, a pure
    function of the settings and the epoch), ``__len__`` (how many that is) and
    :meth:`resume_settings` (the values a saved state must match to be resumed).
    Iterating hands out the rest of the current epoch and then moves on to the next one.
    The count is of batches handed out by the iterator; a DataLoader with worker processes
    prefetches a few, so a trainer using workers should store its own count of batches
    trained on as ``consumed``.
    """

    resume_error: type[ValueError] = ValueError  # raised when a saved state does not fit

    def __init__(self) -> None:
        self.epoch = 0
        self.consumed = 0  # batches of this rank already handed out in self.epoch

    def __len__(self) -> int:
        """Batches per rank per epoch."""
        raise NotImplementedError

    def rank_batches(self, epoch: int) -> list[list[int]]:
        """The batches this rank gets in ``epoch``, in order."""
        raise NotImplementedError

    def resume_settings(self) -> dict[str, Any]:
        """Settings stored in :meth:`state_dict` that must be equal to resume."""
        raise NotImplementedError

    def resume_mismatch(self, key: str, saved: Any, own: Any) -> str:
        """The error message when the saved ``key`` differs from this sampler's."""
        return (
            f"cannot resume: the saved sampler has {key}={saved} but this one "
            f"has {own}; resume with the same data and settings"
        )

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch, unless the sampler is already inside it
        (e.g. after :meth:`load_state_dict`), in which case its position is kept."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.consumed = 0

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.rank_batches(self.epoch)
        while self.consumed < len(batches):
            self.consumed += 1
            yield batches[self.consumed - 1]
        self.epoch += 1
        self.consumed = 0

    def state_dict(self) -> dict[str, Any]:
        """Position in the data: epoch and batches of this rank consumed in it, and the
        settings that must match on resume."""
        return {"epoch": self.epoch, "consumed": self.consumed, **self.resume_settings()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`; refuses one from a different data setup.
        A setting missing from ``state`` is not checked."""
        for key, own in self.resume_settings().items():
            if key in state and state[key] != own:
                raise self.resume_error(self.resume_mismatch(key, state[key], own))
        consumed = int(state["consumed"])
        if not 0 <= consumed <= len(self):
            raise self.resume_error(
                f"consumed={consumed} is outside an epoch of {len(self)} batches"
            )
        self.epoch = int(state["epoch"])
        self.consumed = consumed


class LengthGroupedSampler(ResumableBatchSampler):
    """Yields batches (lists of indices) of sequences with similar lengths.

    Each epoch: shuffle all indices, cut them into mega-batches of
    ``megabatch_factor * batch_size``, sort each mega-batch by length (longest first),
    cut it into batches, and shuffle the order of the batches. The result depends only on
    (seed, epoch), so every DDP rank computes the same list and takes every
    ``num_replicas``-th batch starting at ``rank``; as in torch's DistributedSampler the
    list is padded by repeating batches from its start so all ranks get the same number.
    With ``shuffle=False`` nothing is random: mega-batches are consecutive indices.

    Resuming (:class:`ResumableBatchSampler`): :meth:`state_dict` records the epoch and the
    batches this rank has been handed; after :meth:`load_state_dict` iteration continues
    with the next batch. A finished pass moves on to the next epoch by itself.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        megabatch_factor: int = 50,
    ):
        super().__init__()
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1 or self.lengths.size == 0:
            raise ValueError("lengths must be a non-empty list with one length per sequence")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        if megabatch_factor < 1:
            raise ValueError(f"megabatch_factor must be at least 1, got {megabatch_factor}")
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.megabatch_factor = megabatch_factor
        count = self.lengths.size
        self.total_batches = count // batch_size if drop_last else math.ceil(count / batch_size)
        if drop_last:
            self.batches_per_rank = self.total_batches // num_replicas
        else:
            self.batches_per_rank = math.ceil(self.total_batches / num_replicas)
        if self.batches_per_rank == 0:
            raise ValueError(
                f"{count} sequences give {self.total_batches} batches of {batch_size}, too few "
                f"for {num_replicas} ranks with drop_last=True: lower the batch size"
            )

    def __len__(self) -> int:
        """Batches per rank per epoch."""
        return self.batches_per_rank

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """All batches of ``epoch`` for all ranks, in order, before padding and sharding."""
        count = self.lengths.size
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(count) if self.shuffle else np.arange(count)
        megabatch = self.megabatch_factor * self.batch_size
        batches: list[np.ndarray] = []
        for start in range(0, count, megabatch):
            group = order[start : start + megabatch]
            group = group[np.argsort(-self.lengths[group], kind="stable")]
            batches.extend(
                group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size)
            )
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()  # only the last mega-batch can end in a short batch
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def rank_batches(self, epoch: int) -> list[list[int]]:
        """The batches this rank gets in ``epoch``, in order."""
        batches = self._epoch_batches(epoch)
        needed = self.batches_per_rank * self.num_replicas  # pad by repeating, or cut
        batches = [batches[i % len(batches)] for i in range(needed)]
        return [batch.tolist() for batch in batches[self.rank :: self.num_replicas]]

    def resume_settings(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "num_sequences": int(self.lengths.size),
            "batch_size": self.batch_size,
            "num_replicas": self.num_replicas,
        }

    def resume_mismatch(self, key: str, saved: Any, own: Any) -> str:
        if key == "num_sequences":
            return (
                f"cannot resume: the saved sampler covered {saved} sequences "
                f"but this one has {own}; resume with the same corpus"
            )
        return super().resume_mismatch(key, saved, own)


def sorted_batches(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    batch_size: int,
    pairs: Sequence[str] | None = None,
    max_length: int | None = None,
) -> Iterator[tuple[np.ndarray, Batch]]:
    """Length-sorted batches (longest first, by characters); yields (original indices, batch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = [len(t) + (len(pairs[i]) if pairs is not None else 0) for i, t in enumerate(texts)]
    order = np.argsort([-n for n in lengths], kind="stable")
    for start in range(0, len(texts), batch_size):
        indices = order[start : start + batch_size]
        yield (
            indices,
            tokenizer(
                [texts[i] for i in indices],
                None if pairs is None else [pairs[i] for i in indices],
                max_length=max_length,
                alignment=False,
            ),
        )
