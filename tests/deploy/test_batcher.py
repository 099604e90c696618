"""The dynamic batcher's schedule, without HTTP: an idle model starts at once, a free
instance waits for company only while another instance runs (and no longer than
max_wait, a full batch, or the other's end), a dropped job is skipped, and each job gets
exactly its own rows (a hand formula of its texts) with one event-loop wake-up per batch."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from distilkit.deploy import batcher as batcher_module
from distilkit.deploy.batcher import DynamicBatcher, Encoded, Runner


def row_of(text: str) -> np.ndarray:
    """The fake model's vector of a text: (its length, its first character's code)."""
    return np.array([len(text), ord(text[0])], dtype=np.float32)


class FakeRunner(Runner):
    """Token ids are the characters' codes; a forward returns ``row_of`` each text. A
    forward whose batch holds a text starting with "!" waits for ``gate``, one with a
    text starting with "?" for ``second_gate``."""

    def __init__(self):
        self.gate = threading.Event()
        self.second_gate = threading.Event()
        self.batches: list[list[str]] = []
        self.entered = threading.Semaphore(0)
        self.lock = threading.Lock()

    def tokenize(self, texts, limit):
        return [Encoded(np.array([ord(c) for c in text], dtype=np.int64), False) for text in texts]

    def run(self, key, ids):
        texts = ["".join(map(chr, row)) for row in ids]
        with self.lock:
            self.batches.append(texts)
        self.entered.release()
        if any(text.startswith("!") for text in texts):
            assert self.gate.wait(30)
        if any(text.startswith("?") for text in texts):
            assert self.second_gate.wait(30)
        return {"vectors": np.stack([row_of(text) for text in texts])}


def run(runner: FakeRunner, main, max_wait: float, instances: int = 2, max_batch_size: int = 4):
    """``main(batcher)`` on an event loop, then the gates opened and the batcher closed."""
    batcher = DynamicBatcher(
        runner,
        max_batch_size=max_batch_size,
        max_wait=max_wait,
        max_queue=1000,
        token_limit=100,
        instances=instances,
    )
    try:
        return asyncio.run(main(batcher))
    finally:
        runner.gate.set()
        runner.second_gate.set()
        batcher.close()


async def _entered(runner: FakeRunner, count: int = 1) -> None:
    for _ in range(count):
        assert await asyncio.to_thread(runner.entered.acquire, True, 10)


@pytest.mark.parametrize("instances", [1, 2])
def test_an_idle_model_starts_at_once(instances):
    """A lone request does not wait max_wait (10 s here) for company."""
    runner = FakeRunner()

    async def main(batcher):
        started = time.monotonic()
        result = await batcher.submit(["hello"], "embed")
        return result, time.monotonic() - started

    result, seconds = run(runner, main, max_wait=10.0, instances=instances)
    np.testing.assert_array_equal(result.outputs["vectors"], [row_of("hello")])
    assert seconds < 5.0  # would be >= 10 s if it waited for max_wait


def test_a_free_instance_waits_only_while_another_runs():
    """While instance A runs a batch of 4 texts, B waits for company: it starts when its
    batch would match A's (the texts queued and running, shared between the two), not
    with the first text that arrives."""
    runner = FakeRunner()

    async def main(batcher):
        held = asyncio.ensure_future(batcher.submit(["!held", "w", "x", "y"], "embed"))
        await _entered(runner)
        first = asyncio.ensure_future(batcher.submit(["a1"], "embed"))
        await asyncio.sleep(0.3)
        assert len(runner.batches) == 1  # B did not start on one text while A runs
        rest = [asyncio.ensure_future(batcher.submit([t], "embed")) for t in ("b22", "c333")]
        await asyncio.sleep(0.3)
        assert len(runner.batches) == 1  # 3 texts queued: less than A's 4
        pair = asyncio.ensure_future(batcher.submit(["d4", "e55"], "embed"))  # 5 queued
        await _entered(runner)
        runner.gate.set()
        return await held, await first, [await r for r in rest], await pair

    held, first, rest, pair = run(runner, main, max_wait=10.0, max_batch_size=8)
    assert runner.batches[1] == ["c333", "b22", "e55", "a1", "d4"]  # longest first
    np.testing.assert_array_equal(first.outputs["vectors"], [row_of("a1")])
    np.testing.assert_array_equal(rest[1].outputs["vectors"], [row_of("c333")])
    np.testing.assert_array_equal(pair.outputs["vectors"], [row_of("d4"), row_of("e55")])
    assert held.tokens == 8 and pair.tokens == 5


def test_a_free_instance_takes_only_its_share():
    """Both instances hold a one-text batch while 6 texts queue; A, released, takes its
    share, (6 + 1 running) / 2 -> 4 texts, and leaves the rest to the next batch."""
    runner = FakeRunner()

    async def main(batcher):
        first = asyncio.ensure_future(batcher.submit(["!a"], "embed"))
        await _entered(runner)
        second = asyncio.ensure_future(batcher.submit(["?b"], "embed"))
        await _entered(runner)
        queued = [asyncio.ensure_future(batcher.submit([c * 3], "embed")) for c in "cdefgh"]
        while batcher.queued_texts < 6:
            await asyncio.sleep(0.01)
        runner.gate.set()
        results = [await q for q in queued]
        runner.second_gate.set()
        await first, await second
        return results

    results = run(runner, main, max_wait=0.0, max_batch_size=8)
    assert [len(batch) for batch in runner.batches] == [1, 1, 4, 2]
    for text, result in zip("cdefgh", results, strict=True):
        np.testing.assert_array_equal(result.outputs["vectors"], [row_of(text * 3)])


def test_the_wait_ends_when_the_other_instance_finishes():
    """max_wait is 10 s, but once A's batch is done no instance runs: B starts at once."""
    runner = FakeRunner()

    async def main(batcher):
        held = asyncio.ensure_future(batcher.submit(["!held"], "embed"))
        await _entered(runner)
        started = time.monotonic()
        waiting = asyncio.ensure_future(batcher.submit(["x"], "embed"))
        await asyncio.sleep(0.2)
        runner.gate.set()
        await held
        result = await waiting
        return result, time.monotonic() - started

    result, seconds = run(runner, main, max_wait=10.0)
    np.testing.assert_array_equal(result.outputs["vectors"], [row_of("x")])
    assert seconds < 5.0


