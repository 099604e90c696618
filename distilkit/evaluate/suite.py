"""The broad dev suite: six sentence tasks scored SentEval's way, with retention per task.

STS-B dev and one SST-2 probe are a narrow view of a sentence encoder. The suite scores
frozen, mean-pooled sentence vectors on six tasks of different kinds:

==========  ==============================================  =======================================
task        data                                            score
==========  ==============================================  =======================================
STS-B       GLUE STS-B dev, 1,500 pairs (shipped)           Spearman x100 of cosine vs gold score
SICK-R      SICK trial, 500 pairs                           Spearman x100 of cosine vs relatedness
SICK-E      SICK train, 4,500 pairs                         k-fold probe accuracy on pair features
SST-2       SST-2 train sample -> dev (shipped)             probe accuracy on dev
TREC        TREC train, 5,452 questions                     k-fold probe accuracy (6 coarse classes)
MRPC        MRPC train, 4,076 pairs                         k-fold probe accuracy on pair features
==========  ==============================================  =======================================

Pair features are SentEval's ``[u, v, |u - v|, u * v]``. Every probe is the same
logistic regression on standardised features
(:func:`distilkit.evaluate.sentence.probe_accuracy`) with a fixed inverse regularisation
per task, :data:`PROBE_C_BY_TASK`, chosen once on the default teacher by nested
cross-validation (``benchmarks/probe_c.py``) and then used for every model, and k-fold
splits are stratified and fixed by the seed, so two models are scored on the same folds.
SICK, TREC and MRPC are read from the data root (:mod:`distilkit.evaluate.suite_data`);
they are evaluation data only, never transfer text.

Each model's row holds its score per task and, against the first row (the teacher), its
retention per task (% of the teacher's score) and the mean retention over tasks.
:data:`QUICK` takes subsets that fit the main job's deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distilkit.evaluate.sentence import (
    PROBE_C,
    SST2_DEV,
    SST2_TRAIN_SAMPLE,
    STSB_DEV,
    cosine_spearman,
    probe_accuracy,
    read_sst2,
    read_stsb,
)
from distilkit.evaluate.suite_data import (
    MRPC_TRAIN,
    SICK_TRAIN,
    SICK_TRIAL,
    TREC_TRAIN,
    SentencePairs,
    read_mrpc,
    read_sick,
    read_trec,
)
from distilkit.tasks.spec import data_root

if TYPE_CHECKING:
    from distilkit.encoder import Encoder

TASKS = ("STS-B", "SICK-R", "SICK-E", "SST-2", "TREC", "MRPC")
METRICS = {
    "STS-B": "Spearman x100",
    "SICK-R": "Spearman x100",
    "SICK-E": "accuracy %",
    "SST-2": "accuracy %",
    "TREC": "accuracy %",
    "MRPC": "accuracy %",
}

EmbedFunction = Callable[[list[str]], np.ndarray]

# The probe's C per task, chosen on the default teacher (all-MiniLM-L6-v2) by nested
# cross-validation over PROBE_C_GRID on the quick suite (benchmarks/probe_c.py; the
# figures are in docs/RESULTS.md): pair features of 1,536 dimensions want far more
# regularisation than SST-2's 384, and one C for all (0.01) left MRPC near its majority rate.
PROBE_C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
PROBE_C_BY_TASK = {"SICK-E": 0.001, "SST-2": 0.01, "TREC": 0.03, "MRPC": 0.001}


@dataclass(frozen=True)
class SuiteSettings:
    """How much of each task is scored (None: all of it) and how the probes are split."""

    sick_entailment_pairs: int | None = None
    sst2_train_examples: int | None = None
    trec_questions: int | None = None
    mrpc_pairs: int | None = None
    folds: int = 5
    seed: int = 0
    quick: bool = False

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")


FULL = SuiteSettings()
# About 12,000 distinct sentences per model instead of 31,000: STS-B and SICK-R whole (the
# similarity tasks are the noisiest when cut), the probes on the first part of each file.
QUICK = SuiteSettings(
    sick_entailment_pairs=1500,
    sst2_train_examples=1000,
    trec_questions=2000,
    mrpc_pairs=1500,
    quick=True,
)


# --------------------------------------------------------------------------- scorers
def pair_features(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """SentEval's pair features ``[u, v, |u - v|, u * v]``: ``(n, d)`` twice -> ``(n, 4d)``."""
    if first.shape != second.shape:
        raise ValueError(f"pair vectors differ in shape: {first.shape} and {second.shape}")
    return np.concatenate([first, second, np.abs(first - second), first * second], axis=1)


