"""Semantic search: rankings against a brute-force reference, the saved index, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_SIZES

import distilkit
from distilkit.cli import main as cli
from distilkit.deploy.search import SearchIndex, model_fingerprint
from distilkit.model.checkpoint import save_model
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel
from distilkit.model.tokenizer import Tokenizer

COLLECTION = [
    "the cat sat on the mat.",
    "hello world",
    "",
    "a big red dog jumped over this small blue house",
    "book",
    "   ",
    "this is that; it was read.",
    "the dog sat on the mat.",
]


def _model_folder(root: Path, vocab: Path, seed: int) -> Path:
    # The default init, not conftest's randomize_: its random final LayerNorm bias is shared
    # by every token, which puts all sentence vectors at cosine 0.99999 to each other. Here
    # they spread from 0.71 to 0.98, so rankings do not turn on rounding.
    torch.manual_seed(seed)
    model = TransformerModel(ModelConfig(**TINY_SIZES))
    return save_model(model, root / f"model-{seed}", tokenizer=Tokenizer.from_vocab(vocab))


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, tiny_vocab_path: Path) -> list[Path]:
    root = tmp_path_factory.mktemp("search")
    return [_model_folder(root, tiny_vocab_path, seed) for seed in (0, 1)]


def _unit_vector(encoder: distilkit.Encoder, text: str) -> np.ndarray:
    """Mean-pooled, unit-length vector of one text on its own (no padding)."""
    vector = encoder.embed([text], batch_size=1)[0].astype(np.float64)
    return vector / np.linalg.norm(vector)


def test_hits_match_a_one_text_at_a_time_reference(folders: list[Path]) -> None:
    encoder = distilkit.load(folders[0])
    index = SearchIndex.build(encoder, COLLECTION, batch_size=3)
    queries = ["the cat sat on the mat.", "a red house"]
    results = index.search(encoder, queries, top_k=4)
    searchable = [i for i, text in enumerate(COLLECTION) if text.strip()]
    for query, hits in zip(queries, results, strict=True):
        query_vector = _unit_vector(encoder, query)
        expected = {
            i: float(_unit_vector(encoder, COLLECTION[i]) @ query_vector) for i in searchable
        }
        assert len(hits) == 4
        for hit in hits:
            assert hit.text == COLLECTION[hit.index]
            assert hit.score == pytest.approx(expected[hit.index], abs=1e-5)
        scores = [hit.score for hit in hits]
        assert scores == sorted(scores, reverse=True)
        # nothing left out scores clearly above the last hit
        assert max(v for i, v in expected.items() if i not in {h.index for h in hits}) <= (
            scores[-1] + 1e-5
        )
    # a query equal to a text finds it first, at cosine 1
    assert results[0][0].index == 0 and results[0][0].score == pytest.approx(1.0, abs=1e-5)


def test_empty_texts_keep_their_place_but_are_never_hits(folders: list[Path]) -> None:
    encoder = distilkit.load(folders[0])
    index = SearchIndex.build(encoder, COLLECTION)
    assert len(index) == len(COLLECTION)
    # even with the query's own vector in the empty texts' rows, they are not returned
    index.vectors[[2, 5]] = _unit_vector(encoder, "hello").astype(np.float32)
    hits = index.search(encoder, "hello", top_k=100)[0]
    assert sorted(hit.index for hit in hits) == [0, 1, 3, 4, 6, 7]


def test_ties_keep_collection_order(folders: list[Path]) -> None:
    encoder = distilkit.load(folders[0])
    index = SearchIndex.build(encoder, ["hello world", "book", "the cat"] * 30)
    index.vectors[1::3] = index.vectors[1]  # exact ties (batching may differ in the last bit)
    hits = index.search(encoder, "book", top_k=30)[0]
    assert [hit.index for hit in hits] == list(range(1, 90, 3))


def test_saved_index_round_trips_and_is_reused_only_when_nothing_changed(
    folders: list[Path], tmp_path: Path
) -> None:
    first, second = (distilkit.load(folder) for folder in folders)
    path = tmp_path / "index.npz"
    built, reused = SearchIndex.cached(path, first, COLLECTION)
    assert not reused and path.is_file()
    loaded = SearchIndex.load(path)
    np.testing.assert_array_equal(loaded.vectors, built.vectors)
    assert loaded.texts == COLLECTION and loaded.pooling is None  # the model's own
    assert loaded.search(first, "book") == built.search(first, "book")
    _, reused = SearchIndex.cached(path, first, COLLECTION)
    assert reused
    # another model, another pooling, other texts: rebuilt, never served stale vectors
    for encoder, texts, pooling in (
        (second, COLLECTION, "mean"),
        (first, COLLECTION, "cls"),
        (first, [*COLLECTION[:-1], "the dog sat on a mat."], "mean"),
    ):
        built.save(path)  # the original index each time, so one thing differs
        rebuilt, reused = SearchIndex.cached(path, encoder, texts, pooling)
        assert not reused
        fresh = SearchIndex.build(encoder, texts, pooling)
        np.testing.assert_allclose(rebuilt.vectors, fresh.vectors, atol=1e-6)
        assert SearchIndex.load(path).texts == texts
    assert not list(tmp_path.glob("*.partial*"))  # written atomically


def test_fingerprint_follows_the_weights(folders: list[Path]) -> None:
    encoder = distilkit.load(folders[0])
    before = model_fingerprint(encoder)
    assert model_fingerprint(distilkit.load(folders[0])) == before
    with torch.no_grad():
        encoder.model.backbone.embeddings.word_embeddings.weight[5, 0] += 1e-3
    assert model_fingerprint(encoder) != before
    # the same weights run as int8 blocks give other vectors, so another fingerprint
    assert model_fingerprint(distilkit.load(folders[0], dtype="int8")) != before


def test_bad_input_is_a_clear_error(folders: list[Path], tmp_path: Path) -> None:
    first, second = (distilkit.load(folder) for folder in folders)
    index = SearchIndex.build(first, COLLECTION)
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        index.search(first, "book", top_k=0)
    with pytest.raises(ValueError, match="query 2 is empty"):
        index.search(first, ["book", " "])
    with pytest.raises(ValueError, match="built with another model"):
        index.search(second, "book")
    with pytest.raises(ValueError, match="collection is empty"):
        SearchIndex.build(first, [])
    with pytest.raises(ValueError, match="only empty texts"):
        SearchIndex.build(first, ["", "  "])
    not_an_index = tmp_path / "junk.npz"
    not_an_index.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a distilkit search index"):
        SearchIndex.load(not_an_index)
    with pytest.raises(ValueError, match=r"saved as a \.npz file"):
        index.save(tmp_path / "index.bin")


def test_cli_search(
    folders: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    collection = tmp_path / "texts.txt"
    collection.write_text("\n".join(COLLECTION) + "\n", encoding="utf-8")
    index_path = tmp_path / "texts.npz"
    argv = [str(folders[0]), "--input", str(collection), "--query", "the cat sat on the mat."]
    argv += ["--query", "book", "-k", "2", "--index", str(index_path)]
    assert cli.main(["search", *argv, "--json", str(tmp_path / "hits.json")]) == 0
    out = capsys.readouterr().out
    assert "query: the cat sat on the mat." in out and "query: book" in out
    # the first query's best hit: line 1, cosine 1
    first_hit = out.splitlines()[2].split()
    assert first_hit[:3] == ["1", "1.000", "1"]
    assert f"saved to {index_path}" in out
    hits = json.loads((tmp_path / "hits.json").read_text())
    assert [len(entry["hits"]) for entry in hits] == [2, 2]
    assert hits[1]["hits"][0]["text"] == "book" and hits[1]["hits"][0]["index"] == 4

    queries = tmp_path / "queries.txt"
    queries.write_text("book\n\n", encoding="utf-8")
    argv = [str(folders[0]), "--input", str(collection), "--queries", str(queries)]
    assert cli.main(["search", *argv, "--index", str(index_path)]) == 0
    out = capsys.readouterr().out
    assert f"reused {index_path}" in out and out.count("query:") == 1

    argv = [str(folders[0]), "--input", str(collection), "--query", "book"]
    assert cli.main(["search", *argv, "-k", "0"]) == 2
    assert "--top-k must be at least 1" in capsys.readouterr().err
    assert cli.main(["search", *argv, "--index", str(tmp_path / "i.bin")]) == 2
    assert "--index must name a .npz file" in capsys.readouterr().err
    assert cli.main(["search", str(folders[0]), "--input", str(collection), "--query", " "]) == 2
    assert "--query is empty" in capsys.readouterr().err


def test_retrieval_metrics_match_the_ranks_of_search(folders: list[Path]) -> None:
    from distilkit.deploy.search import retrieval_metrics

    encoder = distilkit.load(folders[0])
    index = SearchIndex.build(encoder, COLLECTION)
    queries = ["the cat sat", "hello", "a dog jumped", "book", "it was read", "the mat"]
    targets = [0, 1, 3, 7, 6, 4]
    ranks = []
    for hits in index.search(encoder, queries, top_k=len(COLLECTION)):
        ranks.append(1 + [hit.index for hit in hits].index(targets[len(ranks)]))
    ranks = np.asarray(ranks)
    metrics = retrieval_metrics(index, encoder, queries, targets, ks=(1, 2, 6))
    assert metrics["recall@1"] == pytest.approx((ranks <= 1).mean())
    assert metrics["recall@2"] == pytest.approx((ranks <= 2).mean())
    assert metrics["recall@6"] == 1.0  # six non-empty texts
    assert metrics["mrr"] == pytest.approx((1 / ranks).mean())
    assert 0 < metrics["mrr"] < 1  # the tiny model is not perfect, so the check means something
    with pytest.raises(ValueError, match="target 2 is not a non-empty text"):
        retrieval_metrics(index, encoder, ["book"], [2])
    with pytest.raises(ValueError, match="one each"):
        retrieval_metrics(index, encoder, ["book"], [0, 1])


def test_top_indices_equal_a_full_stable_sort() -> None:
    from distilkit.deploy.search import top_indices

    generator = np.random.default_rng(0)
    for n, count in ((1, 1), (7, 3), (500, 10), (500, 500), (64, 64)):
        scores = generator.integers(0, 20, size=n).astype(np.float32)  # many ties
        scores[generator.random(n) < 0.1] = -np.inf
        expected = np.argsort(-scores, kind="stable")[:count]
        np.testing.assert_array_equal(top_indices(scores, count), expected)


def test_queries_scored_in_chunks_give_the_same_hits(
    folders: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import distilkit.deploy.search as search_module

    encoder = distilkit.load(folders[0])
    index = SearchIndex.build(encoder, COLLECTION)
    queries = ["the cat", "hello", "a dog", "book", "it was read"]
    whole = index.search(encoder, queries, top_k=3)
    monkeypatch.setattr(search_module, "QUERY_CHUNK", 2)
    chunked = index.search(encoder, queries, top_k=3)
    assert [[h.index for h in hits] for hits in chunked] == [
        [h.index for h in hits] for hits in whole
    ]
    for hits, expected in zip(chunked, whole, strict=True):  # batches pad differently
        assert [h.score for h in hits] == pytest.approx([h.score for h in expected], abs=1e-6)
