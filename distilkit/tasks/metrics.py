"""Task metrics: classification, regression, entity F1 (seqeval) and SQuAD v1.1 EM / F1.

The numbers come from scikit-learn, scipy and seqeval; this module only converts inputs
(numpy arrays, torch tensors or lists) and checks them, so a shape mistake gives a clear
error rather than a silently wrong score. The SQuAD functions follow the definitions of
the official v1.1 evaluation script: answers are compared after lower-casing, removing
punctuation and the articles a / an / the, and collapsing whitespace; F1 is computed on
the bag of normalised tokens; each question scores the maximum over its gold answers,
and the totals are percentages (0-100).
"""

from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import stats
from sklearn import metrics as sklearn_metrics

if TYPE_CHECKING:
    from distilkit.tasks.qa import QAExample

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]


class MetricInputError(ValueError):
    """Predictions and references do not fit together (length, shape, ids)."""


class MissingExtraError(ImportError, ValueError):
    """An optional dependency is not installed; the message names the extra to install."""


def _seqeval():
    """seqeval's metrics module (the ``eval`` extra), imported where entity F1 is needed."""
    try:
        from seqeval import metrics
    except ImportError:
        raise MissingExtraError(
            "entity F1 needs seqeval, which the eval extra installs: pip install 'distilkit[eval]'"
        ) from None
    return metrics


def _as_vector(values: ArrayLike, what: str) -> np.ndarray:
    """A 1-d numpy copy of a list / array / tensor; (n, 1) column vectors are flattened."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise MetricInputError(
            f"{what} must be one value per example (shape (n,)), got shape {array.shape}; "
            "for logits take the argmax over the last axis first"
        )
    return array


def _pair(predictions: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    predicted = _as_vector(predictions, "predictions")
    reference = _as_vector(labels, "labels")
    if predicted.shape != reference.shape:
        raise MetricInputError(
            f"got {predicted.shape[0]} predictions for {reference.shape[0]} labels: "
            "they must be aligned one to one"
        )
    if predicted.size == 0:
        raise MetricInputError("cannot score an empty set of predictions")
    return predicted, reference


# --------------------------------------------------------------------------- classification
def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of predicted class ids equal to the labels, in [0, 1]."""
    predicted, reference = _pair(predictions, labels)
    return float(sklearn_metrics.accuracy_score(reference, predicted))


def f1(predictions: ArrayLike, labels: ArrayLike, average: str = "macro") -> float:
    """F1 of predicted class ids, in [0, 1].

    ``average="macro"``: unweighted mean of per-class F1 over the classes seen in either
    input; ``average="binary"``: F1 of class 1 (as GLUE reports for MRPC and QQP).
    """
    if average not in ("macro", "binary"):
        raise ValueError(f"average must be 'macro' or 'binary', got {average!r}")
    predicted, reference = _pair(predictions, labels)
    return float(sklearn_metrics.f1_score(reference, predicted, average=average, zero_division=0))


