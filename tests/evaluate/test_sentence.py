"""Sentence-encoder evaluation: readers, STS-B Spearman, SST-2 probe, static baseline, timing.

Metrics are checked against independent computations from the test's own embeddings
(scipy / scikit-learn / numpy written out here), on a tiny random encoder and tiny
TSV files; the shipped data files are checked against their README.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from distilkit.encoder import Encoder
from distilkit.evaluate import sentence as evaluation
from distilkit.evaluate import timing
from distilkit.evaluate.sentence import (
    DATA_DIR,
    PROBE_C,
    EvaluationDataError,
    Protocol,
    compare,
    cosine_spearman,
    evaluate_encoder,
    evaluate_side_by_side,
    probe_accuracy,
    read_sst2,
    read_stsb,
    sst2_probe_accuracy,
    static_embedding_baseline,
    static_embeddings,
    stsb_spearman,
    stsb_teacher_agreement,
    throughput,
)
from distilkit.evaluate.timing import time_embedders
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel
from distilkit.model.tokenizer import Tokenizer

STSB_HEADER = (
    "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
)
STSB_PAIRS = [
    ("the cat sat on the mat.", "the cat sat on the mat.", 5.0),
    ("the dog sat on the mat.", "a dog sat on a mat.", 4.2),
    ('a "big" red book', "the small blue book", 2.5),
    ("hello world", "hello, world!", 4.8),
    ("the bird is in the tree", "a tree with a bird", 3.6),
    ("it was read.", "this house is big", 0.4),
    ("run and jump", "jumping and running", 3.9),
    ("the cafe of this world", "the dog ran to the tree", 0.8),
    ("this is that", "that is this", 3.1),
    ("the mat was blue", "the mat is red", 1.7),
    ("small birds sat", "the small bird sat on the house", 2.9),
    ("read the book", "it was a big red tree", 0.2),
]


@pytest.fixture(scope="module")
def tiny_encoder(tiny_vocab_path: Path) -> Encoder:
    """A random 2-layer encoder (vocab 99, hidden 32) with the conftest's 99-token vocab."""
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=99,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    return Encoder(TransformerModel(config), Tokenizer.from_vocab(tiny_vocab_path, max_length=64))


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _stsb_file(path: Path) -> Path:
    rows = [
        f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{a}\t{b}\t{score:.3f}"
        for i, (a, b, score) in enumerate(STSB_PAIRS)
    ]
    return _write(path, [STSB_HEADER, *rows])


# Two classes whose sentences use disjoint words: mean-pooled embeddings of even a
# random encoder separate them linearly.
CLASS_WORDS = {
    0: ["cat", "dog", "mat", "sat", "house"],
    1: ["bird", "tree", "book", "read", "cafe"],
}


def _sst2_files(folder: Path, train_size: int = 60, dev_size: int = 30) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)

    def rows(count: int) -> list[str]:
        lines = ["sentence\tlabel"]
        for index in range(count):
            label = index % 2
            words = rng.choice(CLASS_WORDS[label], size=int(rng.integers(3, 8)))
            lines.append(f"{' '.join(words)} \t{label}")
        return lines

    return _write(folder / "train.tsv", rows(train_size)), _write(
        folder / "dev.tsv", rows(dev_size)
    )


def _protocol(tmp_path: Path, **changes) -> Protocol:
    train, dev = _sst2_files(tmp_path)
    settings = {
        "stsb_path": _stsb_file(tmp_path / "stsb.tsv"),
        "sst2_train_path": train,
        "sst2_dev_path": dev,
        "throughput_texts": 8,
        "throughput_repeats": 2,
        "latency_texts": 3,
        "batch_size": 4,
    }
    return Protocol(**(settings | changes))


# --------------------------------------------------------------------------- readers
def test_read_stsb_keeps_quotes_and_reads_scores(tmp_path: Path) -> None:
    first, second, scores = read_stsb(_stsb_file(tmp_path / "stsb.tsv"))
    assert first == [a for a, _, _ in STSB_PAIRS]
    assert second == [b for _, b, _ in STSB_PAIRS]
    assert first[2] == 'a "big" red book'  # QUOTE_NONE: quotes are text
    np.testing.assert_allclose(scores, [s for _, _, s in STSB_PAIRS])


