"""Static sentence encoders: one vector per vocabulary entry, a sentence is their mean.

A :class:`StaticEncoder` holds a table ``(vocab, dim)`` float32 and the tokenizer whose
ids index it; a text's vector is the mean of the rows of its tokens (no [CLS]/[SEP], no
context), unit-normalised when the folder ends in a ``Normalize`` module. It runs in
numpy (a sparse ``(texts, vocab)`` averaging matrix times the table), so it embeds tens
of thousands of sentences per second on one core.

On disk it is a sentence-transformers folder with a ``StaticEmbedding`` module, as
sentence-transformers 3+ (and model2vec's exports) write it: ``modules.json`` listing
the StaticEmbedding (``model.safetensors`` with ``embedding.weight`` and
``tokenizer.json``) and an optional ``Normalize``; sentence-transformers loads it and
gives the same vectors (it averages with ``nn.EmbeddingBag`` over the same ids).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer as BackendTokenizer

from distilkit.model.card import CardFacts, carried_facts, static_facts, write_card

STATIC_TYPE = "sentence_transformers.models.StaticEmbedding"
NORMALIZE_TYPE = "sentence_transformers.models.Normalize"
METADATA_FILE = "distilkit_static.json"  # how the table was made (teacher, PCA, weights)
CHUNK = 8192  # texts tokenized and averaged at once


def _static_entry(folder: Path) -> dict | None:
    listing = folder / "modules.json"
    if not listing.is_file():
        return None
    try:
        entries = json.loads(listing.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(entries, list):
        return None
    found = [e for e in entries if str(e.get("type", "")).endswith("StaticEmbedding")]
    return found[0] if found else None


def is_static_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a sentence-transformers folder whose input is a StaticEmbedding."""
    return _static_entry(Path(folder)) is not None


class StaticEncoder:
    """A static embedding table and its tokenizer, with :class:`~distilkit.encoder.Encoder`'s
    everyday methods (``embed``, ``similarity``, ``tokens``, ``info``, ``save``).

    table: ``(vocab, dim)`` float32, row ``i`` the vector of token id ``i``; tokenizer: a
    ``tokenizers.Tokenizer`` (its truncation and padding are switched off); normalize:
    whether sentence vectors are unit-normalised; metadata: how the table was made.
    """

    kind = "static"

    def __init__(
        self,
        table: np.ndarray,
        tokenizer: BackendTokenizer,
        normalize: bool = True,
        folder: Path | None = None,
        name: str | None = None,
        metadata: dict | None = None,
    ):
        if table.ndim != 2:
            raise ValueError(f"a static table is (vocab, dim), got shape {table.shape}")
        vocab = tokenizer.get_vocab_size(with_added_tokens=True)
        if vocab > len(table):
            raise ValueError(
                f"the tokenizer has {vocab:,} entries but the table {len(table):,} rows: "
                "the tokenizer must be the table's own"
            )
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.tokenizer = tokenizer
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.normalize = normalize
        self.folder = folder
        self.name = name or (str(folder) if folder else "static")
        self.metadata = dict(metadata or {})

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens (sentence-transformers' way)."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def averaging_matrix(self, ids: list[list[int]]):
        """Sparse ``(texts, vocab)`` matrix whose row ``i`` averages text ``i``'s tokens
        (repeated tokens count each time; a text with no tokens gets a zero row)."""
        from scipy.sparse import csr_matrix

        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), np.int64, int(lengths.sum()))
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        data = np.repeat(1.0 / np.maximum(lengths, 1), lengths).astype(np.float32)
        return csr_matrix((data, flat, indptr), shape=(len(ids), len(self.table)))

    def embed(
        self,
        texts: str | Sequence[str],
        pooling: str | None = None,
        normalize: bool | None = None,
        batch_size: int = CHUNK,
        max_length: int | None = None,
        progress: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        dimensions: int | None = None,
    ) -> np.ndarray:
        """Sentence vectors ``(n, dim)`` float32: the mean of each text's token rows.

        pooling: None or ``"mean"`` (a static model has no other); normalize None follows
        the folder. batch_size, max_length, progress, prompt_name: accepted for
        :class:`~distilkit.encoder.Encoder`'s signature; texts are averaged ``CHUNK``
        at a time. prompt: a text put before every text. dimensions: the first
        ``dimensions`` columns only (a PCA-made table keeps its leading components).
        """
        if pooling not in (None, "mean"):
            raise ValueError(f"a static model only mean-pools its token vectors, got {pooling!r}")
        if dimensions is not None and not 1 <= dimensions <= self.dim:
            raise ValueError(f"dimensions must be between 1 and {self.dim}, got {dimensions}")
        table = self.table if dimensions is None else self.table[:, :dimensions]
        texts = [texts] if isinstance(texts, str) else list(texts)
        if prompt:
            texts = [prompt + text for text in texts]
        out = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start : start + CHUNK]
            out[start : start + len(chunk)] = self.averaging_matrix(self.token_ids(chunk)) @ table
        if self.normalize if normalize is None else normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def similarity(
        self, a: str | Sequence[str] | np.ndarray, b: str | Sequence[str] | np.ndarray
    ) -> np.ndarray:
        """Cosine of every ``a`` to every ``b``, ``(len(a), len(b))``; arrays are vectors."""
        left, right = (
            np.atleast_2d(x).astype(np.float32) if isinstance(x, np.ndarray) else self.embed(x)
            for x in (a, b)
        )
        left = left / np.maximum(np.linalg.norm(left, axis=1, keepdims=True), 1e-12)
        right = right / np.maximum(np.linalg.norm(right, axis=1, keepdims=True), 1e-12)
        return left @ right.T

    def tokens(self, text: str) -> list[str]:
        """The tokens whose rows are averaged for ``text``."""
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def info(self) -> dict:
        """Element count of the table, its shape, and when loaded from a folder the bytes of
        its weights and tokenizer files."""
        info = {
            "arrays": {"embedding.weight": list(self.table.shape)},
            "total_params": int(self.table.size),
            "layer_types": {"StaticEmbedding": 1},
        }
        if self.folder is not None:
            files = [Path(self.folder) / name for name in ("model.safetensors", "tokenizer.json")]
            info["size_on_disk_bytes"] = int(sum(p.stat().st_size for p in files if p.is_file()))
        return info

    def save(self, path: str | os.PathLike) -> Path:
        """Write a sentence-transformers StaticEmbedding folder (see the module docstring)
        with a model card: the card of the folder it was loaded from when distilkit wrote
        one, else one that records where it was loaded from."""
        card = carried_facts(self.folder, self.name, path)
        return save_static(path, self.table, self.tokenizer, self.normalize, self.metadata, card)

    def __repr__(self) -> str:
        return f"StaticEncoder({self.name!r}, vocab={len(self.table)}, dim={self.dim})"


