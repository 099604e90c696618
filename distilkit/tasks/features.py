"""Task splits as model features: reading, tokenizing, batching, and scoring a model on them.

Data flow: task files -> examples (:mod:`distilkit.tasks`) -> :class:`TaskData` (one
tokenized *feature* per model input row: a sentence, a sentence pair, a CoNLL sentence,
or one window of a SQuAD context) -> padded batch dicts for the training loop -> logits
-> the task metric, computed by :mod:`distilkit.tasks.metrics`.

Every batch dict carries ``index``, the positions of its rows among the features, so a
metric can be computed from batches in any order (the training loop's evaluation passes
the fixed dev batches back to the objective).

SQuAD v1.1 has only its dev file here: its "train" and "dev" splits are the two parts of
:func:`distilkit.tasks.qa.split_by_article` (no article on both sides).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from distilkit.model.device import to_device
from distilkit.model.modeling import TransformerModel
from distilkit.model.tokenizer import Tokenizer
from distilkit.tasks.glue import encode_text_examples
from distilkit.tasks.metrics import (
    classification_metrics,
    entity_f1,
    regression_metrics,
    squad_evaluate,
)
from distilkit.tasks.ner import IGNORE_INDEX, align_labels, word_predictions
from distilkit.tasks.qa import QAFeatures, make_features, postprocess, split_by_article
from distilkit.tasks.spec import TaskDataError, TaskSpec

# The model head each kind of task needs.
HEAD_FOR_KIND = {
    "classification": "sequence_classification",
    "regression": "sequence_classification",
    "token_classification": "token_classification",
    "question_answering": "question_answering",
}
DEFAULT_MAX_LEN = {"question_answering": 384}  # every other kind: 128
ENCODE_CHUNK = 1024  # examples tokenized per call


@dataclass
class DataSettings:
    """How a task's files become features (saved with every run that uses them)."""

    data_root: str | None = None  # None: $DISTILKIT_DATA, else ../shared/data
    max_len: int | None = None  # tokens per input; None: 384 for QA, else 128
    doc_stride: int = 128  # QA: context tokens shared by consecutive windows
    max_question_length: int | None = None  # QA: question pieces kept; None: 64 or max_len/4
    qa_eval_fraction: float = 0.2  # SQuAD: share of articles held out as the "dev" split
    train_limit: int | None = None  # use a seeded random subset of this many train examples
    eval_limit: int | None = None  # the same for the evaluation split
    seed: int = 0  # for the subsets and the SQuAD article split

    def __post_init__(self) -> None:
        for name in ("max_len", "train_limit", "eval_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TaskDataError(f"{name} must be a positive integer or null, got {value}")

    def max_length(self, task: TaskSpec) -> int:
        return self.max_len or DEFAULT_MAX_LEN.get(task.kind, 128)


def load_examples(
    task: TaskSpec, split: str, settings: DataSettings | None = None, limit: int | None = None
) -> list:
    """The examples of a split, optionally a seeded random subset of ``limit`` (in file order).

    SQuAD's "train" and "dev" are the two article-disjoint parts of the dev file.
    """
    settings = settings or DataSettings()
    if task.kind == "question_answering" and "train" not in task.files:
        if split not in ("train", "dev"):
            raise TaskDataError(
                f"task {task.name!r} has the splits 'train' and 'dev', not {split!r}"
            )
        everything = task.load("dev", settings.data_root)
        train, held_out = split_by_article(everything, settings.qa_eval_fraction, settings.seed)
        examples = train if split == "train" else held_out
    else:
        examples = task.load(split, settings.data_root)
    if not examples:
        raise TaskDataError(f"the {split} split of {task.name!r} holds no examples")
    if limit is not None and limit < len(examples):
        chosen = np.random.default_rng([settings.seed, len(examples)]).choice(
            len(examples), size=limit, replace=False
        )
        examples = [examples[int(i)] for i in np.sort(chosen)]
    return examples


def split_note(task: TaskSpec, settings: DataSettings) -> str | None:
    """A sentence saying how a split was made, when it is not the task's own file."""
    if task.kind == "question_answering" and "train" not in task.files:
        return (
            f"{task.name}: only dev-v1.1.json is at hand, so its articles are split "
            f"{1 - settings.qa_eval_fraction:.0%} / {settings.qa_eval_fraction:.0%} into "
            f"'train' and 'dev' parts (seed {settings.seed}); no article is in both"
        )
    return None


# ----------------------------------------------------------------------------- features
@dataclass
class TaskData:
    """The tokenized features of one split of a task.

    features: one dict per model input row with ``input_ids`` and ``token_type_ids``
    (unpadded int64 arrays) and the labels of the task kind: ``labels`` (an int class, a
    float score, or for NER an int64 array per token with -100 off first sub-words), or
    ``start_positions`` / ``end_positions`` (QA). examples: the source examples.
    ner_word_ids / ner_num_words: per sentence, for reading word predictions back;
    qa_features: the windows, for decoding spans back to answer texts.
    """

    task: TaskSpec
    features: list[dict[str, Any]]
    examples: list
    pad_id: int
    ner_word_ids: list[list[int | None]] = field(default_factory=list)
    ner_num_words: list[int] = field(default_factory=list)
    qa_features: QAFeatures | None = None

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.features[index], "index": index}

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per feature, ``(n,)``."""
        return np.array([len(f["input_ids"]) for f in self.features], dtype=np.int64)

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad items into a batch: ``input_ids``, ``attention_mask``, ``token_type_ids``
        (batch, seq) int64, ``index`` (batch,), and the labels (see :class:`TaskData`)."""
        return collate_features(items, self.pad_id)

    def batches(self, batch_size: int = 64) -> list[dict[str, torch.Tensor]]:
        """Every feature once, in batches of similar lengths (fixed order, for scoring)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        order = np.argsort(-self.lengths, kind="stable")
        return [
            self.collate([self[int(i)] for i in order[start : start + batch_size]])
            for start in range(0, len(order), batch_size)
        ]


def collate_features(items: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of feature dicts (see :class:`TaskData`) into one batch dict."""
    if not items:
        raise ValueError("cannot collate an empty list of features")
    length = max(len(item["input_ids"]) for item in items)
    input_ids = np.full((len(items), length), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(items), length), dtype=np.int64)
    token_type_ids = np.zeros((len(items), length), dtype=np.int64)
    per_token_labels = isinstance(items[0].get("labels"), np.ndarray)
    labels = np.full((len(items), length), IGNORE_INDEX, dtype=np.int64)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        input_ids[row, :n] = item["input_ids"]
        attention_mask[row, :n] = 1
        token_type_ids[row, :n] = item["token_type_ids"]
        if per_token_labels:
            labels[row, :n] = item["labels"]
    batch = {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention_mask),
        "token_type_ids": torch.from_numpy(token_type_ids),
        "index": torch.tensor([item["index"] for item in items], dtype=torch.int64),
    }
    if per_token_labels:
        batch["labels"] = torch.from_numpy(labels)
    elif "labels" in items[0]:
        values = [item["labels"] for item in items]
        dtype = torch.float32 if isinstance(values[0], float) else torch.int64
        batch["labels"] = torch.tensor(values, dtype=dtype)
    for name in ("start_positions", "end_positions"):
        if name in items[0]:
            batch[name] = torch.tensor([item[name] for item in items], dtype=torch.int64)
    return batch


