"""Distilling a fine-tuned teacher into a BiLSTM student (Tang et al., 2019).

Data flow: task training examples -> transfer set (the originals, plus augmented copies
when asked) -> teacher logits, computed once and cached (:mod:`distilkit.data.teacher_cache`)
-> token ids -> batches -> student logits -> named losses -> the training loop -> student
folder -> dev metrics of teacher and student -> ``metrics.json``.

Targets, as in the paper's ablation:

* ``targets="labels"``: the student learns from the gold labels only (cross-entropy, or
  MSE for regression), on the original examples (augmented copies have no labels);
* ``targets="logits"``: the student regresses the teacher's logits (``mse``), on the
  original or the augmented transfer set, optionally mixed with the gold-label loss on
  the labelled (original) examples: ``(1 - a) * mse + a * hard`` with
  ``a = hard_label_weight`` (the paper's alpha; it uses 0).

The task data, token ids, dataset and collate function are in
:mod:`distilkit.data.transfer`; the loss terms and the evaluation of logits here are
shared with multi-teacher and multi-task distillation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distilkit.data.augment.operations import AugmentConfig
from distilkit.data.batching import LengthGroupedSampler
from distilkit.data.teacher_cache import cached_teacher_logits
from distilkit.data.transfer import (
    DistillationDataset,
    collate_items,
    encode_for_student,
    fixed_batches,
    load_task_data,
)
from distilkit.model.bilstm import BiLSTMClassifier
from distilkit.model.card import update_card
from distilkit.model.hub import resolve
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import ConfigError, build_nested, from_dict, load_json, save_json, to_dict
from distilkit.train.logit_distillation import (
    BiLSTMSettings,
    check_teacher_outputs,
    default_training,
    distillation_losses,
    load_student,
    logit_metrics,
    save_student,
    student_logits,
    teacher_word_embeddings,
)
from distilkit.train.run_folder import check_resume, guarded_run
from distilkit.train.trainer import Objective, Trainer, TrainingConfig

SOFT_LOSSES = ("mse", "kl")


class LogitDistillation(Objective):
    """One student, one task: batch -> ``mse`` / ``kl`` to teacher targets and ``hard``.

    weights: loss name -> weight, names from ``mse``, ``kl``, ``hard`` (the losses of
    :func:`distillation_losses`).
    """

    def __init__(
        self,
        student: nn.Module,
        tokenizer: Tokenizer,
        weights: dict[str, float],
        temperature: float = 1.0,
        regression: bool = False,
    ):
        super().__init__()
        unknown = sorted(set(weights) - {*SOFT_LOSSES, "hard"})
        if unknown or not weights:
            raise ConfigError(
                f"loss weights must name some of {[*SOFT_LOSSES, 'hard']}; got {sorted(weights)}"
            )
        if regression and "kl" in weights:
            raise ConfigError("a regression task has no class distribution: use 'mse', not 'kl'")
        self.student = student
        self.tokenizer = tokenizer
        self.weights = {name: float(value) for name, value in weights.items()}
        self.temperature = temperature
        self.regression = regression

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        logits = student_logits(self.student, batch)
        return distillation_losses(logits, batch, self.weights, self.temperature, self.regression)

    @torch.no_grad()
    def evaluate(self, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        logits = torch.cat([student_logits(self.student, batch) for batch in batches])
        labels = torch.cat([batch["labels"] for batch in batches]).numpy()
        teacher = None
        if "targets" in batches[0]:
            teacher = torch.cat([batch["targets"] for batch in batches]).numpy()
        return logit_metrics(logits.float().numpy(), labels, self.regression, teacher)

    def save(self, folder: Path) -> None:
        save_student(self.student, Path(folder), self.tokenizer)

    def load(self, folder: Path) -> None:
        load_student(self.student, Path(folder))


@dataclass
class BiLSTMDistillConfig:
    """Everything a BiLSTM distillation run needs; saved as ``bilstm_config.json``.

    teacher: a checkpoint folder fine-tuned on ``task`` (sequence-classification head);
    targets: "labels" or "logits"; augment: train on the augmented transfer set;
    hard_label_weight: the paper's alpha, mixing gold labels into logit training;
    subsample: keep this many training examples (quick runs); cache_dir: where teacher
    logits are cached (None: ``teacher_cache`` beside the run folder).
    """

    teacher: str = ""
    task: str = "sst2"
    targets: str = "logits"
    augment: bool = True
    augmentation: AugmentConfig | None = None  # None: paper_augmentation(task)
    hard_label_weight: float = 0.0
    subsample: int | None = None
    data_root: str | None = None
    cache_dir: str | None = None
    teacher_batch_size: int = 128
    student: BiLSTMSettings = field(default_factory=BiLSTMSettings)
    training: TrainingConfig = field(default_factory=default_training)

    def __post_init__(self) -> None:
        build_nested(self)
        if not self.teacher:
            raise ConfigError("teacher is required: a checkpoint folder fine-tuned on the task")
        if self.targets not in ("labels", "logits"):
            raise ConfigError(f"targets must be 'labels' or 'logits', got {self.targets!r}")
        if self.targets == "labels" and self.augment:
            raise ConfigError(
                "augmented copies have no gold labels: with targets='labels' set augment=false"
            )
        if self.targets == "labels" and self.hard_label_weight:
            raise ConfigError(
                "hard_label_weight mixes gold labels into logit training; with "
                "targets='labels' the gold labels are the whole loss: leave it at 0"
            )
        if not 0.0 <= self.hard_label_weight < 1.0:
            raise ConfigError(f"hard_label_weight must be in [0, 1), got {self.hard_label_weight}")

    @property
    def loss_weights(self) -> dict[str, float]:
        if self.targets == "labels":
            return {"hard": 1.0}
        weights = {"mse": 1.0 - self.hard_label_weight}
        if self.hard_label_weight:
            weights["hard"] = self.hard_label_weight
        return weights

    @classmethod
    def load(cls, path: str | Path) -> BiLSTMDistillConfig:
        return from_dict(cls, load_json(path))


@guarded_run
def run_bilstm_distillation(
    config: BiLSTMDistillConfig, out_dir: str | Path, resume: bool = True
) -> dict:
    """Train a BiLSTM student on ``config.task``; returns the dict written to
    ``metrics.json`` (teacher and student dev metrics, sizes, training summary)."""
    out_dir = Path(out_dir)
    started = time.perf_counter()
    teacher_folder = resolve(config.teacher)
    tokenizer = Tokenizer.from_folder(teacher_folder)
    cache_dir = Path(config.cache_dir) if config.cache_dir else out_dir.parent / "teacher_cache"
    progress = config.training.progress
    data = load_task_data(
        config.task,
        config.data_root,
        config.subsample,
        config.training.seed,
        config.augment,
        config.augmentation,
        progress=progress,
    )
    print(
        f"{config.task}: {data.num_original:,} training examples, transfer set "
        f"{len(data.texts):,}, dev {len(data.dev_texts):,}",
        flush=True,
    )

    def label(texts: list[str], pairs: list[str] | None) -> np.ndarray:
        logits = cached_teacher_logits(
            teacher_folder, texts, pairs, cache_dir, config.teacher_batch_size, progress=progress
        )
        check_teacher_outputs(logits, data.task, config.teacher)
        return logits

    teacher_dev = label(data.dev_texts, data.dev_pairs)
    targets = label(data.texts, data.pairs) if config.targets == "logits" else None
    student = BiLSTMClassifier.from_teacher(
        teacher_word_embeddings(teacher_folder),
        tokenizer,
        seed=config.training.seed,
        num_labels=data.task.num_labels,
        pair=data.pairs is not None,
        label_names=data.task.label_names,
        **to_dict(config.student),
    )
    max_length = config.student.max_length
    dataset = DistillationDataset(
        encode_for_student(student, tokenizer, data.texts, data.pairs, max_length),
        targets,
        data.labels,
    )
    dev_set = DistillationDataset(
        encode_for_student(student, tokenizer, data.dev_texts, data.dev_pairs, max_length),
        teacher_dev,
        data.dev_labels,
    )
    objective = LogitDistillation(
        student, tokenizer, config.loss_weights, regression=data.regression
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        check_resume(out_dir, {"bilstm": to_dict(config)})
    save_json(to_dict(config), out_dir / "bilstm_config.json")
    sampler = LengthGroupedSampler(
        dataset.lengths, config.training.batch_size, seed=config.training.seed
    )
    trainer = Trainer(
        objective,
        dataset,
        sampler,
        lambda items: collate_items(items, tokenizer.pad_id),
        config.training,
        out_dir,
        eval_batches=fixed_batches(dev_set, tokenizer.pad_id),
        run_config={"bilstm": to_dict(config)},
    )
    result = trainer.run(resume=resume)
    student_dir = save_student(student, out_dir / "student", tokenizer)
    student_dev = student.predict_logits(data.dev_texts, data.dev_pairs)
    metric = data.task.metric
    metrics = {
        "task": config.task,
        "metric": metric,
        "targets": config.targets,
        "augment": config.augment,
        "augmentation": to_dict(data.augmentation) if data.augmentation else None,
        "train_examples": data.num_original,
        "transfer_set": len(data.texts),
        "teacher": {
            "folder": str(teacher_folder),
            "dev": logit_metrics(teacher_dev, data.dev_labels, data.regression),
        },
        "student": {
            "folder": str(student_dir),
            "dev": logit_metrics(student_dev, data.dev_labels, data.regression, teacher_dev),
            "parameters": student.parameter_counts(),
        },
        "training": {
            "steps": result.step,
            "stopped_by": result.stopped_by,
            "seconds": result.elapsed,
            "final_losses": result.last_losses,
        },
        "total_seconds": time.perf_counter() - started,
    }
    save_json(metrics, out_dir / "metrics.json")
    update_card(
        student_dir,
        name=f"BiLSTM {config.task} student of {Path(str(config.teacher)).name}",
        teacher=str(config.teacher),
        steps=result.step,
        seconds=result.elapsed,
        settings={
            "task, targets": f"{config.task}, {config.targets}"
            + (", augmented transfer set" if config.augment else ""),
            f"dev {metric}": f"{metrics['student']['dev'][metric]:.4f} (teacher "
            f"{metrics['teacher']['dev'][metric]:.4f})",
        },
    )
    print(
        f"dev {metric}: teacher {metrics['teacher']['dev'][metric]:.4f}, BiLSTM student "
        f"{metrics['student']['dev'][metric]:.4f} ({config.targets}"
        f"{', augmented' if config.augment else ''}); student saved to {student_dir}",
        flush=True,
    )
    return metrics


__all__ = [
    "BiLSTMDistillConfig",
    "BiLSTMSettings",
    "LogitDistillation",
    "distillation_losses",
    "logit_metrics",
    "run_bilstm_distillation",
    "student_logits",
]
