"""The process :func:`distilkit.evaluate.timing.time_in_fresh_process` starts.

``python -m distilkit.evaluate.timing_worker REQUEST.json``: tunes the C allocator for
inference (:mod:`distilkit.model.allocator`), sets the caller's thread count, loads each
model from its folder, runs :func:`~distilkit.evaluate.timing.time_embedders` and prints
its rows as one JSON line, the last line of its output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from distilkit.encoder import load
from distilkit.evaluate.sentence import encoder_embedder, static_embedder
from distilkit.evaluate.timing import EmbedFunction, time_embedders
from distilkit.model.allocator import tune_for_inference


def embedders_of(request: dict) -> dict[str, EmbedFunction]:
    """The embed function of each model the request names, loaded from its folder."""
    embedders: dict[str, EmbedFunction] = {}
    batch_size = request["settings"].get("batch_size", 64)
    for name, spec in request["models"].items():
        encoder = load(spec["folder"], head=None, device="cpu")
        encoder.model.eval()
        if spec["kind"] == "static":
            embedders[name] = static_embedder(encoder, batch_size)
        else:
            embedders[name] = encoder_embedder(encoder, spec["pooling"], batch_size)
    return embedders


def main(request_path: str) -> None:
    tune_for_inference()  # before the models are loaded
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    settings = request["settings"]
    torch.set_num_threads(settings["num_threads"])
    results = time_embedders(embedders_of(request), request["texts"], **settings)
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
