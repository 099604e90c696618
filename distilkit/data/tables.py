"""Reading the user's texts: plain text files (a text per line) and TSV / CSV / JSON-lines
tables, each row with the ``file:line`` it came from.

:func:`read_texts` and :func:`read_labelled` read what commands take as ``--input``;
:func:`read_table` is shared by task files (:mod:`distilkit.tasks.custom`) and corpora
that are columns of a table (:mod:`distilkit.data.corpus`). A TSV/CSV file starts with a
header line naming its columns; a JSONL file holds one JSON object per line (non-string
values are kept as their JSON text).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl")
AUTO_TEXT_COLUMNS = ("text", "sentence")  # a table's text column when none is named

Row = tuple[str, dict[str, str]]  # (where: "file:line", column -> cell text)


def is_table(path: str | Path) -> bool:
    """True for a path whose suffix is one of :data:`TABLE_SUFFIXES`."""
    return Path(path).suffix.lower() in TABLE_SUFFIXES


def read_table(path: Path, error: type[Exception] = ValueError) -> list[Row]:
    """Every row of the table at ``path``; problems raise ``error`` naming file and line."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise error(f"{path}: a table must be one of {TABLE_SUFFIXES}, got {suffix or 'none'}")
    rows: list[Row] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            if suffix == ".jsonl":
                for number, line in enumerate(stream, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as problem:
                        raise error(f"{path}:{number}: not a JSON object: {problem}") from None
                    if not isinstance(row, dict):
                        raise error(f"{path}:{number}: each line must be a JSON object")
                    rows.append((f"{path}:{number}", {k: _text(v) for k, v in row.items()}))
            else:
                dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if suffix == ".tsv" else {}
                reader = csv.reader(stream, **dialect)
                header = next(reader, None)
                if not header:
                    raise error(f"{path} is empty: it needs a header line naming the columns")
                for fields in reader:
                    where = f"{path}:{reader.line_num}"
                    if not fields:
                        continue
                    if len(fields) != len(header):
                        raise error(
                            f"{where}: {len(fields)} columns, but the header has {len(header)}"
                        )
                    rows.append((where, dict(zip(header, fields, strict=True))))
    except UnicodeDecodeError as problem:
        raise error(f"{path} is not valid UTF-8 text ({problem.reason})") from None
    return rows


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class InputError(ValueError):
    """An input file or option of a command is unusable."""


# ----------------------------------------------------------------------------- input files
@dataclass
class TextInput:
    """Texts read from a file, one per line or per table row; row ``i`` is text ``i``."""

    texts: list[str]
    labels: list[str] | None = None
    empty: int = 0  # how many of the texts are empty


def read_texts(
    path: str | Path, column: str | None = None, labels_column: str | None = None
) -> TextInput:
    """Texts from a plain text file (one per line) or a ``.tsv``/``.csv`` with a header.

    Empty lines are kept as empty texts, so text ``i`` always comes from line ``i`` and
    the rows of an embedding matrix line up with the file. ``.tsv`` files are read
    without quote handling (as GLUE writes them); ``.csv`` files with standard quoting.
    ``column`` names the text column (optional when the table has one column);
    ``labels_column`` a column of labels (class names or ids) to keep beside each text.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder: the input is a file (one text per line, or a table)")
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    table = path.suffix.lower() in (".tsv", ".csv")
    if not table and (column or labels_column):
        raise InputError(f"--column and --labels-column need a .tsv or .csv input, got {path}")
    try:
        # utf-8-sig: a byte-order mark (as some spreadsheet exports write) is not text
        with path.open(encoding="utf-8-sig", newline="" if table else None) as lines:
            if not table:
                texts = [line.rstrip("\n") for line in lines]
                return check_texts(TextInput(texts), path)
            if path.suffix.lower() == ".tsv":
                rows = list(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
            else:
                rows = list(csv.reader(lines))
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text ({error})") from None
    except csv.Error as error:
        raise InputError(f"{path} is not a well-formed table: {error}") from None
    rows = [row for row in rows if row]  # blank lines are not table rows
    if not rows:
        raise InputError(f"{path} is empty: expected a header line naming the columns")
    header, body = rows[0], rows[1:]
    if column is None:
        if len(header) != 1:
            raise InputError(f"{path} has the columns {header}: pick the text with --column NAME")
        column = header[0]
    indices = {}
    for option, name in (("--column", column), ("--labels-column", labels_column)):
        if name is not None:
            if name not in header:
                raise InputError(
                    f"{path} has no column {name!r} ({option}); its header is {header}"
                )
            indices[option] = header.index(name)
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise InputError(
                f"{path}: row {number} has {len(row)} fields but the header has {len(header)}"
            )
    texts = [row[indices["--column"]] for row in body]
    labels = None
    if labels_column is not None:
        labels = [row[indices["--labels-column"]].strip() for row in body]
    return check_texts(TextInput(texts, labels), path)


def check_texts(data: TextInput, path: Path) -> TextInput:
    if not data.texts:
        raise InputError(f"{path} holds no texts")
    data.empty = sum(1 for text in data.texts if not text.strip())
    if data.empty == len(data.texts):
        raise InputError(f"{path} holds only empty texts")
    return data


def read_labelled(
    path: Path, limit: int | None, label_names: list[str] | None = None
) -> tuple[list[str], np.ndarray | None]:
    """Texts (and 0/1.. integer labels, if the file has a ``label`` column) of a GLUE-style
    TSV/CSV with a ``sentence`` or ``text`` column, or a plain text file. A label may also be
    one of ``label_names`` (the model's classes)."""

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder: the input is a file (one text per line, or a table)")
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    with path.open(encoding="utf-8", errors="replace") as lines:
        header = lines.readline().rstrip("\r\n").split("\t" if path.suffix == ".tsv" else ",")
    table = path.suffix.lower() in (".tsv", ".csv")
    column = next((name for name in AUTO_TEXT_COLUMNS if name in header), None) if table else None
    if table and column is None and len(header) != 1:
        raise InputError(
            f"{path} has the columns {header}: name its text column "
            f"{' or '.join(repr(name) for name in AUTO_TEXT_COLUMNS)} (and its labels 'label')"
        )
    label_column = "label" if table and "label" in header else None
    data = read_texts(path, column=column, labels_column=label_column)
    texts, labels = data.texts, None
    if data.labels is not None:
        labels = np.asarray(
            [
                label_id(label, label_names, f"{path}: row {row}")
                for row, label in enumerate(data.labels, start=2)
            ]
        )
    if limit is not None:
        texts = texts[:limit]
        labels = None if labels is None else labels[:limit]
    return texts, labels


def label_id(label: str, names: list[str] | None, where: str) -> int:
    """A label cell as a class id: an integer, or the position of a class name."""
    try:
        return int(label)
    except ValueError:
        if names and label in names:
            return names.index(label)

    known = f" or one of the model's labels {names}" if names else ""
    raise InputError(
        f"{where} has label {label!r}: the label column must hold class ids (0, 1, ...){known}"
    )


# ----------------------------------------------------------------------------- export
def check_label_ids(labels: np.ndarray, names: list[str], path: Path) -> None:
    """Every label must be one of the model's class ids, 0 .. len(names) - 1."""

    for index, label in enumerate(labels.tolist()):
        if not 0 <= label < len(names):
            classes = ", ".join(f"{i} {name}" for i, name in enumerate(names))
            raise InputError(
                f"{path}: row {index + 2} has label {label}, but the model's classes are "
                f"{classes}: give labels from 0 to {len(names) - 1}"
            )
