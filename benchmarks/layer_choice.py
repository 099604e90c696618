"""How much of the teacher a cut keeps before any training, per choice of teacher layers.

For every subset of the teacher's layers of the student's size, prints the auto choice's
score (similarity-structure correlation on held-out corpus windows, as `distill
--strategy auto` computes it) beside the cut model's STS-B dev Spearman (mean pooling)
and its retention of the teacher's, so one can see whether the cheap score ranks cuts
the way the task does.

    python benchmarks/layer_choice.py [--teacher all-MiniLM-L6-v2] [--num-layers 3]
"""

from __future__ import annotations

import argparse
import itertools

import torch

import distilkit
from distilkit.data.corpus import CorpusSettings, build_corpus
from distilkit.encoder import Encoder
from distilkit.evaluate.sentence import stsb_spearman
from distilkit.methods.general.config import DEMO_CORPUS
from distilkit.methods.general.job import auto_sample_batches
from distilkit.model.student import build_student, rank_layer_subsets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="all-MiniLM-L6-v2")
    parser.add_argument("--num-layers", type=int, default=3)
    parser.add_argument("--sample", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    teacher = distilkit.load(args.teacher, head=None)
    corpus = build_corpus(
        [str(DEMO_CORPUS)], teacher.tokenizer, CorpusSettings(max_len=128), progress=False
    )
    _, heldout = corpus.split(0.02, seed=56)
    batches = auto_sample_batches(heldout, teacher.tokenizer, args.sample)
    scores = {s.layers: s for s in rank_layer_subsets(teacher.model, args.num_layers, batches)}
    reference = stsb_spearman(teacher)
    print(f"teacher {args.teacher}: STS-B dev Spearman {reference:.2f}")
    print(f"{'layers':<14} {'auto score r':>12} {'STS-B':>7} {'retention %':>12}")
    rows = []
    for subset in itertools.combinations(range(teacher.config.num_layers), args.num_layers):
        student, _ = build_student(teacher.model, layers=list(subset))
        spearman = stsb_spearman(Encoder(student, teacher.tokenizer))
        rows.append((subset, scores[subset].similarity_correlation, spearman))
    for subset, score, spearman in sorted(rows, key=lambda r: -r[1]):
        print(
            f"{','.join(map(str, subset)):<14} {score:>12.4f} {spearman:>7.2f} "
            f"{100 * spearman / reference:>12.1f}"
        )
    best = max(rows, key=lambda r: r[2])
    chosen = max(rows, key=lambda r: r[1])
    print(
        f"auto picks {chosen[0]} ({100 * chosen[2] / reference:.1f}% retention); "
        f"the best cut by STS-B is {best[0]} ({100 * best[2] / reference:.1f}%)"
    )


if __name__ == "__main__":
    main()
