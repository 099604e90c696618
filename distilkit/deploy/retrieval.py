"""Paraphrase retrieval on STS-B dev, for search quality per precision and per model.

Each STS-B dev pair whose gold score is at least ``min_score`` (4: "mostly equivalent")
is a query (its first sentence) with one relevant text (its second); the collection is
every distinct second sentence (plus any distractors). :func:`retrieval_table` scores
one model at each index precision against its own float32 search (recall@10, MRR,
memory, search time); :func:`asymmetric_retrieval` indexes the documents with the
teacher and embeds the queries with a student, which works only when the student
stays in the teacher's vector space.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from distilkit.deploy.search import SearchIndex, retrieval_metrics_from_vectors
from distilkit.encoder import Encoder
from distilkit.evaluate.sentence import STSB_DEV, read_stsb
from distilkit.model.static import StaticEncoder


@dataclass
class RetrievalSet:
    """queries and their one relevant text each (``targets``: positions in ``collection``)."""

    queries: list[str]
    collection: list[str]
    targets: list[int]


def stsb_retrieval_set(
    path: str | Path = STSB_DEV, min_score: float = 4.0, distractors: Sequence[str] = ()
) -> RetrievalSet:
    """The paraphrase-retrieval set of an STS-B file (see the module docstring)."""
    first, second, scores = read_stsb(path)
    pairs = [(a, b) for a, b, s in zip(first, second, scores, strict=True) if s >= min_score]
    pairs = [(a, b) for a, b in pairs if a != b]
    asked = {a for a, _ in pairs}
    extra = [text for text in distractors if text not in asked]  # no query finds itself
    collection = list(dict.fromkeys(second + extra))
    position = {text: i for i, text in enumerate(collection)}
    return RetrievalSet([a for a, _ in pairs], collection, [position[b] for _, b in pairs])


def retrieval_table(
    encoder: Encoder | StaticEncoder,
    data: RetrievalSet,
    settings: Sequence[tuple[str, int, str]] = (
        ("float32", 0, "float32"),
        ("int8", 0, "float32"),
        ("binary", 0, "float32"),
        ("binary", 4, "float32"),
        ("binary", 4, "int8"),
    ),
) -> list[dict]:
    """One row per ``(precision, rescore_multiplier, query_precision)``: recall@1/10, MRR,
    their share of the first row's (float32), index bytes and compression, and the search
    time of all queries (embedding excluded; the vectors are embedded once)."""
    documents = encoder.embed(data.collection, normalize=True, progress=False)
    queries = encoder.embed(data.queries, normalize=True, progress=False)
    rows = []
    for precision, multiplier, query_precision in settings:
        index = SearchIndex(
            documents, data.collection, "mean", "-", precision, multiplier, query_precision
        )
        start = time.perf_counter()
        index.search_vectors(queries, top_k=10)
        seconds = time.perf_counter() - start
        metrics = retrieval_metrics_from_vectors(index, queries, data.targets, ks=(1, 10))
        rows.append(
            {
                "precision": precision,
                "rescore_multiplier": multiplier,
                "query_precision": query_precision,
                **metrics,
                "index_bytes": index.nbytes,
                "search_ms_per_query": 1000 * seconds / len(queries),
            }
        )
    for row in rows:
        row["recall@10_of_float32_pct"] = 100 * row["recall@10"] / rows[0]["recall@10"]
        row["mrr_of_float32_pct"] = 100 * row["mrr"] / rows[0]["mrr"]
        row["memory_reduction"] = rows[0]["index_bytes"] / row["index_bytes"]
    return rows


def asymmetric_retrieval(
    teacher: Encoder | StaticEncoder,
    student: Encoder | StaticEncoder,
    data: RetrievalSet,
    precision: str = "float32",
) -> dict[str, float]:
    """Recall@1/10 and MRR with the collection indexed by ``teacher`` and the queries
    embedded by ``student`` (unit length; the widths must match)."""
    index = SearchIndex.build(teacher, data.collection, progress=False, precision=precision)
    queries = student.embed(data.queries, normalize=True, progress=False)
    width = index.vectors.shape[1] if index.vectors is not None else index.quantized.dim
    if queries.shape[1] != width:
        raise ValueError(
            f"the student's vectors have {queries.shape[1]} dimensions and the teacher's "
            f"{width}: asymmetric search needs the student in the teacher's space"
        )
    return retrieval_metrics_from_vectors(index, queries, data.targets, ks=(1, 10))


__all__ = ["RetrievalSet", "asymmetric_retrieval", "retrieval_table", "stsb_retrieval_set"]
