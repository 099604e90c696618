"""The user API: ``distilkit.load`` and :class:`Encoder` (embed, features, fill_mask, logits,
info, save), checked against `transformers` and sentence-transformers."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SEQUENCE_LABELS, TINY_TEXTS

import distilkit
from distilkit.encoder import Encoder
from distilkit.model.summary import format_info
from distilkit.model.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

MINILM_TEXTS = [
    "A man is playing a guitar.",
    "The new movie is awesome, I loved every minute of it!",
    "ok",
    "Ünïcödé café, emoji 😀 and 中文.",
    # over the 256-token limit sentence-transformers applies to this model
    " ".join(f"word{i} and token" for i in range(120)),
]


@pytest.fixture(scope="module")
def tiny_bert(hf_checkpoint: Callable[..., Path]) -> tuple[Encoder, torch.nn.Module]:
    """A distilkit Encoder and the `transformers` BertModel of the same folder."""
    folder = hf_checkpoint("BertModel")
    return distilkit.load(folder), transformers.BertModel.from_pretrained(folder).eval()


def reference_token_vectors(reference: torch.nn.Module, encoder: Encoder, text: str):
    """`transformers`' hidden states for one text, unpadded: tuple of (tokens, hidden)."""
    batch = encoder.tokenizer([text])
    with torch.no_grad():
        out = reference(**batch.model_inputs(), output_hidden_states=True)
    return tuple(hidden[0].numpy() for hidden in out.hidden_states)


# ----------------------------------------------------------------------------- embed
@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "last"])
def test_embed_pooling_matches_reference(tiny_bert, pooling: str) -> None:
    encoder, reference = tiny_bert
    pool_reference = {
        "mean": lambda tokens: tokens.mean(0),
        "cls": lambda tokens: tokens[0],
        "max": lambda tokens: tokens.max(0),
        "last": lambda tokens: tokens[-1],
    }[pooling]
    expected = np.stack(
        [pool_reference(reference_token_vectors(reference, encoder, t)[-1]) for t in TINY_TEXTS]
    )
    # batch_size 2 splits the length-sorted texts over three batches
    vectors = encoder.embed(TINY_TEXTS, pooling=pooling, batch_size=2)
    assert vectors.shape == (5, 32) and vectors.dtype == np.float32
    assert np.allclose(vectors, expected, atol=1e-5)


def test_embed_normalize(tiny_bert) -> None:
    encoder, _ = tiny_bert
    raw = encoder.embed(TINY_TEXTS)
    unit = encoder.embed(TINY_TEXTS, normalize=True)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    assert np.allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)


def test_embed_edge_cases(tiny_bert) -> None:
    encoder, _ = tiny_bert
    assert encoder.embed("hello world").shape == (1, 32)
    assert np.allclose(encoder.embed("hello world")[0], encoder.embed(["hello world"])[0])
    assert encoder.embed([]).shape == (0, 32)
    with pytest.raises(ValueError, match="pooling must be one of"):
        encoder.embed(["x"], pooling="median")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        encoder.embed(["x"], batch_size=0)


def test_embed_warns_when_truncating(tiny_bert) -> None:
    encoder, _ = tiny_bert
    with pytest.warns(UserWarning, match="longer than 8 tokens"):
        vectors = encoder.embed(["the cat sat on the mat and the dog sat on it"], max_length=8)
    assert vectors.shape == (1, 32)


# ----------------------------------------------------------------------------- features, tokens
def test_features_are_the_token_vectors(tiny_bert) -> None:
    encoder, reference = tiny_bert
    text = "the big dog sat on the red mat."
    expected = reference_token_vectors(reference, encoder, text)
    tokens = encoder.tokens(text)
    assert tokens == ["[CLS]", "the", "big", "dog", "sat", "on", "the", "red", "mat", ".", "[SEP]"]
    last = encoder.features(text)
    assert last.shape == (len(tokens), 32)
    assert np.allclose(last, expected[-1], atol=1e-5)
    assert np.allclose(encoder.features(text, layer=0), expected[0], atol=1e-5)
    assert np.allclose(encoder.features(text, layer=2), expected[2], atol=1e-5)
    assert np.allclose(encoder.features(text, layer=-2), expected[2], atol=1e-5)
    for layer in (4, -5):
        with pytest.raises(ValueError, match=r"layer must be in \[-4, 3\] .* got "):
            encoder.features(text, layer=layer)


