"""Quantized search, distilkit beside sentence-transformers, on the same vectors.

The paraphrase-retrieval set of ``benchmarks/retrieval.py`` (STS-B dev pairs scored >= 4:
first sentence the query, second the one relevant text; ``--distractors`` adds texts).
Each model embeds queries and collection once (unit length); then both libraries search
those very vectors:

* distilkit: :class:`distilkit.deploy.search.SearchIndex` at float32, int8, binary
  (Hamming alone) and binary rescored x``--rescore`` with the float query;
* sentence-transformers: ``quantize_embeddings`` (int8 calibrated on the collection,
  ``ubinary``) and ``semantic_search_usearch`` (exact search; ``pip install usearch``),
  the same settings, rescored with the float query where they rescore.

Both keep the top 10 per query; recall@1, recall@10 and MRR@10 come from those lists.
Also printed: how many int8 codes the two libraries agree on (distilkit rounds to the
nearest level, sentence-transformers floors) and whether the binary codes are equal,
bytes of the stored codes, and search time per query (one thread; distilkit's from the
query vectors to the top 10, sentence-transformers' as ``semantic_search_usearch`` times
itself: search and rescoring, without building the usearch index).

    python benchmarks/quantization_peers.py runs/student --distractors stsb_train_3000.txt
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from distilkit.deploy.quantization import QuantizedVectors
from distilkit.deploy.retrieval import stsb_retrieval_set
from distilkit.deploy.search import SearchIndex
from distilkit.encoder import load
from distilkit.evaluate.sentence import STSB_DEV

TOP_K = 10
# (name, precision, rescore multiplier); 0: no rescoring
SETTINGS = (("float32", "float32", 0), ("int8", "int8", 0), ("binary", "binary", 0))


def metrics(hits: list[list[int]], targets: list[int]) -> dict[str, float]:
    """recall@1, recall@10 and MRR@10 of each query's one relevant text in its top 10."""
    ranks = [row.index(t) + 1 if t in row else None for row, t in zip(hits, targets, strict=True)]
    return {
        "recall@1": float(np.mean([r == 1 for r in ranks])),
        "recall@10": float(np.mean([r is not None for r in ranks])),
        "mrr@10": float(np.mean([1.0 / r if r else 0.0 for r in ranks])),
    }


def ours(documents, texts, queries, precision: str, rescore: int) -> tuple[list[list[int]], float]:
    index = SearchIndex(documents, texts, "mean", "-", precision, rescore, "float32")
    start = time.perf_counter()
    found = index.search_vectors(queries, top_k=TOP_K)
    seconds = time.perf_counter() - start
    return [[hit.index for hit in row] for row in found], seconds


def theirs(documents, queries, precision: str, rescore: int) -> tuple[list[list[int]], float]:
    from sentence_transformers.util.quantization import quantize_embeddings, semantic_search_usearch

    st_precision = {"float32": "float32", "int8": "int8", "binary": "ubinary"}[precision]
    ranges = np.stack([documents.min(axis=0), documents.max(axis=0)])
    codes = quantize_embeddings(documents, st_precision, ranges=ranges)
    found, seconds = semantic_search_usearch(
        queries,
        corpus_embeddings=codes,
        corpus_precision=st_precision,
        top_k=TOP_K,
        ranges=ranges,
        rescore=rescore > 0,
        rescore_multiplier=max(rescore, 1),
        exact=True,
    )  # its own clock: the search and rescoring, not building the usearch index
    return [[hit["corpus_id"] for hit in row] for row in found], seconds


def code_agreement(documents: np.ndarray) -> dict[str, float]:
    """Share of equal int8 codes and of equal binary bytes, distilkit vs sentence-transformers."""
    from sentence_transformers.util.quantization import quantize_embeddings

    ranges = np.stack([documents.min(axis=0), documents.max(axis=0)])
    int8 = QuantizedVectors.quantize(documents, "int8").codes
    binary = QuantizedVectors.quantize(documents, "binary").codes
    return {
        "int8_codes_equal_pct": 100
        * float((int8 == quantize_embeddings(documents, "int8", ranges=ranges)).mean()),
        "int8_codes_within_one_level_pct": 100
        * float(
            (
                np.abs(int8.astype(int) - quantize_embeddings(documents, "int8", ranges=ranges))
                <= 1
            ).mean()
        ),
        "binary_codes_equal_pct": 100
        * float((binary == quantize_embeddings(documents, "ubinary")).mean()),
        "int8_bytes": int(int8.nbytes),
        "binary_bytes": int(binary.nbytes),
        "float32_bytes": int(documents.astype(np.float32).nbytes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("students", nargs="*", help="model folders besides the teacher")
    parser.add_argument("--teacher", default="all-MiniLM-L6-v2")
    parser.add_argument("--distractors", help="a text file, one text per line")
    parser.add_argument("--rescore", type=int, default=4, help="rescore multiplier")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    extra = []
    if args.distractors:
        with open(args.distractors, encoding="utf-8") as lines:
            extra = [line.strip() for line in lines if line.strip()]
    data = stsb_retrieval_set(STSB_DEV, 4.0, extra)
    print(f"{len(data.queries)} queries, {len(data.collection)} texts, 1 thread")
    settings = [*SETTINGS, ("binary + rescore", "binary", args.rescore)]
    result = {"queries": len(data.queries), "texts": len(data.collection), "models": {}}
    print("\n| model | index | library | recall@1 % | recall@10 % | MRR@10 | search ms/query |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in [args.teacher, *args.students]:
        encoder = load(name)
        documents = encoder.embed(data.collection, normalize=True, progress=False)
        queries = encoder.embed(data.queries, normalize=True, progress=False)
        rows = []
        for label, precision, rescore in settings:
            for library in ("distilkit", "sentence-transformers"):
                if library == "distilkit":
                    hits, seconds = ours(documents, data.collection, queries, precision, rescore)
                else:
                    hits, seconds = theirs(documents, queries, precision, rescore)
                row = {"index": label, "library": library, **metrics(hits, data.targets)}
                row["search_ms_per_query"] = 1000 * seconds / len(data.queries)
                rows.append(row)
                print(
                    f"| {name} | {label} | {library} | {100 * row['recall@1']:.1f} | "
                    f"{100 * row['recall@10']:.1f} | {row['mrr@10']:.4f} | "
                    f"{row['search_ms_per_query']:.2f} |"
                )
        agreement = code_agreement(documents)
        print(f"{name}: codes {agreement}")
        result["models"][name] = {"rows": rows, "codes": agreement}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
