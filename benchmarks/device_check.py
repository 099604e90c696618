"""The device check behind ``scripts/device_check.sh``: every GPU figure of issue 21 in
one run, a summary printed and a JSON written.

1. the CUDA-marked tests (``pytest -m cuda``);
2. distillation of a random BERT-base-sized teacher (12 x 768, 12 heads) into a 6-layer
   student at sequence length 128 in bf16, distilkit's trainer against the transformers
   reference loop (:mod:`distill_reference`): tokens/s, MFU and the ratio;
3. the same training under ``torchrun --nproc_per_node 1`` (DDP, nccl on a GPU);
4. a run stopped half-way and resumed by a fresh trainer against an uninterrupted one;
5. embedding throughput of the embedded all-MiniLM-L6-v2 and a 3-layer student cut from
   it, against sentence-transformers' ``encode`` on the same device at batch 256, with
   the cosine of the vectors.

``--tiny`` shrinks every size so the whole check runs on a CPU in about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distill_reference

import distilkit
from distilkit.evaluate.sentence import read_sst2
from distilkit.model.device import resolve_device, synchronize
from distilkit.model.student import build_student

ROOT = Path(__file__).resolve().parents[1]


def shapes(tiny: bool) -> argparse.Namespace:
    if tiny:
        sizes = dict(layers=2, hidden=32, heads=4, student_layers=1, seq=16, batch=4, steps=12)
    else:
        sizes = dict(
            layers=12, hidden=768, heads=12, student_layers=6, seq=128, batch=64, steps=300
        )
    return argparse.Namespace(**sizes, precision="auto", compile=False, json=None)


def cuda_tests() -> dict:
    started = time.perf_counter()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "cuda",
            "tests/train/test_device_placement.py",
            "tests/cli/test_cli_device.py",
            "tests/deploy/test_bench_device.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = (run.stdout.strip().splitlines() or [""])[-1]
    return {
        "returncode": run.returncode,
        "summary": summary,
        "seconds": time.perf_counter() - started,
    }


def torchrun_one(args: argparse.Namespace, out: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "1",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        "29533",
        str(Path(__file__)),
        "--part",
        "ddp",
        "--device",
        args.device,
        "--json",
        str(out),
    ]
    if args.tiny:
        command.append("--tiny")
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
    if run.returncode != 0:
        return {"returncode": run.returncode, "error": run.stderr[-2000:]}
    return json.loads(out.read_text(encoding="utf-8"))


def ddp_part(args: argparse.Namespace) -> None:
    """Inside torchrun: the distilkit side of the comparison, under DDP."""
    from distilkit.train import distributed

    distributed.init_from_env(args.device)
    sizes = shapes(args.tiny)
    sizes.device = args.device
    with tempfile.TemporaryDirectory() as temp:
        teacher, student, tokenizer = distill_reference.make_models(sizes, Path(temp))
        result = distill_reference.run_distilkit(
            sizes, teacher, student, tokenizer, distill_reference.batches(sizes), Path(temp) / "run"
        )
    counts = result["counts"]
    payload = {
        "backend": torch.distributed.get_backend(),
        "world_size": distributed.world_size(),
        "tokens_per_s": counts["tokens_per_s"],
        "precision": result["precision"],
    }
    if distributed.rank() == 0:
        Path(args.json).write_text(json.dumps(payload), encoding="utf-8")
    torch.distributed.destroy_process_group()


def stop_and_resume(args: argparse.Namespace) -> dict:
    """An uninterrupted run against one stopped half-way and resumed by a fresh trainer
    (the tiny test model of the test suite, on the device)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from distill_helpers import (
        RunSettings,
        make_trainer,
        max_difference,
        student_state,
        tiny_tokenizer,
    )

    settings = RunSettings(training={"device": args.device, "max_steps": 8, "checkpoint_every": 4})
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        tokenizer = tiny_tokenizer(root / "vocab")
        full = make_trainer(root / "full", tokenizer, settings)
        full.run()
        make_trainer(root / "half", tokenizer, settings).run(stop_after_steps=4)
        resumed = make_trainer(root / "half", tokenizer, settings)
        resumed.run()
        difference = max_difference(student_state(full), student_state(resumed))
    return {"max_weight_difference": difference, "equal": difference == 0.0}