# ----------------------------------------------------------------------------- fill_mask
@pytest.fixture(scope="module")
def tiny_mlm(hf_checkpoint: Callable[..., Path]) -> tuple[Encoder, torch.nn.Module]:
    folder = hf_checkpoint("DistilBertForMaskedLM")
    return distilkit.load(folder), transformers.DistilBertForMaskedLM.from_pretrained(folder).eval()


def test_fill_mask_returns_what_the_transformers_pipeline_returns(
    tiny_mlm, hf_checkpoint: Callable[..., Path]
) -> None:
    encoder, reference = tiny_mlm
    folder = hf_checkpoint("DistilBertForMaskedLM")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    pipeline = transformers.pipeline("fill-mask", model=reference, tokenizer=tokenizer)
    for text in ("the cat [MASK] on the mat.", "the [MASK] sat on the [MASK]."):
        ours = encoder.fill_mask(text, top_k=7)
        theirs = pipeline(text, top_k=7)
        # the same nesting: one list of dicts for one mask, a list of such lists for several
        assert isinstance(ours, list) and isinstance(theirs, list)
        assert isinstance(ours[0], dict) == isinstance(theirs[0], dict) == (text.count("[") == 1)
        assert set(ours[0] if isinstance(ours[0], dict) else ours[0][0]) == set(
            theirs[0] if isinstance(theirs[0], dict) else theirs[0][0]
        )  # the same keys: score, token, token_str, sequence
        rows = [ours] if isinstance(ours[0], dict) else ours
        expected = [theirs] if isinstance(theirs[0], dict) else theirs
        assert len(rows) == len(expected) == text.count("[MASK]")
        for row, expected_row in zip(rows, expected, strict=True):
            assert [r["token"] for r in row] == [e["token"] for e in expected_row]
            assert [r["token_str"] for r in row] == [e["token_str"] for e in expected_row]
            assert [r["sequence"] for r in row] == [e["sequence"] for e in expected_row]
            scores = [r["score"] for r in row]
            assert scores == sorted(scores, reverse=True)
            assert np.allclose(scores, [e["score"] for e in expected_row], atol=1e-6)


def test_fill_mask_errors(tiny_mlm, hf_checkpoint: Callable[..., Path]) -> None:
    encoder, _ = tiny_mlm
    with pytest.raises(ValueError, match=r"no \[MASK\] token to fill"):
        encoder.fill_mask("the cat sat on the mat.")
    # the tiny model reads 64 tokens: truncation drops a [MASK] after them
    with (
        pytest.warns(UserWarning, match="truncated"),
        pytest.raises(ValueError, match=r"\[MASK\] was cut off by truncation at 64 tokens"),
    ):
        encoder.fill_mask("the cat sat on the mat. " * 20 + "the [MASK] sat.")
    headless = distilkit.load(hf_checkpoint("DistilBertForMaskedLM"), head=None)
    with pytest.raises(ValueError, match="has no masked-LM head"):
        headless.fill_mask("the [MASK] sat.")


# ----------------------------------------------------------------------------- logits
def test_logits_of_a_pair_classifier(hf_checkpoint: Callable[..., Path]) -> None:
    folder = hf_checkpoint("BertForSequenceClassification")
    encoder = distilkit.load(folder)
    reference = transformers.BertForSequenceClassification.from_pretrained(folder).eval()
    firsts, seconds = TINY_TEXTS[:3], TINY_TEXTS[2:]
    ours = encoder.logits(firsts, seconds, batch_size=2)
    with torch.no_grad():
        theirs = reference(**encoder.tokenizer(firsts, seconds).model_inputs()).logits
    assert ours.shape == (3, len(SEQUENCE_LABELS))
    assert np.allclose(ours, theirs.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="no sequence-classification head"):
        distilkit.load(folder, head=None).logits(["x"])


