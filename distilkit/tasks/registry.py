"""The registered tasks by name (SST-2, STS-B, CoNLL-2003, SQuAD) and task files."""

from __future__ import annotations

from distilkit.tasks.custom import is_task_file, load_task_file
from distilkit.tasks.glue import read_sst2, read_stsb
from distilkit.tasks.ner import read_conll
from distilkit.tasks.qa import read_squad
from distilkit.tasks.spec import TaskDataError, TaskSpec

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

    if is_task_file(name):
        return load_task_file(name)
    raise TaskDataError(
        f"unknown task {name!r}: use one of {sorted(TASKS)} or the path of a JSON task file "
        "(its kind, files and columns; see distilkit.tasks.custom)"
    )