def embedding(args: argparse.Namespace) -> dict:
    """distilkit ``embed`` against sentence-transformers ``encode`` on the same device."""
    from sentence_transformers import SentenceTransformer

    device = resolve_device(args.device)
    texts, _ = read_sst2()
    texts = list(texts)[: 64 if args.tiny else 872]
    batch = 16 if args.tiny else 256
    rows = {}
    with tempfile.TemporaryDirectory() as temp:
        teacher = distilkit.load("all-MiniLM-L6-v2", device="cpu")
        student_folder = Path(temp) / "student"
        cut, _ = build_student(teacher.model, layers=[0, 2, 4])
        distilkit.Encoder(cut, teacher.tokenizer, sentence=teacher.sentence).save(student_folder)
        for name, folder in (("teacher", teacher.folder), ("student-3", student_folder)):
            ours = distilkit.load(folder, device=str(device))
            theirs = SentenceTransformer(str(folder), device=str(device))
            timings = {}
            for label, encode in (
                ("distilkit", lambda m=ours: m.embed(texts, batch_size=batch)),
                ("sentence_transformers", lambda m=theirs: m.encode(texts, batch_size=batch)),
            ):
                encode()  # warm-up
                synchronize(device)
                start = time.perf_counter()
                vectors = encode()
                synchronize(device)
                timings[label] = (len(texts) / (time.perf_counter() - start), np.asarray(vectors))
            a, b = timings["distilkit"][1], timings["sentence_transformers"][1]
            cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            rows[name] = {
                "distilkit_texts_per_s": timings["distilkit"][0],
                "st_texts_per_s": timings["sentence_transformers"][0],
                "ratio": timings["distilkit"][0] / timings["sentence_transformers"][0],
                "min_cosine": float(cosine.min()),
            }
    return {"batch_size": batch, "texts": len(texts), "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description="issue 21's device check")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (a CPU smoke run)")
    parser.add_argument("--json", default="device_check.json")
    parser.add_argument("--part", default="all", choices=("all", "ddp"))
    args = parser.parse_args()
    if args.part == "ddp":
        ddp_part(args)
        return 0
    started = time.perf_counter()
    device = resolve_device(args.device)
    report: dict = {
        "device": str(device),
        "tiny": args.tiny,
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        report["device_name"] = torch.cuda.get_device_name(device)
    steps = [
        ("cuda_tests", cuda_tests),
        (
            "distillation",
            lambda: distill_reference.compare(
                argparse.Namespace(**vars(shapes(args.tiny)), device=args.device)
            ),
        ),
        ("torchrun_1", lambda: torchrun_one(args, Path(args.json).with_suffix(".ddp.json"))),
        ("stop_and_resume", lambda: stop_and_resume(args)),
        ("embedding", lambda: embedding(args)),
    ]
    for name, part in steps:
        part_start = time.perf_counter()
        try:
            report[name] = part()
        except Exception as error:  # a failed part is reported; the others still run
            report[name] = {"error": f"{type(error).__name__}: {error}"}
        report[name]["seconds"] = time.perf_counter() - part_start
        print(f"[{time.perf_counter() - started:6.0f}s] {name}: done", flush=True)
    report["seconds"] = time.perf_counter() - started
    Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(summary(report))
    failed = [k for k, v in report.items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


def summary(report: dict) -> str:
    lines = [
        f"device check on {report.get('device_name', report['device'])} "
        f"({'tiny' if report['tiny'] else 'full'} sizes), {report['seconds']:.0f}s"
    ]
    lines.append(f"  CUDA tests: {report['cuda_tests'].get('summary', report['cuda_tests'])}")
    distill = report["distillation"]
    if "rows" in distill:
        for name, row in distill["rows"].items():
            lines.append(
                f"  distill {name:>12}: {row['tokens_per_s']:,.0f} tokens/s, "
                f"MFU {100 * row['mfu']:.1f}%"
            )
        lines.append(
            f"  distilkit / transformers: {distill['speedup_vs_transformers']:.2f}x "
            f"({distill['precision']})"
        )
    else:
        lines.append(f"  distill: {distill}")
    ddp = report["torchrun_1"]
    lines.append(
        f"  torchrun x1: {ddp.get('tokens_per_s', 0):,.0f} tokens/s "
        f"({ddp.get('backend', ddp.get('error', '?'))})"
    )
    resume = report["stop_and_resume"]
    lines.append(
        f"  stop + resume = uninterrupted: {resume.get('equal')} "
        f"(max difference {resume.get('max_weight_difference')})"
    )
    for name, row in report["embedding"].get("rows", {}).items():
        lines.append(
            f"  embed {name}: {row['ratio']:.2f}x sentence-transformers, "
            f"min cosine {row['min_cosine']:.5f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
