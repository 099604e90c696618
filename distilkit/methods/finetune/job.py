"""Fine-tuning an encoder on a task, and scoring a fine-tuned model.

encoder folder + task -> model with the task's head and label names -> FineTuneObjective
in the training loop (dev evaluation every epoch, the best epoch kept in ``model/``) ->
a Hugging Face folder that ``transformers`` loads with the right labels.

Tasks: sentence (pair) classification (SST-2), regression (STS-B), token
classification (CoNLL-2003) and extractive QA (SQuAD v1.1); see :mod:`distilkit.tasks`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from distilkit.data.batching import LengthGroupedSampler
from distilkit.methods.general.objectives import load_student_weights
from distilkit.model.checkpoint import load_model, save_model
from distilkit.model.hub import DEFAULT_MODEL, resolve
from distilkit.model.modeling import TransformerModel
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import ConfigError, build_nested, from_dict, load_json, save_json, to_dict
from distilkit.tasks.features import (
    HEAD_FOR_KIND,
    DataSettings,
    TaskData,
    check_model_for_task,
    evaluate_model,
    load_split,
    model_logits,
    split_note,
)
from distilkit.tasks.ner import IGNORE_INDEX
from distilkit.tasks.registry import get_task
from distilkit.tasks.spec import TaskSpec
from distilkit.train import distributed
from distilkit.train.distributed import say
from distilkit.train.losses import hard_label_loss, regression_loss
from distilkit.train.run_folder import check_resume, guarded_run
from distilkit.train.trainer import Objective, Trainer, TrainingConfig

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


# ----------------------------------------------------------------------------- objective
class FineTuneObjective(Objective):
    """Supervised training of ``model`` on a task: one loss, ``task``.

    ``evaluate`` scores the model on ``eval_data`` (from the batches the training loop
    passes back, which must be ``eval_data.batches()``) and offers it to ``best``.
    """

    def __init__(
        self,
        model: TransformerModel,
        task: TaskSpec,
        tokenizer: Tokenizer,
        eval_data: TaskData | None = None,
        best: BestCheckpoint | None = None,
    ):
        super().__init__()
        check_model_for_task(model, task)
        self.model = model
        self.task = task
        self.tokenizer = tokenizer
        self.eval_data = eval_data
        self.best = best
        self.weights = {"task": 1.0}

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        return {"task": task_loss(self.task.kind, model_logits(self.model, batch), batch)}

    def evaluate(self, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        if self.eval_data is None:
            return {}
        metrics = evaluate_model(self.model, self.eval_data, batches)
        if self.best is not None:
            self.best.offer(self.model, metrics)
        return metrics

    def save(self, folder: Path) -> None:
        save_model(self.model, folder, tokenizer=self.tokenizer)
        if self.best is not None:
            self.best.save_state(Path(folder))

    def load(self, folder: Path) -> None:
        load_student_weights(self.model, Path(folder))
        if self.best is not None:
            self.best.load_state(Path(folder))


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


# ----------------------------------------------------------------------------- the job
def finetune_training() -> TrainingConfig:
    """Default optimisation of fine-tuning (BERT's recipe: small LR, warmup, decay)."""
    return TrainingConfig(batch_size=32, learning_rate=5e-5, weight_decay=0.01, warmup_fraction=0.1)


@dataclass
class FineTuneConfig:
    """A fine-tuning run (saved as ``finetune_config.json`` in the run folder).

    ``epochs`` sets the length (None: ``training.max_steps`` steps); the dev set is scored
    ``evals_per_epoch`` times per epoch and the best score's model kept (this sets
    ``training.eval_every`` and ``checkpoint_every``).
    """

    model: str = DEFAULT_MODEL
    task: str = "sst2"
    epochs: float | None = 3.0
    evals_per_epoch: int = 1
    eval_batch_size: int = 64
    data: DataSettings = field(default_factory=DataSettings)
    training: TrainingConfig = field(default_factory=finetune_training)

    def __post_init__(self) -> None:
        build_nested(self)
        get_task(self.task)
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"epochs must be > 0, got {self.epochs}")
        if self.evals_per_epoch < 1 or self.eval_batch_size < 1:
            raise ConfigError("evals_per_epoch and eval_batch_size must be >= 1")

    @classmethod
    def load(cls, path: str | Path) -> FineTuneConfig:
        return from_dict(cls, load_json(path))


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
        num_replicas=distributed.world_size(),
        rank=distributed.rank(),
    )


@guarded_run
def run_finetune(config: FineTuneConfig, out_dir: str | Path, resume: bool = True) -> dict:
    """Fine-tune ``config.model`` on ``config.task``; returns (and writes to
    ``metrics.json``) the best dev metrics. The best model is ``out_dir/model``."""
    distributed.init_from_env()
    out_dir = Path(out_dir)
    started = time.perf_counter()
    task = get_task(config.task)
    model, tokenizer, _ = load_task_model(config.model, task)
    say(
        f"model: {config.model} ({model.config.num_layers} layers, hidden "
        f"{model.config.hidden_size}); task {task.name} ({task.kind}, metric {task.metric})"
    )
    if note := split_note(task, config.data):
        say(f"note: {note}")
    train = load_split(task, "train", tokenizer, config.data, config.data.train_limit)
    dev = load_split(task, "dev", tokenizer, config.data, config.data.eval_limit)
    say(f"data: {len(train.examples):,} train / {len(dev.examples):,} dev examples")
    sampler = make_sampler(train, config.training)
    training = schedule_for_epochs(
        config.training, len(sampler), config.epochs, config.evals_per_epoch
    )
    if resume:
        check_resume(out_dir, {"finetune": to_dict(config)})
    if distributed.rank() == 0:
        save_json(to_dict(config), out_dir / "finetune_config.json")
    best = BestCheckpoint(out_dir / "model", task.metric, tokenizer)
    objective = FineTuneObjective(model, task, tokenizer, dev, best)
    trainer = Trainer(
        objective,
        train,
        sampler,
        train.collate,
        training,
        out_dir,
        eval_batches=dev.batches(config.eval_batch_size),
        run_config={"finetune": to_dict(config)},
    )
    result = trainer.run(resume=resume)
    metrics = {
        "task": task.name,
        "metric": task.metric,
        "best_dev": best.score,
        "steps": result.step,
        "stopped_by": result.stopped_by,
        "seconds": result.elapsed,  # training, summed over resumed runs
        "total_seconds": time.perf_counter() - started,  # this call, loading included
    }
    if distributed.rank() == 0:
        if best.evaluations == 0 or not (out_dir / "model").is_dir():
            raise RuntimeError(f"no evaluation happened, so {out_dir / 'model'} was not written")
        save_json(metrics, out_dir / "metrics.json")
        say(f"best dev {task.metric}: {best.score:.4f}; model saved to {out_dir / 'model'}")
    return metrics


def evaluate_task(
    model_folder: str | Path,
    task: str,
    split: str = "dev",
    settings: DataSettings | None = None,
    limit: int | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """Score a fine-tuned model on a split of a task; the headline metric is under the
    task's metric name (accuracy, spearman, entity_f1, squad_f1)."""
    spec = get_task(task)
    folder = resolve(model_folder)
    model = load_model(folder)
    check_model_for_task(model, spec, str(model_folder))
    tokenizer = Tokenizer.from_folder(folder, max_length=model.config.max_position_embeddings)
    data = load_split(spec, split, tokenizer, settings, limit)
    return evaluate_model(model, data, batch_size=batch_size)