def matthews_corr(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation coefficient of predicted class ids, in [-1, 1] (GLUE CoLA)."""
    predicted, reference = _pair(predictions, labels)
    return float(sklearn_metrics.matthews_corrcoef(reference, predicted))


def classification_metrics(logits: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Accuracy, macro F1 and Matthews correlation from logits (batch, num_labels)."""
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().cpu().numpy()
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise MetricInputError(f"logits must have shape (batch, num_labels), got {logits.shape}")
    predictions = logits.argmax(axis=-1)
    return {
        "accuracy": accuracy(predictions, labels),
        "macro_f1": f1(predictions, labels, average="macro"),
        "matthews": matthews_corr(predictions, labels),
    }


# --------------------------------------------------------------------------- regression
def pearson(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Pearson correlation of real-valued predictions and labels (nan if one is constant)."""
    predicted, reference = _pair(predictions, labels)
    if predicted.size < 2:
        raise MetricInputError("a correlation needs at least 2 examples")
    return float(stats.pearsonr(predicted.astype(np.float64), reference.astype(np.float64))[0])


def spearman(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Spearman rank correlation of predictions and labels (nan if one is constant)."""
    predicted, reference = _pair(predictions, labels)
    if predicted.size < 2:
        raise MetricInputError("a correlation needs at least 2 examples")
    return float(stats.spearmanr(predicted, reference)[0])


def regression_metrics(predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Pearson and Spearman correlation of predictions (batch,) or (batch, 1) with labels."""
    return {"pearson": pearson(predictions, labels), "spearman": spearman(predictions, labels)}


# --------------------------------------------------------------------------- NER
def entity_f1(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (in [0, 1]) of IOB2 tag sequences.

    Uses seqeval's default mode, which reproduces the CoNLL shared task's ``conlleval``
    script: an entity is a maximal chunk of one type, and an ``I-X`` that follows ``O``
    or another type starts a new entity (instead of being discarded as in seqeval's
    strict IOB2 mode). This is the evaluation the published CoNLL-2003 F1 figures use.
    """
    seqeval_metrics = _seqeval()
    if len(true_tags) != len(pred_tags):
        raise MetricInputError(
            f"got {len(pred_tags)} predicted sentences for {len(true_tags)} gold sentences"
        )
    for index, (gold, predicted) in enumerate(zip(true_tags, pred_tags, strict=True)):
        if len(gold) != len(predicted):
            raise MetricInputError(
                f"sentence {index} has {len(gold)} gold tags but {len(predicted)} predicted "
                "tags: predict one tag per word (words lost to truncation count as 'O')"
            )
    gold_lists = [list(tags) for tags in true_tags]
    predicted_lists = [list(tags) for tags in pred_tags]
    with warnings.catch_warnings():
        # seqeval warns (UndefinedMetricWarning) and returns 0 when there is no entity.
        warnings.simplefilter("ignore")
        return {
            "precision": float(seqeval_metrics.precision_score(gold_lists, predicted_lists)),
            "recall": float(seqeval_metrics.recall_score(gold_lists, predicted_lists)),
            "f1": float(seqeval_metrics.f1_score(gold_lists, predicted_lists)),
        }


# --------------------------------------------------------------------------- SQuAD v1.1
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, drop a / an / the, collapse whitespace.

    The steps run in the order of the official SQuAD v1.1 script (punctuation before
    articles, so "the." loses its article too).
    """
    lowered = text.lower()
    without_punctuation = "".join(char for char in lowered if char not in _PUNCTUATION)
    without_articles = _ARTICLES.sub(" ", without_punctuation)
    return " ".join(without_articles.split())


def exact_match(prediction: str, ground_truth: str) -> float:
    """1.0 if the two answers are equal after :func:`normalize_answer`, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-level F1 in [0, 1] of two answers: overlap counted with multiplicity."""
    predicted_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    overlap = sum((Counter(predicted_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(predicted_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _gold_answers(
    examples: Iterable[QAExample] | Mapping[str, Sequence[str]],
) -> dict[str, list[str]]:
    if isinstance(examples, Mapping):
        return {str(key): [str(text) for text in texts] for key, texts in examples.items()}
    gold: dict[str, list[str]] = {}
    for example in examples:
        gold[example.id] = [text for text, _ in example.answers]
    return gold


def squad_evaluate(
    predictions: Mapping[str, str],
    examples: Iterable[QAExample] | Mapping[str, Sequence[str]],
) -> dict[str, float]:
    """SQuAD v1.1 exact match and F1, as percentages (0-100) over all examples.

    examples: :class:`~distilkit.tasks.qa.QAExample` objects or a mapping
    ``id -> gold answer texts``. Each question scores the maximum over its gold answers.
    As in the official script, a question with no prediction scores 0 (with a warning).
    A prediction whose id is not among the examples is an error: it means the
    predictions were made on a different data set.
    """
    gold = _gold_answers(examples)
    if not gold:
        raise MetricInputError("no examples to evaluate")
    unknown = [key for key in predictions if key not in gold]
    if unknown:
        raise MetricInputError(
            f"{len(unknown)} prediction id(s) are not in the examples (first: {unknown[0]!r}): "
            "evaluate against the examples the predictions were made for"
        )
    missing = 0
    total_exact = 0.0
    total_f1 = 0.0
    for question_id, answers in gold.items():
        if question_id not in predictions:
            missing += 1
            continue
        if not answers:
            raise MetricInputError(f"question {question_id!r} has no gold answer to compare with")
        prediction = predictions[question_id]
        total_exact += max(exact_match(prediction, answer) for answer in answers)
        total_f1 += max(f1_score(prediction, answer) for answer in answers)
    if missing:
        warnings.warn(
            f"{missing} of {len(gold)} questions have no prediction and score 0", stacklevel=2
        )
    return {"exact_match": 100.0 * total_exact / len(gold), "f1": 100.0 * total_f1 / len(gold)}