# ----------------------------------------------------------------------------- info
def test_info_counts(hf_checkpoint: Callable[..., Path]) -> None:
    folder = hf_checkpoint("BertForMaskedLM")
    encoder = distilkit.load(folder)
    info = encoder.info()
    vocab, hidden, ffn, positions, layers = 99, 32, 37, 64, 3
    embeddings = (vocab + positions + 2) * hidden + 2 * hidden
    per_layer = 4 * (hidden * hidden + hidden) + 2 * 2 * hidden + 2 * hidden * ffn + ffn + hidden
    mlm_head = hidden * hidden + hidden + 2 * hidden + vocab  # the decoder is the tied embedding
    expected_total = embeddings + layers * per_layer + mlm_head
    assert info["total_params"] == expected_total
    unique = {id(p): p.numel() for p in encoder.model.parameters()}
    assert info["total_params"] == sum(unique.values())
    reference = transformers.BertForMaskedLM.from_pretrained(folder)
    assert info["total_params"] == reference.num_parameters()
    assert info["trainable_params"] == expected_total
    assert sum(a["count"] for a in info["arrays"].values()) == expected_total
    assert info["layer_types"] == {"Dropout": 7, "Embedding": 3, "LayerNorm": 8, "Linear": 19}
    assert info["blocks"]["TransformerBlock"] == 3
    assert info["bytes_in_memory"] == 4 * expected_total
    assert info["size_on_disk_bytes"] == (folder / "model.safetensors").stat().st_size
    assert info["config"]["head"] == "masked_lm"
    table = format_info(info, max_arrays=5)
    assert f"total parameters: {expected_total:,} (float32" in table
    assert f"... {len(info['arrays']) - 5} more arrays" in table
    assert "Linear x19" in table


# ----------------------------------------------------------------------------- load, save, dtype
def test_save_and_load_again(tiny_bert, tmp_path: Path) -> None:
    encoder, _ = tiny_bert
    folder = encoder.save(tmp_path / "copy")
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()
    }
    again = distilkit.load(folder)
    assert np.array_equal(again.embed(TINY_TEXTS), encoder.embed(TINY_TEXTS))
    assert again.tokenizer.max_length == encoder.tokenizer.max_length == 64


def test_dtype_option(hf_checkpoint: Callable[..., Path]) -> None:
    folder = hf_checkpoint("BertModel")
    encoder = distilkit.load(folder, dtype="bf16")
    assert encoder.dtype == torch.bfloat16
    assert encoder.embed(TINY_TEXTS).dtype == np.float32
    assert "dtype=bfloat16" in repr(encoder)
    with pytest.raises(ValueError, match="dtype must be one of"):
        distilkit.load(folder, dtype="float8")


def test_tokenizer_larger_than_the_embeddings_is_rejected(
    tiny_bert, bert_base_tokenizer: Tokenizer
) -> None:
    encoder, _ = tiny_bert
    with pytest.raises(ValueError, match="the tokenizer must be the model's own"):
        Encoder(encoder.model, bert_base_tokenizer)


@pytest.fixture(scope="module")
def bert_base_tokenizer() -> Tokenizer:
    vocab = Path("/work/shared/models/bert-base-uncased/vocab.txt")
    if not vocab.is_file():
        pytest.skip(f"{vocab} is not available")
    return Tokenizer.from_vocab(vocab)


# ----------------------------------------------------------------------------- the real model
@pytest.fixture(scope="module")
def minilm(minilm_folder: Path) -> Encoder:
    return distilkit.load("all-MiniLM-L6-v2")


def test_minilm_embeddings_equal_sentence_transformers(
    minilm: Encoder, minilm_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    # The folder's recipe: mean pooling, then L2 normalisation, 256 tokens at most.
    modules = json.loads((minilm_folder / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    pooling = json.loads((minilm_folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    model = sentence_transformers.SentenceTransformer(str(minilm_folder), device="cpu")
    assert model.max_seq_length == minilm.tokenizer.max_length == 256
    expected = model.encode(MINILM_TEXTS, convert_to_numpy=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*were truncated")
        ours = minilm.embed(MINILM_TEXTS, pooling="mean", normalize=True)
    assert ours.shape == expected.shape == (5, 384)
    assert np.abs(ours - expected).max() <= 1e-5


def test_minilm_bfloat16_embeddings_stay_close(minilm: Encoder) -> None:
    texts = MINILM_TEXTS[:4]
    fp32 = minilm.embed(texts, normalize=True)
    bf16 = distilkit.load("all-MiniLM-L6-v2", dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    low = bf16.embed(texts, normalize=True)
    cosine = (fp32 * low).sum(1)  # both unit length
    assert cosine.min() >= 0.999