def save_static(
    path: str | os.PathLike,
    table: np.ndarray,
    tokenizer: BackendTokenizer,
    normalize: bool = True,
    metadata: dict | None = None,
    card: CardFacts | None = None,
) -> Path:
    """Write ``table`` ``(vocab, dim)`` and ``tokenizer`` as a sentence-transformers folder,
    with a model card (:func:`~distilkit.model.card.static_facts` of ``card``, what the
    caller knows, and ``metadata``) unless the user's own README.md is there."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {"embedding.weight": np.ascontiguousarray(table, dtype=np.float32)},
        str(folder / "model.safetensors"),
    )
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokenizer.save(str(folder / "tokenizer.json"))
    entries = [{"idx": 0, "name": "0", "path": "", "type": STATIC_TYPE}]
    if normalize:
        (folder / "1_Normalize").mkdir(exist_ok=True)
        entries.append({"idx": 1, "name": "1", "path": "1_Normalize", "type": NORMALIZE_TYPE})
    _write_json(folder / "modules.json", entries)
    _write_json(
        folder / "config_sentence_transformers.json",
        {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )
    if metadata:
        _write_json(folder / METADATA_FILE, metadata)
    write_card(folder, static_facts(len(table), int(table.shape[1]), normalize, metadata, card))
    return folder


def _write_json(path: Path, data: dict | list) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def load_static(folder: str | os.PathLike, name: str | None = None) -> StaticEncoder:
    """Read a StaticEmbedding folder (ours, sentence-transformers' or a model2vec export)."""
    folder = Path(folder)
    entry = _static_entry(folder)
    if entry is None:
        raise ValueError(f"{folder} has no StaticEmbedding module in its modules.json")
    module = folder / entry.get("path", "")
    weights_path = module / "model.safetensors"
    if not weights_path.is_file():
        raise ValueError(f"{folder} lists a StaticEmbedding but {weights_path} is missing")
    weights = load_file(str(weights_path))
    if "embedding.weight" in weights:
        table = weights["embedding.weight"]
    elif "embeddings" in weights:  # model2vec's layout: rows, optional mapping and weights
        table = weights["embeddings"].astype(np.float32)
        if "mapping" in weights:
            table = table[weights["mapping"].astype(np.int64)]
        if "weights" in weights:
            table = table * weights["weights"].astype(np.float32)[:, None]
    else:
        raise ValueError(f"{weights_path} holds neither embedding.weight nor embeddings")
    tokenizer = BackendTokenizer.from_file(str(module / "tokenizer.json"))
    listing = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    normalize = any(str(e.get("type", "")).endswith("Normalize") for e in listing)
    metadata_path = folder / METADATA_FILE
    metadata = json.loads(metadata_path.read_text("utf-8")) if metadata_path.is_file() else {}
    return StaticEncoder(table, tokenizer, normalize, folder, name or str(folder), metadata)


__all__ = ["StaticEncoder", "is_static_folder", "load_static", "save_static"]
