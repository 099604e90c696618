"""Semantic search: rank a collection of texts by how close their sentence vectors are to a query.

A :class:`SearchIndex` holds the unit-length vectors of a collection, ``(n, hidden)``
float32, and ranks them by cosine (a dot product) to each query's vector. Saved to a
``.npz`` file with its texts, pooling and a fingerprint of the model's weights, it lets a
later search over the same collection with the same model skip the embedding pass, and
a changed model or collection is never served stale vectors.

    index = SearchIndex.build(encoder, texts)
    hits = index.search(encoder, ["a man plays the guitar"], top_k=5)[0]

``precision="int8"`` or ``"binary"`` keeps the vectors quantized instead
(:mod:`distilkit.deploy.quantization`: 4x and 32x less memory); a binary index is searched
by Hamming distance, then its best ``rescore_multiplier * k`` candidates are rescored with
the float (or int8) query vector.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distilkit.deploy.quantization import PRECISIONS, QUERY_PRECISIONS, QuantizedVectors
from distilkit.encoder import Encoder
from distilkit.model.static import StaticEncoder
from distilkit.settings import to_dict

FORMAT = 1  # version of the saved index layout
QUERY_CHUNK = 256  # queries scored at once by SearchIndex.search


@dataclass(frozen=True)
class Hit:
    """One ranked text: its position in the collection, its cosine to the query, the text."""

    index: int
    score: float  # cosine; int8: with the dequantized vector; binary: see SearchIndex
    text: str


def model_fingerprint(encoder: Encoder | StaticEncoder) -> str:
    """SHA-256 over what computes the vectors: the config, the module types (so int8 blocks
    are told from float ones that share their weights) and every weight (a static model:
    its table and tokenizer)."""
    if isinstance(encoder, StaticEncoder):
        digest = hashlib.sha256(encoder.tokenizer.to_str().encode())
        digest.update(encoder.table.tobytes())
        return digest.hexdigest()
    digest = hashlib.sha256(
        json.dumps(to_dict(encoder.config), sort_keys=True, default=str).encode()
    )
    digest.update(json.dumps(encoder.tokenizer.vocab_size).encode())
    digest.update(" ".join(type(module).__name__ for module in encoder.model.modules()).encode())
    with torch.no_grad():
        for name, tensor in encoder.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _query_list(queries: str | Sequence[str]) -> list[str]:
    queries = [queries] if isinstance(queries, str) else list(queries)
    empty = [i for i, query in enumerate(queries) if not query.strip()]
    if empty:
        raise ValueError(f"query {empty[0] + 1} is empty: give the text to search for")
    return queries


def top_indices(scores: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` highest ``scores`` ``(n,)``, best first; ties: lower first.

    A partial selection (``np.partition``) before the sort, so a search over n texts
    costs O(n + k log k) per query instead of O(n log n).
    """
    if count < len(scores):
        kth = np.partition(scores, len(scores) - count)[len(scores) - count]
        candidates = np.flatnonzero(scores >= kth)  # ascending positions
    else:
        candidates = np.arange(len(scores))
    return candidates[np.argsort(-scores[candidates], kind="stable")][:count]


