"""Metrics against hand-computed values (expected numbers are worked out in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distilkit.tasks.metrics import (
    MetricInputError,
    accuracy,
    classification_metrics,
    entity_f1,
    exact_match,
    f1,
    f1_score,
    matthews_corr,
    normalize_answer,
    pearson,
    regression_metrics,
    spearman,
    squad_evaluate,
)
from distilkit.tasks.qa import QAExample

# Predictions vs labels used by the classification tests:
#   index:       0  1  2  3  4
PREDICTIONS = [0, 1, 1, 0, 1]
LABELS = [0, 1, 0, 0, 0]
# Class 1 as positive: tp = 1 (index 1), fp = 2 (2, 4), fn = 0, tn = 2 (0, 3).


def test_accuracy_counts_equal_ids() -> None:
    assert accuracy(PREDICTIONS, LABELS) == pytest.approx(3 / 5)


def test_f1_macro_and_binary_by_hand() -> None:
    # class 0: tp 2, fp 0, fn 2 -> P 1, R 1/2, F1 2/3; class 1: tp 1, fp 2, fn 0 -> F1 1/2.
    assert f1(PREDICTIONS, LABELS, average="macro") == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert f1(PREDICTIONS, LABELS, average="binary") == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="average"):
        f1(PREDICTIONS, LABELS, average="micro")


def test_matthews_by_formula() -> None:
    tp, tn, fp, fn = 1, 2, 2, 0
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_corr(PREDICTIONS, LABELS) == pytest.approx(expected)


def test_classification_metrics_take_argmax_of_logits() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [-1.0, 0.5], [0.3, 0.1], [0.0, 0.2]])
    scores = classification_metrics(logits, torch.tensor(LABELS))
    assert scores["accuracy"] == pytest.approx(3 / 5)
    assert scores["macro_f1"] == pytest.approx(7 / 12)
    with pytest.raises(MetricInputError, match="batch, num_labels"):
        classification_metrics(torch.zeros(5), LABELS)


def test_inputs_are_checked() -> None:
    with pytest.raises(MetricInputError, match="aligned"):
        accuracy([0, 1, 1], [0, 1])
    with pytest.raises(MetricInputError, match="argmax"):
        accuracy(np.zeros((3, 2)), [0, 1, 1])
    with pytest.raises(MetricInputError, match="empty"):
        accuracy([], [])


def test_pearson_matches_the_covariance_formula() -> None:
    predictions = np.array([0.5, 1.5, 2.0, 4.0, 3.5])
    labels = np.array([1.0, 1.0, 2.5, 3.0, 5.0])
    centred_p = predictions - predictions.mean()
    centred_l = labels - labels.mean()
    expected = (centred_p @ centred_l) / math.sqrt(
        (centred_p @ centred_p) * (centred_l @ centred_l)
    )
    # (n, 1) column tensors, as a regression head returns them, are accepted.
    column = torch.tensor(predictions, dtype=torch.float32).unsqueeze(1)
    assert pearson(column, labels) == pytest.approx(expected, abs=1e-6)


def test_spearman_by_rank_formula() -> None:
    # Ranks of y: [1, 3, 2, 4]; d = [0, -1, 1, 0]; rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8.
    scores = regression_metrics([10.0, 20.0, 30.0, 40.0], [1.0, 3.0, 2.0, 4.0])
    assert scores["spearman"] == pytest.approx(0.8)
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_entity_f1_by_hand() -> None:
    true_tags = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-MISC"]]
    pred_tags = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O"]]
    # gold entities: PER, LOC, ORG, MISC (4); predicted: PER, ORG (wrong type), ORG (3);
    # correct: PER and the second sentence's ORG -> P 2/3, R 2/4, F1 2PR/(P+R) = 4/7.
    scores = entity_f1(true_tags, pred_tags)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(1 / 2)
    assert scores["f1"] == pytest.approx(4 / 7)


def test_entity_f1_is_conlleval_style() -> None:
    # conlleval counts an I-PER after O as the start of a PER entity (strict IOB2 would
    # reject it): the prediction matches the gold entity, so all scores are 1.
    scores = entity_f1([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]])
    assert scores == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    with pytest.raises(MetricInputError, match="sentence 0 has 3 gold tags but 2"):
        entity_f1([["O", "B-PER", "I-PER"]], [["O", "B-PER"]])


def test_normalize_answer_follows_the_official_steps() -> None:
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("Theater") == "theater"  # articles only as whole words
    assert normalize_answer("the.") == ""  # punctuation goes first, then the article
    assert normalize_answer("U.S.-based") == "usbased"


def test_exact_match_and_token_f1_by_hand() -> None:
    assert exact_match("Denver Broncos", "the denver broncos.") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0
    # "cat sat on mat" vs "cat sat on hat": 3 common of 4 and 4 -> P = R = 3/4 -> F1 3/4.
    assert f1_score("the cat sat on the mat", "a cat sat on a hat") == pytest.approx(0.75)
    # Counter overlap: "cat cat cat" vs "cat dog" share one cat -> P 1/3, R 1/2, F1 0.4.
    assert f1_score("cat cat cat", "cat dog") == pytest.approx(0.4)
    # Both normalise to nothing: the official script gives EM 1 but F1 0.
    assert exact_match("the", "a") == 1.0
    assert f1_score("the", "a") == 0.0


def _example(question_id: str, answers: list[str]) -> QAExample:
    context = " ".join(answers)
    return QAExample(
        id=question_id,
        title="t",
        question="q?",
        context=context,
        answers=[(text, context.index(text)) for text in answers],
    )


def test_squad_evaluate_takes_max_over_gold_answers() -> None:
    examples = [
        _example("q1", ["Denver Broncos", "the Denver Broncos"]),
        _example("q2", ["Carolina Panthers", "Panthers"]),
        _example("q3", ["Levi's Stadium"]),
    ]
    predictions = {"q1": "Broncos", "q2": "the Panthers"}
    # q1: EM 0, F1 vs "denver broncos" = 2 * 1 * 1/2 / (3/2) = 2/3 (same for both golds);
    # q2: EM 1 and F1 1 against "Panthers"; q3: no prediction, 0 -> totals over 3 questions.
    with pytest.warns(UserWarning, match="1 of 3 questions have no prediction"):
        scores = squad_evaluate(predictions, examples)
    assert scores["exact_match"] == pytest.approx(100 * 1 / 3)
    assert scores["f1"] == pytest.approx(100 * (2 / 3 + 1) / 3)
    # A mapping id -> gold texts works the same way.
    gold = {example.id: [text for text, _ in example.answers] for example in examples[:2]}
    assert squad_evaluate(predictions, gold)["f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)


def test_squad_evaluate_rejects_unknown_ids() -> None:
    with pytest.raises(MetricInputError, match="not in the examples"):
        squad_evaluate({"other": "x"}, [_example("q1", ["a b"])])
