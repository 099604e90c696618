"""Principal component analysis of vectors, for fewer dimensions: fit once on a sample of
vectors, then project any vector with ``(x - mean) @ components.T``.

Used by static students (the teacher's token vectors, as model2vec does) and by the
PCA projection of any student's sentence vectors (saved as a sentence-transformers
``Dense`` module: weight ``components``, bias ``-components @ mean``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distilkit.model.st_folder import DenseLayer, SentenceModules


@dataclass
class PCA:
    """mean: ``(dim,)``; components: ``(kept, dim)`` orthonormal rows, by decreasing
    variance; explained_variance_ratio: ``(kept,)`` share of the total variance each keeps."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray

    @property
    def kept_variance(self) -> float:
        """Share of the sample's total variance the kept components explain."""
        return float(self.explained_variance_ratio.sum())

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """``(n, dim)`` -> ``(n, kept)`` float32."""
        return ((vectors - self.mean) @ self.components.T).astype(np.float32)


def fit_pca(vectors: np.ndarray, dims: int) -> PCA:
    """The top ``dims`` principal components of ``vectors`` ``(n, dim)`` (centred), from the
    eigenvectors of their covariance; each component's sign is set so that its largest
    projection is positive (a deterministic choice). ``dims`` >= dim keeps every
    component (a rotation)."""
    if dims < 1:
        raise ValueError(f"PCA needs at least one dimension, got {dims}")
    if len(vectors) < 2:
        raise ValueError(f"PCA needs at least two vectors, got {len(vectors)}")
    data = vectors.astype(np.float64)
    mean = data.mean(axis=0)
    centred = data - mean
    covariance = centred.T @ centred / (len(data) - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    order = np.argsort(eigenvalues)[::-1][: min(dims, data.shape[1])]
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    components = eigenvectors[:, order].T  # (kept, dim)
    scores = centred @ components.T
    signs = np.sign(scores[np.abs(scores).argmax(axis=0), np.arange(len(order))])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    ratio = eigenvalues[order] / max(eigenvalues.sum(), 1e-30)
    return PCA(mean.astype(np.float32), components.astype(np.float32), ratio)


def pca_dense(pca: PCA) -> DenseLayer:
    """The projection as a sentence-transformers ``Dense`` module (identity activation):
    ``x @ components.T - components @ mean`` = ``(x - mean) @ components.T``."""
    weight = torch.from_numpy(pca.components.astype(np.float32))  # (kept, dim)
    bias = -(weight @ torch.from_numpy(pca.mean.astype(np.float32)))
    return DenseLayer(weight, bias, "torch.nn.modules.linear.Identity")


def with_projection(recipe: SentenceModules, dense: DenseLayer) -> SentenceModules:
    """``recipe`` with ``dense`` after its pooling and Dense stages, before its Normalize."""
    stages = list(recipe.stages)
    at = len(stages) - 1 if stages and stages[-1] == "normalize" else len(stages)
    stages.insert(at, dense)
    return SentenceModules(**{**vars(recipe), "stages": stages})


__all__ = ["PCA", "fit_pca", "pca_dense", "with_projection"]
