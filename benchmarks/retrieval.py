"""Semantic search with a teacher and its students: paraphrase retrieval on STS-B dev.

Each STS-B dev pair whose gold score is at least ``--min-score`` (default 4: "mostly
equivalent") is a query (its first sentence) with one relevant text (its second); the
collection is every distinct second sentence of the 1,500 dev pairs. For each model:
recall@1/5/10 and MRR of the relevant text (distilkit.deploy.search.retrieval_metrics), the
share of the teacher's top-5 hits the model also returns, and how fast it builds the
index (sentences/s, the models timed one after another on the same texts).
``--distractors`` adds the sentences of more STS-B-format files (or text files, a text
per line) to the collection, for a harder search.

    python benchmarks/retrieval.py runs/sweep/gut-cos-5e-5/student runs/cut-045 \
        --distractors ../shared/data/stsb/train.tsv
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from distilkit.deploy.search import SearchIndex, retrieval_metrics
from distilkit.encoder import load
from distilkit.evaluate.sentence import STSB_DEV, read_stsb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("students", nargs="*", help="model folders to compare with the teacher")
    parser.add_argument("--teacher", default="all-MiniLM-L6-v2")
    parser.add_argument("--stsb", default=str(STSB_DEV), help="a GLUE STS-B tsv")
    parser.add_argument("--min-score", type=float, default=4.0)
    parser.add_argument("--distractors", nargs="*", default=[], help="more texts to search")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        result = run(args)
    except (ValueError, FileNotFoundError) as error:  # distilkit's errors say what to do
        parser.error(str(error))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=2)
        print(f"wrote {args.json}")


def run(args: argparse.Namespace) -> dict:
    """Score every model; returns the query and text counts and one row per model."""
    first, second, scores = read_stsb(args.stsb)
    pairs = [(a, b) for a, b, s in zip(first, second, scores, strict=True) if s >= args.min_score]
    pairs = [(a, b) for a, b in pairs if a != b]
    queries = [a for a, _ in pairs]
    extra = []
    for path in args.distractors:
        if path.endswith(".tsv"):
            more_first, more_second, _ = read_stsb(path)
            extra += more_first + more_second
        else:
            with open(path, encoding="utf-8") as lines:
                extra += [line.strip() for line in lines if line.strip()]
    asked = set(queries)
    extra = [text for text in extra if text not in asked]  # no query finds itself
    collection = list(dict.fromkeys(second + extra))  # distinct, in file order
    position = {text: i for i, text in enumerate(collection)}
    targets = [position[b] for _, b in pairs]
    print(
        f"{len(queries)} queries (STS-B dev pairs scored >= {args.min_score}), "
        f"{len(collection)} texts to search, {torch.get_num_threads()} thread(s)"
    )
    rows, teacher_top5 = [], None
    for name in [args.teacher, *args.students]:
        encoder = load(name, head=None)
        start = time.perf_counter()
        index = SearchIndex.build(encoder, collection, progress=False)
        seconds = time.perf_counter() - start
        metrics = retrieval_metrics(index, encoder, queries, targets)
        top5 = [{hit.index for hit in hits} for hits in index.search(encoder, queries, top_k=5)]
        if teacher_top5 is None:
            teacher_top5 = top5
        overlap = np.mean([len(a & b) / 5 for a, b in zip(top5, teacher_top5, strict=True)])
        rows.append(
            {
                "model": name,
                "layers": encoder.config.num_layers,
                **metrics,
                "top5_overlap_with_teacher": float(overlap),
                "index_sentences_per_s": len(collection) / seconds,
            }
        )
    teacher_mrr = rows[0]["mrr"]
    print(
        "| model | layers | recall@1 % | recall@5 % | recall@10 % | MRR | % of teacher's MRR "
        "| top-5 shared with teacher % | index sentences/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['model']} | {row['layers']} | {100 * row['recall@1']:.1f} | "
            f"{100 * row['recall@5']:.1f} | {100 * row['recall@10']:.1f} | {row['mrr']:.4f} | "
            f"{100 * row['mrr'] / teacher_mrr:.1f} | {100 * row['top5_overlap_with_teacher']:.1f} "
            f"| {row['index_sentences_per_s']:,.0f} |"
        )
    return {"queries": len(queries), "texts": len(collection), "rows": rows}


if __name__ == "__main__":
    main()
