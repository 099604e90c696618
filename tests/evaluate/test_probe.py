"""probe: a classifier on a frozen model's vectors of labelled texts, beside a static
baseline; word-vector files (GloVe and word2vec text) and their errors; the command."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_drawn

import distilkit
from distilkit.cli.main import main
from distilkit.data.tables import InputError
from distilkit.evaluate.probe import (
    LabelledTexts,
    TokenMaxHead,
    read_labelled_table,
    read_word_vectors,
    run_probe,
    word_vector_embedder,
)

FILLERS = ["the", "cat", "sat", "on", "mat", "is", "was", "and", "of", "it", "this", "with"]


def order_set(count: int, seed: int) -> LabelledTexts:
    """Every text holds "red" and "blue" once, one first and one last: the label is which
    comes first. The bag of words is the same for both labels, so context-free vectors
    cannot tell them apart, while a model with positions can."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(count):
        middle = list(rng.choice(FILLERS, size=int(rng.integers(3, 7))))
        red_first = bool(rng.integers(2))
        first, last = ("red", "blue") if red_first else ("blue", "red")
        texts.append(" ".join([first, *middle, last]))
        labels.append("red first" if red_first else "blue first")
    return LabelledTexts(texts, labels, Path(f"set-{seed}.tsv"))


def write_table(path: Path, data: LabelledTexts) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, delimiter="\t")
        writer.writerow(["id", "sentence", "label"])
        rows = zip(data.texts, data.labels, strict=True)
        writer.writerows([i, text, label] for i, (text, label) in enumerate(rows))
    return path


@pytest.fixture(scope="module")
def encoder(hf_checkpoint: Callable[..., Path]):
    return distilkit.load(hf_checkpoint("BertModel"))


@pytest.mark.parametrize("classifier", ["logistic", "token-max"])
def test_probe_beats_chance_and_its_static_baseline(encoder, classifier: str) -> None:
    train, test = order_set(300, seed=0), order_set(200, seed=1)
    report = run_probe(encoder, train, test, classifier=classifier, model_name="tiny")
    model, static = report.rows
    assert report.label_names == ["blue first", "red first"]
    counts = np.bincount([report.label_names.index(x) for x in test.labels])
    majority = max(set(train.labels), key=train.labels.count)
    assert report.chance == pytest.approx(100 * test.labels.count(majority) / len(test.labels))
    assert abs(static.accuracy - 50) < 8  # one bag of words for both labels
    assert model.accuracy > report.chance + 8 and model.accuracy > static.accuracy + 8
    for row in report.rows:  # confusion matrices count every test text, rows = truth
        assert row.confusion.sum() == len(test.texts)
        assert row.confusion.sum(axis=1).tolist() == counts.tolist()
        assert np.trace(row.confusion) == pytest.approx(row.accuracy / 100 * len(test.texts))


def test_token_max_head_is_a_masked_max_of_a_linear_map() -> None:
    torch.manual_seed(0)
    head = TokenMaxHead(5, 3)
    tokens, mask = torch.randn(2, 4, 5), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    tokens[1, 2:] = 100.0  # padding must not win the max
    expected = torch.stack(
        [(tokens[i, : int(mask[i].sum())] @ head.linear.weight.T + head.linear.bias).max(0).values
         for i in range(2)]
    )  # fmt: skip
    assert torch.allclose(head(tokens, mask), expected)


def test_word_vector_files_and_their_average(tmp_path: Path) -> None:
    glove = tmp_path / "glove.txt"
    glove.write_text("red 1 0 2\nblue 0 1 -2\nthe 0.5 0.5 0.5\n", "utf-8")
    word2vec = tmp_path / "w2v.txt"
    word2vec.write_text("3 3\nred 1 0 2\nblue 0 1 -2\nthe 0.5 0.5 0.5\n", "utf-8")
    for path in (glove, word2vec):
        words, vectors = read_word_vectors(path)
        assert words == {"red": 0, "blue": 1, "the": 2} and vectors.shape == (3, 3)
    embed = word_vector_embedder(words, vectors)
    out = embed(["Red, the BLUE zebra", "zebra", ""])  # lower-cased: the file is
    expected = (vectors[0] + vectors[1] + vectors[2]) / 3  # red, the, blue
    assert np.allclose(out[0], expected) and not out[1].any() and not out[2].any()


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        ("red 1 0 2\nblue 0 1\n", ":2: 2 numbers after the word, but the vectors have dimension 3"),
        ("red 1 0 2\nblue 0 1 2 3\n", ":2: 4 numbers after the word"),
        ("red 1 0 2\nblue 0 x1 2\n", ":2: 'x1' is not a number"),
        ("2 3\nred 1 0\n", ":2: 2 numbers after the word, but the vectors have dimension 3"),
        ("red 1 nan 2\n", ":1: a value is not finite"),
        ("red\n", ":1: a line must be a word and its numbers"),
    ],
)
def test_bad_vector_files_are_one_line_errors(
    tmp_path: Path, content: str, phrase: str, hf_checkpoint, capsys
) -> None:
    path = tmp_path / "vectors.txt"
    path.write_text(content, "utf-8")
    with pytest.raises(InputError, match=phrase.replace("(", r"\(")):
        read_word_vectors(path)
    train = write_table(tmp_path / "train.tsv", order_set(20, 0))
    code = main(["probe", str(hf_checkpoint("BertModel")), "--train", str(train), "--test",
                 str(train), "--baseline", str(path),
                 "--output", str(tmp_path / "c.png")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and phrase in err
    assert err.startswith(f"error: {path}:") and not (tmp_path / "c.png").exists()


def test_probe_command_with_a_vector_file(hf_checkpoint, tmp_path: Path, capsys) -> None:
    train = write_table(tmp_path / "train.tsv", order_set(120, 0))
    test = write_table(tmp_path / "test.tsv", order_set(60, 1))
    vectors = tmp_path / "vectors.txt"
    rng = np.random.default_rng(3)
    vectors.write_text(
        "".join(f"{w} " + " ".join(f"{x:.4f}" for x in rng.normal(size=7)) + "\n"
                for w in [*FILLERS, "red", "blue"]),
        "utf-8",
    )  # fmt: skip
    out = tmp_path / "confusion.png"
    code = main(["probe", str(hf_checkpoint("BertModel")), "--train", str(train), "--test",
                 str(test), "--baseline", str(vectors), "--classifier", "token-max",
                 "--output", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "120 train and 60 test texts, 2 classes (blue first, red first)" in printed
    assert "max-pooled per-token linear head" in printed
    assert "static: averaged vectors of vectors.txt" in printed and "chance" in printed
    assert_drawn(out)


def test_table_columns_and_label_problems(tmp_path: Path) -> None:
    table = tmp_path / "data.csv"
    table.write_text("words,intent\nhello there,greet\nbye now,leave\n", "utf-8")
    data = read_labelled_table(table, "words", "intent")
    assert data.texts == ["hello there", "bye now"] and data.labels == ["greet", "leave"]
    with pytest.raises(InputError, match="name the text with --text-column"):
        read_labelled_table(table)
    with pytest.raises(InputError, match=r"no column 'label' \(--label-column\)"):
        read_labelled_table(table, "words")
    other = tmp_path / "other.csv"
    other.write_text("words,intent\nhi,greet\nhm,ponder\n", "utf-8")
    train = read_labelled_table(table, "words", "intent")
    with pytest.raises(InputError, match=r"labels the train file lacks: \['ponder'\]"):
        run_probe(None, train, read_labelled_table(other, "words", "intent"))  # type: ignore[arg-type]
