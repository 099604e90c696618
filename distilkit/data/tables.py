"""Rows of a TSV, CSV or JSON-lines table, each with the ``file:line`` it came from.

Shared by task files (:mod:`distilkit.tasks.custom`) and corpora that are columns of a
table (:mod:`distilkit.data.corpus`). A TSV/CSV file starts with a header line naming
its columns; a JSONL file holds one JSON object per line (non-string values are kept
as their JSON text).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl")

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
