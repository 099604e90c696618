"""Static students beside model2vec, from the same teacher, scored on the same sentences.

model2vec (``pip install model2vec skeletoken``; nothing is downloaded: its
``distill_from_model`` runs on the embedded teacher folder, loaded by ``transformers``)
distills the teacher at ``--dims`` (or ``--model2vec-folder`` reuses one it distilled
before; ``--no-model2vec`` leaves it out); distilkit's ``distill-static`` builds its
student with the same dims (``--untrained``: as built, and trained on ``--train-corpus``
when given; or pass folders already built with ``--ours``). Both builds are run folders
of ``--work``: teacher vectors of the vocabulary found in an interrupted build there
(``.work/entries.npy``) are reused. All are scored with the main job's protocol
(``evaluate_side_by_side``: STS-B dev Spearman, SST-2 probe, throughput timed in turns
in this process) beside the teacher. model2vec's folder is read by distilkit's
StaticEncoder (the same numpy averaging as ours), after checking that its vectors match
model2vec's own ``encode``.

    python benchmarks/static_students.py --dims 256 --train-corpus distilkit/resources/corpus
    python benchmarks/static_students.py --dims 256 --untrained --train-corpus \
        distilkit/resources/corpus --train-sentences 10000 --model2vec-folder m2v-256
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from distilkit.encoder import load
from distilkit.evaluate.sentence import default_throughput_texts, evaluate_side_by_side
from distilkit.methods.static import Config, run
from distilkit.model.hub import resolve


def model2vec_student(teacher: str, dims: int, out: Path) -> tuple[Path, float]:
    """model2vec's distillation of ``teacher`` at ``dims``, saved to ``out``; (folder, seconds)."""
    from model2vec.distill import distill_from_model
    from transformers import AutoModel, AutoTokenizer

    folder = resolve(teacher)
    start = time.perf_counter()
    model = AutoModel.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    static = distill_from_model(
        model, tokenizer, pca_dims=dims, device="cpu", quantize_to="float32"
    )
    seconds = time.perf_counter() - start
    static.save_pretrained(out)
    texts = default_throughput_texts(200)
    theirs = static.encode(texts)
    ours = load(out).embed(texts)
    cosine = (theirs * ours).sum(1) / np.linalg.norm(theirs, axis=1) / np.linalg.norm(ours, axis=1)
    print(
        f"model2vec distilled in {seconds:.0f} s; distilkit reads its folder with "
        f"min cosine {cosine.min():.6f} to model2vec's own encode on {len(texts)} sentences"
    )
    return out, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="all-MiniLM-L6-v2")
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--train-corpus", nargs="*", default=[])
    parser.add_argument("--train-sentences", type=int, default=20000)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--untrained", action="store_true", help="build ours untrained too")
    parser.add_argument("--ours", nargs="*", default=[], help="static folders already built")
    parser.add_argument("--model2vec-folder", help="a model2vec student distilled before")
    parser.add_argument("--no-model2vec", action="store_true", help="leave model2vec out")
    parser.add_argument("--work", default="runs/static-bench")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    encoders = {args.teacher: load(args.teacher, head=None)}
    for folder in args.ours:
        encoders[f"distilkit static {Path(folder).name}"] = load(folder)
    builds = {"untrained": [] if args.untrained else None, "trained": args.train_corpus or None}
    for name, corpus in builds.items():
        if corpus is None:
            continue
        config = Config(
            teacher=args.teacher,
            dims=args.dims,
            train_corpus=corpus,
            train_sentences=args.train_sentences,
            lr=args.lr,
            evaluate=False,
        )
        folder = work / (
            f"ours-{args.dims}" if name == "untrained" else f"ours-trained-{args.dims}"
        )
        start = time.perf_counter()
        metrics = run(config, folder)
        print(f"distill-static ({name}) built in {time.perf_counter() - start:.0f} s")
        for epoch in metrics["train_log"]:
            print(f"  epoch {epoch['epoch']}: train loss {epoch['train_loss']:.4f}, "
                  f"held-out {epoch['heldout_loss']:.4f}")  # fmt: skip
        encoders[f"distilkit static {name} {args.dims}"] = load(folder)
    if args.model2vec_folder:
        encoders[f"model2vec {args.dims}"] = load(args.model2vec_folder)
    elif not args.no_model2vec:
        folder, _ = model2vec_student(args.teacher, args.dims, work / f"model2vec-{args.dims}")
        encoders[f"model2vec {args.dims}"] = load(folder)
    rows = evaluate_side_by_side(encoders)
    teacher = rows[0]
    print("| model | dims | STS-B dev Spearman | SST-2 probe % | sentences/s | x teacher |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['name']} | {row['hidden_size']} | {row['stsb_spearman']:.2f} | "
            f"{row['sst2_probe_accuracy']:.2f} | {row['sentences_per_s']:,.0f} | "
            f"{row['sentences_per_s'] / teacher['sentences_per_s']:.1f} |"
        )
    print(f"threads {rows[0]['num_threads']}, load average {rows[0]['load_average_1min']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str) + "\n", "utf-8")


if __name__ == "__main__":
    main()