def test_readers_reject_wrong_layouts(tmp_path: Path) -> None:
    test_split = _write(tmp_path / "test.tsv", [STSB_HEADER.rsplit("\t", 1)[0], "0\tx"])
    with pytest.raises(EvaluationDataError, match="10-column GLUE STS-B"):
        read_stsb(test_split)
    short_row = _write(tmp_path / "short.tsv", [STSB_HEADER, "0\ta\tb"])
    with pytest.raises(EvaluationDataError, match=r"line 2: expected 10 fields, got 3"):
        read_stsb(short_row)
    bad_score = _write(tmp_path / "score.tsv", [STSB_HEADER, "\t".join(["x"] * 10)])
    with pytest.raises(EvaluationDataError, match="score 'x' is not a number"):
        read_stsb(bad_score)
    with pytest.raises(EvaluationDataError, match="expected \\['sentence', 'label'\\]"):
        read_sst2(_write(tmp_path / "sst_test.tsv", ["index\tsentence", "0\tfine"]))
    with pytest.raises(EvaluationDataError, match="line 3"):
        read_sst2(_write(tmp_path / "labels.tsv", ["sentence\tlabel", "ok\t1", "bad\tpositive"]))
    with pytest.raises(EvaluationDataError, match="not found"):
        read_sst2(tmp_path / "missing.tsv")


# --------------------------------------------------------------------------- metrics
def test_cosine_spearman_matches_its_definition() -> None:
    rng = np.random.default_rng(1)
    first, second = rng.normal(size=(40, 6)), rng.normal(size=(40, 6))
    gold = rng.uniform(0, 5, size=40)
    cosines = np.diag(cosine_similarity(first, second))
    expected = 100 * spearmanr(cosines, gold).statistic
    assert cosine_spearman(first, second, gold) == pytest.approx(expected, abs=1e-9)
    assert cosine_spearman(first, second, cosines) == pytest.approx(100.0)
    assert cosine_spearman(first, second, -cosines) == pytest.approx(-100.0)
    with pytest.raises(ValueError, match="do not align"):
        cosine_spearman(first, second[:-1], gold)
    with pytest.raises(ValueError, match="constant"):
        cosine_spearman(first, second, np.ones(40))
    with pytest.raises(ValueError, match="NaN"):
        cosine_spearman(np.full_like(first, np.nan), second, gold)


def test_probe_separates_separable_data_and_matches_sklearn() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, size=300)
    features = rng.normal(size=(300, 10))
    features[:, 3] += 6.0 * (2 * labels - 1)  # far apart along one axis
    accuracy = probe_accuracy(features[:200], labels[:200], features[200:], labels[200:])
    assert accuracy == pytest.approx(100.0)
    noisy = rng.normal(size=(300, 10))
    noisy[:, 0] += 0.8 * labels
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=5000))
    reference.fit(noisy[:200], labels[:200])
    expected = 100 * np.mean(reference.predict(noisy[200:]) == labels[200:])
    assert probe_accuracy(noisy[:200], labels[:200], noisy[200:], labels[200:]) == pytest.approx(
        expected
    )
    assert 50 < expected < 100  # a case where the probe is neither trivial nor perfect
    with pytest.raises(ValueError, match="single class"):
        probe_accuracy(noisy[:10], np.zeros(10), noisy[10:20], labels[10:20])