def _unpadded(row: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    return row[: int(mask.sum())].numpy().copy()


def encode_split(
    task: TaskSpec, examples: Sequence, tokenizer: Tokenizer, settings: DataSettings | None = None
) -> TaskData:
    """Tokenize a split's examples into :class:`TaskData` (truncating to ``max_len``)."""
    settings = settings or DataSettings()
    max_length = min(settings.max_length(task), tokenizer.max_length)
    examples = list(examples)
    if not examples:
        raise TaskDataError(f"no {task.name} examples to encode")
    data = TaskData(task=task, features=[], examples=examples, pad_id=tokenizer.pad_id)
    if task.kind in ("classification", "regression"):
        if any(example.label is None for example in examples):
            raise TaskDataError(f"some {task.name} examples have no label: use a labelled split")
        for start in range(0, len(examples), ENCODE_CHUNK):
            chunk = examples[start : start + ENCODE_CHUNK]
            batch = encode_text_examples(tokenizer, chunk, max_length)
            for row, example in enumerate(chunk):
                mask = batch.attention_mask[row]
                label = float(example.label) if task.kind == "regression" else int(example.label)
                if task.kind == "classification" and not 0 <= label < task.num_labels:
                    raise TaskDataError(
                        f"{task.name} example {example.id!r} has label {label} but the task has "
                        f"{task.num_labels} classes {task.label_names}"
                    )
                data.features.append(
                    {
                        "input_ids": _unpadded(batch.input_ids[row], mask),
                        "token_type_ids": _unpadded(batch.token_type_ids[row], mask),
                        "labels": label,
                    }
                )
    elif task.kind == "token_classification":
        for start in range(0, len(examples), ENCODE_CHUNK):
            batch = align_labels(
                tokenizer, examples[start : start + ENCODE_CHUNK], task.label_names, max_length
            )
            for row in range(len(batch)):
                mask = batch.attention_mask[row]
                data.features.append(
                    {
                        "input_ids": _unpadded(batch.input_ids[row], mask),
                        "token_type_ids": _unpadded(batch.token_type_ids[row], mask),
                        "labels": _unpadded(batch.labels[row], mask),
                    }
                )
            data.ner_word_ids.extend(batch.word_ids)
            data.ner_num_words.extend(batch.num_words)
    else:
        question_length = settings.max_question_length or min(64, max_length // 4)
        windows = make_features(
            tokenizer, examples, max_length, settings.doc_stride, question_length
        )
        for row in range(len(windows)):
            mask = windows.attention_mask[row]
            data.features.append(
                {
                    "input_ids": _unpadded(windows.input_ids[row], mask),
                    "token_type_ids": _unpadded(windows.token_type_ids[row], mask),
                    "start_positions": int(windows.start_positions[row]),
                    "end_positions": int(windows.end_positions[row]),
                }
            )
        data.qa_features = windows
    return data


def load_split(
    task: TaskSpec,
    split: str,
    tokenizer: Tokenizer,
    settings: DataSettings | None = None,
    limit: int | None = None,
) -> TaskData:
    """:func:`load_examples` then :func:`encode_split`."""
    settings = settings or DataSettings()
    return encode_split(task, load_examples(task, split, settings, limit), tokenizer, settings)


# ----------------------------------------------------------------------------- scoring
def model_logits(model: TransformerModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The task head's logits for a batch: (batch, labels), (batch, seq, labels) or
    (batch, seq, 2) for QA."""
    return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits


@torch.inference_mode()
def predict(
    model: TransformerModel,
    data: TaskData,
    batches: Sequence[dict[str, torch.Tensor]],
    progress: bool = False,
) -> np.ndarray:
    """Logits of every feature of ``data``, in feature order, float32: ``(n, labels)`` for
    sentence tasks, ``(n, seq, labels)`` padded with zeros for NER and QA. ``progress``: a
    bar of the batches on stderr. Batches go to the model's device; logits come back to
    the host."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs: dict[int, np.ndarray] = {}
    for batch in tqdm(batches, desc="scoring", unit="batch", disable=not progress):
        logits = model_logits(model, to_device(batch, device)).float().cpu()
        lengths = batch["attention_mask"].sum(1)
        for row, index in enumerate(batch["index"].tolist()):
            values = logits[row] if logits.dim() == 2 else logits[row, : int(lengths[row])]
            outputs[index] = values.numpy()
    model.train(was_training)
    if set(outputs) != set(range(len(data))):
        raise ValueError(
            f"the batches cover {len(outputs)} of the {len(data)} features: score on "
            "TaskData.batches() of the same split"
        )
    first = outputs[0]
    if first.ndim == 1:
        return np.stack([outputs[i] for i in range(len(data))])
    longest = max(values.shape[0] for values in outputs.values())
    padded = np.zeros((len(data), longest, first.shape[-1]), dtype=np.float32)
    for index, values in outputs.items():
        padded[index, : values.shape[0]] = values
    return padded


def score_logits(data: TaskData, logits: np.ndarray) -> dict[str, float]:
    """The task's metrics from :func:`predict`'s logits; the headline one is under the
    name ``data.task.metric`` (accuracy, spearman, entity_f1 or squad_f1)."""
    task = data.task
    if task.kind == "classification":
        return classification_metrics(logits, [f["labels"] for f in data.features])
    if task.kind == "regression":
        return regression_metrics(logits[:, 0], [f["labels"] for f in data.features])
    if task.kind == "token_classification":
        predicted = word_predictions(logits, data.ner_word_ids, data.ner_num_words)
        names = task.label_names
        scores = entity_f1(
            [example.tags for example in data.examples],
            [[names[label] for label in sentence] for sentence in predicted],
        )
        return {
            "entity_f1": scores["f1"],
            "precision": scores["precision"],
            "recall": scores["recall"],
        }
    answers = postprocess(logits[..., 0], logits[..., 1], data.qa_features, data.examples)
    scores = squad_evaluate(answers, data.examples)
    return {"squad_f1": scores["f1"], "exact_match": scores["exact_match"]}


def evaluate_model(
    model: TransformerModel,
    data: TaskData,
    batches: Sequence[dict[str, torch.Tensor]] | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, float]:
    """Score ``model`` on ``data`` (its own batches unless given); ``progress``: a bar on
    stderr."""
    batches = data.batches(batch_size) if batches is None else batches
    return score_logits(data, predict(model, data, batches, progress))


def chance_score(data: TaskData) -> float:
    """The headline metric a model without task knowledge gets: the majority-class share
    for classification, 0 for correlation, entity F1 and SQuAD F1."""
    if data.task.kind == "classification":
        counts = np.bincount([f["labels"] for f in data.features])
        return float(counts.max() / counts.sum())
    return 0.0


def check_model_for_task(model: TransformerModel, task: TaskSpec, what: str = "the model") -> None:
    """Refuse a model whose head or label names do not fit the task.

    Label names are compared case-insensitively and in order; a model with generic names
    (LABEL_0, ...) only needs the right count. Raises :class:`TaskDataError`.
    """
    config = model.config
    head = HEAD_FOR_KIND[task.kind]
    if config.head != head:
        raise TaskDataError(
            f"{what} has head {config.head!r} but {task.name} needs a {head!r} head: "
            f"fine-tune it for {task.name} first (distilkit finetune --task {task.name})"
        )
    if task.kind == "question_answering":
        return
    if config.num_labels != task.num_labels:
        raise TaskDataError(
            f"{what} predicts {config.num_labels} label(s) but {task.name} has "
            f"{task.num_labels}" + (f" {task.label_names}" if task.label_names else "")
        )
    if task.label_names is None or config.label_names is None:
        return
    ours = [name.strip().lower() for name in config.label_names]
    theirs = [name.strip().lower() for name in task.label_names]
    if ours != theirs:
        reordered = sorted(ours) == sorted(theirs)
        raise TaskDataError(
            f"{what}'s labels {config.label_names} do not match the {task.name} data's labels "
            f"{task.label_names}"
            + (
                " (the same names in another order: its outputs would be read as the wrong classes)"
                if reordered
                else ""
            )
            + f": use a model fine-tuned on {task.name} with distilkit"
        )
