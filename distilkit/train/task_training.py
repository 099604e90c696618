"""What every model trained on a task shares (fine-tuning and task distillation): the
supervised loss per task kind, keeping the best epoch, epoch schedules, the task model."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from distilkit.data.batching import LengthGroupedSampler
from distilkit.model.checkpoint import load_model, save_model
from distilkit.model.hub import resolve
from distilkit.model.modeling import TransformerModel
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import ConfigError, load_json, save_json, to_dict
from distilkit.tasks.features import (
    HEAD_FOR_KIND,
    TaskData,
    check_model_for_task,
)
from distilkit.tasks.ner import IGNORE_INDEX
from distilkit.tasks.spec import TaskSpec
from distilkit.train import distributed
from distilkit.train.losses import hard_label_loss, regression_loss
from distilkit.train.trainer import TrainingConfig

BEST_STATE_FILE = "best_score.json"


# ----------------------------------------------------------------------------- the loss
def task_loss(kind: str, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The supervised loss of a task kind on a batch of :mod:`distilkit.tasks.features`.

    classification: cross-entropy of ``(batch, classes)`` logits with ``labels``;
    regression: MSE of ``(batch, 1)`` outputs with float ``labels``;
    token_classification: cross-entropy of ``(batch, seq, classes)`` logits over the
    positions whose label is not -100 (first sub-words of words);
    question_answering: mean of the start and end cross-entropies over ``(batch, seq)``.
    """
    if kind == "classification":
        return hard_label_loss(logits, batch["labels"])
    if kind == "regression":
        return regression_loss(logits, batch["labels"])
    if kind == "token_classification":
        labelled = batch["labels"] != IGNORE_INDEX  # (B, T)
        if not bool(labelled.any()):
            return logits.sum() * 0.0
        return hard_label_loss(logits[labelled], batch["labels"][labelled])
    if kind == "question_answering":
        start = hard_label_loss(logits[..., 0], batch["start_positions"])
        end = hard_label_loss(logits[..., 1], batch["end_positions"])
        return (start + end) / 2
    raise ValueError(f"unknown task kind {kind!r}")


# ----------------------------------------------------------------------------- best epoch
class BestCheckpoint:
    """Keeps the model of the best evaluation so far in ``folder`` (rank 0 writes).

    All task metrics are higher-is-better. The best score travels with the training
    checkpoints (:meth:`save_state` / :meth:`load_state`), so a resumed run keeps
    comparing against it.
    """

    def __init__(self, folder: Path | None, metric: str, tokenizer: Tokenizer | None = None):
        self.folder = folder
        self.metric = metric
        self.tokenizer = tokenizer
        self.score = -math.inf
        self.evaluations = 0

    def offer(self, model: TransformerModel, metrics: dict[str, float]) -> bool:
        """Save ``model`` if ``metrics[metric]`` beats the best so far; True if it did."""
        self.evaluations += 1
        score = metrics[self.metric]
        if not score > self.score:  # a NaN score never wins
            return False
        self.score = score
        if self.folder is not None and distributed.rank() == 0:
            save_model(model, self.folder, tokenizer=self.tokenizer)
            save_json(
                {self.metric: score, "evaluation": self.evaluations}, self.folder / "score.json"
            )
        return True

    def save_state(self, folder: Path) -> None:
        save_json({"score": self.score, "evaluations": self.evaluations}, folder / BEST_STATE_FILE)

    def load_state(self, folder: Path) -> None:
        path = folder / BEST_STATE_FILE
        if path.is_file():
            state = load_json(path)
            self.score, self.evaluations = float(state["score"]), int(state["evaluations"])


# ----------------------------------------------------------------------------- loading
def load_task_model(name: str | Path, task: TaskSpec) -> tuple[TransformerModel, Tokenizer, Path]:
    """A model with the task's head and label names, its tokenizer and its folder.

    A checkpoint that already has the task's head keeps it (its label names must match
    the task's); any other gets a fresh head.
    """
    folder = resolve(name)
    stored = load_model(folder)
    head = HEAD_FOR_KIND[task.kind]
    if stored.config.head == head:
        check_model_for_task(stored, task, f"the checkpoint {folder}")
    labels = {}
    if task.label_names is not None:
        labels["label_names"] = task.label_names
    elif task.kind == "regression":
        labels["num_labels"] = 1
    model = load_model(folder, head=head, **labels)
    if task.kind == "regression":
        model.config.problem_type = "regression"
    elif task.kind == "classification":
        model.config.problem_type = "single_label_classification"
    tokenizer = Tokenizer.from_folder(folder, max_length=model.config.max_position_embeddings)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ConfigError(
            f"the tokenizer in {folder} has {tokenizer.vocab_size:,} entries but the model's "
            f"embedding matrix has {model.config.vocab_size:,} rows: the tokenizer must be the "
            "model's own"
        )
    return model, tokenizer, folder


def schedule_for_epochs(
    training: TrainingConfig, batches_per_epoch: int, epochs: float | None, evals_per_epoch: int
) -> TrainingConfig:
    """``training`` with max_steps = epochs x steps per epoch (kept when ``epochs`` is
    None), and evaluation and checkpoints ``evals_per_epoch`` times per epoch."""
    steps_per_epoch = max(1, batches_per_epoch // training.grad_accumulation)
    every = max(1, steps_per_epoch // evals_per_epoch)
    steps = training.max_steps if epochs is None else max(1, round(epochs * steps_per_epoch))
    return TrainingConfig(
        **{
            **to_dict(training),
            "max_steps": steps,
            "eval_every": min(every, steps),
            "checkpoint_every": min(every, steps),
        }
    )


def make_sampler(data: TaskData, training: TrainingConfig) -> LengthGroupedSampler:
    return LengthGroupedSampler(
        data.lengths,
        training.batch_size,
        seed=training.seed,
    )
