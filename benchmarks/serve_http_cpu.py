"""The CPU ``distilkit serve`` spends per request outside the model: HTTP, JSON,
validation, batching and tokenization, side by side for two checkouts of the code.

Each server is ``distilkit.deploy.serve.create_app`` of the given checkout on the real
tokenizer of the model, with the forward replaced by a constant row per text (so the
model costs nothing and what is left is the server's own work). With ``--forward-ms A
B`` each forward also sleeps A + B x its padded token slots milliseconds without using
a CPU: a model on cores of its own, to compare how the batchers schedule (throughput
and tail latency) on a machine whose load would drown the difference. Closed-loop clients
send one sentence per request to ``POST /v1/embeddings`` (``serve_load.py``'s client);
the server process's CPU time (user + system, from /proc) over the requests answered is
its CPU milliseconds per request. The checkouts take turns, ``--rounds`` times, so that
a machine shared with other jobs moves both alike.

Usage::

    git archive main distilkit | tar -x -C /tmp/base
    python benchmarks/serve_http_cpu.py --checkout base=/tmp/base --checkout new=.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_load


def null_server(
    checkout: str, folder: str, port: int, fixed_ms: float, slot_ms: float, settings: dict
) -> None:
    """Serve ``folder``'s tokenizer with a forward that costs no CPU (runs in the child)."""
    sys.path.insert(0, checkout)
    import uvicorn

    from distilkit.deploy.runner import ModelRunner
    from distilkit.deploy.serve import ServeConfig, create_app

    runner = ModelRunner.load(folder)
    row = np.random.default_rng(0).standard_normal(runner.hidden_size).astype(np.float32)

    def run(key, ids):
        if fixed_ms or slot_ms:
            time.sleep((fixed_ms + slot_ms * len(ids) * max(map(len, ids))) / 1000)
        return {"vectors": np.tile(row, (len(ids), 1))}

    runner.run = run
    config = ServeConfig(model=folder, port=port, **settings)
    uvicorn.run(create_app(config, runner), host="127.0.0.1", port=port, log_level="warning")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", action="append", required=True, metavar="NAME=PATH",
                        help="a folder holding the distilkit package to serve")  # fmt: skip
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="whose tokenizer")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0, help="per level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--forward-ms", nargs=2, type=float, default=[0.0, 0.0],
                        metavar=("FIXED", "PER_SLOT"), help="a forward's sleep")  # fmt: skip
    parser.add_argument(
        "--settings", default="{}", help="ServeConfig fields, JSON: '{\"instances\": 1}'"
    )
    parser.add_argument("--null-server", nargs=3, metavar=("CHECKOUT", "FOLDER", "PORT"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.null_server:
        checkout, folder, port = args.null_server
        null_server(checkout, folder, int(port), *args.forward_ms, json.loads(args.settings))
        return
    from distilkit.evaluate.sentence import read_stsb
    from distilkit.model.hub import resolve

    folder = str(resolve(args.model))
    first, second, _ = read_stsb()
    sentences = list(dict.fromkeys(first + second))[:512]
    checkouts = dict(item.split("=", 1) for item in args.checkout)
    print(f"# serve_http_cpu.py  {time.strftime('%Y-%m-%dT%H:%M:%S')}  {os.cpu_count()} CPUs; "
          "server CPU ms per request with a free forward (HTTP, JSON, batching, "
          "tokenization)")  # fmt: skip
    table: dict[tuple[str, int], list[float]] = {}
    for round_ in range(args.rounds):
        for name, checkout in checkouts.items():
            port = serve_load.free_port()
            command = [sys.executable, __file__, "--checkout", "x=x", "--null-server",
                       str(Path(checkout).resolve()), folder, str(port),
                       "--settings", args.settings, "--forward-ms",
                       *map(str, args.forward_ms)]  # fmt: skip
            with _server(command, port) as pid:
                asyncio.run(serve_load.closed_loop(port, sentences, 8, 1.0, 200))  # warm-up
                cells = []
                for clients in args.clients:
                    rate, latencies, errors, server_ms, _ = serve_load.measured_level(
                        pid, port, sentences, clients, args.seconds, 10**9
                    )
                    assert errors == 0, f"{errors} errors"
                    table.setdefault((name, clients), []).append(server_ms)
                    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
                    cells.append(
                        f"c{clients}: {server_ms:5.2f} ms cpu, {rate:6.0f}/s, p50 {p50:5.1f} "
                        f"p99 {p99:5.1f} ms"
                    )
            print(f"round {round_} {name:<8} " + " | ".join(cells), flush=True)
    print("\nmedian server CPU ms per request over the rounds")
    for clients in args.clients:
        cells = [f"{name} {np.median(table[(name, clients)]):5.2f}" for name in checkouts]
        print(f"  {clients:>3} clients: " + "  ".join(cells))


class _server:
    """``serve_load.server`` without its PYTHONPATH (the child picks its checkout)."""

    def __init__(self, command: list[str], port: int):
        self.command, self.port = command, port

    def __enter__(self) -> int:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        self.process = subprocess.Popen(self.command, env=env, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not serve_load._healthy(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(self.process.stderr.read().decode()[-2000:])
            assert time.monotonic() < deadline, "the server did not start in 120 s"
            time.sleep(0.2)
        return self.process.pid

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(60)


if __name__ == "__main__":
    main()
