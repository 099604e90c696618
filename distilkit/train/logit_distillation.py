"""Logit distillation into sentence-task students (BiLSTM or encoder): losses, metrics, saving."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distilkit.model.bilstm import BiLSTMClassifier
from distilkit.model.checkpoint import load_model, load_student_weights, save_model
from distilkit.model.modeling import TransformerModel
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import ConfigError
from distilkit.tasks.metrics import classification_metrics, regression_metrics
from distilkit.tasks.spec import TaskSpec
from distilkit.train.losses import (
    hard_label_loss,
    logit_mse_loss,
    regression_loss,
    soft_target_loss,
)
from distilkit.train.trainer import TrainingConfig


# ----------------------------------------------------------------------------- losses
def student_logits(student: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(batch, num_labels)`` logits of a BiLSTM or a transformer classifier."""
    if isinstance(student, BiLSTMClassifier):
        return student(
            batch["input_ids"],
            batch["attention_mask"],
            batch.get("pair_input_ids"),
            batch.get("pair_attention_mask"),
        )
    if isinstance(student, TransformerModel):
        return student(
            batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
        ).logits
    raise ConfigError(f"unsupported student {type(student).__name__}: use a BiLSTM or transformer")


def distillation_losses(
    logits: torch.Tensor,
    batch: dict[str, torch.Tensor],
    weights: dict[str, float],
    temperature: float = 1.0,
    regression: bool = False,
) -> dict[str, torch.Tensor]:
    """The named losses ``weights`` asks for, from student logits ``(batch, num_labels)``.

    ``mse``: MSE to the teacher logits in ``batch["targets"]`` (Tang et al.); ``kl``:
    soft targets at ``temperature`` (Hinton; with averaged teachers, the KL to the mean
    teacher distribution); ``hard``: gold labels of the labelled rows (cross-entropy, or
    MSE for regression), 0 when the batch has none.
    """
    losses: dict[str, torch.Tensor] = {}
    if "mse" in weights:
        losses["mse"] = logit_mse_loss(logits, batch["targets"])
    if "kl" in weights:
        losses["kl"] = soft_target_loss(logits, batch["targets"], temperature)
    if "hard" in weights:
        selected = batch["label_mask"]
        if not bool(selected.any()):
            losses["hard"] = logits.sum() * 0.0  # keeps the graph; contributes nothing
        elif regression:
            losses["hard"] = regression_loss(logits[selected], batch["labels"][selected])
        else:
            losses["hard"] = hard_label_loss(logits[selected], batch["labels"][selected])
    return losses


def logit_metrics(
    logits: np.ndarray,
    labels: np.ndarray,
    regression: bool,
    teacher_logits: np.ndarray | None = None,
) -> dict[str, float]:
    """Task metrics of ``(examples, num_labels)`` logits, and agreement with a teacher."""
    if regression:
        metrics = regression_metrics(logits[:, 0], labels)
    else:
        metrics = classification_metrics(logits, labels)
    if teacher_logits is not None:
        metrics["mse_to_teacher"] = float(np.mean((logits - teacher_logits) ** 2))
        if not regression:
            agree = logits.argmax(-1) == teacher_logits.argmax(-1)
            metrics["agreement_with_teacher"] = float(agree.mean())
    return metrics


def save_student(student: nn.Module, folder: Path, tokenizer: Tokenizer) -> Path:
    if isinstance(student, BiLSTMClassifier):
        return student.save(folder)
    return save_model(student, folder, tokenizer=tokenizer)


def load_student(student: nn.Module, folder: Path) -> None:
    if isinstance(student, BiLSTMClassifier):
        student.load_weights(folder)
    else:
        load_student_weights(student, folder)


# ----------------------------------------------------------------------------- the run
@dataclass
class BiLSTMSettings:
    """Student shape (see :class:`~distilkit.model.bilstm.BiLSTMConfig`); Tang et al.'s SST-2
    sizes by default."""

    hidden_size: int = 150
    mlp_size: int = 200
    dropout: float = 0.1
    max_length: int = 128
    freeze_embeddings: bool = False


def default_training() -> TrainingConfig:
    return TrainingConfig(
        max_steps=3000,
        batch_size=50,
        learning_rate=1e-3,
        warmup_fraction=0.02,
        eval_every=500,
        checkpoint_every=500,
        log_every=50,
    )


def teacher_word_embeddings(teacher_folder: Path) -> torch.Tensor:
    """The teacher's input word-piece embeddings, ``(vocab, hidden)``."""
    return load_model(teacher_folder, head=None).backbone.embeddings.word_embeddings.weight.detach()


def check_teacher_outputs(logits: np.ndarray, task: TaskSpec, teacher: str) -> None:
    if logits.shape[1] != task.num_labels:
        raise ConfigError(
            f"teacher {teacher} gives {logits.shape[1]} outputs per example but task "
            f"{task.name} has {task.num_labels}: use a teacher fine-tuned on {task.name}"
        )
