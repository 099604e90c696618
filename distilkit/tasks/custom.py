"""User-defined tasks: a JSON task file names the kind, the files and the columns.

Everywhere a task name is accepted (``finetune --task``, ``eval``, ``distill-task``),
a path to a task file works too::

    {"name": "intents", "kind": "classification",
     "train": "train.csv", "dev": "dev.csv",
     "text_column": "text", "label_column": "intent"}

* ``kind``: ``classification`` and ``regression`` read a table (``.tsv``, ``.csv`` or
  ``.jsonl``; a header line names the columns of a TSV/CSV file) with ``text_column``,
  an optional ``pair_column`` (sentence pairs) and ``label_column``;
  ``token_classification`` reads CoNLL-style files (a word per line, its IOB2 tag in
  the last column, blank lines between sentences); ``question_answering`` reads SQuAD
  v1.1 JSON.
* ``train`` / ``dev`` (and optionally ``test``): file paths, relative to the task file.
* ``label_names``: the classes in the order of the model's outputs. Without it, they are
  the train file's labels, sorted (numerically when all are integers; ``O`` first for
  tags). A label in the data that is not a label name is an error, as is an unknown key.
* ``metric``: the headline metric (default: accuracy, spearman, entity_f1, squad_f1).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from distilkit.data.tables import TABLE_SUFFIXES, Row, is_table, read_table
from distilkit.settings import ConfigError, from_dict
from distilkit.tasks.ner import NerSentence, check_iob2, conll_sentences
from distilkit.tasks.qa import read_squad
from distilkit.tasks.spec import METRIC_NAMES, TASK_KINDS, TaskDataError, TaskSpec, TextExample

DEFAULT_METRIC = {
    "classification": "accuracy",
    "regression": "spearman",
    "token_classification": "entity_f1",
    "question_answering": "squad_f1",
}
_INTEGER = re.compile(r"[+-]?\d+")
REQUIRED_KEYS = {  # the keys a task file must have, and what each holds
    "name": "the task's name",
    "kind": f"one of {', '.join(TASK_KINDS)}",
    "train": "the train file's path (relative to the task file)",
    "dev": "the dev file's path (relative to the task file)",
}


@dataclass
class TaskFile:
    """The contents of a task file (unknown keys are errors)."""

    name: str
    kind: str
    train: str
    dev: str
    test: str | None = None
    text_column: str = "text"
    pair_column: str | None = None
    label_column: str = "label"
    label_names: list[str] | None = None
    metric: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ConfigError(f"task file: kind must be one of {TASK_KINDS}, got {self.kind!r}")
        if self.metric is not None and self.metric not in METRIC_NAMES:
            raise ConfigError(
                f"task file: metric must be one of {METRIC_NAMES}, got {self.metric!r}"
            )
        if self.label_names is not None:
            if len(set(self.label_names)) != len(self.label_names) or len(self.label_names) < 2:
                raise ConfigError(
                    f"task file: label_names must be at least 2 distinct names, got "
                    f"{self.label_names}"
                )
            if self.kind in ("regression", "question_answering"):
                raise ConfigError(f"task file: a {self.kind} task has no label_names")

    def path(self, split: str, folder: Path) -> Path:
        """The file of a split; a relative path is relative to ``folder``."""
        path = Path(getattr(self, split)).expanduser()
        return path if path.is_absolute() else folder / path


def is_task_file(name: str) -> bool:
    """Whether a task name is a path to a task file rather than a registered name."""
    return name.endswith(".json") or "/" in name or "\\" in name


def load_task_file(path: str | Path) -> TaskSpec:
    """The :class:`TaskSpec` a task file describes (label names resolved from the train
    file when the task file does not give them). Configs, jobs and the teacher gate each
    ask for the task, so it is read once per version of the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TaskDataError(
            f"task file {path} not found: give a registered task or the path of a JSON task file"
        )
    stat = path.stat()
    return _load_task_file(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _load_task_file(resolved: str, mtime_ns: int, size: int) -> TaskSpec:
    """load_task_file's work, keyed by the file's version (the key's last two parts)."""
    path = Path(resolved)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TaskDataError(f"task file {path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise TaskDataError(f"task file {path} must hold a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in values]
    if missing:
        needs = "; ".join(f'"{key}": {REQUIRED_KEYS[key]}' for key in missing)
        raise TaskDataError(f"task file {path} has no {', '.join(missing)} key: add {needs}")
    spec = from_dict(TaskFile, values)
    folder = path.resolve().parent
    splits = ("train", "dev", "test") if spec.test else ("train", "dev")
    files = {split: spec.path(split, folder) for split in splits}
    for split, file in files.items():
        if not file.is_file():
            raise TaskDataError(f"task file {path}: the {split} file {file} is missing")
    label_names = spec.label_names
    if label_names is None and spec.kind == "classification":
        label_names = _sorted_labels(
            [row[spec.label_column].strip() for _, row in _table_rows(files["train"], spec)]
        )
    if label_names is None and spec.kind == "token_classification":
        tags = {tag for sentence in _read_tagged(files["train"]) for tag in sentence.tags}
        label_names = ["O", *sorted(tags - {"O"})]
    return TaskSpec(
        name=spec.name,
        kind=spec.kind,
        label_names=label_names,
        metric=spec.metric or DEFAULT_METRIC[spec.kind],
        files={split: str(file) for split, file in files.items()},  # absolute: the data
        # root TaskSpec.path joins them to leaves them unchanged
        reader=_reader(spec, label_names),
    )


def _sorted_labels(values: list[str]) -> list[str]:
    distinct = sorted(set(values))
    if all(_INTEGER.fullmatch(value) for value in distinct):
        distinct.sort(key=int)
    if len(distinct) < 2:
        raise TaskDataError(
            f"the train file has {len(distinct)} distinct label(s) {distinct}: a "
            "classification task needs at least 2"
        )
    return distinct


def _reader(spec: TaskFile, label_names: list[str] | None):
    if spec.kind == "question_answering":
        return read_squad
    if spec.kind == "token_classification":
        return _read_tagged

    def read(path: Path) -> list[TextExample]:
        return _read_text_examples(path, spec, label_names)

    return read


# ---------------------------------------------------------------------------- tables
def _table_rows(path: Path, spec: TaskFile) -> list[Row]:
    """(where, row) for every row of a .tsv/.csv/.jsonl file; ``where`` is ``file:line``."""
    if not is_table(path):
        raise TaskDataError(
            f"{path}: a {spec.kind} file must be one of {TABLE_SUFFIXES}, "
            f"got {path.suffix or 'none'}"
        )
    rows = read_table(path, TaskDataError)
    if not rows:
        raise TaskDataError(f"{path} holds no examples")
    wanted = [spec.text_column, spec.label_column] + (
        [spec.pair_column] if spec.pair_column else []
    )
    missing = sorted({name for _, row in rows for name in wanted if name not in row})
    if missing:
        columns = sorted(rows[0][1])
        raise TaskDataError(
            f"{path} has no column(s) {missing} (it has {columns}): set text_column, "
            "pair_column and label_column in the task file"
        )
    return rows


def _read_text_examples(
    path: Path, spec: TaskFile, label_names: list[str] | None
) -> list[TextExample]:
    index = {name: position for position, name in enumerate(label_names or [])}
    examples = []
    for number, (where, row) in enumerate(_table_rows(path, spec)):
        value = row[spec.label_column].strip()
        label: int | float | None
        if spec.kind == "regression":
            try:
                label = float(value)
            except ValueError:
                raise TaskDataError(f"{where}: label {value!r} is not a number") from None
        elif value in index:
            label = index[value]
        else:
            raise TaskDataError(
                f"{where}: label {value!r} is not one of the task's labels {label_names} "
                "(list every class in the task file's label_names)"
            )
        examples.append(
            TextExample(
                text=row[spec.text_column],
                text_pair=row[spec.pair_column] if spec.pair_column else None,
                label=label,
                id=str(number),
            )
        )
    return examples


def _read_tagged(path: str | Path) -> list[NerSentence]:
    """A CoNLL-style file: a word and any columns per line, its IOB2 tag last; blank
    lines end sentences; ``-DOCSTART-`` lines are skipped."""
    sentences = []
    for lines in conll_sentences(path):
        for line_number, fields in lines:
            if len(fields) < 2:
                raise TaskDataError(
                    f"{path}:{line_number}: expected a word and its tag, got {' '.join(fields)!r}"
                )
            check_iob2(fields[-1], f"{path}:{line_number}")
        sentences.append(NerSentence([f[0] for _, f in lines], [f[-1] for _, f in lines]))
    if not sentences:
        raise TaskDataError(f"{path} holds no sentences")
    return sentences
