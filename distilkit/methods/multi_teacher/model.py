"""The multi-task student (one encoder, a head per task) and how teachers' logits are combined."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distilkit.model.bilstm import BiLSTMClassifier
from distilkit.model.checkpoint import load_model
from distilkit.model.hub import resolve
from distilkit.model.modeling import TransformerModel
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import ConfigError, to_dict
from distilkit.train.logit_distillation import (
    BiLSTMSettings,
    load_student,
    save_student,
    student_logits,
)
from distilkit.train.losses import average_teacher_logits

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
    :func:`distilkit.train.losses.average_teacher_logits`, which does the arithmetic.
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
