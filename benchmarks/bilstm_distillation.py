"""BiLSTM distillation (Tang et al., 2019) and multi-teacher distillation, end to end.

Runs the comparison of issue 5 and prints one Markdown table per part:

1. SST-2 dev (and STS-B dev with ``--stsb-teacher``): a BiLSTM student trained on gold
   labels only, on the teacher's logits, and on the teacher's logits over the augmented
   transfer set; dev metric, retention of the teacher's, parameters, and CPU throughput
   against the teacher (sentences/s over the dev set, text in -> logits out,
   tokenization included; both get the same length-sorted batches; timed in
   interleaved rounds, the ratio is the median of per-round ratios).
2. With ``--ensemble T1 T2 ...`` (SST-2 teachers, e.g. one model fine-tuned with
   different seeds): a BiLSTM student distilled from each teacher alone, one distilled
   from all of them (averaged probabilities), each teacher and the teachers' ensemble.

Every run keeps its folder under ``--out``; a run whose ``metrics.json`` exists is
reused, so an interrupted benchmark continues where it stopped, and teacher logits are
cached in ``<out>/teacher_cache`` (each teacher labels each transfer set once).

Teachers are fine-tuned checkpoint folders, for example::

    distilkit finetune all-MiniLM-L6-v2 --task sst2 --seed 1 --out runs/sst2-s1
    # the teacher is then runs/sst2-s1/model

Usage::

    python benchmarks/bilstm_distillation.py --teacher runs/sst2-s1/model \\
        --ensemble runs/sst2-s1/model runs/sst2-s2/model runs/sst2-s3/model \\
        --stsb-teacher runs/stsb-s1/model --out runs/bench-bilstm
    python benchmarks/bilstm_distillation.py --teacher runs/sst2-s1/model --subsample 2000 \\
        --max-steps 600 --out runs/bench-bilstm-small          # a quicker, smaller run
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from distilkit.encoder import load
from distilkit.methods.bilstm.job import BiLSTMDistillConfig, run_bilstm_distillation
from distilkit.methods.multi_teacher.job import MultiTeacherConfig, run_multi_teacher_distillation
from distilkit.model.bilstm import load_bilstm
from distilkit.settings import save_json, to_dict
from distilkit.tasks.registry import get_task
from distilkit.train.logit_distillation import BiLSTMSettings
from distilkit.train.trainer import TrainingConfig

VARIANTS = {  # name -> (targets, augment)
    "labels only": ("labels", False),
    "teacher logits": ("logits", False),
    "teacher logits, augmented": ("logits", True),
}
GOAL_RETENTION = 0.90
GOAL_SPEEDUP = 20.0


def training(args: argparse.Namespace) -> TrainingConfig:
    every = max(50, args.max_steps // 5)  # checkpoints hold the embeddings and their Adam state
    return TrainingConfig(
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_fraction=0.02,
        eval_every=every,
        checkpoint_every=every,
        log_every=50,
        seed=args.seed,
        progress=not args.no_progress,
    )


def _differences(saved: Any, wanted: Any, prefix: str = "") -> list[str]:
    """``key: saved -> wanted`` for every leaf where two nested dicts disagree."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        keys = sorted(set(saved) | set(wanted))
        return [d for k in keys for d in _differences(saved.get(k), wanted.get(k), f"{prefix}{k}.")]
    return [] if saved == wanted else [f"{prefix.rstrip('.')}: {saved!r} -> {wanted!r}"]


def run_once(folder: Path, run: Callable[[Any, Path], dict], config: Any) -> dict:
    """``run(config, folder)``'s metrics: read back when it finished before, else run it.
    A reused run whose saved settings differ from ``config`` says how (the table then
    mixes settings; delete the folder to retrain)."""
    path = folder / "metrics.json"
    if path.is_file():
        print(f"reusing {folder} (delete it to run again)", flush=True)
        wanted = json.loads(json.dumps(to_dict(config), default=str))
        for saved_path in folder.glob("*_config.json"):
            changes = _differences(json.loads(saved_path.read_text("utf-8")), wanted)
            ignored = ("training.progress",)
            changes = [c for c in changes if not c.startswith(ignored)]
            if changes:
                print(
                    f"  note: that run's settings differ from this command's "
                    f"({saved_path.name}: saved -> asked): " + "; ".join(changes),
                    flush=True,
                )
        return json.loads(path.read_text("utf-8"))
    return run(config, folder)


