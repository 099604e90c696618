"""Timing compress's forms in a fresh process: the teacher and every form loaded side by side
and timed in turns on the same lines, in a process that has done nothing else.

A search trains its students and scores every form before it times them; after that the
process's heap is large and scattered: in the default-budget compress run the forms timed
there ran slower, against the teacher too, than the same forms timed again in a fresh
process (3.59x against 4.07x for the pick; docs/RESULTS.md), and a fresh process is how a
picked form is served. So :func:`time_forms` starts ``python -m distilkit.methods.compress.timing
REQUEST.json`` and reads the speeds from its last line of output; the worker tunes the C
allocator for inference (:mod:`distilkit.model.allocator`), sets the parent's thread count,
loads the models and runs :func:`distilkit.evaluate.timing.time_embedders`. Should the
worker fail, the forms are timed in the calling process instead, and the caller says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from distilkit.encoder import load
from distilkit.evaluate.timing import run_worker, time_embedders
from distilkit.methods.compress import candidates as build
from distilkit.methods.compress.scoring import embed_function
from distilkit.model.allocator import tune_for_inference

TEACHER = "teacher"


def time_here(request: dict) -> dict[str, dict]:
    """Load the teacher and every form of ``request`` in this process and time them in
    turns: ``{name: time_embedders' row}``.

    request: ``teacher`` (its name or folder), ``forms`` (``[name, model folder, form]``
    each), ``lines``, ``batch_size``, ``repeats``.
    """
    models = {TEACHER: load(request["teacher"], head=None, device="cpu")}
    for name, folder, form in request["forms"]:
        models[name] = build.load_form(Path(folder), form)
    batch_size = request["batch_size"]
    return time_embedders(
        {name: embed_function(model, batch_size) for name, model in models.items()},
        request["lines"],
        batch_size=batch_size,
        repeats=request["repeats"],
        warmup=1,
        latency_texts=0,
    )


def time_forms(request: dict, request_path: Path, timeout: float) -> tuple[dict, str | None]:
    """Time ``request`` (see :func:`time_here`) in a fresh process; returns its results and
    None, or, when the worker fails or runs past ``timeout`` seconds, the results of timing
    in this process and why the worker was not used."""
    request = {**request, "threads": torch.get_num_threads()}
    module = "distilkit.methods.compress.timing"
    results, why = run_worker(module, request, request_path, timeout)
    if results is not None:
        return results, None
    tune_for_inference()
    return time_here(request), why


def _worker(request_path: str) -> None:
    tune_for_inference()  # before the models are loaded
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    torch.set_num_threads(request["threads"])
    print(json.dumps(time_here(request)))


if __name__ == "__main__":
    _worker(sys.argv[1])
