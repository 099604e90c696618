"""Probe a frozen encoder on your own labelled data: how well do its vectors separate the
classes, and how much better than context-free word vectors?

A probe is a small classifier trained on frozen features (the Wolfram DistilBERT page's
"train a classifier on the embeddings" step):

- ``logistic``: the main job's SST-2 probe (:func:`~distilkit.evaluate.sentence.probe_predictions`,
  a logistic regression on standardised features) on the model's sentence vectors;
- ``token-max``: Wolfram's head, a linear layer applied to every token vector and
  max-pooled over the tokens, ``logits = max_t (W h_t + b)``, trained with Adam on
  standardised token vectors.

Beside it, a static baseline gets the same logistic regression: the model's own input
word embeddings averaged (:func:`distilkit.evaluate.sentence.static_embeddings`), or the
average of the vectors of a GloVe / word2vec text file (:func:`read_word_vectors`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from distilkit.data.tables import AUTO_TEXT_COLUMNS, InputError, read_table
from distilkit.evaluate.plotting import _label_order
from distilkit.evaluate.sentence import probe_predictions, static_embeddings

if TYPE_CHECKING:
    from distilkit.encoder import Encoder

CLASSIFIERS = ("logistic", "token-max")
CLASSIFIER_NAMES = {
    "logistic": "logistic regression on sentence vectors",
    "token-max": "max-pooled per-token linear head",
}
_WORD = re.compile(r"\w+|[^\w\s]")


# ----------------------------------------------------------------------------- data
@dataclass
class LabelledTexts:
    """Texts and their label names, as read from a table."""

    texts: list[str]
    labels: list[str]
    path: Path


def read_labelled_table(
    path: str | Path, text_column: str | None = None, label_column: str | None = None
) -> LabelledTexts:
    """Texts and labels of a ``.tsv``/``.csv``/``.jsonl`` table (:func:`read_table`).

    ``text_column`` defaults to ``text`` or ``sentence``, ``label_column`` to ``label``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    rows = read_table(path, error=InputError)
    if not rows:
        raise InputError(f"{path} holds no rows: it needs a header line and labelled texts")
    header = list(rows[0][1])
    if text_column is None:
        text_column = next((name for name in AUTO_TEXT_COLUMNS if name in header), None)
        if text_column is None:
            raise InputError(f"{path} has the columns {header}: name the text with --text-column")
    label_column = label_column or "label"
    for option, name in (("--text-column", text_column), ("--label-column", label_column)):
        if name not in header:
            raise InputError(f"{path} has no column {name!r} ({option}); its columns are {header}")
    texts, labels = [], []
    for where, row in rows:
        label = row[label_column].strip()
        if not label:
            raise InputError(f"{where}: the label ({label_column!r}) is empty")
        texts.append(row[text_column])
        labels.append(label)
    return LabelledTexts(texts, labels, path)


