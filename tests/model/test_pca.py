"""PCA projection of any student's sentence vectors, saved as a sentence-transformers Dense."""

from __future__ import annotations

import numpy as np

import distilkit
from distilkit.model.pca import fit_pca, pca_dense, with_projection

TEXTS = ["the cat sat on the mat.", "hello world", "a big red dog", "book", "this is that"]


def test_the_dense_projection_gives_the_pca_of_the_vectors(hf_checkpoint, tmp_path):
    encoder = distilkit.load(hf_checkpoint("BertModel"), head=None)
    raw = encoder.embed(TEXTS * 3, normalize=False)
    pca = fit_pca(raw, 4)
    encoder.sentence = with_projection(encoder.sentence, pca_dense(pca))
    projected = encoder.embed(TEXTS)
    np.testing.assert_allclose(projected, pca.transform(raw[:5]), atol=1e-5)
    encoder.save(tmp_path / "reduced")
    reloaded = distilkit.load(tmp_path / "reduced")
    assert reloaded.embed(TEXTS).shape == (5, 4)
    np.testing.assert_allclose(reloaded.embed(TEXTS), projected, atol=1e-5)
