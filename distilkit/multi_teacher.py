"""Distilling several teachers into one student (MT-DNN's ensemble distillation).

* Multi-teacher: the teachers (say, one model fine-tuned with different seeds) each
  label the transfer set once (cached, :mod:`distilkit.teacher_cache`); their logits are
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

import dataclasses
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distilkit.augment import AugmentConfig
from distilkit.bilstm import BiLSTMClassifier
from distilkit.bilstm_train import (
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
from distilkit.checkpoint import load_model
from distilkit.config import ConfigError, build_nested, from_dict, load_json, save_json, to_dict
from distilkit.data.batching import LengthGroupedSampler, ResumableBatchSampler
from distilkit.hub import resolve
from distilkit.losses import average_teacher_logits
from distilkit.modeling import TransformerModel
from distilkit.teacher_cache import cached_teacher_logits
from distilkit.tokenizer import Tokenizer
from distilkit.trainer import Objective, Trainer, TrainingConfig
from distilkit.transfer_data import (
    DistillationDataset,
    collate_items,
    encode_for_student,
    fixed_batches,
    load_task_data,
    sentence_task,
)

COMBINE_MODES = ("probs", "logits")


# ----------------------------------------------------------------------------- combining
def combine_teacher_logits(
    teacher_logits: Sequence[np.ndarray],
    mode: str = "probs",
    temperature: float = 1.0,
    weights: Sequence[float] | None = None,
    chunk: int = 65536,
) -> np.ndarray:
    """One ``(examples, num_labels)`` float32 array of soft-target logits from several
    teachers' arrays of that shape (memory maps are fine; read ``chunk`` rows at a time).

    mode "probs": ``T * log(sum_i w_i softmax(logits_i / T))``, so that
    ``softmax(result / T)`` is the weighted mean teacher distribution at temperature T
    (train with the same T); mode "logits": the weighted mean of the logits. weights:
    one per teacher, normalised to sum 1 (default equal). See
    :func:`distilkit.losses.average_teacher_logits`, which does the arithmetic.
    """
    if not teacher_logits:
        raise ConfigError("combine_teacher_logits needs at least one teacher")
    shape = np.shape(teacher_logits[0])
    for index, logits in enumerate(teacher_logits):
        if np.shape(logits) != shape or len(shape) != 2:
            raise ConfigError(
                f"teacher {index} gave logits of shape {np.shape(logits)} but teacher 0 gave "
                f"{shape}: every teacher must label the same examples with (examples, labels)"
            )
    if mode == "probs" and shape[1] == 1:
        raise ConfigError(
            "one output per example (regression) has no class distribution to average: "
            "use mode='logits' to average the predictions"
        )
    combined = np.empty(shape, dtype=np.float32)
    for start in range(0, shape[0], chunk):
        rows = [
            torch.from_numpy(np.asarray(x[start : start + chunk], np.float64))
            for x in teacher_logits
        ]
        combined[start : start + chunk] = average_teacher_logits(
            rows, mode, temperature, None if weights is None else list(weights)
        ).numpy()
    return combined


# ----------------------------------------------------------------------------- the model
@dataclass
class HeadSpec:
    """What a task head outputs: classes (or 1 for regression), and whether the task
    reads sentence pairs (a BiLSTM then uses its siamese features)."""

    num_labels: int
    pair: bool = False
    label_names: list[str] | None = None
    regression: bool = False


def _encoder_of(model: nn.Module) -> nn.Module:
    return model.encoder if isinstance(model, BiLSTMClassifier) else model.backbone


class MultiTaskModel(nn.Module):
    """One encoder shared by all tasks and one head per task.

    ``task_model(task)`` is a complete classifier for that task (a
    :class:`BiLSTMClassifier` or a :class:`TransformerModel`) whose encoder is the shared
    module, so training one task trains the shared encoder, and each task's model can be
    saved and used on its own. Registered parameters: ``encoder`` and ``heads`` only.
    """

    def __init__(self, task_models: dict[str, nn.Module]):
        super().__init__()
        if not task_models:
            raise ConfigError("a multi-task model needs at least one task")
        encoders = {id(_encoder_of(model)) for model in task_models.values()}
        if len(encoders) != 1:
            raise ConfigError("the task models must share one encoder module")
        self.encoder = _encoder_of(next(iter(task_models.values())))
        self.heads = nn.ModuleDict({task: model.head for task, model in task_models.items()})
        self._task_models = dict(task_models)  # a plain dict: not registered twice

    @property
    def task_names(self) -> list[str]:
        return list(self._task_models)

    def task_model(self, task: str) -> nn.Module:
        if task not in self._task_models:
            raise ConfigError(f"no head for task {task!r}; the tasks are {self.task_names}")
        return self._task_models[task]

    def forward(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(batch, num_labels of task)`` logits."""
        return student_logits(self.task_model(task), batch)

    def train(self, mode: bool = True) -> MultiTaskModel:
        super().train(mode)
        for model in self._task_models.values():
            model.training = mode
        return self

    @classmethod
    def bilstm(
        cls,
        heads: dict[str, HeadSpec],
        word_embeddings: torch.Tensor,
        tokenizer: Tokenizer,
        settings: BiLSTMSettings | None = None,
        seed: int = 0,
    ) -> MultiTaskModel:
        """BiLSTM task models over one shared encoder (embeddings from a teacher)."""
        settings = settings or BiLSTMSettings()
        models: dict[str, nn.Module] = {}
        shared = None
        for index, (task, spec) in enumerate(heads.items()):
            model = BiLSTMClassifier.from_teacher(
                word_embeddings,
                tokenizer,
                seed=seed + index,
                num_labels=spec.num_labels,
                pair=spec.pair,
                label_names=spec.label_names,
                **to_dict(settings),
            )
            if shared is None:
                shared = model.encoder
            model.encoder = shared
            models[task] = model
        return cls(models)

    @classmethod
    def transformer(
        cls, folder: str | Path, heads: dict[str, HeadSpec], seed: int = 0
    ) -> MultiTaskModel:
        """Transformer task models over the backbone of the checkpoint in ``folder``, each
        with a fresh sequence-classification head (BERT layout: a pooler is added, fresh,
        if the checkpoint has none)."""
        base = load_model(resolve(folder), head=None)
        config = base.config
        backbone = base.backbone
        if config.layout == "bert" and backbone.pooler is None:
            config = dataclasses.replace(config, with_pooler=True)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                backbone.pooler = TransformerModel(config).backbone.pooler
        models: dict[str, nn.Module] = {}
        for index, (task, spec) in enumerate(heads.items()):
            task_config = dataclasses.replace(
                config,
                head="sequence_classification",
                num_labels=spec.num_labels,
                label_names=spec.label_names,
                problem_type="regression" if spec.regression else "single_label_classification",
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + index)
                model = TransformerModel(task_config)
            model.backbone = backbone
            models[task] = model
        return cls(models)

    def save(self, folder: str | Path, tokenizer: Tokenizer) -> dict[str, Path]:
        """Each task's model as a standalone folder ``<folder>/<task>``."""
        return {
            task: save_student(model, Path(folder) / task, tokenizer)
            for task, model in self._task_models.items()
        }

    def load(self, folder: str | Path) -> None:
        """Read back what :meth:`save` wrote (the shared encoder is in every folder)."""
        for task, model in self._task_models.items():
            load_student(model, Path(folder) / task)