def read_word_vectors(path: str | Path) -> tuple[dict[str, int], np.ndarray]:
    """A GloVe (``word x1 ... xd`` per line) or word2vec text file (the same after a
    ``count dim`` line): ``(word -> row, vectors (words, dim) float32)``.

    A line with another number of values than the first, or a value that is not a
    finite number, is an :class:`InputError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"vector file not found: {path}")
    words: dict[str, int] = {}
    rows: list[list[float]] = []
    dim: int | None = None
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                fields = line.rstrip("\n").rstrip(" ").split(" ")
                if not line.strip():
                    continue
                if number == 1 and len(fields) == 2 and all(f.isdigit() for f in fields):
                    dim = int(fields[1])  # word2vec's header: count dim
                    continue
                if dim is None:
                    dim = len(fields) - 1
                    if dim < 1:
                        raise InputError(
                            f"{path}:{number}: a line must be a word and its numbers, got "
                            f"{line.strip()[:40]!r}"
                        )
                if len(fields) != dim + 1:
                    raise InputError(
                        f"{path}:{number}: {len(fields) - 1} numbers after the word, but the "
                        f"vectors have dimension {dim}: every line must be a word and {dim} numbers"
                    )
                try:
                    vector = [float(value) for value in fields[1:]]
                except ValueError:
                    bad = next(v for v in fields[1:] if not _is_number(v))
                    raise InputError(
                        f"{path}:{number}: {bad[:20]!r} is not a number: a line must be a "
                        f"word and {dim} numbers, separated by single spaces"
                    ) from None
                if not all(math.isfinite(value) for value in vector):
                    raise InputError(f"{path}:{number}: a value is not finite (nan or inf)")
                words.setdefault(fields[0], len(rows))
                rows.append(vector)
    except UnicodeDecodeError as problem:
        raise InputError(f"{path} is not UTF-8 text ({problem.reason})") from None
    if not rows:
        raise InputError(f"{path} holds no vectors")
    return words, np.asarray(rows, dtype=np.float32)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def word_vector_embedder(
    words: dict[str, int], vectors: np.ndarray
) -> Callable[[Sequence[str]], np.ndarray]:
    """Texts -> the average vector of their known words ``(n, dim)``; zeros for none.

    Words are ``\\w+`` runs and single punctuation marks, lower-cased when the vector
    file has no upper-case word (as GloVe's)."""
    lowercase = not any(word != word.lower() for word in words)

    def embed(texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        for row, text in enumerate(texts):
            found = [
                words[w] for w in _WORD.findall(text.lower() if lowercase else text) if w in words
            ]
            if found:
                out[row] = vectors[found].mean(axis=0)
        return out

    return embed


# ----------------------------------------------------------------------------- classifiers
class TokenMaxHead(nn.Module):
    """Wolfram's classifier: a linear map of every token vector, max-pooled over tokens."""

    def __init__(self, hidden: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(hidden, classes)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``tokens (batch, length, hidden)``, ``mask (batch, length)`` -> ``(batch, classes)``."""
        scores = self.linear(tokens)  # (batch, length, classes)
        scores = scores.masked_fill(~mask.bool()[..., None], float("-inf"))
        return scores.max(dim=1).values


def _pad(features: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(f) for f in features)
    hidden = features[0].shape[1]
    tokens = torch.zeros(len(features), length, hidden)
    mask = torch.zeros(len(features), length, dtype=torch.bool)
    for row, feature in enumerate(features):
        tokens[row, : len(feature)] = torch.from_numpy(feature)
        mask[row, : len(feature)] = True
    return tokens, mask


def fit_token_max(
    train: Sequence[np.ndarray],
    labels: np.ndarray,
    test: Sequence[np.ndarray],
    classes: int,
    epochs: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> np.ndarray:
    """Test predictions of a :class:`TokenMaxHead` trained full-batch on ``train``
    (one ``(tokens, hidden)`` array per text), token vectors standardised by the train
    set's mean and deviation."""
    stacked = np.concatenate(list(train))
    mean, scale = stacked.mean(axis=0), stacked.std(axis=0) + 1e-6
    tokens, mask = _pad([(f - mean) / scale for f in train])
    test_tokens, test_mask = _pad([(f - mean) / scale for f in test])
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    head = TokenMaxHead(tokens.shape[-1], classes)
    torch.random.set_rng_state(generator_state)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    target = torch.as_tensor(labels, dtype=torch.long)
    with torch.enable_grad():
        for _ in range(epochs):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(head(tokens, mask), target)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return head(test_tokens, test_mask).argmax(dim=1).numpy()


# ----------------------------------------------------------------------------- the probe
@dataclass
class ProbeRow:
    """One classifier's test result: accuracy (%), predictions, confusion matrix."""

    name: str
    accuracy: float
    predictions: np.ndarray
    confusion: np.ndarray  # (classes, classes): rows true labels, columns predictions


@dataclass
class ProbeReport:
    """The probe's table: one row per classifier, and the chance level."""

    label_names: list[str]
    train_count: int
    test_count: int
    chance: float  # % of test texts of the most frequent train label
    rows: list[ProbeRow] = field(default_factory=list)

    def format(self) -> str:
        width = max(len(row.name) for row in self.rows) + 2
        lines = [f"{'classifier':<{width}}{'test accuracy %':>16}"]
        lines += [f"{row.name:<{width}}{row.accuracy:>16.2f}" for row in self.rows]
        lines.append(f"{'chance (most frequent train label)':<{width}}{self.chance:>16.2f}")
        return "\n".join(lines)


def _row(name: str, predictions: np.ndarray, truth: np.ndarray, classes: int) -> ProbeRow:
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (truth, predictions), 1)
    return ProbeRow(name, 100.0 * float((predictions == truth).mean()), predictions, confusion)


def run_probe(
    encoder: Encoder,
    train: LabelledTexts,
    test: LabelledTexts,
    classifier: str = "logistic",
    baseline: str | Path | None = "static",
    model_name: str = "model",
    seed: int = 0,
    batch_size: int = 64,
    progress: bool | None = None,
) -> ProbeReport:
    """Train ``classifier`` on the frozen ``encoder``'s vectors of ``train``, score it on
    ``test``, with the static ``baseline`` ("static": the model's averaged input
    embeddings; a path: a GloVe/word2vec text file; None: none) beside it. ``progress``:
    the encoding bar on stderr (None: for more than 20 batches)."""
    if classifier not in CLASSIFIERS:
        raise InputError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
    names = _label_order(train.labels)
    if len(names) < 2:
        raise InputError(f"{train.path} has one label ({names[0]!r}): a probe needs two or more")
    unknown = sorted(set(test.labels) - set(names))
    if unknown:
        raise InputError(
            f"{test.path} has labels the train file lacks: {unknown[:5]}; the classes are {names}"
        )
    # read the vector file before any model work, so that a bad file fails at once
    vectors = None
    if baseline is not None and str(baseline) != "static":
        vectors = read_word_vectors(baseline)
    y_train = np.array([names.index(label) for label in train.labels])
    y_test = np.array([names.index(label) for label in test.labels])
    counts = np.bincount(y_train, minlength=len(names))
    chance = 100.0 * float((y_test == counts.argmax()).mean())
    report = ProbeReport(names, len(train.texts), len(test.texts), chance)
    if classifier == "logistic":
        texts = train.texts + test.texts
        features = encoder.embed(texts, batch_size=batch_size, progress=progress)
        predictions = probe_predictions(
            features[: len(y_train)], y_train, features[len(y_train) :], seed
        )
        recipe = encoder.describe_recipe() if hasattr(encoder, "describe_recipe") else "mean"
        name = f"{model_name}: logistic regression ({recipe})"
    else:
        tokens = encoder.features(train.texts + test.texts)
        predictions = fit_token_max(
            tokens[: len(y_train)], y_train, tokens[len(y_train) :], len(names), seed=seed
        )
        name = f"{model_name}: {CLASSIFIER_NAMES['token-max']}"
    report.rows.append(_row(name, predictions, y_test, len(names)))
    if baseline is not None:
        if vectors is None:
            embed = lambda texts: static_embeddings(encoder, texts)  # noqa: E731
            name = f"static: averaged input embeddings of {model_name}"
        else:
            embed = word_vector_embedder(*vectors)
            name = f"static: averaged vectors of {Path(baseline).name}"
        features = embed(train.texts + test.texts)
        predictions = probe_predictions(
            features[: len(y_train)], y_train, features[len(y_train) :], seed
        )
        report.rows.append(_row(name + " (logistic regression)", predictions, y_test, len(names)))
    return report
