"""Sentence (pair) tasks from GLUE TSV files, the task registry, and batching helpers.

``TASKS`` names each supported task with its kind, label names, headline metric and
data files. Files are found under a data root: the ``data_root`` argument, else the
environment variable ``DISTILKIT_DATA``, else ``../shared/data`` beside the repository.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from distilkit.model.tokenizer import Batch
from distilkit.tasks.spec import DATA_ENV_VARIABLE, TaskDataError, TextExample

if TYPE_CHECKING:
    from distilkit.model.tokenizer import Tokenizer


Item = TypeVar("Item")


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


# --------------------------------------------------------------------------- batching
@dataclass
class LabeledBatch(Batch):
    """A tokenizer :class:`~distilkit.model.tokenizer.Batch` plus labels and example ids.

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