# ----------------------------------------------------------------------------- batching
class TaskDatasets:
    """Several tasks' datasets behind one index: task 0's examples, then task 1's, ..."""

    def __init__(self, datasets: Sequence[DistillationDataset]):
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        task = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.datasets[task][index - int(self.offsets[task])]


class TaskBatchSampler(ResumableBatchSampler):
    """Length-grouped batches that each hold one task's examples (indices into a
    :class:`TaskDatasets`). An epoch covers every task's data once, its batches in an
    order drawn from (seed, epoch); resumable like ``LengthGroupedSampler``."""

    resume_error = ConfigError

    def __init__(self, task_lengths: Sequence[np.ndarray], batch_size: int, seed: int = 0):
        super().__init__()
        self.samplers = [
            LengthGroupedSampler(lengths, batch_size, seed=seed + index)
            for index, lengths in enumerate(task_lengths)
        ]
        self.offsets = np.cumsum([0] + [len(lengths) for lengths in task_lengths])
        self.batch_size = batch_size
        self.seed = seed

    def __len__(self) -> int:
        return sum(len(sampler) for sampler in self.samplers)

    def rank_batches(self, epoch: int) -> list[list[int]]:
        """Every task's batches of ``epoch``, as indices into the joined datasets, shuffled."""
        batches = [
            [int(self.offsets[task]) + i for i in batch]
            for task, sampler in enumerate(self.samplers)
            for batch in sampler.rank_batches(epoch)
        ]
        order = np.random.default_rng([self.seed, epoch]).permutation(len(batches))
        return [batches[i] for i in order]

    def resume_settings(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "task_sizes": np.diff(self.offsets).tolist(),
        }


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
    from distilkit.encoder import Encoder

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
