"""Sentence (pair) tasks from GLUE TSV files, the task registry, and batching helpers.

``TASKS`` names each supported task with its kind, label names, headline metric and
data files. Files are found under a data root: the ``data_root`` argument, else the
environment variable ``DISTILKIT_DATA``, else ``../shared/data`` beside the repository.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from distilkit.tasks.ner import read_conll
from distilkit.tasks.qa import read_squad
from distilkit.tokenizer import Batch

if TYPE_CHECKING:
    from distilkit.tokenizer import Tokenizer

DATA_ENV_VARIABLE = "DISTILKIT_DATA"
TASK_KINDS = ("classification", "regression", "token_classification", "question_answering")
# Headline metric names: keys of metrics.classification_metrics / regression_metrics,
# "entity_f1" (metrics.entity_f1 "f1") and "squad_f1" (metrics.squad_evaluate "f1").
METRIC_NAMES = ("accuracy", "macro_f1", "matthews", "pearson", "spearman", "entity_f1", "squad_f1")

Item = TypeVar("Item")


class TaskDataError(ValueError):
    """A task file does not have the expected layout, or a task or split is unknown."""


@dataclass
class TextExample:
    """One sentence (or sentence pair) with its label: a class id, a score, or None."""

    text: str
    text_pair: str | None
    label: int | float | None
    id: str


# --------------------------------------------------------------------------- reading TSV
def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header fields and (line number, fields) of each row of a tab-separated file."""
    if not path.is_file():
        raise FileNotFoundError(
            f"task file not found: {path} (set {DATA_ENV_VARIABLE} or pass the data root)"
        )
    with path.open(encoding="utf-8", newline="") as lines:
        rows = [
            (number, line.rstrip("\r\n").split("\t"))
            for number, line in enumerate(lines, start=1)
            if line.strip()
        ]
    if not rows:
        raise TaskDataError(f"{path} is empty: expected a header line and tab-separated rows")
    return rows[0][1], rows[1:]