# --------------------------------------------------------------------------- with an encoder
def test_stsb_spearman_equals_scipy_on_the_encoders_embeddings(
    tiny_encoder: Encoder, tmp_path: Path
) -> None:
    path = _stsb_file(tmp_path / "stsb.tsv")
    first = tiny_encoder.embed([a for a, _, _ in STSB_PAIRS], batch_size=5)
    second = tiny_encoder.embed([b for _, b, _ in STSB_PAIRS], batch_size=5)
    gold = [s for _, _, s in STSB_PAIRS]
    expected = 100 * spearmanr(np.diag(cosine_similarity(first, second)), gold).statistic
    value = stsb_spearman(tiny_encoder, path, batch_size=3)
    assert -100 <= value <= 100
    assert value == pytest.approx(expected, abs=1e-6)
    limited = 100 * spearmanr(np.diag(cosine_similarity(first[:6], second[:6])), gold[:6])[0]
    assert stsb_spearman(tiny_encoder, path, limit=6) == pytest.approx(limited, abs=1e-6)
    # A random model's [CLS] vectors are all alike (pair cosines 0.99998-1.0), so their
    # ranks turn on rounding: take the cosines in float64, as stsb_spearman does.
    cls_first = tiny_encoder.embed([a for a, _, _ in STSB_PAIRS], pooling="cls").astype(np.float64)
    cls_second = tiny_encoder.embed([b for _, b, _ in STSB_PAIRS], pooling="cls").astype(np.float64)
    cls_expected = 100 * spearmanr(np.diag(cosine_similarity(cls_first, cls_second)), gold)[0]
    assert stsb_spearman(tiny_encoder, path, pooling="cls") == pytest.approx(cls_expected, abs=1e-6)


def test_teacher_agreement_is_perfect_for_a_copy_and_matches_scipy_otherwise(
    tiny_encoder: Encoder, tmp_path: Path
) -> None:
    path = _stsb_file(tmp_path / "stsb.tsv")
    same = stsb_teacher_agreement(tiny_encoder, tiny_encoder, path, batch_size=4)
    assert same["sentence_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert same["similarity_spearman"] == pytest.approx(100.0, abs=1e-6)
    assert same["pairs"] == len(STSB_PAIRS)
    torch.manual_seed(1)
    other = Encoder(TransformerModel(tiny_encoder.model.config), tiny_encoder.tokenizer)
    texts = [a for a, _, _ in STSB_PAIRS] + [b for _, b, _ in STSB_PAIRS]
    student, teacher = other.embed(texts), tiny_encoder.embed(texts)
    n = len(STSB_PAIRS)
    cosine = np.diag(cosine_similarity(student, teacher)).mean()
    ranks = spearmanr(
        np.diag(cosine_similarity(student[:n], student[n:])),
        np.diag(cosine_similarity(teacher[:n], teacher[n:])),
    ).statistic
    agreement = stsb_teacher_agreement(other, tiny_encoder, path)
    assert agreement["sentence_cosine"] == pytest.approx(cosine, abs=1e-5)
    assert agreement["similarity_spearman"] == pytest.approx(100 * ranks, abs=1e-5)
    assert agreement["sentence_cosine"] < 0.999
    assert agreement["student_spearman"] == pytest.approx(stsb_spearman(other, path), abs=1e-6)
    assert agreement["teacher_spearman"] == pytest.approx(
        stsb_spearman(tiny_encoder, path), abs=1e-6
    )


def test_sst2_probe_on_encoder_matches_an_independent_pipeline(
    tiny_encoder: Encoder, tmp_path: Path
) -> None:
    train, dev = _sst2_files(tmp_path)
    train_texts, train_labels = read_sst2(train)
    dev_texts, dev_labels = read_sst2(dev)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=5000))
    reference.fit(tiny_encoder.embed(train_texts), train_labels)
    expected = 100 * np.mean(reference.predict(tiny_encoder.embed(dev_texts)) == dev_labels)
    accuracy = sst2_probe_accuracy(tiny_encoder, train, dev)
    assert accuracy == pytest.approx(expected)
    assert accuracy >= 95  # the two classes share no word
    assert 0 <= sst2_probe_accuracy(tiny_encoder, train, dev, train_limit=10) <= 100


