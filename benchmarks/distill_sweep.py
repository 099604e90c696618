"""One short general-distillation run with config overrides, scored on STS-B dev.

The tool behind the recipe search in docs/RESULTS.md: each call trains a student with
``DistillConfig`` defaults changed by a JSON object (the same keys as
``distill_config.json``), saves it under ``OUT/NAME`` and appends one JSON line (steps,
STS-B dev Spearman of the mean-pooled student, retention against the teacher) to
``OUT/results.jsonl``.

    python benchmarks/distill_sweep.py cos-lr5e-5 '{"training": {"learning_rate": 5e-5}}'
    python benchmarks/distill_sweep.py sentence '{"objective": {"weights":
        {"ce": 0, "mlm": 0, "cos": 1, "sentence": 1}}}' --budget 600
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from distilkit.encoder import load
from distilkit.evaluate.sentence import stsb_spearman
from distilkit.methods.general.config import DistillConfig
from distilkit.methods.general.job import run_distillation
from distilkit.settings import from_dict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("overrides", nargs="?", default="{}", help="JSON DistillConfig keys")
    parser.add_argument("--budget", type=float, default=240.0, help="training seconds")
    parser.add_argument("--layers", default="0,4,5")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = json.loads(args.overrides)
    training = {
        "time_budget": args.budget,
        "max_steps": 100_000,
        "eval_every": 10**9,
        "checkpoint_every": 10**9,
        "progress": False,
        **overrides.pop("training", {}),
    }
    data = {"layers": [int(x) for x in args.layers.split(",")], **overrides}
    data["training"] = {**vars(DistillConfig().training), **training}
    config = from_dict(DistillConfig, data)
    started = time.perf_counter()
    metrics = run_distillation(config, args.out / args.name, resume=False, evaluate=False)
    teacher = stsb_spearman(load(config.teacher, head=None))
    student = stsb_spearman(load(args.out / args.name / "student", head=None))
    row = {
        "name": args.name,
        "overrides": json.loads(args.overrides),
        "layers": data["layers"],
        "steps": metrics["training"]["steps"],
        "stsb": round(student, 2),
        "retention_pct": round(100 * student / teacher, 2),
        "seconds": round(time.perf_counter() - started),
    }
    print(json.dumps(row), flush=True)
    with (args.out / "results.jsonl").open("a") as stream:
        stream.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
