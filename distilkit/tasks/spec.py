"""What a task is (:class:`TaskSpec`), its examples, and where the data files live."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DATA_ENV_VARIABLE = "DISTILKIT_DATA"


TASK_KINDS = ("classification", "regression", "token_classification", "question_answering")


# Headline metric names: keys of metrics.classification_metrics / regression_metrics,
# "entity_f1" (metrics.entity_f1 "f1") and "squad_f1" (metrics.squad_evaluate "f1").
METRIC_NAMES = ("accuracy", "macro_f1", "matthews", "pearson", "spearman", "entity_f1", "squad_f1")


class TaskDataError(ValueError):
    """A task file does not have the expected layout, or a task or split is unknown."""


@dataclass
class TextExample:
    """One sentence (or sentence pair) with its label: a class id, a score, or None."""

    text: str
    text_pair: str | None
    label: int | float | None
    id: str


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