def test_static_embeddings_average_the_word_piece_rows(tiny_encoder: Encoder) -> None:
    texts = ["the cat sat", "jumping birds!", "", "xyzzy"]  # "" has no pieces; xyzzy -> [UNK]
    weight = tiny_encoder.model.backbone.embeddings.word_embeddings.weight.detach().numpy()
    tokenizer = tiny_encoder.tokenizer
    expected = np.zeros((len(texts), weight.shape[1]), dtype=np.float32)
    for row, text in enumerate(texts):
        ids = [tokenizer.token_to_id(piece) for piece in tokenizer.tokenize(text)]
        if ids:
            expected[row] = weight[ids].mean(axis=0)
    np.testing.assert_allclose(static_embeddings(tiny_encoder, texts), expected, atol=1e-6)
    assert static_embeddings(tiny_encoder, []).shape == (0, 32)


# --------------------------------------------------------------------------- timing
def test_time_embedders_takes_turns_and_reports_medians(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake clock that the fake models advance makes every timing exact."""
    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    calls: list[str] = []

    def fake_model(name: str, seconds_per_text: float, slow_passes: set[int]):
        def embed(texts: list[str]) -> np.ndarray:
            calls.append(name)
            # a full pass numbered in slow_passes is disturbed: 10x slower
            disturbed = len(texts) > 1 and sum(c == name for c in calls) in slow_passes
            clock[0] += seconds_per_text * len(texts) * (10 if disturbed else 1)
            return np.zeros((len(texts), 2))

        return embed

    texts = ["a", "b", "c", "d"]
    # calls per model: 1 warm-up pass, 2 batch-1 warm-ups, then timed passes 4, 5, 6
    results = time_embedders(
        {"slow": fake_model("slow", 0.006, {5}), "fast": fake_model("fast", 0.002, {4})},
        texts,
        batch_size=2,
        repeats=3,
        warmup=1,
        latency_texts=2,
    )
    assert calls[:6] == ["slow"] * 3 + ["fast"] * 3  # each warms up: a pass, 2 single texts
    timed = calls[6:]
    assert timed[:6] == ["slow", "fast"] * 3  # full passes in turns
    assert timed[6:] == ["slow", "fast"] * 2  # then single texts in turns
    slow, fast = results["slow"], results["fast"]
    assert slow["sentences_per_s"] == pytest.approx(4 / 0.024)  # the median ignores pass 5
    assert fast["sentences_per_s"] == pytest.approx(4 / 0.008)
    assert slow["ms_per_batch"] == pytest.approx(24.0 / 2)  # 4 texts in batches of 2
    assert slow["latency_ms_p50"] == pytest.approx(6.0)
    assert fast["latency_ms_p95"] == pytest.approx(2.0)
    assert slow["throughput_repeats"] == 3 and slow["batch_size"] == 2
    with pytest.raises(ValueError, match="repeats >= 1"):
        time_embedders({"x": fake_model("x", 0, set())}, texts, repeats=0)


def test_throughput_restores_threads_and_training_mode(tiny_encoder: Encoder) -> None:
    threads = torch.get_num_threads()
    tiny_encoder.model.train()
    try:
        result = throughput(
            tiny_encoder,
            ["the cat sat"] * 9,
            batch_size=4,
            repeats=2,
            latency_texts=3,
            num_threads=1,
        )
        assert tiny_encoder.model.training
    finally:
        tiny_encoder.model.eval()
    assert torch.get_num_threads() == threads
    assert result["num_threads"] == 1 and result["throughput_texts"] == 9
    assert result["sentences_per_s"] > 0
    # 9 texts in batches of 4 is 3 batches per pass
    assert result["ms_per_batch"] == pytest.approx(1000 * 9 / result["sentences_per_s"] / 3)
    assert 0 < result["latency_ms_p50"] <= result["latency_ms_p95"]


# --------------------------------------------------------------------------- rows
def test_evaluate_side_by_side_rows(tiny_encoder: Encoder, tmp_path: Path) -> None:
    protocol = _protocol(tmp_path, stsb_pairs=10)
    rows = evaluate_side_by_side(
        {"teacher": tiny_encoder, "copy": tiny_encoder},
        static_baseline_of="teacher",
        protocol=protocol,
    )
    assert [row["name"] for row in rows] == ["teacher", "copy", "static embeddings of teacher"]
    teacher, copy, static = rows
    assert teacher["stsb_spearman"] == pytest.approx(
        stsb_spearman(tiny_encoder, protocol.stsb_path, limit=10)
    )
    assert copy["stsb_spearman"] == teacher["stsb_spearman"]
    assert teacher["stsb_pairs"] == 10 and teacher["sst2_train_examples"] == 60
    assert teacher["parameters"] == sum(p.numel() for p in tiny_encoder.model.parameters())
    # not loaded from a folder, so the size comes from saving it: float32 weights + header
    weights_bytes = 4 * teacher["parameters"]
    assert weights_bytes < teacher["size_on_disk_bytes"] < weights_bytes + 50_000
    assert (static["kind"], static["layers"], static["parameters"]) == ("static", 0, 99 * 32)
    # static_embeddings itself is checked against numpy above; here, that the row uses it
    first, second, gold = read_stsb(protocol.stsb_path)
    expected_static = cosine_spearman(
        static_embeddings(tiny_encoder, first[:10]),
        static_embeddings(tiny_encoder, second[:10]),
        gold[:10],
    )
    assert static["stsb_spearman"] == pytest.approx(expected_static, abs=1e-6)
    for row in rows:
        assert row["sentences_per_s"] > 0 and row["throughput_texts"] == 8
        assert 0 <= row["sst2_probe_accuracy"] <= 100
    single = static_embedding_baseline(tiny_encoder, name="static", protocol=protocol)
    assert single["stsb_spearman"] == pytest.approx(static["stsb_spearman"])
    assert evaluate_encoder(tiny_encoder, "alone", protocol=protocol)["name"] == "alone"
    with pytest.raises(ValueError, match="not one of the encoders"):
        evaluate_side_by_side({"teacher": tiny_encoder}, static_baseline_of="student")


def test_protocol_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="stsb_pairs"):
        Protocol(stsb_pairs=1)
    with pytest.raises(ValueError, match="throughput_repeats"):
        Protocol(throughput_repeats=0)


def test_compare_ratios() -> None:
    teacher = {"name": "t", "stsb_spearman": 80.0, "sst2_probe_accuracy": 85.0,
               "sentences_per_s": 100.0, "latency_ms_p50": 12.0, "parameters": 22_000_000,
               "size_on_disk_bytes": 88_000_000}  # fmt: skip
    student = {"name": "s", "stsb_spearman": 76.0, "sst2_probe_accuracy": 80.75,
               "sentences_per_s": 250.0, "latency_ms_p50": 4.0, "parameters": 11_000_000,
               "size_on_disk_bytes": None}  # fmt: skip
    result = compare(teacher, student)
    assert result["stsb_retention_pct"] == pytest.approx(95.0)
    assert result["sst2_retention_pct"] == pytest.approx(95.0)
    assert result["speedup"] == pytest.approx(2.5)
    assert result["latency_speedup"] == pytest.approx(3.0)
    assert result["parameter_compression"] == pytest.approx(2.0)
    assert result["size_compression"] is None
    assert (result["teacher"], result["student"]) == ("t", "s")


# --------------------------------------------------------------------------- shipped data
def test_shipped_data_matches_its_readme() -> None:
    readme = (DATA_DIR / "README.md").read_text(encoding="utf-8")
    listed = re.findall(
        r"^\| `([^`]+)` \|[^|]*\| ([\d,]+) \| ([\d,]+) \| ([0-9a-f]{64}) \|", readme, re.M
    )
    assert {name for name, *_ in listed} == {
        "stsb_dev.tsv", "sst2_dev.tsv", "sst2_train_sample.tsv", "STSB_LICENSE.txt",
    }  # fmt: skip
    for name, lines, size, sha256 in listed:
        data = (DATA_DIR / name).read_bytes()
        assert data.count(b"\n") == int(lines.replace(",", "")), name
        assert len(data) == int(size.replace(",", "")), name
        assert hashlib.sha256(data).hexdigest() == sha256, name
    assert evaluation.STSB_DEV.parent == DATA_DIR


def test_shipped_probe_sample_is_long_distinct_and_apart_from_dev() -> None:
    sentences, labels = read_sst2(evaluation.SST2_TRAIN_SAMPLE)
    dev_sentences, dev_labels = read_sst2(evaluation.SST2_DEV)
    assert len(sentences) == len(set(sentences)) == 4000
    assert min(len(s.split()) for s in sentences) >= 5
    assert not set(sentences) & set(dev_sentences)
    assert 0.4 < labels.mean() < 0.6
    assert len(dev_sentences) == 872 and set(dev_labels.tolist()) == {0, 1}
    first, second, scores = read_stsb(evaluation.STSB_DEV)
    assert len(first) == len(second) == 1500 and 0 <= scores.min() < scores.max() <= 5


# --------------------------------------------------------------------------- real model
@pytest.mark.slow
def test_real_teacher_on_200_stsb_pairs(minilm_folder: Path) -> None:
    from distilkit.encoder import load

    teacher = load(minilm_folder)
    assert stsb_spearman(teacher, limit=200) > 70


def test_fresh_process_timing(tiny_encoder: Encoder, tmp_path: Path) -> None:
    """A job that trained first times its models in a new process that loads them from
    their folders; a model no folder holds as it is (int8 here) is timed in this one."""
    from distilkit.encoder import load
    from distilkit.model.int8 import int8_available

    folder = tmp_path / "model"
    tiny_encoder.save(folder)
    loaded = load(folder, head=None, device="cpu")
    protocol = _protocol(tmp_path, stsb_pairs=10)
    rows = evaluate_side_by_side(
        {"teacher": loaded, "student": loaded},
        static_baseline_of="teacher",
        protocol=protocol,
        fresh_process=True,
    )
    assert [row["timed_in"] for row in rows] == ["a fresh process"] * 3
    for row in rows:
        assert row["sentences_per_s"] > 0 and row["throughput_texts"] == 8
        assert row["throughput_repeats"] == 2 and row["batch_size"] == 4
        assert row["latency_ms_p50"] is not None  # 3 latency texts, timed there too

    results, why = timing.time_in_fresh_process(
        {"gone": {"kind": "encoder", "folder": str(tmp_path / "missing"), "pooling": "mean"}},
        ["a text"],
        repeats=1,
        latency_texts=0,
    )
    assert results is None and why.startswith("the timing process failed (")
    assert "missing" in why  # the worker's last error line, naming the folder

    if int8_available():
        int8 = load(folder, head=None, device="cpu", dtype="int8")
        rows = evaluate_side_by_side(
            {"teacher": loaded, "student": int8}, protocol=protocol, fresh_process=True
        )
        assert [row["timed_in"] for row in rows] == ["this process"] * 2


def test_probe_leaves_out_dead_dimensions() -> None:
    """A student whose final LayerNorm decayed two weights to ~1e-25 has vector columns
    of rounding noise; standardised in float32 they divided by zero and the probe got NaN.
    The probe leaves such columns out: the same predictions as without them."""
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 2
    live = (rng.normal(size=(200, 6)) + labels[:, None]).astype(np.float32)
    dead = (rng.normal(size=(200, 2)) * 1e-23).astype(np.float32)
    products = dead * dead  # the pair features' u * v of dead columns: ~1e-46, denormal
    features = np.concatenate([live, dead, products], axis=1)
    got = evaluation.probe_predictions(features[:150], labels[:150], features[150:], c=0.1)
    want = evaluation.probe_predictions(live[:150], labels[:150], live[150:], c=0.1)
    assert np.array_equal(got, want)
    train, dev = (features[:150], labels[:150]), (features[150:], labels[150:])
    assert evaluation.probe_accuracy(*train, *dev, c=0.1) > 80
