"""How closely students reproduce the teacher's sentence vectors on STS-B dev sentences.

A diagnostic for general distillation: a student's STS-B dev Spearman can only reach
the teacher's if its sentence vectors rank the pairs as the teacher's do. For each model
folder this prints the mean cosine between its mean-pooled vectors and the teacher's
(over the 3,000 dev sentences), the Spearman x100 between its pair cosines and the
teacher's, and its own STS-B Spearman against the gold scores.

    python benchmarks/teacher_agreement.py runs/cut-045 runs/long-gutenberg/student
"""

from __future__ import annotations

import argparse
import json

import torch

from distilkit.encoder import load
from distilkit.evaluate.sentence import stsb_teacher_agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("students", nargs="+", help="model folders")
    parser.add_argument("--teacher", default="all-MiniLM-L6-v2")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as error:  # the project's errors say what to do
        parser.error(str(error))


def run(args: argparse.Namespace) -> None:
    teacher = load(args.teacher, head=None)
    print("| model | sentence cosine to teacher | pair-cosine Spearman vs teacher | STS-B dev |")
    print("|---|---:|---:|---:|")
    for folder in args.students:
        agreement = stsb_teacher_agreement(load(folder, head=None), teacher)
        print(
            f"| {folder} | {agreement['sentence_cosine']:.4f} | "
            f"{agreement['similarity_spearman']:.2f} | {agreement['student_spearman']:.2f} |",
            flush=True,
        )
        print(json.dumps({"model": folder, **agreement}))
    print(f"teacher {args.teacher}: STS-B dev {agreement['teacher_spearman']:.2f}")


if __name__ == "__main__":
    main()
