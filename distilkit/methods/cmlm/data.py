"""Generation tasks: (source, target) text pairs with a train and a held-out split.

* ``squad-qg``: question generation from SQuAD v1.1 (``../shared/data/squad1.1`` or
  ``$DISTILKIT_DATA``): the source is the context sentence holding the (first) answer,
  with the answer span marked ``« answer »``; the target is the question. Split by
  article (``title``): no sentence appears on both sides.
* ``multi30k-de-en``: Multi30k task 1, German to English (``train`` / ``val`` files), read
  at run time only (non-commercial licence: never copied into the package).
* a task file (JSON) of ``kind: generation``::

      {"name": "copy", "kind": "generation", "train": "train.tsv", "dev": "dev.tsv",
       "source_column": "source", "target_column": "target"}

  with tables as in :mod:`distilkit.tasks.custom` (``.tsv``, ``.csv``, ``.jsonl``).
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from distilkit.data.tables import read_table
from distilkit.settings import ConfigError, from_dict

ANSWER_OPEN, ANSWER_CLOSE = "«", "»"
BUILTIN_TASKS = ("squad-qg", "multi30k-de-en")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


class GenerationDataError(ValueError):
    """A generation task's files are missing or malformed."""


@dataclass
class GenerationData:
    """Pairs of the train and the held-out split."""

    name: str
    train_sources: list[str]
    train_targets: list[str]
    eval_sources: list[str]
    eval_targets: list[str]


@dataclass
class GenerationTaskFile:
    """A task file of kind ``generation`` (unknown keys are errors)."""

    name: str
    kind: str
    train: str
    dev: str
    test: str | None = None
    source_column: str = "source"
    target_column: str = "target"

    def __post_init__(self) -> None:
        if self.kind != "generation":
            raise ConfigError(f"task file: kind must be 'generation' here, got {self.kind!r}")


def data_root() -> Path:
    """``$DISTILKIT_DATA`` or the shared data folder beside the checkout."""
    if "DISTILKIT_DATA" in os.environ:
        return Path(os.environ["DISTILKIT_DATA"])
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
        candidate = parent.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return Path("../shared/data")


def answer_sentence(context: str, answer_start: int, answer_text: str) -> str:
    """The sentence of ``context`` holding the answer, the answer wrapped in « »."""
    starts = [0] + [m.end() for m in _SENTENCE_END.finditer(context)]
    ends = [m.start() for m in _SENTENCE_END.finditer(context)] + [len(context)]
    answer_end = answer_start + len(answer_text)
    first = max(i for i, s in enumerate(starts) if s <= answer_start)
    last = next(i for i, e in enumerate(ends) if e >= answer_end)  # answers may cross a split
    begin, end = starts[first], ends[last]
    return (
        f"{context[begin:answer_start]}{ANSWER_OPEN} {answer_text} {ANSWER_CLOSE}"
        f"{context[answer_end:end]}"
    ).strip()


def squad_question_generation(
    path: str | Path | None = None, heldout_articles: int = 8, seed: int = 0
) -> GenerationData:
    """SQuAD v1.1 dev as question generation, ``heldout_articles`` articles (drawn with
    ``seed``) held out. One pair per question, its first gold answer marked."""
    path = Path(path) if path is not None else data_root() / "squad1.1" / "dev-v1.1.json"
    if not path.is_file():
        raise GenerationDataError(
            f"SQuAD v1.1 not found at {path}: set DISTILKIT_DATA to the folder holding "
            "squad1.1/dev-v1.1.json"
        )
    articles = json.loads(path.read_text("utf-8"))["data"]
    if not 0 < heldout_articles < len(articles):
        raise GenerationDataError(
            f"heldout_articles must be from 1 to {len(articles) - 1}, got {heldout_articles}"
        )
    titles = sorted(article["title"] for article in articles)
    heldout = set(random.Random(seed).sample(titles, heldout_articles))
    data = GenerationData("squad-qg", [], [], [], [])
    for article in articles:
        side = "eval" if article["title"] in heldout else "train"
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answer = qa["answers"][0]
                source = answer_sentence(
                    paragraph["context"], answer["answer_start"], answer["text"]
                )
                getattr(data, f"{side}_sources").append(source)
                getattr(data, f"{side}_targets").append(qa["question"].strip())
    return data


def multi30k_translation(folder: str | Path | None = None) -> GenerationData:
    """Multi30k task 1, German -> English: ``train.*`` to train, ``val.*`` held out."""
    folder = Path(folder) if folder is not None else data_root() / "multi30k"
    splits = {}
    for split in ("train", "val"):
        files = [folder / f"{split}.{language}" for language in ("de", "en")]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise GenerationDataError(
                f"Multi30k file(s) {missing} not found: set DISTILKIT_DATA to the folder "
                "holding multi30k/"
            )
        german, english = (f.read_text("utf-8").splitlines() for f in files)
        if len(german) != len(english):
            raise GenerationDataError(f"{files[0]} and {files[1]} differ in line count")
        splits[split] = (german, english)
    return GenerationData("multi30k-de-en", *splits["train"], *splits["val"])


def _column(rows, column: str, path: Path) -> list[str]:
    values = []
    for where, row in rows:
        if column not in row:
            raise GenerationDataError(
                f"{where}: no column {column!r} (columns: {', '.join(row)}); name it in the "
                "task file with source_column / target_column"
            )
        values.append(row[column])
    if not values:
        raise GenerationDataError(f"{path} holds no rows")
    return values


def load_generation_task_file(path: str | Path) -> GenerationData:
    """Pairs from a ``kind: generation`` task file; ``dev`` is the held-out split."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise GenerationDataError(f"cannot read task file {path}: {error}") from None
    spec = from_dict(GenerationTaskFile, raw, where="task file")
    columns = {}
    for split in ("train", "dev"):
        table = (path.parent / getattr(spec, split)).resolve()
        if not table.is_file():
            raise GenerationDataError(f"{path}: the {split} file {table} does not exist")
        rows = read_table(table, GenerationDataError)
        columns[split] = (
            _column(rows, spec.source_column, table),
            _column(rows, spec.target_column, table),
        )
    return GenerationData(spec.name, *columns["train"], *columns["dev"])


def load_generation_task(task: str, heldout_articles: int = 8, seed: int = 0) -> GenerationData:
    """A built-in task by name, or a generation task file by path."""
    if task == "squad-qg":
        return squad_question_generation(heldout_articles=heldout_articles, seed=seed)
    if task == "multi30k-de-en":
        return multi30k_translation()
    if task.endswith(".json"):
        return load_generation_task_file(task)
    raise GenerationDataError(
        f"unknown generation task {task!r}: use one of {BUILTIN_TASKS} or the path of a JSON "
        "task file of kind 'generation'"
    )


__all__ = [
    "BUILTIN_TASKS",
    "GenerationData",
    "GenerationDataError",
    "answer_sentence",
    "load_generation_task",
    "load_generation_task_file",
    "multi30k_translation",
    "squad_question_generation",
]
