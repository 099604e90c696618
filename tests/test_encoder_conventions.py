"""Encoder conventions of the neighbours: attention maps as transformers' output_attentions,
features of a list of texts, similarity as sentence-transformers' cosine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TEXTS

import distilkit

transformers = pytest.importorskip("transformers")


def test_attentions_equal_transformers_output_attentions(hf_checkpoint: Callable[..., Path]):
    folder = hf_checkpoint("BertModel")
    encoder = distilkit.load(folder)
    text = "the big dog sat on the red mat."
    maps = encoder.attentions(text)
    tokens = encoder.tokens(text)
    assert maps.shape == (3, 4, len(tokens), len(tokens))
    assert np.allclose(maps.sum(-1), 1.0, atol=1e-5)
    reference = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    ids = torch.tensor([encoder.tokenizer.token_to_id(t) for t in tokens])[None]
    with torch.no_grad():
        expected = torch.stack(reference(ids, output_attentions=True).attentions)[:, 0]
    assert np.abs(maps - expected.numpy()).max() <= 1e-5
    # in a padded batch, rows put no weight on padding and still sum to 1 over real keys
    batch = encoder.tokenizer(TINY_TEXTS)
    with torch.no_grad():
        probs = encoder.model.backbone(
            batch.input_ids, batch.attention_mask, output_attentions=True
        ).attentions
    keys = batch.attention_mask.bool()[None, :, None, None, :]
    stacked = torch.stack(probs)  # (layers, batch, heads, T, T)
    assert float(stacked.masked_select(~keys.expand_as(stacked)).abs().max()) == 0.0
    assert torch.allclose(stacked.sum(-1), torch.ones(()), atol=1e-5)


def test_features_of_a_list_equal_one_by_one(hf_checkpoint: Callable[..., Path]) -> None:
    encoder = distilkit.load(hf_checkpoint("BertModel"))
    together = encoder.features(TINY_TEXTS, layer=2)
    assert isinstance(together, list) and len(together) == len(TINY_TEXTS)
    for text, array in zip(TINY_TEXTS, together, strict=True):
        alone = encoder.features(text, layer=2)
        assert array.shape == alone.shape == (len(encoder.tokens(text)), 32)
        assert np.abs(array - alone).max() <= 1e-5


def test_similarity_is_cosine_of_the_embeddings(hf_checkpoint: Callable[..., Path]) -> None:
    encoder = distilkit.load(hf_checkpoint("BertModel"))
    scores = encoder.similarity(TINY_TEXTS[:2], TINY_TEXTS)
    vectors = encoder.embed(TINY_TEXTS)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert scores.shape == (2, 5)
    assert np.allclose(scores, unit[:2] @ unit.T, atol=1e-5)
    assert np.allclose(encoder.similarity(vectors[:2], vectors), scores, atol=1e-5)
    assert np.allclose(np.diag(scores[:, :2]), 1.0, atol=1e-5)