def _read_header(path: Path) -> list[str]:
    """The header fields of a tab-separated file (its first line)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"task file not found: {path} (set {DATA_ENV_VARIABLE} or pass the data root)"
        )
    with path.open(encoding="utf-8", newline="") as lines:
        return lines.readline().rstrip("\r\n").split("\t")


def _column_index(header: list[str], column: int | str, path: Path) -> int:
    if isinstance(column, str):
        if column not in header:
            raise TaskDataError(f"{path} has no column {column!r}; the header is {header}")
        return header.index(column)
    if not -len(header) <= column < len(header):
        raise TaskDataError(f"{path} has {len(header)} columns, so there is no column {column}")
    return column % len(header)


def read_tsv_task(
    path: str | Path,
    text_col: int | str,
    pair_col: int | str | None = None,
    label_col: int | str | None = None,
    label_type: type[int] | type[float] = int,
    id_col: int | str | None = None,
) -> list[TextExample]:
    """Read a TSV file with a header line into :class:`TextExample` objects.

    Columns are given by position (0-based) or header name. Every row must have as many
    tab-separated fields as the header. ``label_type`` is ``int`` for class ids and
    ``float`` for scores; without ``id_col`` the id is the row's 0-based index.
    """
    path = Path(path)
    header, rows = _read_rows(path)
    text_index = _column_index(header, text_col, path)
    pair_index = None if pair_col is None else _column_index(header, pair_col, path)
    label_index = None if label_col is None else _column_index(header, label_col, path)
    id_index = None if id_col is None else _column_index(header, id_col, path)
    examples: list[TextExample] = []
    for row_number, (line_number, fields) in enumerate(rows):
        if len(fields) != len(header):
            raise TaskDataError(
                f"{path}:{line_number}: expected {len(header)} tab-separated columns like the "
                f"header, got {len(fields)}"
            )
        label: int | float | None = None
        if label_index is not None:
            try:
                label = label_type(fields[label_index])
            except ValueError:
                raise TaskDataError(
                    f"{path}:{line_number}: label {fields[label_index]!r} is not "
                    f"{'an integer' if label_type is int else 'a number'}"
                ) from None
        examples.append(
            TextExample(
                text=fields[text_index],
                text_pair=None if pair_index is None else fields[pair_index],
                label=label,
                id=str(row_number) if id_index is None else fields[id_index],
            )
        )
    return examples


def read_sst2(path: str | Path) -> list[TextExample]:
    """GLUE SST-2: ``sentence\\tlabel`` (train, dev) or ``index\\tsentence`` (test, no label)."""
    path = Path(path)
    header = _read_header(path)
    if header == ["sentence", "label"]:
        return read_tsv_task(path, text_col="sentence", label_col="label")
    if header == ["index", "sentence"]:
        return read_tsv_task(path, text_col="sentence", id_col="index")
    raise TaskDataError(
        f"{path} does not look like GLUE SST-2: header {header}, expected "
        "['sentence', 'label'] or ['index', 'sentence']"
    )


def read_stsb(path: str | Path) -> list[TextExample]:
    """GLUE STS-B: 10 columns (sentence1, sentence2, score in columns 7, 8, 9); the test
    file has 9 columns and no score (label None)."""
    path = Path(path)
    header = _read_header(path)
    if len(header) not in (9, 10) or header[7:9] != ["sentence1", "sentence2"]:
        raise TaskDataError(
            f"{path} does not look like GLUE STS-B: expected 10 columns (9 for test) with "
            f"sentence1 and sentence2 in columns 7 and 8, got header {header}"
        )
    return read_tsv_task(
        path,
        text_col=7,
        pair_col=8,
        label_col=9 if len(header) == 10 else None,
        label_type=float,
        id_col=0,
    )


# --------------------------------------------------------------------------- registry
def data_root(root: str | Path | None = None) -> Path:
    """The data root: ``root`` if given, else ``$DISTILKIT_DATA``, else ``../shared/data``
    relative to the repository (the folder holding ``distilkit/``)."""
    if root is not None:
        return Path(root)
    if os.environ.get(DATA_ENV_VARIABLE):
        return Path(os.environ[DATA_ENV_VARIABLE])
    repository = Path(__file__).resolve().parents[2]
    return repository.parent / "shared" / "data"


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: kind, label names (None for regression and QA), headline metric,
    data files per split (relative to the data root) and the function that reads them."""

    name: str
    kind: str
    label_names: list[str] | None
    metric: str
    files: dict[str, str] = field(default_factory=dict)
    reader: Callable[[Path], list] | None = None

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(
                f"task {self.name!r}: kind must be one of {TASK_KINDS}, got {self.kind!r}"
            )
        if self.metric not in METRIC_NAMES:
            raise ValueError(
                f"task {self.name!r}: metric must be one of {METRIC_NAMES}, got {self.metric!r}"
            )

    @property
    def num_labels(self) -> int:
        """Output size of the task head: classes, 1 for regression, 2 (start, end) for QA."""
        if self.label_names is not None:
            return len(self.label_names)
        return 1 if self.kind == "regression" else 2

    def path(self, split: str, root: str | Path | None = None) -> Path:
        """The file of a split (e.g. "train", "dev") under the data root."""
        if split not in self.files:
            raise TaskDataError(
                f"task {self.name!r} has no split {split!r}; it has {sorted(self.files)}"
            )
        return data_root(root) / self.files[split]

    def load(self, split: str, root: str | Path | None = None) -> list:
        """Read a split with the task's reader."""
        if self.reader is None:
            raise TaskDataError(f"task {self.name!r} has no reader")
        return self.reader(self.path(split, root))


CONLL_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]

TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec(
        name="sst2",
        kind="classification",
        label_names=["negative", "positive"],
        metric="accuracy",
        files={"train": "sst2/train.tsv", "dev": "sst2/dev.tsv", "test": "sst2/test.tsv"},
        reader=read_sst2,
    ),
    # The BERT paper reports Spearman correlation for STS-B.
    "stsb": TaskSpec(
        name="stsb",
        kind="regression",
        label_names=None,
        metric="spearman",
        files={"train": "stsb/train.tsv", "dev": "stsb/dev.tsv", "test": "stsb/test.tsv"},
        reader=read_stsb,
    ),
    "conll2003": TaskSpec(
        name="conll2003",
        kind="token_classification",
        label_names=CONLL_LABELS,
        metric="entity_f1",
        files={"train": "conll2003/train.txt", "dev": "conll2003/valid.txt"},
        reader=read_conll,
    ),
    # Only the dev file is public here; train on qa.split_by_article of it.
    "squad": TaskSpec(
        name="squad",
        kind="question_answering",
        label_names=None,
        metric="squad_f1",
        files={"dev": "squad1.1/dev-v1.1.json"},
        reader=read_squad,
    ),
}


def get_task(name: str) -> TaskSpec:
    """The registered task called ``name``, or the task a JSON task file describes
    (:mod:`distilkit.tasks.custom`)."""
    if name in TASKS:
        return TASKS[name]
    from distilkit.tasks.custom import is_task_file, load_task_file  # it imports this module

    if is_task_file(name):
        return load_task_file(name)
    raise TaskDataError(
        f"unknown task {name!r}: use one of {sorted(TASKS)} or the path of a JSON task file "
        "(its kind, files and columns; see distilkit.tasks.custom)"
    )


# --------------------------------------------------------------------------- batching
@dataclass
class LabeledBatch(Batch):
    """A tokenizer :class:`~distilkit.tokenizer.Batch` plus labels and example ids.

    labels: (batch,) int64 class ids or float32 scores, or None when unlabelled.
    """

    labels: torch.Tensor | None = None
    ids: list[str] = field(default_factory=list)


def encode_text_examples(
    tokenizer: Tokenizer, examples: Sequence[TextExample], max_length: int | None = None
) -> LabeledBatch:
    """Tokenize examples (pairs when they have ``text_pair``) into a padded batch.

    All examples must agree on having a pair and on having a label; int labels become an
    int64 tensor, float labels a float32 tensor.
    """
    if not examples:
        raise ValueError("no examples to encode")
    has_pair = {example.text_pair is not None for example in examples}
    has_label = {example.label is not None for example in examples}
    if len(has_pair) > 1:
        raise TaskDataError("some examples have a text_pair and some do not: encode them apart")
    if len(has_label) > 1:
        raise TaskDataError("some examples have a label and some do not: encode them apart")
    batch = tokenizer(
        [example.text for example in examples],
        pairs=[example.text_pair for example in examples] if has_pair == {True} else None,
        max_length=max_length,
    )
    labels = None
    if has_label == {True}:
        values = [example.label for example in examples]
        if all(isinstance(value, int) for value in values):
            labels = torch.tensor(values, dtype=torch.int64)
        else:
            labels = torch.tensor(values, dtype=torch.float32)
    return LabeledBatch(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        token_type_ids=batch.token_type_ids,
        offsets=batch.offsets,
        sequence_ids=batch.sequence_ids,
        word_ids=batch.word_ids,
        truncated=batch.truncated,
        labels=labels,
        ids=[example.id for example in examples],
    )


def iterate_batches(
    examples: Sequence[Item],
    batch_size: int,
    shuffle: bool = False,
    seed: int | np.random.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[list[Item]]:
    """Yield lists of ``batch_size`` examples (the last one may be shorter).

    With ``shuffle`` the order is a permutation drawn from ``seed`` (an int or a numpy
    Generator; pass ``seed + epoch`` or one Generator across epochs for a new order each
    epoch). Shuffling without a seed is an error, so every run is reproducible.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = np.arange(len(examples))
    if shuffle:
        if seed is None:
            raise ValueError("shuffle=True needs a seed (an int or a numpy Generator)")
        order = np.random.default_rng(seed).permutation(len(examples))
    stop = len(examples) - len(examples) % batch_size if drop_last else len(examples)
    for start in range(0, stop, batch_size):
        yield [examples[int(index)] for index in order[start : start + batch_size]]