# ----------------------------------------------------------------------------- throughput
def sentences_per_second(
    engines: dict[str, Callable[[], None]], count: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Median sentences/s of each engine over interleaved rounds (who goes first rotates),
    and each engine's median per-round speed ratio to the first engine."""
    names = list(engines)
    for name in names:  # warm-up: first-call allocations, oneDNN weight packing
        engines[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            started = time.perf_counter()
            engines[name]()
            seconds[name].append(time.perf_counter() - started)
    reference = seconds[names[0]]
    return {
        name: {
            "sentences_per_s": count / statistics.median(seconds[name]),
            "speedup": statistics.median(
                r / s for r, s in zip(reference, seconds[name], strict=True)
            ),
        }
        for name in names
    }


def measure_speed(teacher: str, student_folder: str, args: argparse.Namespace, task: str) -> dict:
    dev = get_task(task).load("dev", args.data_root)
    # the same length-sorted order for both, so both read the same well-packed batches
    dev = sorted(dev, key=lambda example: len(example.text) + len(example.text_pair or ""))
    texts = [example.text for example in dev]
    pairs = [example.text_pair for example in dev] if dev[0].text_pair is not None else None
    teacher_model, student = load(teacher), load_bilstm(student_folder)
    batch = args.speed_batch_size
    return sentences_per_second(
        {
            "teacher": lambda: teacher_model.logits(texts, pairs, batch_size=batch),
            "student": lambda: student.predict_logits(texts, pairs, batch_size=batch),
        },
        len(texts),
        args.rounds,
    )


# ----------------------------------------------------------------------------- part 1
def bilstm_comparison(task: str, teacher: str, args: argparse.Namespace) -> dict:
    results = {}
    for name, (targets, augment) in VARIANTS.items():
        folder = args.out / task / name.replace(",", "").replace(" ", "-")
        config = BiLSTMDistillConfig(
            teacher=teacher,
            task=task,
            targets=targets,
            augment=augment,
            subsample=args.subsample,
            data_root=args.data_root,
            cache_dir=str(args.out / "teacher_cache"),
            student=BiLSTMSettings(hidden_size=args.hidden_size, mlp_size=args.mlp_size),
            training=training(args),
        )
        print(f"\n== {task}: BiLSTM on {name} -> {folder}", flush=True)
        results[name] = run_once(folder, run_bilstm_distillation, config)
    best = results["teacher logits, augmented"]
    speed = measure_speed(teacher, best["student"]["folder"], args, task)
    teacher_model = load(teacher).model
    total = sum(p.numel() for p in teacher_model.parameters())
    embedding = teacher_model.backbone.embeddings.word_embeddings.weight.numel()
    return {
        "runs": results,
        "speed": speed,
        "teacher_parameters": {"total": total, "non_embedding": total - embedding},
    }


def comparison_table(task: str, part: dict) -> str:
    runs, speed = part["runs"], part["speed"]
    first = next(iter(runs.values()))
    metric = first["metric"]
    teacher_score = first["teacher"]["dev"][metric]
    teacher_params = part["teacher_parameters"]
    lines = [
        f"### {task} dev {metric} ({first['train_examples']:,} training examples)",
        "",
        f"| model | transfer set | dev {metric} | % of teacher | parameters (non-embedding) "
        "| sentences/s | speed vs teacher |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| teacher ({Path(first['teacher']['folder']).name}) | - | {teacher_score:.4f} | 100.0 "
        f"| {teacher_params['total']:,} ({teacher_params['non_embedding']:,}) "
        f"| {speed['teacher']['sentences_per_s']:,.0f} | 1.0x |",
    ]
    for name, result in runs.items():
        score = result["student"]["dev"][metric]
        params = result["student"]["parameters"]
        speed_cells = "| - | - |"
        if name == "teacher logits, augmented":
            student = speed["student"]
            speed_cells = f"| {student['sentences_per_s']:,.0f} | {student['speedup']:.1f}x |"
        lines.append(
            f"| BiLSTM, {name} | {result['transfer_set']:,} | {score:.4f} | "
            f"{100 * score / teacher_score:.1f} | "
            f"{params['total']:,} ({params['non_embedding']:,}) {speed_cells}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- part 2
def multi_teacher_comparison(args: argparse.Namespace) -> dict:
    def config(teachers: list[str]) -> MultiTeacherConfig:
        return MultiTeacherConfig(
            teachers={"sst2": teachers},
            combine=args.combine,
            loss=args.loss,
            augment=not args.no_augment_multi,
            subsample=args.subsample,
            data_root=args.data_root,
            cache_dir=str(args.out / "teacher_cache"),
            bilstm=BiLSTMSettings(hidden_size=args.hidden_size, mlp_size=args.mlp_size),
            training=training(args),
        )

    singles = {}
    for index, teacher in enumerate(args.ensemble):
        folder = args.out / "multi" / f"single-{index}"
        print(f"\n== SST-2: BiLSTM from teacher {teacher} alone -> {folder}", flush=True)
        singles[teacher] = run_once(folder, run_multi_teacher_distillation, config([teacher]))
    folder = args.out / "multi" / "all"
    print(f"\n== SST-2: BiLSTM from all {len(args.ensemble)} teachers -> {folder}", flush=True)
    combined = run_once(folder, run_multi_teacher_distillation, config(list(args.ensemble)))
    return {"singles": singles, "multi": combined}


def multi_table(part: dict) -> str:
    task = part["multi"]["tasks"]["sst2"]
    metric = task["metric"]
    lines = [
        f"### SST-2 dev {metric}: multi-teacher vs single-teacher students",
        "",
        f"| model | dev {metric} |",
        "|---|---:|",
    ]
    for teacher in task["teachers"]:
        lines.append(f"| teacher {teacher['folder']} | {teacher['dev'][metric]:.4f} |")
    lines.append(
        f"| teachers' ensemble ({task['ensemble']['combine']}) | "
        f"{task['ensemble']['dev'][metric]:.4f} |"
    )
    for teacher, result in part["singles"].items():
        score = result["tasks"]["sst2"]["student"]["dev"][metric]
        lines.append(f"| BiLSTM from {teacher} alone | {score:.4f} |")
    lines.append(f"| BiLSTM from all teachers | {task['student']['dev'][metric]:.4f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="a checkpoint fine-tuned on SST-2")
    parser.add_argument("--stsb-teacher", help="a checkpoint fine-tuned on STS-B (pair variant)")
    parser.add_argument("--ensemble", nargs="+", help="SST-2 teachers for the multi-teacher part")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-bilstm"))
    parser.add_argument("--data-root", help="folder holding sst2/ and stsb/")
    parser.add_argument("--subsample", type=int, help="training examples per task (all)")
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=56)
    parser.add_argument("--hidden-size", type=int, default=150)
    parser.add_argument("--mlp-size", type=int, default=200)
    parser.add_argument("--combine", choices=("probs", "logits"), default="probs")
    parser.add_argument("--loss", choices=("kl", "mse"), default="kl")
    parser.add_argument(
        "--no-augment-multi", action="store_true", help="multi-teacher part on the originals"
    )
    parser.add_argument("--speed-batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "command": " ".join(sys.argv),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"torch threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }
    tables = []
    tasks = [("sst2", args.teacher)] + ([("stsb", args.stsb_teacher)] if args.stsb_teacher else [])
    for task, teacher in tasks:
        results[task] = bilstm_comparison(task, teacher, args)
        tables.append(comparison_table(task, results[task]))
    sst2 = results["sst2"]
    best = sst2["runs"]["teacher logits, augmented"]
    retention = best["student"]["dev"]["accuracy"] / best["teacher"]["dev"]["accuracy"]
    speedup = sst2["speed"]["student"]["speedup"]
    results["goals"] = {
        "sst2_retention": retention,
        "sst2_speedup": speedup,
        "retention_met": retention >= GOAL_RETENTION,
        "speedup_met": speedup >= GOAL_SPEEDUP,
    }
    if args.ensemble:
        results["multi_teacher"] = multi = multi_teacher_comparison(args)
        tables.append(multi_table(multi))
        best_single = max(
            r["tasks"]["sst2"]["student"]["dev"]["accuracy"] for r in multi["singles"].values()
        )
        multi_score = multi["multi"]["tasks"]["sst2"]["student"]["dev"]["accuracy"]
        results["goals"]["multi_beats_best_single"] = multi_score > best_single
    goals = results["goals"]
    summary = (
        f"Goal: augmented BiLSTM keeps {100 * retention:.1f}% of the teacher's SST-2 dev "
        f"accuracy (goal >= {100 * GOAL_RETENTION:.0f}%: "
        f"{'met' if goals['retention_met'] else 'NOT met'}) at {speedup:.1f}x its throughput "
        f"(goal >= {GOAL_SPEEDUP:.0f}x: {'met' if goals['speedup_met'] else 'NOT met'})"
    )
    if "multi_beats_best_single" in goals:
        summary += (
            "; multi-teacher student beats the best single-teacher student: "
            f"{'yes' if goals['multi_beats_best_single'] else 'NO'}"
        )
    report = "\n\n".join([*tables, summary + "."]) + "\n"
    print("\n" + report)
    (args.out / "results.md").write_text(report, "utf-8")
    save_json(results, args.out / "results.json")
    print(f"wrote {args.out / 'results.md'} and {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