class SearchIndex:
    """Sentence vectors of a collection, searchable by cosine (unit-length float32 vectors),
    or quantized: ``precision`` int8 or binary (see the module docstring).

    Empty (whitespace-only) texts keep their position, so hit ``index`` is always the
    text's position in the collection, but they are never returned as hits. A binary hit's
    score is its rescored dot product (``rescore_multiplier`` > 0) or minus its Hamming
    distance (``rescore_multiplier`` 0).
    """

    def __init__(
        self,
        vectors: np.ndarray | QuantizedVectors,
        texts: Sequence[str],
        pooling: str | None,
        model_id: str,
        precision: str = "float32",
        rescore_multiplier: int = 4,
        query_precision: str = "float32",
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if query_precision not in QUERY_PRECISIONS:
            raise ValueError(
                f"query_precision must be one of {QUERY_PRECISIONS}, got {query_precision!r}"
            )
        if rescore_multiplier < 0:
            raise ValueError(f"rescore_multiplier must be >= 0, got {rescore_multiplier}")
        rows = vectors.codes if isinstance(vectors, QuantizedVectors) else vectors
        if rows.ndim != 2 or len(rows) != len(texts):
            raise ValueError(
                f"got {len(texts)} texts but vectors of shape {rows.shape}: one row per text"
            )
        self.vectors: np.ndarray | None = None  # float32 (n, dim) for a float32 index
        self.quantized: QuantizedVectors | None = None
        if isinstance(vectors, QuantizedVectors):
            self.quantized = vectors
        elif precision == "float32":
            self.vectors = vectors.astype(np.float32, copy=False)
        else:
            self.quantized = QuantizedVectors.quantize(vectors.astype(np.float32), precision)
        self.precision = precision if self.quantized is None else self.quantized.precision
        self.rescore_multiplier = rescore_multiplier
        self.query_precision = query_precision
        self.texts = list(texts)
        self.pooling = pooling
        self.model_id = model_id
        self.searchable = np.array([bool(text.strip()) for text in self.texts])
        if not self.searchable.any():
            raise ValueError("the collection holds only empty texts: nothing to search")

    @classmethod
    def build(
        cls,
        encoder: Encoder | StaticEncoder,
        texts: Sequence[str],
        pooling: str | None = None,
        batch_size: int = 64,
        progress: bool | None = None,
        model_id: str | None = None,
        precision: str = "float32",
        rescore_multiplier: int = 4,
        query_precision: str = "float32",
    ) -> SearchIndex:
        """Embed ``texts`` with ``encoder`` (unit-normalised) into a new index, quantized to
        ``precision``. ``pooling`` None follows the model's own recipe (as
        sentence-transformers embeds with it); mean | cls | max | last replaces its pooling.

        ``model_id``: the encoder's :func:`model_fingerprint`, when the caller has it.
        """
        texts = list(texts)
        if not texts:
            raise ValueError("the collection is empty: give at least one text to search")
        vectors = encoder.embed(
            texts, pooling=pooling, normalize=True, batch_size=batch_size, progress=progress
        )
        return cls(
            vectors,
            texts,
            pooling,
            model_id or model_fingerprint(encoder),
            precision,
            rescore_multiplier,
            query_precision,
        )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def nbytes(self) -> int:
        """Bytes the index's vectors take in memory (the arrays' own sizes)."""
        return int(self.vectors.nbytes if self.quantized is None else self.quantized.nbytes)

    def scores(self, encoder: Encoder, queries: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Scores of every query to every text, ``(queries, texts)`` float32, ordered as
        the search ranks (see :meth:`ranking_scores`); empty texts score ``-inf``.

        ``encoder`` must be the model the index was built with (checked by fingerprint).
        """
        self._check_model(encoder)
        return self.ranking_scores(self._embed(encoder, _query_list(queries), batch_size))

    def ranking_scores(self, query_vectors: np.ndarray, top_k: int = 10) -> np.ndarray:
        """``(queries, texts)`` float32 whose order per row is the search's order for
        ``query_vectors`` ``(queries, dim)`` (unit length): cosine for float32, the int8
        score, or for a rescored binary index the rescored candidates of a top-``top_k``
        search first (their score + 1e6), then the rest by minus the Hamming distance."""
        first = np.where(self.searchable[None, :], self._first_pass(query_vectors), -np.inf)
        if not self._rescores:
            return first.astype(np.float32)
        candidates = self._candidates(first, top_k)
        rescored = self.quantized.rescore(query_vectors, candidates, self.query_precision)
        out = first.astype(np.float64)
        np.put_along_axis(out, candidates, 1e6 + rescored, axis=1)
        return out.astype(np.float32)

    def search(
        self, encoder: Encoder, queries: str | Sequence[str], top_k: int = 5, batch_size: int = 64
    ) -> list[list[Hit]]:
        """The ``top_k`` texts closest to each query, best first (ties: earlier text first).

        Returns one list of :class:`Hit` per query; fewer than ``top_k`` only when the
        collection has fewer non-empty texts. Queries are scored ``QUERY_CHUNK`` at a
        time, so memory stays ``QUERY_CHUNK x texts`` however many there are.
        """
        self._check_model(encoder)
        queries = _query_list(queries)
        results = []
        for start in range(0, len(queries), QUERY_CHUNK):
            chunk = self._embed(encoder, queries[start : start + QUERY_CHUNK], batch_size)
            results += self.search_vectors(chunk, top_k)
        return results

    def search_vectors(self, query_vectors: np.ndarray, top_k: int = 5) -> list[list[Hit]]:
        """:meth:`search` for query vectors ``(queries, dim)`` already embedded (unit
        length), for instance by another model that shares the index's space."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        count = min(top_k, int(self.searchable.sum()))
        first = np.where(self.searchable[None, :], self._first_pass(query_vectors), -np.inf)
        results = []
        if self._rescores:
            candidates = self._candidates(first, top_k)
            rescored = self.quantized.rescore(query_vectors, candidates, self.query_precision)
            for row_candidates, row_scores in zip(candidates, rescored, strict=True):
                order = np.argsort(-row_scores, kind="stable")[:count]
                results.append(
                    [
                        Hit(
                            int(row_candidates[i]),
                            float(row_scores[i]),
                            self.texts[row_candidates[i]],
                        )
                        for i in order
                    ]
                )
            return results
        for row in first:
            order = top_indices(row, count)
            results.append([Hit(int(i), float(row[i]), self.texts[i]) for i in order])
        return results

    @property
    def _rescores(self) -> bool:
        return self.precision == "binary" and self.rescore_multiplier > 0

    def _candidates(self, first: np.ndarray, top_k: int) -> np.ndarray:
        """``(queries, c)`` positions of each query's best first-pass texts, c =
        ``rescore_multiplier * top_k`` but never fewer than ``top_k`` nor more than the
        non-empty texts (position order among ties)."""
        count = min(max(top_k, self.rescore_multiplier * top_k), int(self.searchable.sum()))
        return np.stack([np.sort(top_indices(row, count)) for row in first])

    def _first_pass(self, query_vectors: np.ndarray) -> np.ndarray:
        if self.quantized is None:
            return query_vectors @ self.vectors.T
        return self.quantized.scores(query_vectors, self.query_precision)

    def _check_model(self, encoder: Encoder) -> None:
        if model_fingerprint(encoder) != self.model_id:
            raise ValueError(
                f"this index was built with another model than {encoder.name}: rebuild it "
                "with SearchIndex.build (or delete the saved index file)"
            )

    def _embed(self, encoder: Encoder, queries: list[str], batch_size: int) -> np.ndarray:
        """Unit-length query vectors ``(queries, dim)``; a model of another width is an error."""
        query_vectors = encoder.embed(
            queries, pooling=self.pooling, normalize=True, batch_size=batch_size, progress=False
        )
        width = self.vectors.shape[1] if self.quantized is None else self.quantized.dim
        if query_vectors.shape[1] != width:
            raise ValueError(
                f"this index holds vectors of width {width} but {encoder.name} makes vectors "
                f"of width {query_vectors.shape[1]}: rebuild the index with this model (or "
                "delete the saved index file)"
            )
        return query_vectors

    # ------------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index to ``path`` (``.npz``) atomically; returns the path."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"a search index is saved as a .npz file, got {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial.npz")
        meta = {
            "format": FORMAT,
            "pooling": self.pooling,
            "model_id": self.model_id,
            "precision": self.precision,
            "rescore_multiplier": self.rescore_multiplier,
            "query_precision": self.query_precision,
        }
        if self.quantized is None:
            arrays = {"vectors": self.vectors}
        else:
            q = self.quantized
            arrays = {"codes": q.codes, "low": q.low, "step": q.step, "dim": np.array(q.dim)}
        np.savez(
            partial,
            texts=np.array(json.dumps(self.texts)),
            meta=np.array(json.dumps(meta)),
            **arrays,
        )
        os.replace(partial, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SearchIndex:
        """Read an index written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"search index not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                texts = json.loads(str(data["texts"]))
                precision = meta.get("precision", "float32")
                if precision == "float32":
                    vectors = data["vectors"]
                else:
                    vectors = QuantizedVectors(
                        precision, data["codes"], int(data["dim"]), data["low"], data["step"]
                    )
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(
                f"{path} is not a distilkit search index, or is damaged ({error}): delete it "
                "to rebuild"
            ) from None
        if isinstance(vectors, np.ndarray) and (vectors.ndim != 2 or len(vectors) != len(texts)):
            raise ValueError(
                f"{path} holds {len(texts)} texts but vectors of shape {vectors.shape}: "
                "delete it to rebuild"
            )
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{path} has index format {meta.get('format')}, this distilkit reads {FORMAT}: "
                "delete it to rebuild"
            )
        return cls(
            vectors,
            texts,
            meta["pooling"],
            meta["model_id"],
            precision,
            meta.get("rescore_multiplier", 4),
            meta.get("query_precision", "float32"),
        )

    @classmethod
    def cached(
        cls,
        path: str | os.PathLike,
        encoder: Encoder,
        texts: Sequence[str],
        pooling: str | None = None,
        batch_size: int = 64,
        progress: bool | None = None,
        precision: str = "float32",
        rescore_multiplier: int = 4,
        query_precision: str = "float32",
    ) -> tuple[SearchIndex, bool]:
        """The index saved at ``path`` if it was built from the same model, pooling, texts
        and precision; else a new one, built and saved there. Returns ``(index, reused)``."""
        path = Path(path)
        texts = list(texts)
        model_id = model_fingerprint(encoder)
        if path.is_file():
            saved = cls.load(path)
            same = (saved.model_id, saved.pooling, saved.precision) == (
                model_id,
                pooling,
                precision,
            )
            if same and saved.texts == texts:
                saved.rescore_multiplier, saved.query_precision = (
                    rescore_multiplier,
                    query_precision,
                )
                return saved, True
        index = cls.build(
            encoder,
            texts,
            pooling,
            batch_size,
            progress,
            model_id,
            precision,
            rescore_multiplier,
            query_precision,
        )
        index.save(path)
        return index, False


# ---------------------------------------------------------------------------- evaluation
def retrieval_metrics(
    index: SearchIndex,
    encoder: Encoder,
    queries: Sequence[str],
    targets: Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    batch_size: int = 64,
) -> dict[str, float]:
    """Recall@k and mean reciprocal rank of each query's one relevant text ``targets[i]``.

    ``recall@k``: share of queries whose target is among the top ``k`` hits;
    ``mrr``: mean of 1 / (rank of the target), rank 1 = best. Ranks are those of
    :meth:`SearchIndex.search`: higher-scoring texts, and earlier ones of equal score,
    rank above the target.
    """
    if len(queries) != len(targets) or not queries:
        raise ValueError(f"got {len(queries)} queries and {len(targets)} targets: one each, >= 1")
    index._check_model(encoder)
    query_vectors = index._embed(encoder, _query_list(queries), batch_size)
    return retrieval_metrics_from_vectors(index, query_vectors, targets, ks)


def retrieval_metrics_from_vectors(
    index: SearchIndex,
    query_vectors: np.ndarray,
    targets: Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """:func:`retrieval_metrics` for query vectors ``(queries, dim)`` already embedded (by
    the index's model, or by another in its space: the asymmetric case)."""
    if len(query_vectors) != len(targets) or not len(targets):
        raise ValueError(f"got {len(query_vectors)} queries and {len(targets)} targets")
    bad = [t for t in targets if not 0 <= t < len(index) or not index.searchable[t]]
    if bad:
        raise ValueError(f"target {bad[0]} is not a non-empty text of the {len(index)} indexed")
    scores = index.ranking_scores(query_vectors, top_k=max(ks)).astype(np.float64)
    rows = np.arange(len(targets))
    target_scores = scores[rows, np.asarray(targets)]
    positions = np.arange(len(index))[None, :]
    above = (scores > target_scores[:, None]) | (
        (scores == target_scores[:, None]) & (positions < np.asarray(targets)[:, None])
    )
    ranks = above.sum(axis=1) + 1  # (queries,)
    metrics = {f"recall@{k}": float((ranks <= k).mean()) for k in ks}
    metrics["mrr"] = float((1.0 / ranks).mean())
    return metrics
