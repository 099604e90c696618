"""General distillation ablation, as in the DistilBERT paper: each loss term removed,
teacher-layer init against random init, and with and without a fitted masked-LM head.

Every variant trains the same student depth for the same number of steps on the same
corpus and batches, then scores its mean-pooled embeddings: STS-B dev Spearman and the
SST-2 dev probe (the main job's protocol), with retention against the original teacher.
A row "cut, no training" shows where every teacher-initialised student starts. Two more
rows on the headless teacher: the corpus as 128-token packed paragraphs (DistilBERT's
reading, the default before sentence units) and the sentence-vector losses added.

    python benchmarks/distill_ablation.py --steps 100 --threads 1 --out runs/ablation
    python benchmarks/distill_ablation.py --mlm-teacher runs/mlm-head/teacher ...  # + rows
        # that distill from the teacher with a fitted head (the full triple loss)

Variants run one after the other; a rerun with the same ``--out`` skips finished ones
(results are appended to ``OUT/results.jsonl``) and prints the whole table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from distilkit.encoder import Encoder, load
from distilkit.evaluate.sentence import sst2_probe_accuracy, stsb_spearman
from distilkit.methods.general.config import DistillConfig
from distilkit.methods.general.job import run_distillation
from distilkit.methods.general.objectives import DistillationWeights
from distilkit.model.checkpoint import load_model
from distilkit.model.hub import DEFAULT_MODEL, resolve
from distilkit.model.student import build_student
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import from_dict

ZERO = {field.name: 0.0 for field in dataclasses.fields(DistillationWeights)}


def variants(mlm_teacher: str | None) -> dict[str, dict]:
    """name -> overrides of one run. The embedded teacher has no masked-LM head, so only
    the hidden-state cosine applies to it; with a fitted head, DistilBERT's three terms
    (ce 5, mlm 2, cos 1) are ablated one at a time, as in the paper's table."""
    cosine = {**ZERO, "cos": 1.0}
    rows: dict[str, dict] = {
        "teacher without MLM head: cos": {"weights": cosine},
        "teacher without MLM head: cos, random init": {
            "weights": cosine,
            "student_init": "random",
        },
        # the corpus as DistilBERT reads it: 128-token packed paragraphs, batch 32
        "teacher without MLM head: cos, packed paragraphs": {
            "weights": cosine,
            "config": {"corpus_unit": "paragraph", "pack": True},
            "training": {"batch_size": 32},
        },
        "teacher without MLM head: cos + sentence + similarity x10": {
            "weights": {**cosine, "sentence": 1.0, "similarity": 10.0},
        },
    }
    if mlm_teacher:
        triple = {**ZERO, "ce": 5.0, "mlm": 2.0, "cos": 1.0}
        rows["fitted-head teacher: ce+mlm+cos"] = {"weights": triple, "teacher": mlm_teacher}
        for term in ("ce", "mlm", "cos"):
            rows[f"fitted-head teacher: without {term}"] = {
                "weights": {**triple, term: 0.0},
                "teacher": mlm_teacher,
            }
        rows["fitted-head teacher: ce+mlm+cos, random init"] = {
            "weights": triple,
            "teacher": mlm_teacher,
            "student_init": "random",
        }
    return rows


def score(encoder: Encoder) -> dict[str, float]:
    return {"stsb": stsb_spearman(encoder), "sst2_probe": sst2_probe_accuracy(encoder)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=DEFAULT_MODEL)
    parser.add_argument("--mlm-teacher", help="output of `distilkit fit-mlm-head` (its teacher/)")
    parser.add_argument("--corpus", nargs="+", help="default: the demo corpus")
    parser.add_argument("--num-layers", type=int, default=3)
    parser.add_argument("--layers", default="0,4,5", help="teacher layers of the init")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, help="default: the main job's")
    parser.add_argument("--only", nargs="+", help="run only these variant names")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.jsonl"
    done = {}
    if results_path.exists():
        done = {r["name"]: r for r in map(json.loads, results_path.read_text().splitlines())}
    layers = [int(x) for x in args.layers.split(",")]
    defaults = DistillConfig()

    def record(row: dict) -> None:
        done[row["name"]] = row
        with results_path.open("a") as stream:
            stream.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    if "teacher" not in done:
        record({"name": "teacher", **score(load(args.teacher, head=None))})
    references = {"teacher without MLM head": args.teacher}
    if args.mlm_teacher:
        references["fitted-head teacher"] = args.mlm_teacher
    for label, teacher in references.items():
        if label != "teacher without MLM head" and f"{label} itself" not in done:
            record({"name": f"{label} itself", **score(load(teacher, head=None))})
        if f"{label}: cut, no training" not in done:
            folder = resolve(teacher)
            student, _ = build_student(load_model(folder, head=None), layers=layers)
            encoder = Encoder(student, Tokenizer.from_folder(folder))
            record({"name": f"{label}: cut, no training", **score(encoder)})

    for name, change in variants(args.mlm_teacher).items():
        if name in done or (args.only and name not in args.only):
            continue
        slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
        training = {
            **vars(defaults.training),
            "max_steps": args.steps,
            "time_budget": None,
            "progress": False,
            "eval_every": 10**9,
            "checkpoint_every": 10**9,
        }
        if args.lr:
            training["learning_rate"] = args.lr
        training.update(change.get("training", {}))
        data = {
            "teacher": change.get("teacher", args.teacher),
            "num_layers": args.num_layers,
            "layers": layers if change.get("student_init") != "random" else None,
            "student_init": change.get("student_init", "teacher"),
            "objective": {"weights": change["weights"]},
            "training": training,
            **change.get("config", {}),
        }
        if args.corpus:
            data["corpus"] = args.corpus
        config = from_dict(DistillConfig, data)
        started = time.perf_counter()
        metrics = run_distillation(config, args.out / slug, resume=True, evaluate=False)
        row = {
            "name": name,
            **score(load(args.out / slug / "student", head=None)),
            "steps": metrics["training"]["steps"],
            "seconds": time.perf_counter() - started,
            "weights": {k: v for k, v in change["weights"].items() if v},
            "teacher": data["teacher"],
        }
        record(row)

    reference = done["teacher"]
    print(f"\n{args.steps} steps each, student of {args.num_layers} layers (init {layers})\n")
    print("| variant | STS-B dev Spearman | retention % | SST-2 probe % | retention % |")
    print("|:---|---:|---:|---:|---:|")
    for row in done.values():
        print(
            f"| {row['name']} | {row['stsb']:.2f} | {100 * row['stsb'] / reference['stsb']:.1f} "
            f"| {row['sst2_probe']:.2f} | {100 * row['sst2_probe'] / reference['sst2_probe']:.1f} |"
        )


if __name__ == "__main__":
    main()
