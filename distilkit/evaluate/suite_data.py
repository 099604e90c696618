"""Readers of the dev suite's extra files: SICK, TREC and MRPC (SentEval's layouts).

These files are evaluation-only (their test splits are held back, and their sentences
recur in the held-back pairs), so they do not ship with the package: they are read from
the data root (``$DISTILKIT_DATA``, else ``../shared/data``; see
:func:`distilkit.tasks.spec.data_root`). Paths below are relative to that root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distilkit.evaluate.sentence import EvaluationDataError

SICK_TRAIN = "sick/SICK_train.txt"
SICK_TRIAL = "sick/SICK_trial.txt"
TREC_TRAIN = "trec/train_5500.label"
MRPC_TRAIN = "mrpc/msr_paraphrase_train.txt"

SICK_HEADER = ["pair_ID", "sentence_A", "sentence_B", "relatedness_score", "entailment_judgment"]
ENTAILMENT_LABELS = ("CONTRADICTION", "ENTAILMENT", "NEUTRAL")
TREC_LABELS = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")


@dataclass
class SentencePairs:
    """Pairs of sentences with a score ``(n,)`` float64 and/or a class label ``(n,)`` int64."""

    first: list[str]
    second: list[str]
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None

    def head(self, count: int | None) -> SentencePairs:
        """The first ``count`` pairs (all when None)."""
        if count is None:
            return self
        return SentencePairs(
            self.first[:count],
            self.second[:count],
            None if self.scores is None else self.scores[:count],
            None if self.labels is None else self.labels[:count],
        )


def _lines(path: Path, encoding: str = "utf-8") -> list[str]:
    if not path.is_file():
        raise EvaluationDataError(
            f"dev-suite file not found: {path} (set DISTILKIT_DATA to the folder holding "
            "sick/, trec/ and mrpc/, or pass --data-root)"
        )
    return [line for line in path.read_text(encoding=encoding).splitlines() if line.strip()]


def read_sick(path: str | Path) -> SentencePairs:
    """SICK pairs: relatedness (1-5) as scores, entailment as labels (:data:`ENTAILMENT_LABELS`)."""
    path = Path(path)
    lines = _lines(path)
    header = lines[0].split("\t")
    if header != SICK_HEADER:
        raise EvaluationDataError(f"{path} has header {header}, expected {SICK_HEADER}")
    first, second, scores, labels = [], [], [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 5 or fields[4] not in ENTAILMENT_LABELS:
            raise EvaluationDataError(
                f"{path} line {number}: expected 5 SICK fields, got {line!r:.80}"
            )
        first.append(fields[1])
        second.append(fields[2])
        scores.append(float(fields[3]))
        labels.append(ENTAILMENT_LABELS.index(fields[4]))
    return SentencePairs(first, second, np.asarray(scores), np.asarray(labels, dtype=np.int64))


def read_trec(path: str | Path) -> tuple[list[str], np.ndarray]:
    """TREC questions and coarse class ids ``(n,)`` (:data:`TREC_LABELS`); the file is Latin-1."""
    path = Path(path)
    questions, labels = [], []
    for number, line in enumerate(_lines(path, encoding="latin-1"), start=1):
        label, _, question = line.partition(" ")
        coarse = label.split(":")[0]
        if coarse not in TREC_LABELS or not question.strip():
            raise EvaluationDataError(
                f"{path} line {number}: expected 'COARSE:fine question', got {line!r:.80}"
            )
        questions.append(question.strip())
        labels.append(TREC_LABELS.index(coarse))
    return questions, np.asarray(labels, dtype=np.int64)


def read_mrpc(path: str | Path) -> SentencePairs:
    """MRPC pairs with 0/1 paraphrase labels (the file starts with a byte-order mark)."""
    path = Path(path)
    lines = _lines(path, encoding="utf-8-sig")
    first, second, labels = [], [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 5 or fields[0] not in ("0", "1"):
            raise EvaluationDataError(
                f"{path} line {number}: expected 'quality id id sentence sentence', got "
                f"{line!r:.80}"
            )
        labels.append(int(fields[0]))
        first.append(fields[3])
        second.append(fields[4])
    return SentencePairs(first, second, labels=np.asarray(labels, dtype=np.int64))
