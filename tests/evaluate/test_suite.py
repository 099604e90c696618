"""The dev suite: readers, SentEval's pair features, seeded k-fold probes, Spearman of
cosines and retention, each checked against a hand-made case or a formula written out here."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from suite_helpers import SICK_HEADER, fake_sentences, write_data_root

from distilkit.evaluate import suite
from distilkit.evaluate.sentence import PROBE_C, EvaluationDataError
from distilkit.evaluate.suite_data import read_mrpc, read_sick, read_trec


def hashed_embed(texts: list[str], dim: int = 8) -> np.ndarray:
    """Deterministic pseudo-random vectors keyed by each text."""
    rows = []
    for text in texts:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        rows.append(np.random.default_rng(seed).normal(size=dim))
    return np.asarray(rows, dtype=np.float32)


def test_pair_features_are_sentevals_u_v_absdiff_product():
    u = np.array([[1.0, 2.0], [0.0, -1.0]])
    v = np.array([[3.0, -1.0], [2.0, -1.0]])
    expected = np.array([[1, 2, 3, -1, 2, 3, 3, -2], [0, -1, 2, -1, 2, 0, 0, 1]], dtype=np.float64)
    np.testing.assert_array_equal(suite.pair_features(u, v), expected)
    with pytest.raises(ValueError, match="shape"):
        suite.pair_features(u, v[:1])


def test_kfold_splits_partition_stratify_and_depend_only_on_the_seed():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 5)
    folds = suite.kfold_splits(labels, 5, seed=3)
    again = suite.kfold_splits(labels, 5, seed=3)
    other = suite.kfold_splits(labels, 5, seed=4)
    tested = np.sort(np.concatenate([test for _, test in folds]))
    np.testing.assert_array_equal(tested, np.arange(20))  # every index tested exactly once
    for (train, test), (train2, test2) in zip(folds, again, strict=True):
        np.testing.assert_array_equal(test, test2)
        np.testing.assert_array_equal(train, train2)
        assert set(train).isdisjoint(test) and len(train) + len(test) == 20
        assert np.bincount(labels[test], minlength=3).tolist() == [2, 1, 1]  # stratified
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, other, strict=True))


def test_kfold_probe_accuracy_equals_a_hand_written_cross_validation():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    features = rng.normal(size=(60, 6)) + labels[:, None] * 0.8
    correct = 0
    for train, test in suite.kfold_splits(labels, 4, seed=1):
        probe = make_pipeline(
            StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=2000, random_state=1)
        ).fit(features[train], labels[train])
        correct += int((probe.predict(features[test]) == labels[test]).sum())
    assert suite.kfold_probe_accuracy(features, labels, 4, seed=1) == pytest.approx(
        100 * correct / 60
    )


def _hand_kfold(features, labels, folds, seed, c):
    correct = 0
    for train, test in suite.kfold_splits(labels, folds, seed):
        probe = make_pipeline(
            StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed)
        ).fit(features[train], labels[train])
        correct += int((probe.predict(features[test]) == labels[test]).sum())
    return 100 * correct / len(labels)


def test_select_probe_c_takes_the_best_cross_validated_c_and_the_smaller_on_a_tie():
    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1], 40)
    # 3 informative dimensions among 60 noisy ones: the C matters
    features = rng.normal(size=(80, 63))
    features[:, :3] += labels[:, None] * 0.9
    grid = (0.001, 0.01, 1.0)
    chosen, scores = suite.select_probe_c(features, labels, grid, folds=4, seed=2)
    for c in grid:
        assert scores[c] == pytest.approx(_hand_kfold(features, labels, 4, 2, c))
    best = max(scores.values())
    assert chosen == min(c for c in grid if scores[c] == best)
    separable = np.repeat([[-5.0], [5.0]], 20, axis=0)
    tie, tie_scores = suite.select_probe_c(separable, np.repeat([0, 1], 20), grid, 4, 0)
    assert set(tie_scores.values()) == {100.0} and tie == 0.001


def test_nested_probe_accuracy_chooses_c_on_each_outer_training_part_only():
    rng = np.random.default_rng(6)
    labels = np.repeat([0, 1, 2], 30)
    features = rng.normal(size=(90, 40))
    features[:, :4] += labels[:, None] * 0.7
    grid = (0.003, 0.03, 0.3)
    accuracy, chosen = suite.nested_probe_accuracy(features, labels, grid, folds=3, seed=4)
    correct = 0
    for (train, test), c in zip(suite.kfold_splits(labels, 3, 4), chosen, strict=True):
        inner = {g: _hand_kfold(features[train], labels[train], 3, 4, g) for g in grid}
        assert c == min(g for g in grid if inner[g] == max(inner.values()))
        probe = make_pipeline(
            StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=4)
        ).fit(features[train], labels[train])
        correct += int((probe.predict(features[test]) == labels[test]).sum())
    assert accuracy == pytest.approx(100 * correct / 90)


def test_the_suite_scores_each_probe_with_its_own_c(tmp_path, monkeypatch):
    root = write_data_root(tmp_path)
    table = {"SICK-E": 0.5, "SST-2": 0.02, "TREC": 0.2, "MRPC": 0.7}
    monkeypatch.setattr(suite, "PROBE_C_BY_TASK", table)
    seen = {}
    inside_kfold = []
    kfold, single = suite.kfold_probe_accuracy, suite.probe_accuracy

    def kfold_spy(features, labels, folds=5, seed=0, c=PROBE_C):
        task = {3: "SICK-E", 6: "TREC", 2: "MRPC"}[len(np.unique(labels))]
        seen[task] = c
        inside_kfold.append(task)
        try:
            return kfold(features, labels, folds, seed, c)
        finally:
            inside_kfold.pop()

    def single_spy(train, train_labels, dev, dev_labels, seed=0, c=PROBE_C):
        if not inside_kfold:  # the SST-2 probe, not a fold of another task
            seen["SST-2"] = c
        return single(train, train_labels, dev, dev_labels, seed, c)

    monkeypatch.setattr(suite, "kfold_probe_accuracy", kfold_spy)
    monkeypatch.setattr(suite, "probe_accuracy", single_spy)
    suite.score_embedders({"ref": hashed_embed}, suite.SuiteSettings(folds=3), root)
    assert seen == table


def test_readers_parse_senteval_layouts(tmp_path):
    root = write_data_root(tmp_path)
    sick = read_sick(root / "sick" / "SICK_trial.txt")
    assert len(sick.first) == 20 and sick.scores[1] == pytest.approx(1.7)
    assert sick.labels[:3].tolist() == [2, 1, 0]  # NEUTRAL, ENTAILMENT, CONTRADICTION
    questions, labels = read_trec(root / "trec" / "train_5500.label")
    assert questions[0] == "Who was Ren\xe9 ?" and labels[:2].tolist() == [3, 1]
    mrpc = read_mrpc(root / "mrpc" / "msr_paraphrase_train.txt")
    assert mrpc.labels[:2].tolist() == [0, 1] and mrpc.first[0] == fake_sentences(1, 2)[0]
    (root / "bad.txt").write_text(SICK_HEADER + "1\ta\tb\t3.0\tMAYBE\n")
    with pytest.raises(EvaluationDataError, match="line 2"):
        read_sick(root / "bad.txt")
    with pytest.raises(EvaluationDataError, match="DISTILKIT_DATA"):
        read_sick(root / "missing.txt")


def test_suite_scores_follow_their_formulas_and_retention_is_against_the_first_row(tmp_path):
    root = write_data_root(tmp_path)
    settings = suite.SuiteSettings(sst2_train_examples=300, folds=3, seed=2)

    def scaled(texts):  # the same directions, so every score equals the reference's
        return 2.0 * hashed_embed(texts)

    def other(texts):
        return hashed_embed([text + "!" for text in texts])

    rows = suite.score_embedders(
        {"ref": hashed_embed, "scaled": scaled, "other": other}, settings, root
    )
    assert [row["name"] for row in rows] == ["ref", "scaled", "other"]
    data = suite.load_suite_data(settings, root)
    trial = data.sick_trial
    u, v = hashed_embed(trial.first), hashed_embed(trial.second)
    cosines = (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    expected = 100 * spearmanr(cosines, trial.scores).statistic
    assert rows[0]["scores"]["SICK-R"] == pytest.approx(expected, abs=1e-6)
    pairs = data.mrpc
    features = suite.pair_features(hashed_embed(pairs.first), hashed_embed(pairs.second))
    assert rows[0]["scores"]["MRPC"] == pytest.approx(
        _hand_kfold(features, pairs.labels, 3, 2, suite.PROBE_C_BY_TASK["MRPC"])
    )
    assert len(data.sst2_train[0]) == 300 and len(data.trec[0]) == 60
    assert rows[0]["retention"] == {task: 100.0 for task in suite.TASKS}
    for task in ("STS-B", "SICK-R"):  # cosines ignore the scale
        assert rows[1]["scores"][task] == pytest.approx(rows[0]["scores"][task])
    ratio = {t: 100 * rows[2]["scores"][t] / rows[0]["scores"][t] for t in suite.TASKS}
    assert rows[2]["retention"] == pytest.approx(ratio)
    assert rows[2]["mean_retention"] == pytest.approx(np.mean(list(ratio.values())))
    table = suite.format_suite_table(rows)
    assert "mean retention %" in table and table.count("\n") == 4
    assert suite.format_suite_markdown(rows).count("\n") == 4


def test_quick_settings_take_the_first_part_of_each_probe_file(tmp_path):
    root = write_data_root(tmp_path)
    quick = suite.SuiteSettings(sick_entailment_pairs=30, trec_questions=12, mrpc_pairs=10)
    data = suite.load_suite_data(quick, root)
    full = suite.load_suite_data(suite.FULL, root)
    assert data.sick_train.first == full.sick_train.first[:30]
    assert data.trec[0] == full.trec[0][:12] and data.mrpc.second == full.mrpc.second[:10]
    assert len(data.texts()) == len(set(data.texts())) < len(full.texts())
