"""One short general-distillation run with config overrides, scored on STS-B dev (or the dev suite).

The tool behind the recipe search in docs/RESULTS.md: each call trains a student with
``DistillConfig`` defaults changed by a JSON object (the same keys as
``distill_config.json``), saves it under ``OUT/NAME`` and appends one JSON line (steps,
STS-B dev Spearman of the mean-pooled student, retention against the teacher) to
``OUT/results.jsonl``.

    python benchmarks/distill_sweep.py cos-lr5e-5 '{"training": {"learning_rate": 5e-5}}'
    python benchmarks/distill_sweep.py sentence '{"objective": {"weights":
        {"ce": 0, "mlm": 0, "cos": 1, "sentence": 1}}}' --budget 600
    python benchmarks/distill_sweep.py mixed '{"corpus": ["distilkit/resources/mixed"]}' \
        --budget 150 --suite quick

``--suite quick|full`` scores the student on the dev suite (``distilkit.evaluate.suite``)
instead; the teacher's suite scores are computed once and kept in
``OUT/teacher-suite-MODE.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from distilkit.encoder import load
from distilkit.evaluate import suite
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
    parser.add_argument("--suite", choices=("quick", "full"), help="score on the dev suite")
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
    row = {
        "name": args.name,
        "overrides": json.loads(args.overrides),
        "layers": data["layers"],
        "steps": metrics["training"]["steps"],
    }
    student_encoder = load(args.out / args.name / "student", head=None)
    if args.suite:
        scored = suite_rows(config.teacher, student_encoder, args.suite == "quick", args.out)
        row["suite"] = {k: round(v, 2) for k, v in scored["scores"].items()}
        row["suite_retention"] = {k: round(v, 2) for k, v in scored["retention"].items()}
        row["mean_retention_pct"] = round(scored["mean_retention"], 2)
    else:
        teacher = stsb_spearman(load(config.teacher, head=None))
        student = stsb_spearman(student_encoder)
        row["stsb"] = round(student, 2)
        row["retention_pct"] = round(100 * student / teacher, 2)
    row["seconds"] = round(time.perf_counter() - started)
    print(json.dumps(row), flush=True)
    with (args.out / "results.jsonl").open("a") as stream:
        stream.write(json.dumps(row) + "\n")


def suite_rows(teacher_name: str, student, quick: bool, out: Path) -> dict:
    """The student's dev-suite row against the teacher's (cached in ``out``)."""
    cache = out / f"teacher-suite-{'quick' if quick else 'full'}.json"
    if cache.is_file():
        teacher_row = json.loads(cache.read_text())
    else:
        teacher_row = suite.evaluate_suite({"teacher": load(teacher_name, head=None)}, quick)[0]
        cache.write_text(json.dumps(teacher_row))
    student_row = suite.evaluate_suite({"student": student}, quick)[0]
    return suite.add_retention([teacher_row, student_row])[1]


if __name__ == "__main__":
    main()
