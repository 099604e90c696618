"""Semantic search: rank a collection of texts by how close their sentence vectors are to a query.

A :class:`SearchIndex` holds the unit-length vectors of a collection, ``(n, hidden)``
float32, and ranks them by cosine (a dot product) to each query's vector. Saved to a
``.npz`` file with its texts, pooling and a fingerprint of the model's weights, it lets a
later search over the same collection with the same model skip the embedding pass, and
a changed model or collection is never served stale vectors.

    index = SearchIndex.build(encoder, texts)
    hits = index.search(encoder, ["a man plays the guitar"], top_k=5)[0]
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

from distilkit.encoder import Encoder
from distilkit.settings import to_dict

FORMAT = 1  # version of the saved index layout
QUERY_CHUNK = 256  # queries scored at once by SearchIndex.search


@dataclass(frozen=True)
class Hit:
    """One ranked text: its position in the collection, its cosine to the query, the text."""

    index: int
    score: float
    text: str


def model_fingerprint(encoder: Encoder) -> str:
    """SHA-256 over what computes the vectors: the config, the module types (so int8 blocks
    are told from float ones that share their weights) and every weight."""
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
    """Unit-length sentence vectors of a collection, searchable by cosine.

    Empty (whitespace-only) texts keep their position, so hit ``index`` is always the
    text's position in the collection, but they are never returned as hits.
    """

    def __init__(
        self,
        vectors: np.ndarray,
        texts: Sequence[str],
        pooling: str,
        model_id: str,
    ):
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ValueError(
                f"got {len(texts)} texts but vectors of shape {vectors.shape}: one row per text"
            )
        self.vectors = vectors.astype(np.float32, copy=False)
        self.texts = list(texts)
        self.pooling = pooling
        self.model_id = model_id
        self.searchable = np.array([bool(text.strip()) for text in self.texts])
        if not self.searchable.any():
            raise ValueError("the collection holds only empty texts: nothing to search")

    @classmethod
    def build(
        cls,
        encoder: Encoder,
        texts: Sequence[str],
        pooling: str = "mean",
        batch_size: int = 64,
        progress: bool | None = None,
        model_id: str | None = None,
    ) -> SearchIndex:
        """Embed ``texts`` with ``encoder`` (unit-normalised) into a new index.

        ``model_id``: the encoder's :func:`model_fingerprint`, when the caller has it.
        """
        texts = list(texts)
        if not texts:
            raise ValueError("the collection is empty: give at least one text to search")
        vectors = encoder.embed(
            texts, pooling=pooling, normalize=True, batch_size=batch_size, progress=progress
        )
        return cls(vectors, texts, pooling, model_id or model_fingerprint(encoder))

    def __len__(self) -> int:
        return len(self.texts)

    def scores(self, encoder: Encoder, queries: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Cosine of every query to every text, ``(queries, texts)`` float32; empty texts
        score ``-inf``, so they rank last and are never hits.

        ``encoder`` must be the model the index was built with (checked by fingerprint).
        """
        self._check_model(encoder)
        return self._scores(encoder, _query_list(queries), batch_size)

    def search(
        self, encoder: Encoder, queries: str | Sequence[str], top_k: int = 5, batch_size: int = 64
    ) -> list[list[Hit]]:
        """The ``top_k`` texts closest to each query, best first (ties: earlier text first).

        Returns one list of :class:`Hit` per query; fewer than ``top_k`` when the
        collection has fewer non-empty texts. Queries are scored ``QUERY_CHUNK`` at a
        time, so memory stays ``QUERY_CHUNK x texts`` however many there are.
        """
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self._check_model(encoder)
        queries = _query_list(queries)
        count = min(top_k, int(self.searchable.sum()))
        results = []
        for start in range(0, len(queries), QUERY_CHUNK):
            scores = self._scores(encoder, queries[start : start + QUERY_CHUNK], batch_size)
            for row in scores:
                order = top_indices(row, count)
                results.append([Hit(int(i), float(row[i]), self.texts[i]) for i in order])
        return results

    def _check_model(self, encoder: Encoder) -> None:
        if model_fingerprint(encoder) != self.model_id:
            raise ValueError(
                f"this index was built with another model than {encoder.name}: rebuild it "
                "with SearchIndex.build (or delete the saved index file)"
            )

    def _scores(self, encoder: Encoder, queries: list[str], batch_size: int) -> np.ndarray:
        query_vectors = encoder.embed(
            queries, pooling=self.pooling, normalize=True, batch_size=batch_size, progress=False
        )
        if query_vectors.shape[1] != self.vectors.shape[1]:
            raise ValueError(
                f"this index holds vectors of width {self.vectors.shape[1]} but {encoder.name} "
                f"makes vectors of width {query_vectors.shape[1]}: rebuild the index with this "
                "model (or delete the saved index file)"
            )
        return np.where(self.searchable[None, :], query_vectors @ self.vectors.T, -np.inf)

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
        }
        np.savez(
            partial,
            vectors=self.vectors,
            texts=np.array(json.dumps(self.texts)),
            meta=np.array(json.dumps(meta)),
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
                vectors = data["vectors"]
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(
                f"{path} is not a distilkit search index, or is damaged ({error}): delete it "
                "to rebuild"
            ) from None
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ValueError(
                f"{path} holds {len(texts)} texts but vectors of shape {vectors.shape}: "
                "delete it to rebuild"
            )
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{path} has index format {meta.get('format')}, this distilkit reads {FORMAT}: "
                "delete it to rebuild"
            )
        return cls(vectors, texts, meta["pooling"], meta["model_id"])

    @classmethod
    def cached(
        cls,
        path: str | os.PathLike,
        encoder: Encoder,
        texts: Sequence[str],
        pooling: str = "mean",
        batch_size: int = 64,
        progress: bool | None = None,
    ) -> tuple[SearchIndex, bool]:
        """The index saved at ``path`` if it was built from the same model, pooling and
        texts; else a new one, built and saved there. Returns ``(index, reused)``."""
        path = Path(path)
        texts = list(texts)
        model_id = model_fingerprint(encoder)
        if path.is_file():
            saved = cls.load(path)
            if saved.model_id == model_id and saved.pooling == pooling and saved.texts == texts:
                return saved, True
        index = cls.build(encoder, texts, pooling, batch_size, progress, model_id)
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
    bad = [t for t in targets if not 0 <= t < len(index) or not index.searchable[t]]
    if bad:
        raise ValueError(f"target {bad[0]} is not a non-empty text of the {len(index)} indexed")
    scores = index.scores(encoder, queries, batch_size).astype(np.float64)
    rows = np.arange(len(queries))
    target_scores = scores[rows, np.asarray(targets)]
    positions = np.arange(len(index))[None, :]
    above = (scores > target_scores[:, None]) | (
        (scores == target_scores[:, None]) & (positions < np.asarray(targets)[:, None])
    )
    ranks = above.sum(axis=1) + 1  # (queries,)
    metrics = {f"recall@{k}": float((ranks <= k).mean()) for k in ks}
    metrics["mrr"] = float((1.0 / ranks).mean())
    return metrics