def kfold_splits(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified ``(train, test)`` index arrays of ``folds`` folds, shuffled by ``seed``:
    every index is tested exactly once, and the same labels and seed give the same folds."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((len(labels), 1)), labels))


def _cross_validated(
    features: np.ndarray,
    labels: np.ndarray,
    folds: int,
    seed: int,
    choose_c: Callable[[np.ndarray], float],
) -> tuple[float, list[float]]:
    """Accuracy (%) over ``folds`` stratified folds, each fold predicted by a probe trained
    on the others with the C that ``choose_c(train_indices)`` gives; and those Cs."""
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    correct, chosen = 0.0, []
    for train, test in kfold_splits(labels, folds, seed):
        c = choose_c(train)
        chosen.append(c)
        accuracy = probe_accuracy(
            features[train], labels[train], features[test], labels[test], seed, c
        )
        correct += accuracy / 100.0 * len(test)
    return 100.0 * correct / len(labels), chosen


def kfold_probe_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    c: float = PROBE_C,
) -> float:
    """Accuracy (%) of the probe (inverse regularisation ``c``) over ``folds`` stratified
    folds of ``(n, dim)`` features: each fold is predicted by a probe trained on the
    others; correct predictions over all ``n`` examples."""
    return _cross_validated(features, labels, folds, seed, lambda _: c)[0]


def select_probe_c(
    features: np.ndarray,
    labels: np.ndarray,
    grid: Sequence[float] = PROBE_C_GRID,
    folds: int = 3,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """The C of ``grid`` with the best ``folds``-fold accuracy on ``(n, dim)`` features (the
    smaller C on a tie), and each C's accuracy (%)."""
    scores = {c: kfold_probe_accuracy(features, labels, folds, seed, c) for c in grid}
    best = max(scores.values())
    return min(c for c, score in scores.items() if score == best), scores


def nested_probe_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    grid: Sequence[float] = PROBE_C_GRID,
    folds: int = 5,
    inner_folds: int = 3,
    seed: int = 0,
) -> tuple[float, list[float]]:
    """SentEval's nested cross-validation: each outer fold is predicted by a probe whose C
    was chosen on that fold's training part alone; accuracy (%) and the C of each fold."""

    def choose(train: np.ndarray) -> float:
        return select_probe_c(features[train], labels[train], grid, inner_folds, seed)[0]

    return _cross_validated(features, labels, folds, seed, choose)


# --------------------------------------------------------------------------- the tasks
@dataclass
class SuiteData:
    """The suite's texts, read once and shared by every model."""

    stsb: SentencePairs
    sick_trial: SentencePairs
    sick_train: SentencePairs
    sst2_train: tuple[list[str], np.ndarray]
    sst2_dev: tuple[list[str], np.ndarray]
    trec: tuple[list[str], np.ndarray]
    mrpc: SentencePairs

    def texts(self) -> list[str]:
        """Every distinct sentence the suite embeds, in first-seen order."""
        texts: list[str] = []
        for pairs in (self.stsb, self.sick_trial, self.sick_train, self.mrpc):
            texts += pairs.first + pairs.second
        texts += self.sst2_train[0] + self.sst2_dev[0] + self.trec[0]
        return list(dict.fromkeys(texts))


def load_suite_data(settings: SuiteSettings = FULL, root: str | Path | None = None) -> SuiteData:
    """Read every task's file (STS-B and SST-2 from the package, the rest from ``root``)."""
    root = data_root(root)
    first, second, scores = read_stsb(STSB_DEV)
    train_texts, train_labels = read_sst2(SST2_TRAIN_SAMPLE)
    count = settings.sst2_train_examples
    trec_texts, trec_labels = read_trec(root / TREC_TRAIN)
    return SuiteData(
        stsb=SentencePairs(first, second, scores),
        sick_trial=read_sick(root / SICK_TRIAL),
        sick_train=read_sick(root / SICK_TRAIN).head(settings.sick_entailment_pairs),
        sst2_train=(train_texts[:count], train_labels[:count]),
        sst2_dev=read_sst2(SST2_DEV),
        trec=(trec_texts[: settings.trec_questions], trec_labels[: settings.trec_questions]),
        mrpc=read_mrpc(root / MRPC_TRAIN).head(settings.mrpc_pairs),
    )


