"""int8 and binary search indexes: exact where the quantization loses nothing, rescoring
never short of k, memory read from the arrays."""

from __future__ import annotations

import numpy as np
import pytest

from distilkit.deploy.quantization import (
    QuantizedVectors,
    dequantize_int8,
    hamming,
    int8_codes,
    pack_bits,
)
from distilkit.deploy.search import SearchIndex, retrieval_metrics_from_vectors

DIM = 19  # not a multiple of 8: the packed bits carry padding


def sign_collection(count: int, seed: int = 0) -> np.ndarray:
    """Unit vectors with entries ±1/sqrt(DIM): int8 (the range is [-c, c]) and binary (the
    signs) both represent them exactly, and cosine = 1 - 2 * hamming / DIM."""
    rng = np.random.default_rng(seed)
    return (rng.choice([-1.0, 1.0], size=(count, DIM)) / np.sqrt(DIM)).astype(np.float32)


def test_codes_follow_their_formulas():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(40, DIM)).astype(np.float32)
    quantized = QuantizedVectors.quantize(vectors, "int8")
    low, high = vectors.min(0), vectors.max(0)
    step = (high - low) / 255
    expected = np.round((vectors - low) / step) - 128
    np.testing.assert_array_equal(quantized.codes, expected.astype(np.int8))
    restored = dequantize_int8(quantized.codes, quantized.low, quantized.step)
    assert np.abs(restored - vectors).max() <= step.max() / 2 + 1e-6
    assert int8_codes(high[None] + 5, low, step).tolist() == [[127] * DIM]  # clipped
    bits = pack_bits(vectors)
    assert bits.shape == (40, 3) and bits.dtype == np.uint8
    distances = hamming(bits[:2], bits)
    for q in range(2):
        for n in range(40):
            assert distances[q, n] == int(((vectors[q] > 0) != (vectors[n] > 0)).sum())


@pytest.mark.parametrize("precision", ["int8", "binary"])
@pytest.mark.parametrize("multiplier", [0, 1, 4])
def test_quantized_search_is_exact_on_sign_vectors(precision, multiplier):
    docs = sign_collection(200)
    queries = docs[[3, 77, 150]] * 0.999 + sign_collection(3, seed=5) * 0.001
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    texts = [f"text {i}" for i in range(len(docs))]
    exact = SearchIndex(docs, texts, "mean", "m").search_vectors(queries, top_k=1)
    index = SearchIndex(docs, texts, "mean", "m", precision, rescore_multiplier=multiplier)
    hits = index.search_vectors(queries, top_k=1)
    assert [h[0].index for h in hits] == [h[0].index for h in exact] == [3, 77, 150]
    # the whole ranking of the sign collection agrees with float32's (ties aside)
    float_scores = queries @ docs.T
    ranking = index.ranking_scores(queries, top_k=10)
    for row_float, row_quantized in zip(float_scores, ranking, strict=True):
        top = np.argsort(-row_quantized, kind="stable")[:10]
        assert np.all(np.diff(row_float[top]) <= 1e-3)  # grid 2/DIM; the nudge 2e-4


def test_int8_scores_equal_the_dot_product_with_the_dequantized_vectors():
    rng = np.random.default_rng(2)
    docs = rng.normal(size=(30, DIM)).astype(np.float32)
    queries = rng.normal(size=(4, DIM)).astype(np.float32)
    quantized = QuantizedVectors.quantize(docs, "int8")
    restored = dequantize_int8(quantized.codes, quantized.low, quantized.step)
    np.testing.assert_allclose(quantized.scores(queries), queries @ restored.T, rtol=1e-5)
    signs = np.where(docs > 0, 1.0, -1.0)
    binary = QuantizedVectors.quantize(docs, "binary")
    candidates = np.array([[0, 5, 7]] * 4)
    np.testing.assert_allclose(
        binary.rescore(queries, candidates), queries @ signs[[0, 5, 7]].T, rtol=1e-5
    )


@pytest.mark.parametrize("k", [1, 3, 10, 25])
def test_rescoring_never_returns_fewer_than_k(k):
    docs = sign_collection(12)
    texts = [f"t{i}" for i in range(12)]
    texts[4] = " "  # an empty text is never a hit
    index = SearchIndex(docs, texts, "mean", "m", "binary", rescore_multiplier=2)
    hits = index.search_vectors(sign_collection(5, seed=9), top_k=k)
    assert all(len(row) == min(k, 11) for row in hits)
    assert all(4 not in {h.index for h in row} for row in hits)
    assert all(len({h.index for h in row}) == len(row) for row in hits)


def test_memory_is_read_from_the_arrays(tmp_path):
    docs = sign_collection(64)
    texts = [f"t{i}" for i in range(64)]
    sizes = {
        p: SearchIndex(docs, texts, "mean", "m", p).nbytes for p in ("float32", "int8", "binary")
    }
    assert sizes["float32"] == 64 * DIM * 4
    assert sizes["int8"] == 64 * DIM + 2 * DIM * 4  # codes + the calibration ranges
    assert sizes["binary"] == 64 * 3 + 2 * DIM * 4
    binary = SearchIndex(docs, texts, "mean", "m", "binary", rescore_multiplier=3)
    loaded = SearchIndex.load(binary.save(tmp_path / "index.npz"))
    assert (loaded.precision, loaded.rescore_multiplier, loaded.nbytes) == (
        "binary",
        3,
        binary.nbytes,
    )
    queries = sign_collection(4, seed=3)
    assert loaded.search_vectors(queries, 5) == binary.search_vectors(queries, 5)


def test_retrieval_metrics_of_a_binary_index_rank_rescored_candidates_first():
    docs = sign_collection(50)
    texts = [f"t{i}" for i in range(50)]
    index = SearchIndex(docs, texts, "mean", "m", "binary")
    metrics = retrieval_metrics_from_vectors(index, docs[:10], list(range(10)))
    assert metrics["recall@1"] == 1.0 and metrics["mrr"] == 1.0
    with pytest.raises(ValueError, match="precision"):
        SearchIndex(docs, texts, "mean", "m", "int4")
