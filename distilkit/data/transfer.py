"""The transfer set of a sentence task, as logit distillation reads it (BiLSTM students,
multi-teacher and multi-task students).

Data flow: GLUE training examples (a seeded subsample when asked) -> plus Tang et al.'s
augmented copies (:mod:`distilkit.data.augment`) -> :class:`TransferSet` -> token ids as the
student reads them (:func:`encode_for_student`, stored flat as :class:`RaggedIds`) ->
:class:`DistillationDataset` items (ids, teacher targets, gold labels) ->
:func:`collate_items` batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distilkit.data.augment.operations import AugmentConfig, paper_augmentation
from distilkit.data.augment.pos_tagger import default_tagger
from distilkit.data.augment.transfer_set import build_transfer_set
from distilkit.data.batching import collate_sequences
from distilkit.model.bilstm import BiLSTMClassifier
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import ConfigError
from distilkit.tasks.custom import is_task_file
from distilkit.tasks.registry import get_task
from distilkit.tasks.spec import TaskSpec

SENTENCE_TASKS = ("sst2", "stsb")  # single-sentence and sentence-pair GLUE tasks we read


# ----------------------------------------------------------------------------- task data
@dataclass
class TransferSet:
    """A task's transfer set and dev set.

    texts/pairs: the transfer set, the ``num_original`` training examples first (in
    order, aligned with ``labels``), then augmented copies. pairs is None for
    single-sentence tasks. labels: ``(num_original,)`` class ids or scores.
    augmentation: the settings the copies were made with (None: no copies).
    """

    task: TaskSpec
    texts: list[str]
    pairs: list[str] | None
    labels: np.ndarray
    num_original: int
    dev_texts: list[str]
    dev_pairs: list[str] | None
    dev_labels: np.ndarray
    augmentation: AugmentConfig | None = None

    @property
    def regression(self) -> bool:
        return self.task.kind == "regression"


def _labels(examples: Sequence, regression: bool) -> np.ndarray:
    values = [example.label for example in examples]
    if any(value is None for value in values):
        raise ConfigError("the task file has unlabelled examples: use the train and dev splits")
    return np.asarray(values, dtype=np.float32 if regression else np.int64)


def sentence_task(name: str) -> TaskSpec:
    """The task ``name`` if it is a sentence (pair) task: one of :data:`SENTENCE_TASKS`
    or a task file of kind classification or regression."""
    if name in SENTENCE_TASKS:
        return get_task(name)
    if is_task_file(name):
        task = get_task(name)
        if task.kind in ("classification", "regression"):
            return task
        raise ConfigError(
            f"task file {name} is a {task.kind} task: BiLSTM and multi-teacher students "
            "learn sentence (pair) classification or regression tasks only"
        )
    raise ConfigError(
        f"unknown task {name!r}: use one of {SENTENCE_TASKS} (sentence and sentence-pair "
        "tasks) or the path of a JSON task file of kind classification or regression"
    )


def load_task_data(
    task_name: str,
    data_root: str | Path | None = None,
    subsample: int | None = None,
    seed: int = 0,
    augment: bool = False,
    augmentation: AugmentConfig | None = None,
    progress: bool = True,
) -> TransferSet:
    """Read a GLUE sentence (pair) task and build its transfer set.

    subsample: keep this many training examples, drawn with ``seed`` (for quick runs);
    augment: add augmented copies, made with ``augmentation`` (None: the paper's
    settings for the task, :func:`paper_augmentation`).
    """
    task = sentence_task(task_name)
    train, dev = task.load("train", data_root), task.load("dev", data_root)
    if subsample is not None:
        if subsample < 1:
            raise ConfigError(f"subsample must be >= 1, got {subsample}")
        if subsample < len(train):
            keep = np.sort(np.random.default_rng(seed).choice(len(train), subsample, replace=False))
            train = [train[int(i)] for i in keep]
    paired = train[0].text_pair is not None
    texts = [example.text for example in train]
    pairs = [example.text_pair for example in train] if paired else None
    augmentation = (augmentation or paper_augmentation(task_name)) if augment else None
    if augmentation is not None:
        transfer = build_transfer_set(
            texts, pairs, augmentation, tagger=default_tagger(), progress=progress
        )
        texts = [text for text, _ in transfer]
        pairs = [pair for _, pair in transfer] if paired else None
    regression = task.kind == "regression"
    return TransferSet(
        task=task,
        texts=texts,
        pairs=pairs,
        labels=_labels(train, regression),
        num_original=len(train),
        dev_texts=[example.text for example in dev],
        dev_pairs=[example.text_pair for example in dev] if paired else None,
        dev_labels=_labels(dev, regression),
        augmentation=augmentation,
    )


# ----------------------------------------------------------------------------- tokens
@dataclass
class RaggedIds:
    """Token-id sequences of different lengths stored flat (a million short sentences in
    a few arrays rather than a million small ones): sequence i is
    ``values[offsets[i]:offsets[i + 1]]``."""

    values: np.ndarray  # (total tokens,) int32
    offsets: np.ndarray  # (sequences + 1,) int64

    @classmethod
    def from_padded(cls, ids: torch.Tensor, attention_mask: torch.Tensor) -> RaggedIds:
        """From a right-padded ``(batch, seq)`` batch and its 0/1 mask."""
        lengths = attention_mask.sum(dim=1).numpy()
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return cls(ids[attention_mask.bool()].numpy().astype(np.int32), offsets)

    @classmethod
    def concatenate(cls, parts: Sequence[RaggedIds]) -> RaggedIds:
        starts = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
        offsets = [parts[0].offsets[:1]] + [
            p.offsets[1:] + s for p, s in zip(parts, starts, strict=True)
        ]
        return cls(
            np.concatenate([p.values for p in parts]), np.concatenate(offsets).astype(np.int64)
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        return self.values[self.offsets[index] : self.offsets[index + 1]].astype(np.int64)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _ragged_columns(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    max_length: int,
    chunk: int,
    names: tuple[str, ...],
) -> dict[str, RaggedIds]:
    """Tokenize in chunks; ``names`` are the columns kept, from input_ids/token_type_ids."""
    parts: dict[str, list[RaggedIds]] = {name: [] for name in names}
    for start in range(0, len(texts), chunk):
        batch = tokenizer(
            list(texts[start : start + chunk]),
            None if pairs is None else list(pairs[start : start + chunk]),
            max_length=max_length,
            warn_on_truncation=False,
        )
        for name in names:
            parts[name].append(RaggedIds.from_padded(getattr(batch, name), batch.attention_mask))
    return {name: RaggedIds.concatenate(columns) for name, columns in parts.items()}


def encode_for_student(
    student: nn.Module,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    max_length: int,
    chunk: int = 4096,
) -> dict[str, RaggedIds]:
    """Token ids of every example, as the student reads them, by column.

    A BiLSTM reads each sentence of a pair on its own (``input_ids``, ``pair_input_ids``);
    a transformer reads ``[CLS] a [SEP] b [SEP]`` (``input_ids``, ``token_type_ids``).
    Each sentence (pair) is cut to ``max_length`` tokens, [CLS] and [SEP] included.
    """
    if not texts:
        raise ConfigError("there are no texts to encode")
    if not isinstance(student, BiLSTMClassifier):
        names = ("input_ids", "token_type_ids")
        return _ragged_columns(tokenizer, texts, pairs, max_length, chunk, names)
    columns = _ragged_columns(tokenizer, texts, None, max_length, chunk, ("input_ids",))
    if pairs is not None:
        second = _ragged_columns(tokenizer, pairs, None, max_length, chunk, ("input_ids",))
        columns["pair_input_ids"] = second["input_ids"]
    return columns


class DistillationDataset:
    """Examples for the training loop: token ids, teacher targets and gold labels.

    columns: from :func:`encode_for_student`; targets: ``(examples, num_labels)`` teacher
    logits (may be a memory map), or None; labels: gold labels of the first
    ``len(labels)`` examples (the originals). ``task_index`` tags every item, for
    multi-task batching.
    """

    def __init__(
        self,
        columns: dict[str, RaggedIds],
        targets: np.ndarray | None,
        labels: np.ndarray | None,
        task_index: int = 0,
    ):
        count = len(columns["input_ids"])
        if any(len(column) != count for column in columns.values()):
            raise ConfigError("every token column must hold one sequence per example")
        if targets is not None and len(targets) != count:
            raise ConfigError(f"{len(targets)} teacher targets for {count} examples")
        if labels is not None and len(labels) > count:
            raise ConfigError(f"{len(labels)} labels for {count} examples")
        self.columns = columns
        self.targets = targets
        self.labels = labels
        self.task_index = task_index

    def __len__(self) -> int:
        return len(self.columns["input_ids"])

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per example (both sentences of a pair), for length-grouped batches."""
        return sum(
            column.lengths for name, column in self.columns.items() if name != "token_type_ids"
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {name: column[index] for name, column in self.columns.items()}
        item["task_index"] = self.task_index
        if self.targets is not None:
            item["targets"] = np.asarray(self.targets[index], dtype=np.float32)
        if self.labels is not None:
            labelled = index < len(self.labels)
            item["label"] = self.labels[index] if labelled else self.labels.dtype.type(0)
            item["has_label"] = labelled
        return item


def collate_items(items: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a list of dataset items into a batch.

    input_ids, attention_mask (and token_type_ids, or pair_input_ids and
    pair_attention_mask): ``(batch, seq)``; targets: ``(batch, num_labels)``; labels:
    ``(batch,)`` with label_mask ``(batch,)`` bool; task_index: a scalar.
    """
    batch = collate_sequences([item["input_ids"] for item in items], pad_id)
    if "token_type_ids" in items[0]:
        batch["token_type_ids"] = collate_sequences([item["token_type_ids"] for item in items], 0)[
            "input_ids"
        ]
    if "pair_input_ids" in items[0]:
        pair = collate_sequences([item["pair_input_ids"] for item in items], pad_id)
        batch["pair_input_ids"] = pair["input_ids"]
        batch["pair_attention_mask"] = pair["attention_mask"]
    if "targets" in items[0]:
        batch["targets"] = torch.from_numpy(np.stack([item["targets"] for item in items]))
    if "label" in items[0]:
        batch["labels"] = torch.from_numpy(np.asarray([item["label"] for item in items]))
        batch["label_mask"] = torch.tensor([bool(item["has_label"]) for item in items])
    tasks = {item["task_index"] for item in items}
    if len(tasks) != 1:
        raise ConfigError(f"a batch mixes examples of tasks {sorted(tasks)}: batch tasks apart")
    batch["task_index"] = torch.tensor(tasks.pop())
    return batch


def fixed_batches(
    dataset: DistillationDataset, pad_id: int, batch_size: int = 256
) -> list[dict[str, torch.Tensor]]:
    """The dataset in order, in batches (for evaluation)."""
    return [
        collate_items(
            [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))], pad_id
        )
        for start in range(0, len(dataset), batch_size)
    ]


__all__ = [
    "SENTENCE_TASKS",
    "DistillationDataset",
    "RaggedIds",
    "TransferSet",
    "collate_items",
    "encode_for_student",
    "fixed_batches",
    "load_task_data",
    "sentence_task",
]
