"""The dynamic batcher behind ``distilkit serve``: requests from concurrent clients are
merged into length-sorted batches, run off the event loop, and split back per request.

Worker threads own the model, so the event loop only parses requests and writes
responses. With ``instances`` > 1 several workers take batches from the one queue and
run them at the same time (Triton's model instances): while one batch runs, the event
loop answers another's requests and reads new ones, and the next batch is already
being formed, so neither the model nor the event loop waits for the other. Each
worker calls ``on_start`` first (the server sets its thread's share of the intra-op
threads there). A cycle of a worker:

1. wait for a queued request; then start at once if no other instance is running (the
   model would idle otherwise: a lone client never waits for ``max_wait``, and no wave
   of answers leaves the model waiting for the next batch to form), else wait until
   ``max_batch_size`` texts are queued, ``max_wait`` has passed since the oldest queued
   request arrived, or every other instance has finished, whichever comes first (while
   another instance runs the model is busy, and a moment's wait buys a fuller batch);
2. take requests from the front of the queue up to ``max_batch_size`` texts (always at
   least one request; a request with more texts than that is taken whole);
3. tokenize all their texts at once; a request whose text is over the token limit (and
   that did not ask for truncation) fails alone with :class:`InputTooLong`;
4. sort the remaining texts by token count and run them in forward batches of at most
   ``max_batch_size`` rows, so short texts are not padded to long ones; a forward that
   raises fails the requests with a row in that forward (:class:`BatchFailed`) and no
   other;
5. hand every request exactly its own rows, in its order, through its asyncio future
   (one wake-up of the event loop per batch, not per request).

With one instance this is plain continuous batching: the next batch is whatever arrived
while the last one ran. Under load the queue refills while the model runs, so batches
grow by themselves; at low load nothing is delayed.

Requests whose client went away before the worker reached them are skipped.
The queue is bounded in texts: :meth:`DynamicBatcher.enqueue` raises :class:`QueueFull`
with a Retry-After estimate from the recent throughput instead of queueing more.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np


class QueueFull(RuntimeError):
    """The queue holds ``max_queue`` texts: come back in ``retry_after`` seconds."""

    def __init__(self, retry_after: int, queued: int):
        super().__init__(f"the server queue is full ({queued} texts waiting): retry later")
        self.retry_after = retry_after


class InputTooLong(ValueError):
    """A text has more tokens than the server accepts and truncation was not asked for."""

    def __init__(self, index: int, limit: int):
        super().__init__(
            f"input {index} has more than {limit} tokens, the most this server reads: "
            "shorten it or ask for truncation"
        )
        self.index = index


class BatchFailed(RuntimeError):
    """The forward batch holding one of this request's texts raised."""


class ShuttingDown(RuntimeError):
    """The server is draining its queue before it stops and takes no new requests."""


@dataclass
class Encoded:
    """One tokenized text: ``ids`` (tokens,) int64 with [CLS] and [SEP]; ``truncated``
    whether the token limit cut it."""

    ids: np.ndarray
    truncated: bool


class Runner:
    """What the batcher drives (see :class:`distilkit.deploy.runner.ModelRunner`)."""

    def tokenize(self, texts: list[str], limit: int) -> list[Encoded]:
        raise NotImplementedError

    def run(self, key: Hashable, ids: list[np.ndarray]) -> dict[str, np.ndarray]:
        """One forward batch of token-id rows; arrays with one row per input."""
        raise NotImplementedError


@dataclass
class Result:
    """A request's outputs, each array ``(texts, ...)`` in request order, and its tokens."""

    outputs: dict[str, np.ndarray]
    tokens: int


@dataclass(eq=False)
class Job:
    """One request's texts in the queue; ``future`` gets its :class:`Result`."""

    texts: list[str]
    key: Hashable
    truncate: bool
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.monotonic)
    cancelled: bool = False

    def drop(self, error: BaseException) -> None:
        """The client left (call on the event loop): skip the texts if not yet taken,
        and end the wait with ``error``."""
        self.cancelled = True
        if not self.future.done():
            self.future.set_exception(error)


@dataclass
class BatchStats:
    """One forward batch, for metrics: rows, real tokens, padded tokens, seconds."""

    rows: int
    tokens: int
    padded_tokens: int
    seconds: float


def _settle(settled: list[tuple[asyncio.Future, object]]) -> None:
    """Give each future its value (on the event loop; one call per batch)."""
    for future, value in settled:
        if future.done():  # the client went away
            continue
        if isinstance(value, BaseException):
            future.set_exception(value)
        else:
            future.set_result(value)


