"""Timing several text-to-vector (or text-to-logits) functions fairly on a shared CPU.

:func:`time_embedders` is the one protocol behind every speed figure distilkit prints
(the main job's report, ``distilkit bench``, the benchmarks): warm-up passes, then timed
passes taken in turns so that a change of background load hits every model alike, then
batch-1 latencies, again in turns.

:func:`time_in_fresh_process` runs that protocol on models loaded from their folders in a
new Python process (:mod:`distilkit.evaluate.timing_worker`), for callers whose own
process has trained first: after training the heap is large and scattered, and a model
timed there ran slower than in a fresh process, the teacher more than its student (the
main job's 40-minute MobileBERT run timed its teacher at 334 sentences/s, a quiet
``distilkit compare`` at 531-587; docs/RESULTS.md), which inflated the job's speed-up.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

EmbedFunction = Callable[[list[str]], np.ndarray]


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None


def time_embedders(
    embedders: dict[str, EmbedFunction],
    texts: Sequence[str],
    batch_size: int = 64,
    repeats: int = 5,
    warmup: int = 1,
    latency_texts: int = 100,
    num_threads: int | None = None,
    progress: bool = False,
) -> dict[str, dict]:
    """Throughput and batch-1 latency of several embedding functions, timed in turns.

    Each function gets ``warmup`` untimed passes over ``texts``; then the timed passes
    take turns (A, B, A, B, ...), so a change in background load hits every model
    alike. The median pass gives ``sentences_per_s`` and ``ms_per_batch``; then the
    first ``latency_texts`` texts, one at a time, again in turns, give the batch-1
    latency percentiles ``latency_ms_p50`` / ``latency_ms_p95``. ``num_threads`` sets
    torch's thread count for the measurement (restored afterwards). ``progress``: a bar
    of the passes and single texts on stderr, updated between the timed calls.
    """
    texts = list(texts)
    if not texts or not embedders:
        raise ValueError("timing needs at least one text and one model")
    if repeats < 1 or warmup < 0 or latency_texts < 0 or batch_size < 1:
        raise ValueError(
            f"need repeats >= 1, warmup >= 0, latency_texts >= 0, batch_size >= 1; got "
            f"{repeats}, {warmup}, {latency_texts}, {batch_size}"
        )
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    load_before = _load_average()
    seconds: dict[str, list[float]] = {name: [] for name in embedders}
    latency_ms: dict[str, list[float]] = {name: [] for name in embedders}
    singles = texts[:latency_texts]
    bar = tqdm(
        total=(warmup + repeats) * len(embedders) + len(singles),
        desc="timing",
        unit="run",
        disable=not progress,
    )
    try:
        with torch.inference_mode():
            for embed in embedders.values():
                for _ in range(warmup):
                    embed(texts)
                    bar.update()
                for text in singles[: 3 if warmup else 0]:
                    embed([text])  # warm the batch-1 path too: other shapes, other kernels
            for _ in range(repeats):
                for name, embed in embedders.items():
                    start = time.perf_counter()
                    embed(texts)
                    seconds[name].append(time.perf_counter() - start)
                    bar.update()
            for text in singles:
                for name, embed in embedders.items():
                    start = time.perf_counter()
                    embed([text])
                    latency_ms[name].append(1000.0 * (time.perf_counter() - start))
                bar.update()
        threads = torch.get_num_threads()
    finally:
        bar.close()
        torch.set_num_threads(previous_threads)
    batches = math.ceil(len(texts) / batch_size)
    results = {}
    for name in embedders:
        median_seconds = float(np.median(seconds[name]))
        latencies = latency_ms[name]
        results[name] = {
            "sentences_per_s": len(texts) / median_seconds,
            "ms_per_batch": 1000.0 * median_seconds / batches,
            "latency_ms_p50": float(np.percentile(latencies, 50)) if latencies else None,
            "latency_ms_p95": float(np.percentile(latencies, 95)) if latencies else None,
            "batch_size": batch_size,
            "num_threads": threads,
            "throughput_texts": len(texts),
            "throughput_repeats": repeats,
            "load_average_1min": load_before,
        }
    return results


def time_in_fresh_process(
    models: dict[str, dict], texts: Sequence[str], timeout: float = 3600.0, **settings
) -> tuple[dict[str, dict] | None, str | None]:
    """:func:`time_embedders` on models loaded afresh in a new process.

    ``models``: name -> ``{"kind": "encoder", "folder": F, "pooling": P}`` (``embed`` of
    the model in folder F) or ``{"kind": "static", "folder": F}`` (the average of its
    input word vectors). ``settings``: :func:`time_embedders`' keywords (``batch_size``,
    ``repeats``, ``warmup``, ``latency_texts``, ``num_threads``: default this process's).
    Returns (the rows of :func:`time_embedders`, None), or (None, why) when the worker
    failed or ran past ``timeout`` seconds, for the caller to time in its own process.
    """
    settings["num_threads"] = settings.get("num_threads") or torch.get_num_threads()
    request = {"models": models, "texts": list(texts), "settings": settings}
    with tempfile.TemporaryDirectory(prefix="distilkit-timing-") as folder:
        path = os.path.join(folder, "request.json")
        results, why = run_worker("distilkit.evaluate.timing_worker", request, path, timeout)
    if results is not None and set(results) != set(models):
        return None, "the timing process timed other models than asked"
    return results, why


def run_worker(
    module: str, request: dict, request_path: str | os.PathLike, timeout: float
) -> tuple[dict | None, str | None]:
    """Write ``request`` as JSON to ``request_path``, run ``python -m module
    request_path`` and read the JSON object it prints last: (that object, None), or
    (None, why) when the process failed, ran past ``timeout`` seconds or printed none."""
    with open(request_path, "w", encoding="utf-8") as handle:
        json.dump(request, handle)
    command = [sys.executable, "-m", module, str(request_path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"the timing process ran past {timeout:.0f} s"
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return None, f"the timing process failed ({tail})"
    try:
        return json.loads(done.stdout.strip().splitlines()[-1]), None
    except (IndexError, ValueError):
        return None, "the timing process printed no results"


__all__ = ["EmbedFunction", "run_worker", "time_embedders", "time_in_fresh_process"]
