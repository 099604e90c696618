"""What latency 8 closed-loop clients can get on this machine, whatever the server does.

With ``N`` clients that each send their next request as soon as the last is answered, the
server's mean latency is ``N / X`` (Little's law), where ``X`` is the rate it answers at.
No server answers faster than the model's own forwards with at most ``N`` sentences in
flight, so ``N / X*`` bounds the mean latency from below, with ``X*`` the best offline rate
over the server's ways of splitting ``N`` sentences among model instances (one instance
with all the physical cores, two sharing them; batches of 1, 2, 4, ... up to ``N`` per
instance count), tokenization included, no HTTP. The script measures ``X*`` in one process and
prints the bound as a multiple of the single-client latency (the server's p50 from a
``serve_load.py --json`` file if given, else the offline forward of one sentence):

    HF_HUB_OFFLINE=1 python benchmarks/serve_latency_bound.py --serve-json /tmp/serve_load.json
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import numpy as np


def rate(runner, sentences: list[str], instances: int, threads: int, batch: int,
         seconds: float) -> float:  # fmt: skip
    """Sentences per second of ``instances`` Python threads, each with ``threads`` intra-op
    threads, running tokenize + forward on batches of ``batch`` for ``seconds``."""
    counts = [0] * instances
    start, stop = threading.Barrier(instances + 1), threading.Event()

    def instance(index: int) -> None:
        runner.start_instance(threads)
        offset = index * 97
        runner.run("embed", [e.ids for e in runner.tokenize(sentences[:batch], 512)])  # warm-up
        start.wait()
        while not stop.is_set():
            texts = [sentences[(offset + i) % len(sentences)] for i in range(batch)]
            runner.run("embed", [e.ids for e in runner.tokenize(texts, 512)])
            offset += batch
            counts[index] += batch

    workers = [threading.Thread(target=instance, args=(i,)) for i in range(instances)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - began)


def single_latency_ms(runner, sentences: list[str], threads: int, repeats: int) -> float:
    """Median milliseconds of tokenize + forward of one sentence on ``threads`` threads."""
    runner.start_instance(threads)
    times = []
    for i in range(repeats):
        began = time.perf_counter()
        runner.run("embed", [e.ids for e in runner.tokenize([sentences[i % len(sentences)]], 512)])
        times.append(time.perf_counter() - began)
    return float(np.median(times[5:])) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "int8"))
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="per configuration")
    parser.add_argument("--sentences", type=int, default=512, help="STS-B dev sentences used")
    parser.add_argument("--serve-json", type=Path, help="serve_load.py --json output")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from distilkit.deploy.onnx_runtime import physical_cores
    from distilkit.deploy.runner import ModelRunner
    from distilkit.evaluate.sentence import read_stsb

    first, second, _ = read_stsb()
    sentences = list(dict.fromkeys(first + second))[: args.sentences]
    np.random.default_rng(0).shuffle(sentences)
    runner = ModelRunner.load(args.model, dtype=args.dtype, device=args.device)
    cores = physical_cores()
    print(f"# {args.model} ({args.dtype}, {runner.device}), {cores} physical cores, "
          f"torch {torch.__version__}, {args.clients} closed-loop clients, "
          f"{len(sentences)} STS-B dev sentences")  # fmt: skip
    one = {t: single_latency_ms(runner, sentences, t, 60) for t in sorted({1, cores})}
    for threads, ms in one.items():
        print(f"one sentence, {threads} thread(s): {ms:.2f} ms (median, tokenization included)")
    splits = [(n, cores // n) for n in (1, 2) if cores // n >= 1]
    best: tuple[float, tuple[int, int, int]] = (0.0, (0, 0, 0))
    print(f"{'instances':>9} {'threads':>7} {'batch':>5} {'sentences/s':>11}")
    for instances, threads in splits:
        batch = 1
        while batch * instances <= args.clients:
            value = rate(runner, sentences, instances, threads, batch, args.seconds)
            print(f"{instances:>9} {threads:>7} {batch:>5} {value:>11.1f}", flush=True)
            best = max(best, (value, (instances, threads, batch)))
            batch *= 2
    bound_ms = 1000 * args.clients / best[0]
    instances, threads, batch = best[1]
    print(f"best rate with at most {args.clients} sentences in flight: {best[0]:.1f}/s "
          f"({instances} instance(s) x {threads} thread(s), batch {batch})")  # fmt: skip
    print(f"so the mean latency at {args.clients} clients is at least {bound_ms:.1f} ms, "
          "HTTP not counted")  # fmt: skip
    if args.serve_json:
        rows = json.loads(args.serve_json.read_text())["rows"]
        served = next(r for r in rows if r["server"].startswith("distilkit serve (batch 64)")
                      and r["clients"] == 1)  # fmt: skip
        reference, what = served["p50_ms"], f"the server's single-client p50 ({args.serve_json})"
    else:
        reference, what = min(one.values()), "the offline forward of one sentence"
    print(f"= {bound_ms / reference:.2f}x {what}, {reference:.2f} ms; "
          f"a p99 <= 3x needs p99 <= {3 * reference:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
