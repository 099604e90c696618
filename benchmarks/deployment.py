"""Deployment results (issue 6, item 4): every inference mode of an SST-2 teacher and its
students on this CPU, against ``transformers`` on the teacher and against the machine's
own matmul ceiling.

The script

1. measures the fp32 and bf16 matmul ceiling (GFLOP/s) at the chosen thread count;
2. for every model folder that holds early-exit branches (``distilkit train-early-exit``
   writes one), computes the accuracy against average-layers curve on SST-2 dev exactly
   from all classifiers' logits, and times each threshold (wall-clock speed-up over the
   plain model); one plot per model;
3. runs :func:`distilkit.deploy.bench.run_bench` on all 872 SST-2 dev sentences: teacher and
   students in eager fp32, bf16, eager int8, ONNX fp32, ONNX int8 and early exit (fp32
   and int8 blocks), and the
   ``transformers`` peer on the teacher, all timed in turns in this process;
4. checks the goal: a student (any mode) keeping >= 97% of the teacher's eager fp32
   dev accuracy at >= 4x the teacher's ``transformers`` throughput, and prints what
   fraction of the matmul ceiling each mode reaches.

Outputs in ``--out``: ``deployment.json`` (everything), ``deployment.md`` (tables for
docs/RESULTS.md), ``bench.png`` and ``early_exit_<model>.png``.

Usage (teacher and student from ``benchmarks/task_distillation.py``, branches from
``distilkit train-early-exit``; see docs/RESULTS.md for the exact runs)::

    OMP_WAIT_POLICY=passive python benchmarks/deployment.py --teacher runs/ee-teacher/model \\
        --student runs/ee-student/model --out runs/deployment          # ~15-30 min
    python benchmarks/deployment.py --teacher T --student S --quick    # ~3 min smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from distilkit.data.batching import sorted_batches
from distilkit.deploy.bench import BenchResult, run_bench
from distilkit.deploy.bench_engines import MODES, BenchSettings
from distilkit.deploy.flops import matmul_gflops
from distilkit.encoder import load
from distilkit.evaluate.report import machine_info
from distilkit.evaluate.sentence import read_sst2
from distilkit.methods.early_exit.curves import (
    accuracy_vs_layers,
    add_wall_clock,
    collect_layer_logits,
    pick_threshold,
    plot_curve,
)
from distilkit.methods.early_exit.model import EarlyExitModel, has_branches
from distilkit.model.hub import resolve
from distilkit.model.int8 import quantize_model

CURVE_THRESHOLDS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0]
GOAL_RETENTION_PCT = 97.0
GOAL_SPEEDUP = 4.0


def ceilings(seconds: float) -> dict[str, dict[str, float]]:
    """Best matmul GFLOP/s per dtype and size (the ceiling is the largest)."""
    table: dict[str, dict[str, float]] = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        table[name] = {
            str(size): matmul_gflops(dtype, size=size, seconds=seconds)
            for size in (512, 1024, 2048)
        }
    return table


def early_exit_curve(
    name: str,
    folder: Path,
    texts: list[str],
    labels: np.ndarray,
    repeats: int,
    out: Path,
    int8: bool = False,
    target_speedup: float | None = None,
    threshold: float | None = None,
) -> dict:
    """Accuracy and wall-clock speed-up per threshold for one model with branches (on its
    int8 blocks if ``int8``; the speed-up is then over the plain int8 model), and the
    threshold to bench: ``threshold``, else the one reaching ``target_speedup`` in layers
    (picked from the exits alone, without labels), else the saved one."""
    model = EarlyExitModel.from_folder(folder)
    if int8:
        model.model = quantize_model(model.model)
    tokenizer = load(folder).tokenizer
    layer_logits = collect_layer_logits(model, tokenizer, texts)
    chosen = model.threshold if threshold is None else threshold
    if target_speedup is not None:  # from the exits alone: the labels are not looked at
        chosen = pick_threshold(layer_logits, target_speedup)
    thresholds = sorted(set(CURVE_THRESHOLDS) | {model.threshold, chosen})
    points = accuracy_vs_layers(layer_logits, labels, thresholds)
    batches = [batch for _, batch in sorted_batches(tokenizer, texts, 32)]
    plain_seconds = add_wall_clock(points, model, batches, repeats=repeats)
    plot_curve(
        points,
        out / f"early_exit_{name.replace(' ', '_')}.png",
        title=f"{name}: early exit on SST-2 dev",
    )
    return {
        "folder": str(folder),
        "saved_threshold": model.threshold,
        "chosen_threshold": chosen,
        "plain_model_seconds_per_pass": plain_seconds,
        "points": [vars(point) for point in points],
    }


def goal(result: BenchResult) -> list[dict]:
    """Student rows that keep >= 97% of the teacher's accuracy at >= 4x its peer speed."""
    peer = next((row for row in result.rows if row["mode"] == "transformers fp32"), None)
    if peer is None:
        return []
    hits = []
    for row in result.rows:
        if row["model"] == "teacher" or row["accuracy_retention_pct"] is None:
            continue
        speedup = row["sentences_per_s"] / peer["sentences_per_s"]
        hits.append(
            {
                "engine": row["name"],
                "retention_pct": row["accuracy_retention_pct"],
                "throughput_vs_transformers_teacher": speedup,
                "meets_goal": row["accuracy_retention_pct"] >= GOAL_RETENTION_PCT
                and speedup >= GOAL_SPEEDUP,
            }
        )
    return hits