def _settle_all(jobs: list[Job], values: list[object]) -> None:
    """Hand each job its value with one wake-up of each event loop involved."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, object]]] = {}
    for job, value in zip(jobs, values, strict=True):
        by_loop.setdefault(job.loop, []).append((job.future, value))
    for loop, settled in by_loop.items():
        loop.call_soon_threadsafe(_settle, settled)


class DynamicBatcher:
    """Merge concurrent requests into forward batches on ``instances`` worker threads.

    max_batch_size: texts per forward; max_wait: seconds the oldest request may wait for
    company while another instance runs (an idle model starts at once); max_queue: texts
    waiting at most; token_limit: tokens per text (more is an
    :class:`InputTooLong` unless the request truncates); instances: forward batches in
    flight at once (the runner's ``run`` must then be thread-safe; ``tokenize`` is
    called under a lock). ``on_batch`` and ``on_wait`` are called on a worker thread
    with each forward's :class:`BatchStats` and each taken request's queue wait in
    seconds; ``on_start`` once by each worker before its first batch.
    """

    def __init__(
        self,
        runner: Runner,
        max_batch_size: int,
        max_wait: float,
        max_queue: int,
        token_limit: int,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_wait: Callable[[float], None] | None = None,
        instances: int = 1,
        on_start: Callable[[], None] | None = None,
    ):
        if max_batch_size < 1 or max_queue < 1 or max_wait < 0 or token_limit < 3 or instances < 1:
            raise ValueError(
                "max_batch_size, max_queue and instances must be >= 1, max_wait >= 0 and "
                "token_limit >= 3"
            )
        self.runner = runner
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.token_limit = token_limit
        self.on_batch = on_batch
        self.on_wait = on_wait
        self._queue: deque[Job] = deque()
        self._queued_texts = 0
        self._condition = threading.Condition()
        self._stopping = False
        self._running = 0  # workers between taking a batch and handing its rows back
        self._running_texts = 0  # the texts of their batches
        self._rate = 0.0  # texts per second, smoothed, for Retry-After
        self._tokenizer_lock = threading.Lock()
        self._on_start = on_start
        self._threads = [
            threading.Thread(target=self._work, name=f"distilkit-batcher-{i}", daemon=True)
            for i in range(instances)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def queued_texts(self) -> int:
        return self._queued_texts

    @property
    def stopping(self) -> bool:
        return self._stopping

    # ------------------------------------------------------------------ event-loop side
    def enqueue(self, texts: Sequence[str], key: Hashable, truncate: bool = False) -> Job:
        """Queue ``texts`` (on the event loop); the job's future gets a :class:`Result`
        or :class:`InputTooLong` / :class:`BatchFailed`. Raises :class:`QueueFull` or
        :class:`ShuttingDown` at once. :meth:`Job.drop` (the client left) skips the
        texts unless a worker already took them."""
        loop = asyncio.get_running_loop()
        job = Job(texts if isinstance(texts, list) else list(texts), key, truncate,
                  loop.create_future(), loop)  # fmt: skip
        with self._condition:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if self._queued_texts + len(job.texts) > self.max_queue:
                raise QueueFull(self._retry_after(), self._queued_texts)
            self._queue.append(job)
            self._queued_texts += len(job.texts)
            self._condition.notify()
        return job

    async def submit(self, texts: Sequence[str], key: Hashable, truncate: bool = False) -> Result:
        """:meth:`enqueue`, then wait for the rows; cancelling the awaiting task drops
        the job."""
        job = self.enqueue(texts, key, truncate)
        try:
            return await job.future
        except asyncio.CancelledError:
            job.cancelled = True
            raise

    def _retry_after(self) -> int:
        """Seconds until the queue should have room, from the recent throughput."""
        if self._rate <= 0:
            return 1
        return max(1, min(60, math.ceil(self._queued_texts / self._rate)))

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, finish every queued one, stop the workers."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        ends = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if ends is None else max(0.0, ends - time.monotonic()))

    # ------------------------------------------------------------------ worker side
    def _work(self) -> None:
        if self._on_start is not None:
            self._on_start()
        while True:
            jobs = self._take()
            if jobs is None:
                return
            started = time.perf_counter()
            texts = sum(len(job.texts) for job in jobs)
            try:
                self._process(jobs)
            except Exception as error:  # tokenizer failure: these requests only
                failure = BatchFailed(f"{type(error).__name__}: {error}")
                _settle_all(jobs, [failure] * len(jobs))
            finally:
                with self._condition:
                    self._running -= 1
                    self._running_texts -= texts
                    self._condition.notify_all()  # a worker waiting for company re-checks
            seconds = time.perf_counter() - started
            if seconds > 0:  # each worker's rate times the workers: the whole rate
                rate = texts / seconds * len(self._threads)
                self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate

    def _take(self) -> list[Job] | None:
        """The next requests to run (None: stopped and drained)."""
        with self._condition:
            while True:
                while not self._queue and not self._stopping:
                    self._condition.wait()
                if not self._queue:
                    return None
                while (  # the model is busy: a moment's wait fills the batch
                    self._running > 0
                    and self._queue
                    and self._queued_texts < self._share()
                    and not self._stopping
                ):
                    remaining = self._queue[0].enqueued + self.max_wait - time.monotonic()
                    if remaining <= 0:
                        break
                    self._condition.wait(remaining)
                jobs: list[Job] = []
                taken = 0
                limit = self._share()
                now = time.monotonic()
                while self._queue and (not jobs or taken + len(self._queue[0].texts) <= limit):
                    job = self._queue.popleft()
                    self._queued_texts -= len(job.texts)
                    if job.cancelled:
                        continue
                    jobs.append(job)
                    taken += len(job.texts)
                    if self.on_wait is not None:
                        self.on_wait(now - job.enqueued)
                if jobs:
                    self._running += 1
                    self._running_texts += taken
                    if self._queue:  # the rest is another instance's share
                        self._condition.notify()
                    return jobs

    def _share(self) -> int:
        """An instance's fair part of the work in hand: the texts queued and running
        divided among the instances (at most ``max_batch_size``). Taking no more keeps
        the instances' batches even (closed-loop clients come back in the groups they
        were served in, so an uneven split would last), and waiting for no more than
        that starts a batch as soon as it would match the running one."""
        total = self._queued_texts + self._running_texts
        return min(self.max_batch_size, -(-total // len(self._threads)))

    def _process(self, jobs: list[Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        with self._tokenizer_lock:  # the tokenizer's truncation setting is state
            encoded = self.runner.tokenize(texts, self.token_limit)
        outputs: list[dict[str, list]] = [{} for _ in jobs]
        sizes = [len(job.texts) for job in jobs]
        failures: list[BaseException | None] = [None] * len(jobs)
        rows_by_key: dict[Hashable, list[tuple[int, int, np.ndarray]]] = {}
        tokens = [0] * len(jobs)
        start = 0
        for index, job in enumerate(jobs):
            mine = encoded[start : start + len(job.texts)]
            start += len(job.texts)
            too_long = next((i for i, e in enumerate(mine) if e.truncated), None)
            if too_long is not None and not job.truncate:
                failures[index] = InputTooLong(too_long, self.token_limit)
                continue
            tokens[index] = sum(len(e.ids) for e in mine)
            rows = rows_by_key.setdefault(job.key, [])
            rows.extend((index, position, e.ids) for position, e in enumerate(mine))
        for key, rows in rows_by_key.items():
            rows.sort(key=lambda row: -len(row[2]))  # longest first, like Encoder.embed
            for begin in range(0, len(rows), self.max_batch_size):
                chunk = rows[begin : begin + self.max_batch_size]
                owners = {index for index, _, _ in chunk}
                if all(failures[index] is not None for index in owners):
                    continue
                self._forward(key, chunk, outputs, sizes, failures)
        values: list[object] = []
        for index in range(len(jobs)):
            if failures[index] is not None:
                values.append(failures[index])
            else:
                values.append(
                    Result(
                        {name: np.stack(rows) for name, rows in outputs[index].items()},
                        tokens[index],
                    )
                )
        _settle_all(jobs, values)

    def _forward(
        self,
        key: Hashable,
        chunk: list[tuple[int, int, np.ndarray]],
        outputs: list[dict[str, list]],
        sizes: list[int],
        failures: list[BaseException | None],
    ) -> None:
        """Run one forward batch and scatter its rows to their requests."""
        started = time.perf_counter()
        try:
            result = self.runner.run(key, [ids for _, _, ids in chunk])
        except Exception as error:
            for index, _, _ in chunk:
                failures[index] = BatchFailed(f"{type(error).__name__}: {error}")
            return
        if self.on_batch is not None:
            lengths = [len(ids) for _, _, ids in chunk]
            seconds = time.perf_counter() - started
            self.on_batch(BatchStats(len(chunk), sum(lengths), len(chunk) * max(lengths), seconds))
        for row, (index, position, _) in enumerate(chunk):
            if failures[index] is not None:
                continue
            for name, array in result.items():
                outputs[index].setdefault(name, [None] * sizes[index])[position] = array[row]
