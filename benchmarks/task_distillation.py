"""Task distillation compared: a fine-tuned teacher, a 3-layer student fine-tuned without
distillation, and the same student distilled with logit KD, TinyBERT and Patient KD.

For each task (SST-2, STS-B, CoNLL-2003, SQuAD) the script

1. fine-tunes the teacher (default: all-MiniLM-L6-v2) on the task, or takes ``--teacher``;
2. builds the student once: a cut of the *pre-trained* encoder's layers (``--layers``,
   default the uniform 3 of 6), or ``--student`` (e.g. the output of ``distilkit
   distill``), so every student row starts from the same weights;
3. fine-tunes that student on the gold labels alone (the baseline row);
4. distills the teacher into it with each method (``distilkit distill-task`` defaults);
5. scores every model on the task's dev split (SQuAD: the held-out articles of
   dev-v1.1.json) and times teacher and students on the same dev batches.

Rows give the metric, its retention against the teacher, parameters and throughput
relative to the teacher (median over interleaved rounds, one CPU process). Results go
to ``OUT/results.json`` and ``OUT/results.md``; every run folder stays under ``OUT`` (a
rerun with the same ``--out`` resumes or skips finished runs).

Usage (full data sets take hours on 2 cores; ``--subsample`` says how many training
examples each run sees, ``--eval-subsample`` how many dev examples are scored)::

    python benchmarks/task_distillation.py --tasks sst2 --subsample 2000 --eval-subsample 872
    python benchmarks/task_distillation.py --out runs/task-bench           # everything, full
    python benchmarks/task_distillation.py --tasks sst2 --subsample 64 --eval-subsample 64 \\
        --epochs 1 --teacher-epochs 1 --methods logits   # a 2-minute smoke run

``--extra NAME=FOLDER`` adds a student trained elsewhere (e.g. ``distilkit distill-task``
from a cut of the fine-tuned teacher) to the table, scored and timed like the others.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from distilkit.methods.finetune.job import FineTuneConfig, evaluate_task, run_finetune
from distilkit.methods.task.job import TaskDistillConfig, run_task_distill
from distilkit.model.checkpoint import load_model, save_model
from distilkit.model.hub import DEFAULT_MODEL, resolve
from distilkit.model.student import build_student
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import save_json
from distilkit.tasks.features import DataSettings, load_split
from distilkit.tasks.registry import TASKS, get_task
from distilkit.train.trainer import TrainingConfig

METHODS = ("logits", "tinybert", "pkd")


# ----------------------------------------------------------------------------- runs
def training(args: argparse.Namespace, learning_rate: float) -> TrainingConfig:
    return TrainingConfig(
        batch_size=args.batch_size,
        learning_rate=learning_rate,
        weight_decay=0.01,
        warmup_fraction=0.1,
        seed=args.seed,
        precision=args.precision,
        progress=not args.no_progress,
    )


def data_settings(args: argparse.Namespace, task: str) -> DataSettings:
    question_answering = get_task(task).kind == "question_answering"
    return DataSettings(
        data_root=args.data_root,
        max_len=args.qa_max_len if question_answering else args.max_len,
        doc_stride=args.doc_stride,
        train_limit=args.subsample,
        eval_limit=args.eval_subsample,
        seed=args.seed,
    )


def make_student(args: argparse.Namespace, out: Path) -> Path:
    """The shared starting point of every student row (saved once)."""
    if args.student:
        return resolve(args.student)
    folder = out / "student-init"
    if not (folder / "config.json").is_file():
        encoder_folder = resolve(args.encoder)
        pretrained = load_model(encoder_folder, head=None)
        layers = [int(i) for i in args.layers.split(",")]
        student, _ = build_student(pretrained, layers=layers)
        save_model(student, folder, tokenizer=Tokenizer.from_folder(encoder_folder))
    return folder


def throughput_ratios(
    teacher_folder: Path,
    student_folders: dict[str, Path],
    task: str,
    settings: DataSettings,
    rounds: int,
) -> dict[str, float]:
    """Teacher seconds / student seconds on the same dev batches, median over rounds."""
    teacher = load_model(teacher_folder).eval()
    tokenizer = Tokenizer.from_folder(
        teacher_folder, max_length=teacher.config.max_position_embeddings
    )
    limited = dataclasses.replace(settings, eval_limit=min(settings.eval_limit or 256, 256))
    batches = load_split(get_task(task), "dev", tokenizer, limited, limited.eval_limit).batches(32)
    models = {"teacher": teacher} | {
        name: load_model(f).eval() for name, f in student_folders.items()
    }

    def seconds(model: torch.nn.Module) -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return time.perf_counter() - started

    for model in models.values():  # warm-up (weight caches, allocator)
        seconds(model)
    ratios: dict[str, list[float]] = {name: [] for name in student_folders}
    for _ in range(rounds):
        teacher_seconds = seconds(teacher)
        for name in student_folders:
            ratios[name].append(teacher_seconds / seconds(models[name]))
    return {name: statistics.median(values) for name, values in ratios.items()}


def run_task(args: argparse.Namespace, task: str, out: Path) -> list[dict]:
    spec = get_task(task)
    settings = data_settings(args, task)
    print(f"\n=== {task} ({spec.metric}) ===", flush=True)
    if args.teacher:
        teacher_folder = resolve(args.teacher)
    else:
        config = FineTuneConfig(
            model=args.encoder,
            task=task,
            epochs=args.teacher_epochs,
            data=settings,
            training=training(args, args.teacher_lr),
        )
        run_finetune(config, out / task / "teacher")
        teacher_folder = out / task / "teacher" / "model"
    student_init = make_student(args, out)
    folders = {"teacher (fine-tuned)": teacher_folder}
    baseline = FineTuneConfig(
        model=str(student_init),
        task=task,
        epochs=args.epochs,
        data=settings,
        training=training(args, args.student_lr),
    )
    run_finetune(baseline, out / task / "student-finetuned")
    folders["student, fine-tuned (no KD)"] = out / task / "student-finetuned" / "model"
    for method in args.methods:
        config = TaskDistillConfig(
            teacher=str(teacher_folder),
            task=task,
            method=method,
            student=str(student_init),
            epochs=args.epochs,
            intermediate_epochs=args.intermediate_epochs,
            teacher_min_score=args.teacher_min_score,
            data=settings,
            training=training(args, args.student_lr),
        )
        run_task_distill(config, out / task / f"student-{method}")
        folders[f"student, {method}"] = out / task / f"student-{method}" / "student"
    for name, folder in args.extra:  # students trained elsewhere, scored and timed alike
        folders[name] = folder
    rows = []
    for name, folder in folders.items():
        metrics = evaluate_task(folder, task, "dev", settings, settings.eval_limit)
        model = load_model(folder)
        rows.append(
            {
                "task": task,
                "model": name,
                "metric": spec.metric,
                "score": metrics[spec.metric],
                "metrics": metrics,
                "layers": model.config.num_layers,
                "parameters": sum(p.numel() for p in model.parameters()),
                "folder": str(folder),
            }
        )
    teacher_score = rows[0]["score"]
    students = {row["model"]: Path(row["folder"]) for row in rows[1:]}
    speed = throughput_ratios(teacher_folder, students, task, settings, args.rounds)
    for row in rows:
        row["retention_pct"] = 100.0 * row["score"] / teacher_score
        row["throughput_vs_teacher"] = speed.get(row["model"], 1.0)
    return rows


# ----------------------------------------------------------------------------- report
def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "| task | model | layers | metric | score | retention | parameters | speed vs teacher |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['task']} | {row['model']} | {row['layers']} | {row['metric']} | "
            f"{row['score']:.4f} | {row['retention_pct']:.1f}% | {row['parameters'] / 1e6:.1f} M | "
            f"{row['throughput_vs_teacher']:.2f}x |"
        )
    command = "python benchmarks/task_distillation.py " + shlex.join(sys.argv[1:])
    notes = [
        "",
        f"Command: `{command}`",
        f"Training examples per run: {args.subsample or 'all'}; dev examples scored: "
        f"{args.eval_subsample or 'all'}. SQuAD: train and dev are an 80/20 split of "
        "dev-v1.1.json by article (no train file is at hand).",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads.",
    ]
    return "\n".join(lines + notes) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="sst2,stsb,conll2003,squad")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--encoder", default=DEFAULT_MODEL, help="pre-trained encoder")
    parser.add_argument("--teacher", help="a teacher already fine-tuned (one task only)")
    parser.add_argument("--student", help="a student folder instead of a cut of --encoder")
    parser.add_argument("--layers", default="0,3,5", help="encoder blocks the student keeps")
    parser.add_argument("--subsample", type=int, help="training examples per run (default all)")
    parser.add_argument("--eval-subsample", type=int, help="dev examples scored (default all)")
    parser.add_argument("--teacher-epochs", type=float, default=3.0)
    parser.add_argument("--epochs", type=float, default=3.0, help="student epochs (each stage)")
    parser.add_argument("--intermediate-epochs", type=float, help="TinyBERT stage 1")
    parser.add_argument("--teacher-lr", type=float, default=5e-5)
    parser.add_argument(
        "--teacher-min-score", type=float, help="lower the teacher gate's bar (smoke runs)"
    )
    parser.add_argument("--student-lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--qa-max-len", type=int, default=384)
    parser.add_argument("--doc-stride", type=int, default=128)
    parser.add_argument("--data-root")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("runs/task-distillation"))
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="a student trained elsewhere (e.g. by distill-task) for the same task, scored "
        "and timed with the others (repeatable; one task only)",
    )
    args = parser.parse_args(argv)
    args.tasks = [task for task in args.tasks.split(",") if task]
    args.methods = [method for method in args.methods.split(",") if method]
    unknown = [t for t in args.tasks if t not in TASKS] + [
        m for m in args.methods if m not in METHODS
    ]
    if unknown:
        parser.error(
            f"unknown task(s) or method(s) {unknown}: tasks {sorted(TASKS)}, methods {METHODS}"
        )
    if args.teacher and len(args.tasks) != 1:
        parser.error("--teacher is fine-tuned for one task: give exactly one --tasks")
    extra = []
    for item in args.extra:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            parser.error(f"--extra takes NAME=FOLDER, got {item!r}")
        if not (Path(folder) / "config.json").is_file():
            parser.error(f"--extra {name}: {folder} holds no model (no config.json)")
        extra.append((name, Path(folder)))
    if extra and len(args.tasks) != 1:
        parser.error("--extra students belong to one task: give exactly one --tasks")
    args.extra = extra
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    rows: list[dict] = []
    for task in args.tasks:
        rows += run_task(args, task, args.out)
        save_json({"rows": rows, "argv": sys.argv[1:]}, args.out / "results.json")
    table = markdown(rows, args)
    (args.out / "results.md").write_text(table, encoding="utf-8")
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
