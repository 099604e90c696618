"""Distilling several teachers into one student (MT-DNN's ensemble distillation).

* Multi-teacher: the teachers (say, one model fine-tuned with different seeds) each
  label the transfer set once (cached, :mod:`distilkit.data.teacher_cache`); their logits are
  combined into one soft target per example by :func:`combine_teacher_logits`, averaging
  probabilities (the ensemble's distribution) or logits. Any student kind trains on the
  result: a BiLSTM or a transformer.
* Multi-task: one student encoder shared by several tasks, with a head per task
  (:class:`MultiTaskModel`), trained on each task's (combined) teachers; every batch holds
  one task's examples, and an epoch goes through every task's data once in a shuffled
  order of batches (:class:`TaskBatchSampler`).

Losses (:class:`MultiTaskDistillation`): ``soft`` is the KL to the combined teacher
distribution at temperature T (``loss="kl"``, Hinton / MT-DNN) or the MSE to the combined
logits (``loss="mse"``, Tang et al.); regression tasks (one output) always use the MSE
to the mean teacher prediction. ``hard`` adds the gold labels of the original examples:
``(1 - a) * soft + a * hard`` with ``a = hard_label_weight``.

With a single teacher, combining changes nothing (probabilities: the logits move by a
constant per row, which softmax ignores), so training reduces to plain distillation.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distilkit.data.augment.operations import AugmentConfig
from distilkit.data.teacher_cache import cached_teacher_logits
from distilkit.data.transfer import (
    DistillationDataset,
    collate_items,
    encode_for_student,
    fixed_batches,
    load_task_data,
    sentence_task,
)
from distilkit.encoder import Encoder
from distilkit.methods.multi_teacher.model import (
    COMBINE_MODES,
    HeadSpec,
    MultiTaskModel,
    combine_teacher_logits,
)
from distilkit.methods.multi_teacher.sampling import TaskBatchSampler, TaskDatasets
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
    logit_metrics,
    teacher_word_embeddings,
)
from distilkit.train.run_folder import check_resume, guarded_run
from distilkit.train.trainer import Objective, Trainer, TrainingConfig


# ----------------------------------------------------------------------------- the objective
class MultiTaskDistillation(Objective):
    """Batches of one task each -> ``soft`` (and ``hard``) losses of that task's head.

    regression: task -> True for one-output tasks (their soft loss is always the MSE).
    """

    def __init__(
        self,
        model: MultiTaskModel,
        tokenizer: Tokenizer,
        loss: str = "kl",
        temperature: float = 1.0,
        hard_label_weight: float = 0.0,
        regression: dict[str, bool] | None = None,
    ):
        super().__init__()
        if loss not in ("kl", "mse"):
            raise ConfigError(f"loss must be 'kl' or 'mse', got {loss!r}")
        if not 0.0 <= hard_label_weight < 1.0:
            raise ConfigError(f"hard_label_weight must be in [0, 1), got {hard_label_weight}")
        self.model = model
        self.tokenizer = tokenizer
        self.loss = loss
        self.temperature = temperature
        self.regression = {task: False for task in model.task_names} | (regression or {})
        self.weights = {"soft": 1.0 - hard_label_weight}
        if hard_label_weight:
            self.weights["hard"] = hard_label_weight

    def _losses(self, task: str, logits: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        soft = "mse" if self.regression[task] else self.loss
        wanted = {soft: 1.0} | ({"hard": 1.0} if "hard" in self.weights else {})
        losses = distillation_losses(logits, batch, wanted, self.temperature, self.regression[task])
        return {("soft" if name == soft else name): value for name, value in losses.items()}

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        task = self.model.task_names[int(batch["task_index"])]
        return self._losses(task, self.model(task, batch), batch)

    @torch.no_grad()
    def evaluate(self, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Per task ``<task>/<metric>`` on the batches of that task."""
        metrics: dict[str, float] = {}
        for index, task in enumerate(self.model.task_names):
            own = [batch for batch in batches if int(batch["task_index"]) == index]
            if not own:
                continue
            logits = torch.cat([self.model(task, batch) for batch in own]).float().numpy()
            labels = torch.cat([batch["labels"] for batch in own]).numpy()
            teacher = (
                torch.cat([batch["targets"] for batch in own]).numpy()
                if "targets" in own[0]
                else None
            )
            found = logit_metrics(logits, labels, self.regression[task], teacher)
            metrics |= {f"{task}/{name}": value for name, value in found.items()}
        return metrics

    def save(self, folder: Path) -> None:
        self.model.save(folder, self.tokenizer)

    def load(self, folder: Path) -> None:
        self.model.load(folder)


