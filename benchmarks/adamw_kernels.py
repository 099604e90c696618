"""AdamW step time on the 3-layer cut's parameters (all-MiniLM-L6-v2 blocks 0,3,5): the
single-tensor loop, foreach and the fused kernel, side by side in one process, three rounds.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/adamw_kernels.py

Every parameter gets a random gradient; each round builds each optimizer, steps it 3
times to warm up and times 10 steps. (The figures in docs/RESULTS.md of 2026-12-06 came
from the same code run as a scratch script, before it was kept here.)
"""

from __future__ import annotations

import argparse
import time

import torch

from distilkit.encoder import load
from distilkit.evaluate.comparison import cut_of

KERNELS = (
    ("single", {"foreach": False}),
    ("foreach", {"foreach": True}),
    ("fused", {"fused": True}),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", default="0,3,5", help="teacher blocks of the cut")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    teacher = load("all-MiniLM-L6-v2", head=None)
    student = cut_of(teacher, [int(x) for x in args.layers.split(",")]).model
    params = [p for p in student.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    print("parameters", sum(p.numel() for p in params))
    results: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, kernel in KERNELS:
            optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **kernel)
            for _ in range(3):
                optimizer.step()
            start = time.perf_counter()
            for _ in range(10):
                optimizer.step()
            results.setdefault(name, []).append((time.perf_counter() - start) / 10 * 1000)
    for name, times in results.items():
        print(f"{name:8s} ms/step per round: " + " ".join(f"{t:.1f}" for t in times))


if __name__ == "__main__":
    main()