def curve_markdown(name: str, curve: dict) -> str:
    lines = [
        f"**{name}** early exit on SST-2 dev (threshold saved: {curve['saved_threshold']:.3g}; "
        f"benched: {curve['chosen_threshold']:.3g})",
        "",
        "| threshold | avg layers | layer speed-up | accuracy % | agreement % | wall-clock x |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for p in curve["points"]:
        lines.append(
            f"| {p['threshold']:.3g} | {p['average_layers']:.2f} | {p['layer_speedup']:.2f} | "
            f"{100 * p['accuracy']:.2f} | {100 * p['agreement']:.1f} | "
            f"{p['wall_clock_speedup']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="fine-tuned SST-2 teacher folder")
    parser.add_argument("--student", action="append", default=[], metavar="[NAME=]FOLDER")
    parser.add_argument("--data", type=Path, help="SST-2 dev TSV (default: the shipped copy)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per engine")
    parser.add_argument("--latency-texts", type=int, default=100)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument(
        "--target-speedup",
        action="append",
        default=[],
        metavar="[NAME=]X",
        help="early exit: the threshold that runs X times fewer layers on the dev texts, for "
        "every model or (NAME=X, repeatable) one model; chosen from the exits alone, "
        "without the labels (default: the saved threshold)",
    )
    parser.add_argument("--quick", action="store_true", help="200 texts, 1 pass: a smoke run")
    parser.add_argument("--out", type=Path, default=Path("runs/deployment"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > (os.cpu_count() or 1) and os.environ.get("OMP_WAIT_POLICY") != "passive":
        print(
            f"warning: load average {load:.1f} on {os.cpu_count()} cores: spinning threads "
            "will make the timings noisy; consider OMP_WAIT_POLICY=passive (onnxruntime's "
            "threads then sleep too)",
            file=sys.stderr,
        )
    texts, labels = read_sst2(args.data) if args.data else read_sst2()
    if args.quick:
        texts, labels = texts[:200], labels[:200]
        args.repeats, args.latency_texts = 1, 20
    models = {"teacher": str(resolve(args.teacher))}
    for index, spec in enumerate(args.student, start=1):
        name, _, folder = spec.rpartition("=")
        models[name or ("student" if len(args.student) == 1 else f"student {index}")] = folder
    targets = {}
    for spec in args.target_speedup:
        name, _, value = spec.rpartition("=")
        try:
            speedup = float(value)
        except ValueError:
            parser.error(f"--target-speedup {spec}: X must be a number, e.g. 3.5 or teacher=3.5")
        for model_name in [name] if name else models:
            if model_name not in models:
                parser.error(f"--target-speedup {spec}: no model named {name!r}")
            targets[model_name] = speedup
    command = shlex.join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    started = time.perf_counter()

    print(f"[1/3] matmul ceiling at {args.threads} threads", file=sys.stderr)
    ceiling = ceilings(seconds=0.5 if args.quick else 2.0)
    for dtype, sizes in ceiling.items():
        print(f"  {dtype}: " + ", ".join(f"{s}^3 {v:.1f} GFLOP/s" for s, v in sizes.items()))

    print("[2/3] early-exit curves", file=sys.stderr)
    curves, thresholds = {}, {}
    for name, folder in models.items():
        if has_branches(folder):
            curves[name] = early_exit_curve(
                name, Path(folder), texts, labels, 1, args.out, target_speedup=targets.get(name)
            )
            thresholds[name] = curves[name]["chosen_threshold"]
            print(curve_markdown(name, curves[name]))
            if "early exit int8" in args.modes:
                key = f"{name} int8"
                curves[key] = early_exit_curve(
                    key,
                    Path(folder),
                    texts,
                    labels,
                    1,
                    args.out,
                    int8=True,
                    threshold=thresholds[name],
                )
                print(curve_markdown(key, curves[key]))
        else:
            print(f"  {name}: no early-exit branches in {folder} (skipped)")

    print("[3/3] bench", file=sys.stderr)
    settings = BenchSettings(
        batch_size=args.batch_size,
        repeats=args.repeats,
        latency_texts=args.latency_texts,
        num_threads=args.threads,
        ceiling_seconds=0.5 if args.quick else 2.0,
        threshold=thresholds or None,
    )
    result = run_bench(
        models,
        args.modes,
        texts,
        labels,
        settings,
        work_dir=args.out / "onnx",
        say=lambda message: print(f"  {message}", file=sys.stderr),
    )
    best = {k: max(v.values()) for k, v in ceiling.items()}
    for row in result.rows:  # against the best ceiling of any matrix size
        ceiling_value = best["bf16" if row["mode"] == "bf16" else "fp32"]
        row["ceiling_fraction"] = row["gflops_per_s"] / ceiling_value
    print(result.table())
    for note in result.notes:
        print(f"  {note}")
    goals = goal(result)
    for item in goals:
        verdict = "MEETS" if item["meets_goal"] else "misses"
        print(
            f"  {verdict} the goal: {item['engine']} keeps {item['retention_pct']:.1f}% of the "
            f"teacher's accuracy at {item['throughput_vs_transformers_teacher']:.2f}x the "
            "teacher's transformers throughput"
        )
    result.plot(args.out / "bench.png")
    report = {
        "command": command,
        "seconds": time.perf_counter() - started,
        "machine": machine_info(),
        "matmul_ceiling_gflops": ceiling,
        "early_exit_curves": curves,
        "bench": result.to_dict(),
        "goal": {
            "retention_pct": GOAL_RETENTION_PCT,
            "speedup": GOAL_SPEEDUP,
            "rows": goals,
        },
    }
    (args.out / "deployment.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    markdown = [
        f"```bash\npython benchmarks/{command}\n```",
        "",
        result.table(markdown=True),
        "",
        *(f"- {note}" for note in result.notes),
        "- matmul ceiling (GFLOP/s, best of 512/1024/2048 cubes): "
        + ", ".join(f"{k} {v:.1f}" for k, v in best.items()),
        "",
        *(curve_markdown(name, curve) + "\n" for name, curve in curves.items()),
    ]
    (args.out / "deployment.md").write_text("\n".join(markdown) + "\n", "utf-8")
    print(f"wrote {args.out / 'deployment.json'}, {args.out / 'deployment.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