def test_the_wait_ends_after_max_wait_while_the_other_still_runs():
    runner = FakeRunner()

    async def main(batcher):
        held = asyncio.ensure_future(batcher.submit(["!held"], "embed"))
        await _entered(runner)
        result = await asyncio.wait_for(batcher.submit(["x"], "embed"), 10)
        assert not held.done()  # served by the other instance while A still holds its batch
        runner.gate.set()
        await held
        return result

    result = run(runner, main, max_wait=0.2)
    np.testing.assert_array_equal(result.outputs["vectors"], [row_of("x")])


def test_a_dropped_job_is_skipped():
    runner = FakeRunner()

    async def main(batcher):
        held = asyncio.ensure_future(batcher.submit(["!held"], "embed"))
        await _entered(runner)
        gone = batcher.enqueue(["gone"], "embed")
        stay = asyncio.ensure_future(batcher.submit(["stay"], "embed"))
        await asyncio.sleep(0)
        gone.drop(ConnectionResetError("the client left"))
        runner.gate.set()
        with pytest.raises(ConnectionResetError):
            await gone.future
        return await held, await stay

    _, stay = run(runner, main, max_wait=0.0, instances=1)
    assert all("gone" not in batch for batch in runner.batches)
    np.testing.assert_array_equal(stay.outputs["vectors"], [row_of("stay")])


def test_each_job_gets_its_rows_with_one_wake_up_per_batch(monkeypatch):
    """60 concurrent jobs of 1-3 texts: each gets row_of of its own texts in its order,
    and the event loop is woken once per batch, not once per job."""
    wake_ups = []
    real_settle = batcher_module._settle
    monkeypatch.setattr(
        batcher_module, "_settle", lambda pairs: wake_ups.append(len(pairs)) or real_settle(pairs)
    )
    runner = FakeRunner()
    generator = np.random.default_rng(3)
    jobs = [
        ["".join(chr(97 + c) for c in generator.integers(0, 26, generator.integers(1, 30)))
         for _ in range(generator.integers(1, 4))]
        for _ in range(60)
    ]  # fmt: skip

    async def main(batcher):
        return await asyncio.gather(*(batcher.submit(texts, "embed") for texts in jobs))

    results = run(runner, main, max_wait=0.005, instances=2, max_batch_size=8)
    for texts, result in zip(jobs, results, strict=True):
        np.testing.assert_array_equal(result.outputs["vectors"], [row_of(t) for t in texts])
        assert result.tokens == sum(len(t) for t in texts)
    assert sum(wake_ups) == 60 and len(wake_ups) < 60
    assert all(len(batch) <= 8 for batch in runner.batches)
