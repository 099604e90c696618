"""C-MLM on SQuAD question generation (or, with ``--task multi30k-de-en``, Multi30k
German -> English translation): the student with the teacher (alpha) and without
(alpha = 0), same data, steps and seeds; prints BLEU / ROUGE-L per run and mean +- std.

    PYTHONPATH=. python benchmarks/cmlm_qg.py --out runs/cmlm-qg --seeds 1 2 3

The C-MLM teacher is fine-tuned once (in OUT/teacher) and its top-k cache shared by the
distilled runs. The defaults are sized for a 2-core CPU (about half an hour). A finished
run (OUT/alpha<A>-seed<S>/metrics.json) is reused, so the same command resumes a long
experiment and, once every run is done, only prints the summary; ``--alphas`` splits one
experiment over processes (e.g. ``--alphas 0.5`` and ``--alphas 0`` side by side, one
thread each; the baseline needs no teacher). ``--copy`` gives both arms the pointer-generator
output (``distill-cmlm``'s default); without it they are the paper's plain students, as
in the runs recorded before it existed.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from collections import Counter
from pathlib import Path

from distilkit.methods.cmlm.job import CMLMConfig, run
from distilkit.methods.cmlm.metrics import generation_metrics
from distilkit.settings import to_dict

# word pieces kept of source and target, and the decoding limit, per task: a SQuAD question
# is short and its source is cut around the answer; a Multi30k caption is about 13 English
# words, and its German side takes more of the teacher's English word pieces
LENGTHS = {"squad-qg": (32, 16, 18), "multi30k-de-en": (48, 32, 34)}


def config(args: argparse.Namespace, alpha: float, seed: int) -> CMLMConfig:
    source_length, target_length, decode_length = LENGTHS[args.task]
    return CMLMConfig(
        task=args.task,
        alpha=alpha,
        top_k=8,
        max_source_length=source_length,
        max_target_length=target_length,
        max_train_pairs=args.train_pairs or None,
        max_eval_pairs=args.eval_pairs,
        teacher_dir=str(args.out / "teacher"),
        teacher_train_layers=args.teacher_layers,
        teacher_training={
            "max_steps": args.teacher_steps,
            "batch_size": args.teacher_batch_size,
            "learning_rate": args.teacher_lr,
            "eval_every": 10_000,
            "checkpoint_every": 10_000,
            "progress": False,
            "seed": 0,
        },
        student={
            "encoder_layers": 2,
            "decoder_layers": 2,
            "decoder_intermediate_size": 768,
            "copy_source": args.copy,
        },
        training={
            "max_steps": args.steps,
            "batch_size": args.batch_size,
            "learning_rate": 1e-3,
            "eval_every": 10_000,
            "checkpoint_every": args.checkpoint_every,
            "progress": False,
            "seed": seed,
        },
        beam_size=4,
        length_penalty=1.0,
        max_decode_length=decode_length,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/cmlm-qg"))
    parser.add_argument("--task", choices=sorted(LENGTHS), default="squad-qg")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--alphas", type=float, nargs="+", default=[0.5, 0.0], help="0 is the baseline"
    )
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=16, help="student batch size")
    parser.add_argument("--teacher-steps", type=int, default=120)
    parser.add_argument("--teacher-layers", type=int, default=2, help="top blocks fine-tuned")
    parser.add_argument("--teacher-lr", type=float, default=5e-4)
    parser.add_argument("--teacher-batch-size", type=int, default=24)
    parser.add_argument("--train-pairs", type=int, default=1500, help="0: all")
    parser.add_argument("--eval-pairs", type=int, default=200)
    parser.add_argument(
        "--copy", action="store_true", help="students copy source tokens (pointer-generator)"
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=10_000,
        help="student steps between checkpoints (an interrupted student resumes from the last)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    results: dict[float, list[dict]] = {alpha: [] for alpha in args.alphas}
    for seed in args.seeds:
        for alpha in args.alphas:
            folder = args.out / f"alpha{alpha:g}-seed{seed}"
            settings = config(args, alpha, seed)
            if (folder / "metrics.json").is_file():
                saved = json.loads((folder / "run_config.json").read_text())["cmlm"]
                if saved != json.loads(json.dumps(to_dict(settings))):
                    raise SystemExit(f"{folder} was run with other settings: give another --out")
                metrics = json.loads((folder / "metrics.json").read_text())
                print(f"reusing {folder / 'metrics.json'}", flush=True)
            else:
                metrics = run(settings, folder)
            results[alpha].append(metrics)
            print(
                json.dumps(
                    {k: metrics[k] for k in ("alpha", "seed", "bleu", "rouge_l", "train_seconds")}
                ),
                flush=True,
            )
    teacher = next((runs[0]["teacher"] for runs in results.values() if runs[0]["teacher"]), None)
    if teacher is not None:
        print(
            f"C-MLM teacher held-out masked-token accuracy (sweep of 2): "
            f"{teacher['before']['cmlm_accuracy']:.2%} before, "
            f"{teacher['after']['cmlm_accuracy']:.2%} after {teacher['steps']} steps"
        )
    for alpha, runs in results.items():
        for name in ("bleu", "rouge_l"):
            values = [r[name] for r in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            print(
                f"alpha={alpha:g} {name}: mean {statistics.mean(values):.2f} "
                f"std {spread:.2f} min {min(values):.2f} max {max(values):.2f} "
                f"({', '.join(f'{v:.2f}' for v in values)})"
            )
    for alpha in results:  # the floor: a student that ignores its source scores about this
        folder = args.out / f"alpha{alpha:g}-seed{args.seeds[0]}"
        with (folder / "predictions.tsv").open(encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))
        constant, count = Counter(row["prediction"] for row in rows).most_common(1)[0]
        floor = generation_metrics([constant] * len(rows), [row["reference"] for row in rows])
        print(
            f"alpha={alpha:g} seed {args.seeds[0]}'s most frequent prediction ({count} of "
            f"{len(rows)}) {constant!r}, given for every pair: BLEU {floor['bleu']:.2f} "
            f"ROUGE-L {floor['rouge_l']:.2f}"
        )
    print(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
