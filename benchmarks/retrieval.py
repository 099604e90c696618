"""Semantic search with a teacher and its students: paraphrase retrieval on STS-B dev.

Each STS-B dev pair whose gold score is at least ``--min-score`` (default 4: "mostly
equivalent") is a query (its first sentence) with one relevant text (its second); the
collection is every distinct second sentence of the 1,500 dev pairs. For each model:
recall@1/5/10 and MRR of the relevant text (distilkit.deploy.search.retrieval_metrics), the
share of the teacher's top-5 hits the model also returns, and how fast it builds the
index (sentences/s, the models timed one after another on the same texts).
``--distractors`` adds the sentences of more STS-B-format files (or text files, a text
per line) to the collection, for a harder search.

``--precisions`` adds, per model, the quantized indexes (int8; binary alone; binary
rescored x4 with float32 and with int8 queries) against the model's own float32 search:
recall@10, MRR, their share of float32's, index memory (from the arrays) and search time
(distilkit.deploy.retrieval.retrieval_table). ``--asymmetric`` adds each student's
queries searched against the teacher's documents.

    python benchmarks/retrieval.py runs/sweep/gut-cos-5e-5/student runs/cut-045 \
        --distractors ../shared/data/stsb/train.tsv
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from distilkit.deploy.retrieval import asymmetric_retrieval, retrieval_table, stsb_retrieval_set
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
    parser.add_argument("--precisions", action="store_true", help="int8 / binary indexes too")
    parser.add_argument("--asymmetric", action="store_true", help="student queries, teacher docs")
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
    extra = []
    for path in args.distractors:
        if path.endswith(".tsv"):
            more_first, more_second, _ = read_stsb(path)
            extra += more_first + more_second
        else:
            with open(path, encoding="utf-8") as lines:
                extra += [line.strip() for line in lines if line.strip()]
    data = stsb_retrieval_set(args.stsb, args.min_score, extra)
    queries, collection, targets = data.queries, data.collection, data.targets
    print(
        f"{len(queries)} queries (STS-B dev pairs scored >= {args.min_score}), "
        f"{len(collection)} texts to search, {torch.get_num_threads()} thread(s)"
    )
    rows, teacher_top5 = [], None
    encoders = {name: load(name, head=None) for name in [args.teacher, *args.students]}
    for name, encoder in encoders.items():
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
                "layers": getattr(getattr(encoder, "config", None), "num_layers", 0),
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
    result = {"queries": len(queries), "texts": len(collection), "rows": rows}
    if args.precisions:
        result["precisions"] = {}
        print(
            "\n| model | index | recall@10 % | MRR | % of float32 recall@10 | % of float32 MRR "
            "| index MB | less memory | search ms/query |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, encoder in encoders.items():
            table = retrieval_table(encoder, data)
            result["precisions"][name] = table
            for row in table:
                kind = row["precision"] + (
                    f" + rescore x{row['rescore_multiplier']} ({row['query_precision']} query)"
                    if row["rescore_multiplier"] and row["precision"] == "binary"
                    else ""
                )
                print(
                    f"| {name} | {kind} | {100 * row['recall@10']:.1f} | {row['mrr']:.4f} | "
                    f"{row['recall@10_of_float32_pct']:.1f} | {row['mrr_of_float32_pct']:.1f} | "
                    f"{row['index_bytes'] / 1e6:.3f} | {row['memory_reduction']:.1f}x | "
                    f"{row['search_ms_per_query']:.2f} |"
                )
    if args.asymmetric:
        result["asymmetric"] = {}
        for name in args.students:
            try:
                found = asymmetric_retrieval(encoders[args.teacher], encoders[name], data)
            except ValueError as error:
                print(f"{name}: {error}")
                continue
            result["asymmetric"][name] = found
            print(
                f"{name} queries vs {args.teacher} documents: recall@10 "
                f"{100 * found['recall@10']:.1f}%, MRR {found['mrr']:.4f}"
            )
    return result


if __name__ == "__main__":
    main()