# ----------------------------------------------------------------------------- the run
@dataclass
class MultiTeacherConfig:
    """A multi-teacher (and, with several tasks, multi-task) run; saved as
    ``multi_teacher_config.json``.

    teachers: task -> checkpoint folders fine-tuned on it (one or more per task);
    student: "bilstm" (embeddings from the first teacher) or a transformer checkpoint
    folder (its backbone is shared, heads are fresh); combine: "probs" or "logits";
    temperature: of the probability average and the KL; loss: "kl" or "mse".
    """

    teachers: dict[str, list[str]] = field(default_factory=dict)
    student: str = "bilstm"
    combine: str = "probs"
    temperature: float = 1.0
    loss: str = "kl"
    hard_label_weight: float = 0.0
    augment: bool = False
    augmentation: AugmentConfig | None = None  # None: the paper's settings per task
    subsample: int | None = None
    data_root: str | None = None
    cache_dir: str | None = None
    teacher_batch_size: int = 128
    bilstm: BiLSTMSettings = field(default_factory=BiLSTMSettings)
    max_length: int = 128  # tokens per example for a transformer student
    training: TrainingConfig = field(default_factory=default_training)

    def __post_init__(self) -> None:
        build_nested(self)
        if not isinstance(self.teachers, dict) or not self.teachers:
            raise ConfigError(
                "teachers must map each task to its teacher folders, e.g. "
                '{"sst2": ["runs/sst2-seed1", "runs/sst2-seed2"]}'
            )
        for task, folders in self.teachers.items():
            sentence_task(task)  # a clear error for anything but a sentence (pair) task
            if (
                not isinstance(folders, list)
                or not folders
                or not all(isinstance(f, str) and f for f in folders)
            ):
                raise ConfigError(f"teachers[{task!r}] must be a non-empty list of folders")
        if self.combine not in COMBINE_MODES:
            raise ConfigError(f"combine must be one of {COMBINE_MODES}, got {self.combine!r}")
        if self.loss not in ("kl", "mse"):
            raise ConfigError(f"loss must be 'kl' or 'mse', got {self.loss!r}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.hard_label_weight < 1.0:
            raise ConfigError(f"hard_label_weight must be in [0, 1), got {self.hard_label_weight}")

    @classmethod
    def load(cls, path: str | Path) -> MultiTeacherConfig:
        return from_dict(cls, load_json(path))


def _predict(model: nn.Module, tokenizer: Tokenizer, texts, pairs) -> np.ndarray:
    if isinstance(model, BiLSTMClassifier):
        return model.predict_logits(texts, pairs)

    was_training = model.training
    try:
        return Encoder(model, tokenizer).logits(texts, pairs)
    finally:
        model.train(was_training)


def task_keys(identifiers: Sequence[str]) -> dict[str, str]:
    """Each task (a registered name or a task file's path) -> the short name that keys its
    head, its student folder and its metrics: the registered name, or the task file's
    ``name``. Names must be distinct and safe as folder names."""
    keys: dict[str, str] = {}
    for identifier in identifiers:
        key = sentence_task(identifier).name
        if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
            raise ConfigError(
                f"task {identifier}: its name {key!r} names the student's head and folder, so "
                "it may hold only letters, digits, '-' and '_': change 'name' in the task file"
            )
        if key in keys.values():
            raise ConfigError(
                f"two tasks are both called {key!r}: give each task file its own 'name'"
            )
        keys[identifier] = key
    return keys


@guarded_run
def run_multi_teacher_distillation(
    config: MultiTeacherConfig, out_dir: str | Path, resume: bool = True
) -> dict:
    """Label every task's transfer set with its teachers (cached), combine them, train one
    student with a head per task, and compare it on dev with each teacher and with the
    teachers' ensemble. Returns the dict written to ``metrics.json``; the students are
    saved to ``<out_dir>/students/<task>``."""
    out_dir = Path(out_dir)
    started = time.perf_counter()
    cache_dir = Path(config.cache_dir) if config.cache_dir else out_dir.parent / "teacher_cache"
    progress = config.training.progress
    seed = config.training.seed
    keys = task_keys(list(config.teachers))
    tasks = list(keys.values())
    teachers = {keys[identifier]: folders for identifier, folders in config.teachers.items()}
    data, targets, dev_targets, report = {}, {}, {}, {}
    for identifier, task in keys.items():
        data[task] = task_data = load_task_data(
            identifier,
            config.data_root,
            config.subsample,
            seed,
            config.augment,
            config.augmentation,
            progress=progress,
        )
        mode = "logits" if task_data.regression else config.combine
        transfer, dev, rows = [], [], []
        for teacher in teachers[task]:
            folder = resolve(teacher)
            dev_logits = cached_teacher_logits(
                folder,
                task_data.dev_texts,
                task_data.dev_pairs,
                cache_dir,
                config.teacher_batch_size,
                progress=progress,
            )
            check_teacher_outputs(dev_logits, task_data.task, teacher)
            dev.append(dev_logits)
            transfer.append(
                cached_teacher_logits(
                    folder,
                    task_data.texts,
                    task_data.pairs,
                    cache_dir,
                    config.teacher_batch_size,
                    progress=progress,
                )
            )
            rows.append(
                {
                    "folder": str(folder),
                    "dev": logit_metrics(dev_logits, task_data.dev_labels, task_data.regression),
                }
            )
        targets[task] = combine_teacher_logits(transfer, mode, config.temperature)
        dev_targets[task] = combine_teacher_logits(dev, mode, config.temperature)
        report[task] = {
            "metric": task_data.task.metric,
            "train_examples": task_data.num_original,
            "transfer_set": len(task_data.texts),
            "augmentation": to_dict(task_data.augmentation) if task_data.augmentation else None,
            "teachers": rows,
            "ensemble": {
                "combine": mode,
                "dev": logit_metrics(dev_targets[task], task_data.dev_labels, task_data.regression),
            },
        }
        print(
            f"{task}: {len(rows)} teacher(s), transfer set {len(task_data.texts):,}, ensemble dev "
            f"{task_data.task.metric} {report[task]['ensemble']['dev'][task_data.task.metric]:.4f}",
            flush=True,
        )

    heads = {
        task: HeadSpec(
            num_labels=data[task].task.num_labels,
            pair=data[task].pairs is not None,
            label_names=data[task].task.label_names,
            regression=data[task].regression,
        )
        for task in tasks
    }
    if config.student == "bilstm":
        first_teacher = resolve(teachers[tasks[0]][0])
        tokenizer = Tokenizer.from_folder(first_teacher)
        model = MultiTaskModel.bilstm(
            heads, teacher_word_embeddings(first_teacher), tokenizer, config.bilstm, seed
        )
        max_length = config.bilstm.max_length
    else:
        tokenizer = Tokenizer.from_folder(resolve(config.student))
        model = MultiTaskModel.transformer(config.student, heads, seed)
        max_length = config.max_length
    datasets, dev_batches = [], []
    for index, task in enumerate(tasks):
        task_data, task_model = data[task], model.task_model(task)
        encoded = encode_for_student(
            task_model, tokenizer, task_data.texts, task_data.pairs, max_length
        )
        datasets.append(DistillationDataset(encoded, targets[task], task_data.labels, index))
        dev_encoded = encode_for_student(
            task_model, tokenizer, task_data.dev_texts, task_data.dev_pairs, max_length
        )
        dev_set = DistillationDataset(dev_encoded, dev_targets[task], task_data.dev_labels, index)
        dev_batches.extend(fixed_batches(dev_set, tokenizer.pad_id))
    objective = MultiTaskDistillation(
        model,
        tokenizer,
        config.loss,
        config.temperature,
        config.hard_label_weight,
        regression={task: data[task].regression for task in tasks},
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        check_resume(out_dir, {"multi_teacher": to_dict(config)})
    save_json(to_dict(config), out_dir / "multi_teacher_config.json")
    trainer = Trainer(
        objective,
        TaskDatasets(datasets),
        TaskBatchSampler([d.lengths for d in datasets], config.training.batch_size, seed),
        lambda items: collate_items(items, tokenizer.pad_id),
        config.training,
        out_dir,
        eval_batches=dev_batches,
        run_config={"multi_teacher": to_dict(config)},
    )
    result = trainer.run(resume=resume)
    folders = model.save(out_dir / "students", tokenizer)
    model.eval()
    for task in tasks:
        task_data = data[task]
        logits = _predict(
            model.task_model(task), tokenizer, task_data.dev_texts, task_data.dev_pairs
        )
        report[task]["student"] = {
            "folder": str(folders[task]),
            "dev": logit_metrics(
                logits, task_data.dev_labels, task_data.regression, dev_targets[task]
            ),
        }
        metric = task_data.task.metric
        best = max(row["dev"][metric] for row in report[task]["teachers"])
        update_card(
            folders[task],
            name=f"{task} student of {len(teachers[task])} teacher(s)",
            teacher=", ".join(str(t) for t in teachers[task]),
            steps=result.step,
            seconds=result.elapsed,
            settings={
                "method": f"multi-teacher ({config.combine}, {config.loss})",
                f"dev {metric}": f"{report[task]['student']['dev'][metric]:.4f} (best teacher "
                f"{best:.4f})",
            },
        )
        print(
            f"{task} dev {metric}: student {report[task]['student']['dev'][metric]:.4f}, best "
            f"teacher {best:.4f}, ensemble {report[task]['ensemble']['dev'][metric]:.4f}",
            flush=True,
        )
    metrics = {
        "tasks": report,
        "student": config.student,
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": {
            "steps": result.step,
            "stopped_by": result.stopped_by,
            "seconds": result.elapsed,
            "final_losses": result.last_losses,
        },
        "total_seconds": time.perf_counter() - started,
    }
    save_json(metrics, out_dir / "metrics.json")
    return metrics


__all__ = [
    "COMBINE_MODES",
    "HeadSpec",
    "MultiTaskDistillation",
    "MultiTaskModel",
    "MultiTeacherConfig",
    "TaskBatchSampler",
    "TaskDatasets",
    "combine_teacher_logits",
    "run_multi_teacher_distillation",
]
