"""Quantized sentence vectors for search: int8 (4x less memory) and binary (32x less).

- **int8**: each dimension is mapped linearly from its calibration range ``[low, high]``
  (the collection's own min and max, as sentence-transformers' ``quantize_embeddings``
  does) onto the 256 int8 levels; a score is the float query's dot product with the
  dequantized vector, computed from the int8 codes.
- **binary**: one bit per dimension, ``x > 0``, packed 8 to a byte; the first pass ranks by
  Hamming distance between the query's bits and each text's. **Rescoring** then takes the
  best ``rescore_multiplier * k`` candidates and scores them by the dot product of the
  float query (or its int8 quantization) with the candidates' ``±1`` bit vectors, and
  returns the best ``k`` of those (Yamada et al.'s recipe, as sentence-transformers and
  usearch apply it).

Memory is what the stored arrays hold (:attr:`QuantizedVectors.nbytes`), not a formula.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRECISIONS = ("float32", "int8", "binary")
QUERY_PRECISIONS = ("float32", "int8")
POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
BLOCK = 65536  # texts dequantized at once (bounds the transient float memory)


def int8_codes(vectors: np.ndarray, low: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``(n, dim)`` float -> int8 codes: level ``round((x - low) / step)`` in [0, 255],
    shifted by -128; values outside ``[low, high]`` are clipped."""
    levels = np.clip(np.round((vectors - low) / step), 0, 255)
    return (levels - 128).astype(np.int8)


def dequantize_int8(codes: np.ndarray, low: np.ndarray, step: np.ndarray) -> np.ndarray:
    """int8 codes -> the float32 values they stand for, ``low + (code + 128) * step``."""
    return (low + (codes.astype(np.float32) + 128.0) * step).astype(np.float32)


def pack_bits(vectors: np.ndarray) -> np.ndarray:
    """``(n, dim)`` float -> ``(n, ceil(dim / 8))`` uint8, bit set where the value is > 0."""
    return np.packbits(vectors > 0, axis=1)


def hamming(query_bits: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Hamming distances of ``(q, bytes)`` packed queries to ``(n, bytes)`` packed texts:
    ``(q, n)`` int32."""
    out = np.empty((len(query_bits), len(bits)), dtype=np.int32)
    for row, query in enumerate(query_bits):
        out[row] = POPCOUNT[np.bitwise_xor(bits, query)].sum(axis=1, dtype=np.int32)
    return out


@dataclass
class QuantizedVectors:
    """A collection's vectors in int8 or binary, with the int8 calibration ranges.

    codes: ``(n, dim)`` int8 or ``(n, ceil(dim / 8))`` uint8 packed bits; low, step:
    ``(dim,)`` float32 (kept for binary too, to quantize queries to int8 for rescoring).
    """

    precision: str
    codes: np.ndarray
    dim: int
    low: np.ndarray
    step: np.ndarray

    @classmethod
    def quantize(cls, vectors: np.ndarray, precision: str) -> QuantizedVectors:
        """Quantize ``(n, dim)`` float vectors, calibrated on themselves."""
        if precision not in ("int8", "binary"):
            raise ValueError(f"precision must be int8 or binary here, got {precision!r}")
        low = vectors.min(axis=0).astype(np.float32)
        step = np.maximum((vectors.max(axis=0) - low) / 255.0, 1e-12).astype(np.float32)
        codes = int8_codes(vectors, low, step) if precision == "int8" else pack_bits(vectors)
        return cls(precision, codes, int(vectors.shape[1]), low, step)

    @property
    def nbytes(self) -> int:
        """Bytes the stored arrays hold (codes and calibration ranges)."""
        return int(self.codes.nbytes + self.low.nbytes + self.step.nbytes)

    def query(self, queries: np.ndarray, query_precision: str) -> np.ndarray:
        """The query vectors as scored: float32 as given, or their int8 round trip."""
        if query_precision not in QUERY_PRECISIONS:
            raise ValueError(f"query precision must be one of {QUERY_PRECISIONS}")
        if query_precision == "float32":
            return queries.astype(np.float32)
        return dequantize_int8(int8_codes(queries, self.low, self.step), self.low, self.step)

    def scores(self, queries: np.ndarray, query_precision: str = "float32") -> np.ndarray:
        """First-pass scores ``(q, n)`` float32: int8, the dot product with the dequantized
        vectors; binary, minus the Hamming distance of the query's bits."""
        if self.precision == "binary":
            return -hamming(pack_bits(queries), self.codes).astype(np.float32)
        queries = self.query(queries, query_precision)
        out = np.empty((len(queries), len(self.codes)), dtype=np.float32)
        for start in range(0, len(self.codes), BLOCK):
            block = dequantize_int8(self.codes[start : start + BLOCK], self.low, self.step)
            out[:, start : start + len(block)] = queries @ block.T
        return out

    def rescore(
        self, queries: np.ndarray, candidates: np.ndarray, query_precision: str = "float32"
    ) -> np.ndarray:
        """Scores of each query against its own candidate texts: ``queries`` ``(q, dim)``,
        ``candidates`` ``(q, c)`` positions -> ``(q, c)``. Binary: the query (float32 or
        int8) dot the candidates' ``±1`` bits; int8: the dot product with the dequantized
        vectors."""
        queries = self.query(queries, query_precision)
        rows = self.codes[candidates]  # (q, c, bytes or dim)
        if self.precision == "binary":
            signs = np.unpackbits(rows, axis=-1, count=self.dim).astype(np.float32) * 2 - 1
        else:
            signs = dequantize_int8(rows, self.low, self.step)
        return np.einsum("qd,qcd->qc", queries, signs)


__all__ = [
    "PRECISIONS",
    "QUERY_PRECISIONS",
    "QuantizedVectors",
    "dequantize_int8",
    "hamming",
    "int8_codes",
    "pack_bits",
]
