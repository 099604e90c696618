from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from distilkit.data.batching import (
    LengthGroupedSampler,
    ResumableBatchSampler,
    collate_sequences,
)


def random_lengths(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(3, 129, count)


def test_collate_pads_right():
    sequences = [np.array([2, 7, 8, 3], dtype=np.int32), np.array([2, 9, 3], dtype=np.int32)]
    batch = collate_sequences(sequences, pad_id=0)
    assert batch["input_ids"].dtype == torch.int64
    assert batch["attention_mask"].dtype == torch.int64
    assert batch["input_ids"].tolist() == [[2, 7, 8, 3], [2, 9, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    with pytest.raises(ValueError, match="empty"):
        collate_sequences([], pad_id=0)


@pytest.mark.parametrize("count", [1000, 999, 7])
def test_every_index_once_per_epoch(count):
    sampler = LengthGroupedSampler(random_lengths(count), batch_size=16, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == math.ceil(count / 16)
    flat = sorted(itertools.chain.from_iterable(batches))
    assert flat == list(range(count))
    assert sum(len(b) < 16 for b in batches) == (count % 16 != 0)


def test_drop_last_keeps_full_batches_only():
    sampler = LengthGroupedSampler(random_lengths(999), batch_size=16, seed=0, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 999 // 16
    assert all(len(b) == 16 for b in batches)
    assert len(set(itertools.chain.from_iterable(batches))) == 16 * (999 // 16)


def padding_share(batches, lengths) -> float:
    padded = sum(len(b) * lengths[b].max() for b in batches)
    return 1.0 - lengths.sum() / padded


def test_batches_group_similar_lengths():
    lengths = random_lengths(4000)
    grouped = list(LengthGroupedSampler(lengths, batch_size=32, seed=0))
    # a mega-batch of one batch does not regroup anything: plain random batches
    plain = list(LengthGroupedSampler(lengths, batch_size=32, seed=0, megabatch_factor=1))
    assert padding_share(grouped, lengths) < 0.1
    assert padding_share(plain, lengths) > 0.4
    # the batch order is shuffled, not longest first
    first_lengths = [lengths[b].max() for b in grouped[:20]]
    assert first_lengths != sorted(first_lengths, reverse=True)


def test_deterministic_for_seed_and_epoch():
    lengths = random_lengths(500)

    def epoch(seed: int, number: int) -> list[list[int]]:
        sampler = LengthGroupedSampler(lengths, batch_size=8, seed=seed)
        sampler.set_epoch(number)
        return list(sampler)

    assert epoch(0, 0) == epoch(0, 0)
    assert epoch(0, 1) == epoch(0, 1)
    assert epoch(0, 0) != epoch(0, 1)
    assert epoch(0, 0) != epoch(1, 0)
    unshuffled = LengthGroupedSampler(lengths, batch_size=8, seed=0, shuffle=False)
    assert list(unshuffled) == list(unshuffled)  # the second pass is epoch 1


def test_finished_pass_moves_to_next_epoch():
    sampler = LengthGroupedSampler(random_lengths(100), batch_size=8, seed=0)
    first = list(sampler)
    assert sampler.state_dict()["epoch"] == 1 and sampler.state_dict()["consumed"] == 0
    second = list(sampler)
    assert second != first and second == sampler.rank_batches(1)


@pytest.mark.parametrize("count", [960, 1000])  # 60 batches (divisible by 3), then 63
def test_ranks_get_disjoint_equal_shares(count):
    lengths = random_lengths(count)
    samplers = [
        LengthGroupedSampler(lengths, batch_size=16, seed=5, num_replicas=3, rank=rank)
        for rank in range(3)
    ]
    shares = [list(sampler) for sampler in samplers]
    assert len({len(share) for share in shares}) == 1
    assert all(len(share) == len(sampler) for share, sampler in zip(shares, samplers, strict=True))
    assert len(shares[0]) == math.ceil(math.ceil(count / 16) / 3)
    per_rank = [list(itertools.chain.from_iterable(share)) for share in shares]
    every = sorted(itertools.chain.from_iterable(per_rank))
    assert set(every) == set(range(count))
    if count == 960:  # no padding needed: each index exactly once across ranks
        assert every == list(range(count))
        assert all(set(a).isdisjoint(b) for a, b in itertools.combinations(per_rank, 2))


def test_resume_from_the_middle():
    lengths = random_lengths(300)
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3, num_replicas=2, rank=1)
    sampler.set_epoch(2)
    full_epoch = sampler.rank_batches(2)
    iterator = iter(sampler)
    seen = [next(iterator) for _ in range(7)]
    state = sampler.state_dict()
    assert state["epoch"] == 2 and state["consumed"] == 7

    resumed = LengthGroupedSampler(lengths, batch_size=8, seed=3, num_replicas=2, rank=1)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # a training loop calls this at the top of the epoch: position kept
    rest = list(resumed)
    assert seen + rest == full_epoch
    assert resumed.state_dict()["epoch"] == 3
    resumed.set_epoch(2)  # explicitly going back to a finished epoch starts it over
    assert list(resumed) == full_epoch


def test_resume_refuses_other_settings():
    sampler = LengthGroupedSampler(random_lengths(100), batch_size=8, seed=0)
    state = sampler.state_dict()
    # the keys checkpoints hold: they must keep loading
    assert list(state) == [
        "epoch",
        "consumed",
        "seed",
        "num_sequences",
        "batch_size",
        "num_replicas",
    ]
    with pytest.raises(ValueError, match="seed"):
        LengthGroupedSampler(random_lengths(100), batch_size=8, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="same corpus"):
        LengthGroupedSampler(random_lengths(90), batch_size=8, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="outside"):
        sampler.load_state_dict({**state, "consumed": 99})


def test_sampler_validation():
    with pytest.raises(ValueError, match="rank"):
        LengthGroupedSampler([5, 6], batch_size=1, seed=0, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="too few"):
        LengthGroupedSampler([5, 6], batch_size=4, seed=0, drop_last=True)
    with pytest.raises(ValueError, match="non-empty"):
        LengthGroupedSampler([], batch_size=4, seed=0)


def test_works_as_dataloader_batch_sampler():
    rng = np.random.default_rng(0)
    sequences = [rng.integers(5, 50, n).astype(np.int32) for n in rng.integers(3, 40, 50)]
    sampler = LengthGroupedSampler([len(s) for s in sequences], batch_size=4, seed=0)
    loader = DataLoader(
        sequences, batch_sampler=sampler, collate_fn=lambda b: collate_sequences(b, pad_id=0)
    )
    batches = list(loader)
    assert len(batches) == 13
    assert sum(int(b["attention_mask"].sum()) for b in batches) == sum(map(len, sequences))


class ResumeError(ValueError):
    pass


class CountingSampler(ResumableBatchSampler):
    """Epoch e: batches [e, 0], [e, 1], ..., ``size`` of them."""

    resume_error = ResumeError

    def __init__(self, size: int, tag: str = "a"):
        super().__init__()
        self.size, self.tag = size, tag

    def __len__(self) -> int:
        return self.size

    def rank_batches(self, epoch: int) -> list[list[int]]:
        return [[epoch, i] for i in range(self.size)]

    def resume_settings(self) -> dict:
        return {"size": self.size, "tag": self.tag}


def test_resumable_base_iterates_saves_and_checks():
    sampler = CountingSampler(3)
    assert list(sampler) == [[0, 0], [0, 1], [0, 2]]
    assert (sampler.epoch, sampler.consumed) == (1, 0)  # a finished pass moves on
    iterator = iter(sampler)
    next(iterator)
    state = sampler.state_dict()
    assert state == {"epoch": 1, "consumed": 1, "size": 3, "tag": "a"}

    resumed = CountingSampler(3)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # already inside epoch 1: position kept
    assert list(resumed) == [[1, 1], [1, 2]]
    resumed.set_epoch(5)
    assert resumed.consumed == 0 and next(iter(resumed)) == [5, 0]

    # a setting the saved state lacks (an older checkpoint) is not checked
    legacy = CountingSampler(3, tag="b")
    legacy.load_state_dict({"epoch": 4, "consumed": 2, "size": 3})
    assert list(legacy) == [[4, 2]]

    with pytest.raises(ResumeError, match="cannot resume: the saved sampler has tag=a"):
        CountingSampler(3, tag="b").load_state_dict(state)
    with pytest.raises(ResumeError, match="consumed=4 is outside an epoch of 3 batches"):
        CountingSampler(3).load_state_dict({**state, "consumed": 4})
    with pytest.raises(ResumeError, match="outside"):
        CountingSampler(3).load_state_dict({**state, "consumed": -1})
