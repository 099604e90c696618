"""Static students: the table is the teacher's token vectors, PCA-reduced and SIF-weighted;
a sentence is the mean of its tokens' rows; the folder is sentence-transformers'."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import distilkit
from distilkit.methods.static import Config, run
from distilkit.methods.static.vocab import sif_weights, with_words, zipf_probabilities
from distilkit.model.pca import fit_pca
from distilkit.model.static import StaticEncoder, is_static_folder
from distilkit.settings import ConfigError

TEXTS = ["the cat sat on the mat.", "hello world", "a big red dog", "", "zzz qqq"]


@pytest.fixture(scope="module")
def teacher_folder(hf_checkpoint):
    return hf_checkpoint("BertModel")


def reference_token_vectors(folder, ids: list[list[int]]) -> np.ndarray:
    """transformers' BertModel on [CLS] ids [SEP], mean over the positions: the by-hand
    vector of each vocabulary entry."""
    transformers = pytest.importorskip("transformers")
    model = transformers.BertModel.from_pretrained(folder).eval()
    out = []
    with torch.no_grad():
        for entry in ids:
            input_ids = torch.tensor([[2, *entry, 3]])  # [CLS]=2, [SEP]=3 in the tiny vocab
            out.append(model(input_ids).last_hidden_state[0].mean(0).numpy())
    return np.stack(out)


def test_vectors_are_the_mean_of_token_vectors_times_weights(teacher_folder, tmp_path):
    run(Config(teacher=str(teacher_folder), dims=7, evaluate=False), tmp_path / "s")
    static = distilkit.load(tmp_path / "s")
    assert isinstance(static, StaticEncoder) and static.dim == 7
    vocab = 99
    vectors = reference_token_vectors(teacher_folder, [[i] for i in range(vocab)])
    excluded = [0, 2, 3, 4]  # [PAD] [CLS] [SEP] [MASK]: never averaged, not in the PCA
    reachable = [i for i in range(vocab) if i not in excluded]
    pca = fit_pca(vectors[reachable], 7)
    inverse_rank = 1 / np.arange(2, len(reachable) + 2)  # Zipf over the reachable entries
    weights = np.ones(vocab)
    weights[reachable] = 1e-4 / (1e-4 + inverse_rank / inverse_rank.sum())  # SIF by hand
    rows = (vectors - pca.mean) @ pca.components.T * weights[:, None]
    rows[excluded] = 0
    got = static.embed(TEXTS, normalize=False)
    for text, vector in zip(TEXTS, got, strict=True):
        ids = static.tokenizer.encode(text, add_special_tokens=False).ids
        expected = rows[ids].mean(0) if ids else np.zeros(7)
        np.testing.assert_allclose(vector, expected, atol=2e-5)
    unit = static.embed(TEXTS[:3])
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    # fewer dimensions: the leading PCA components only, renormalised
    for text, vector in zip(TEXTS[:3], static.embed(TEXTS[:3], dimensions=4), strict=True):
        ids = static.tokenizer.encode(text, add_special_tokens=False).ids
        expected = rows[ids, :4].mean(0)
        np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=2e-5)
    with pytest.raises(ValueError, match="between 1 and 7"):
        static.embed(TEXTS, dimensions=8)
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert metrics["vocabulary"] == vocab and metrics["dims"] == 7


def test_pca_keeps_the_stated_variance():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(300, 11)) @ rng.normal(size=(11, 11))
    pca = fit_pca(data, 4)
    projected = pca.transform(data)
    centred = data - data.mean(0)
    kept = projected.var(0, ddof=1).sum() / centred.var(0, ddof=1).sum()
    assert pca.kept_variance == pytest.approx(kept, rel=1e-4)
    sklearn = pytest.importorskip("sklearn.decomposition")
    reference = sklearn.PCA(4).fit(data)
    np.testing.assert_allclose(
        pca.explained_variance_ratio, reference.explained_variance_ratio_, rtol=1e-5
    )
    np.testing.assert_allclose(
        np.abs(pca.components @ reference.components_.T), np.eye(4), atol=1e-4
    )
    assert fit_pca(data, 50).kept_variance == pytest.approx(1.0)


def test_corpus_words_become_whole_entries(teacher_folder, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the catdog sat. a catdog ran. catdog catdog house.\n", encoding="utf-8")
    run(
        Config(
            teacher=str(teacher_folder),
            dims=5,
            vocab_from=[str(corpus)],
            min_count=2,
            weighting="none",
            evaluate=False,
        ),
        tmp_path / "s",
    )
    static = distilkit.load(tmp_path / "s")
    assert static.tokens("the catdog") == ["the", "catdog"]
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert metrics["corpus_words"] == 1 and len(static.table) == 100
    # the new row is the teacher's vector of the word's pieces, through the same PCA
    pieces = distilkit.load(teacher_folder).tokenizer.encode_ids(["catdog"])[0]
    vectors = reference_token_vectors(teacher_folder, [[i] for i in range(99)] + [pieces])
    pca = fit_pca(np.delete(vectors, [0, 2, 3, 4], axis=0), 5)
    np.testing.assert_allclose(static.table[99], pca.transform(vectors[99:])[0], atol=2e-5)


def test_training_moves_sentences_towards_the_teacher(teacher_folder, tmp_path):
    corpus = tmp_path / "train.txt"
    words = ["the", "cat", "dog", "sat", "on", "mat", "hello", "world", "big", "small", "red"]
    rng = np.random.default_rng(1)
    corpus.write_text(
        "\n\n".join(" ".join(rng.choice(words, 6)) + "." for _ in range(300)), encoding="utf-8"
    )
    config = Config(
        teacher=str(teacher_folder),
        dims=8,
        train_corpus=[str(corpus)],
        epochs=8,
        lr=0.05,
        batch_size=32,
        evaluate=False,
    )
    metrics = run(config, tmp_path / "s")
    log = metrics["train_log"]
    assert len(log) == 8 and log[-1]["heldout_loss"] < log[0]["heldout_loss"]
    assert not (tmp_path / "s" / ".work").exists()
    assert run(config, tmp_path / "s") == json.loads((tmp_path / "s" / "metrics.json").read_text())


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="needs a corpus"):
        Config(weighting="corpus")
    with pytest.raises(ConfigError, match="loss"):
        Config(loss="kl")
    with pytest.raises(ValueError, match="SIF"):
        sif_weights(zipf_probabilities(5), 2.0)


def test_added_words_need_a_wordpiece_tokenizer():
    from tokenizers import Tokenizer, models

    bpe = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    with pytest.raises(ValueError, match="WordPiece"):
        with_words(bpe, ["ab"])


@pytest.mark.slow
def test_sentence_transformers_loads_the_folder_with_the_same_vectors(teacher_folder, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    run(Config(teacher=str(teacher_folder), dims=6, evaluate=False), tmp_path / "s")
    assert is_static_folder(tmp_path / "s")
    model = st.SentenceTransformer(str(tmp_path / "s"), device="cpu")
    texts = [t for t in TEXTS if t]
    expected = model.encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(distilkit.load(tmp_path / "s").embed(texts), expected, atol=1e-5)