def score_vectors(
    vectors: dict[str, np.ndarray], data: SuiteData, settings: SuiteSettings = FULL
) -> dict[str, float]:
    """Each task's score from a model's sentence vectors (text -> ``(dim,)``)."""

    def stack(texts: Sequence[str]) -> np.ndarray:
        return np.stack([vectors[text] for text in texts])  # (n, dim)

    def pairs(task: SentencePairs) -> tuple[np.ndarray, np.ndarray]:
        return stack(task.first), stack(task.second)

    folds, seed, c = settings.folds, settings.seed, PROBE_C_BY_TASK
    return {
        "STS-B": cosine_spearman(*pairs(data.stsb), data.stsb.scores),
        "SICK-R": cosine_spearman(*pairs(data.sick_trial), data.sick_trial.scores),
        "SICK-E": kfold_probe_accuracy(
            pair_features(*pairs(data.sick_train)),
            data.sick_train.labels,
            folds,
            seed,
            c["SICK-E"],
        ),
        "SST-2": probe_accuracy(
            stack(data.sst2_train[0]),
            data.sst2_train[1],
            stack(data.sst2_dev[0]),
            data.sst2_dev[1],
            seed,
            c["SST-2"],
        ),
        "TREC": kfold_probe_accuracy(stack(data.trec[0]), data.trec[1], folds, seed, c["TREC"]),
        "MRPC": kfold_probe_accuracy(
            pair_features(*pairs(data.mrpc)), data.mrpc.labels, folds, seed, c["MRPC"]
        ),
    }


def retention(scores: dict[str, float], reference: dict[str, float]) -> dict[str, float]:
    """% of the reference's score per task."""
    return {task: 100.0 * (scores[task] / reference[task]) for task in TASKS}  # equal: 100.0


def add_retention(rows: list[dict]) -> list[dict]:
    """Fill ``retention`` and ``mean_retention`` of each row against the first row."""
    reference = rows[0]["scores"]
    for row in rows:
        row["retention"] = retention(row["scores"], reference)
        row["mean_retention"] = float(np.mean(list(row["retention"].values())))
    return rows


def score_embedders(
    embedders: dict[str, EmbedFunction],
    settings: SuiteSettings = FULL,
    root: str | Path | None = None,
) -> list[dict]:
    """One suite row per embedder (name -> texts -> ``(n, dim)``), the first the reference.

    Row keys: name, scores (task -> score), retention (task -> %), mean_retention, quick.
    """
    data = load_suite_data(settings, root)
    texts = data.texts()
    rows = []
    for name, embed in embedders.items():
        matrix = embed(texts)  # one call: length-sorted batching sees every text
        vectors = dict(zip(texts, matrix, strict=True))
        rows.append(
            {
                "name": name,
                "scores": score_vectors(vectors, data, settings),
                "quick": settings.quick,
            }
        )
    return add_retention(rows)


def evaluate_suite(
    encoders: dict[str, Encoder],
    quick: bool = False,
    root: str | Path | None = None,
    pooling: str = "mean",
    batch_size: int = 64,
) -> list[dict]:
    """The dev suite for each encoder (name -> encoder), the teacher first; see
    :func:`score_embedders` for the rows."""

    def embedder(encoder: Encoder) -> EmbedFunction:
        return lambda texts: encoder.embed(
            texts, pooling=pooling, batch_size=batch_size, progress=False
        )

    settings = QUICK if quick else FULL
    return score_embedders({name: embedder(e) for name, e in encoders.items()}, settings, root)


def suite_sentences(quick: bool = False, root: str | Path | None = None) -> int:
    """How many distinct sentences the suite embeds per model (for time estimates)."""
    return len(load_suite_data(QUICK if quick else FULL, root).texts())


# --------------------------------------------------------------------------- tables
def _cells(row: dict) -> list[str]:
    return [f"{row['scores'][task]:.2f} ({row['retention'][task]:.1f})" for task in TASKS] + [
        f"{row['mean_retention']:.2f}"
    ]


def format_suite_table(rows: Sequence[dict]) -> str:
    """A plain-text table: score (retention %) per task and the mean retention."""
    header = ["model", *TASKS, "mean retention %"]
    body = [[row["name"], *_cells(row)] for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_suite_markdown(rows: Sequence[dict]) -> str:
    """The same table in Markdown."""
    header = ["model", *TASKS, "mean retention %"]
    lines = ["| " + " | ".join(header) + " |", "|:---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join([row["name"], *_cells(row)]) + " |" for row in rows]
    return "\n".join(lines)


def suite_protocol_line(quick: bool) -> str:
    """One sentence saying what the suite scored."""
    sizes = (
        "SICK-E 1,500 pairs, SST-2 probe on 1,000 train sentences, TREC 2,000 questions, "
        "MRPC 1,500 pairs"
        if quick
        else "SICK-E 4,500 pairs, SST-2 probe on 4,000 train sentences, TREC 5,452 questions, "
        "MRPC 4,076 pairs"
    )
    return (
        f"Dev suite{' (quick)' if quick else ''}: STS-B dev 1,500 pairs and SICK trial 500 "
        f"pairs (Spearman x100 of cosine), {sizes} (5-fold stratified probes, seed 0; pair "
        "probes on [u, v, |u-v|, u*v]; logistic regression on standardised features, C per "
        + ", ".join(f"{task} {c:g}" for task, c in PROBE_C_BY_TASK.items())
        + "). Cells: score (retention % of the first row)."
    )
