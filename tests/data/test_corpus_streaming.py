"""A corpus larger than a small memory cap is tokenized in chunks: the Python memory the
build takes (tracemalloc's peak, numpy arrays included) stays far below the corpus size
and does not grow with it."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import WORDS
from distill_helpers import tiny_tokenizer

from distilkit.data import corpus as corpus_module
from distilkit.data.corpus import CorpusSettings, build_corpus

MEMORY_CAP = 3 * 2**20  # bytes; the corpus below holds 4 MB of text


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """Short paragraphs of tiny-vocab words, written a piece at a time; returns bytes."""
    rng = np.random.default_rng(seed)
    words = np.asarray(WORDS)
    written = 0
    with path.open("w", encoding="utf-8") as handle:
        while written < megabytes * 2**20:
            piece = "".join(
                " ".join(rng.choice(words, size=int(rng.integers(6, 14)))) + ".\n\n"
                for _ in range(2000)
            )
            handle.write(piece)
            written += len(piece.encode("utf-8"))
    return written


def peak_memory_of_build(corpus: Path, tokenizer, cache: Path) -> tuple[int, int]:
    tracemalloc.start()
    try:
        built = build_corpus(
            [corpus], tokenizer, CorpusSettings(max_len=32, min_tokens=3), cache, progress=False
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, len(built)


def test_a_corpus_larger_than_the_memory_cap_is_read_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # smaller blocks and chunks than the defaults (1 M characters, 2048 paragraphs), so a
    # corpus a test can tokenize quickly is many chunks long
    monkeypatch.setattr(corpus_module, "BLOCK_CHARS", 1 << 16)
    monkeypatch.setattr(corpus_module, "ENCODE_CHUNK", 256)
    tokenizer = tiny_tokenizer(tmp_path / "vocab")
    path = tmp_path / "corpus.txt"
    size = write_corpus(path, 4)
    assert size > MEMORY_CAP
    peak, count = peak_memory_of_build(path, tokenizer, tmp_path / "cache")
    assert peak < MEMORY_CAP, f"peak {peak / 2**20:.1f} MB for {size / 2**20:.1f} MB of text"
    corpus = build_corpus(
        [path],
        tokenizer,
        CorpusSettings(max_len=32, min_tokens=3),
        tmp_path / "cache",
        progress=False,
    )
    assert len(corpus) == count > 30_000
    assert corpus.num_tokens == int(corpus.lengths.sum())  # offsets and tokens agree
    assert corpus[len(corpus) - 1][0] == tokenizer.cls_id
    assert corpus[len(corpus) - 1][-1] == tokenizer.sep_id
