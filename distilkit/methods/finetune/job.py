"""Fine-tuning an encoder on a task, and scoring a fine-tuned model.

encoder folder + task -> model with the task's head and label names -> FineTuneObjective
in the training loop (dev evaluation every epoch, the best epoch kept in ``model/``) ->
a Hugging Face folder that ``transformers`` loads with the right labels.

Tasks: sentence (pair) classification (SST-2), regression (STS-B), token
classification (CoNLL-2003) and extractive QA (SQuAD v1.1); see :mod:`distilkit.tasks`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from distilkit.model.card import update_card
from distilkit.model.checkpoint import load_model, load_student_weights, save_model
from distilkit.model.device import AUTO, resolve_device
from distilkit.model.hub import DEFAULT_MODEL, resolve
from distilkit.model.modeling import TransformerModel
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import ConfigError, build_nested, from_dict, load_json, save_json, to_dict
from distilkit.tasks.features import (
    DataSettings,
    TaskData,
    check_model_for_task,
    evaluate_model,
    load_split,
    model_logits,
    split_note,
)
from distilkit.tasks.registry import get_task
from distilkit.tasks.spec import TaskSpec
from distilkit.train import distributed
from distilkit.train.distributed import say
from distilkit.train.run_folder import check_resume, guarded_run
from distilkit.train.task_training import (
    BestCheckpoint,
    load_task_model,
    make_sampler,
    schedule_for_epochs,
    task_loss,
)
from distilkit.train.trainer import Objective, Trainer, TrainingConfig


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


@guarded_run
def run_finetune(config: FineTuneConfig, out_dir: str | Path, resume: bool = True) -> dict:
    """Fine-tune ``config.model`` on ``config.task``; returns (and writes to
    ``metrics.json``) the best dev metrics. The best model is ``out_dir/model``."""
    distributed.init_from_env(config.training.device)
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
        update_card(
            out_dir / "model",
            source=str(config.model),
            steps=result.step,
            seconds=result.elapsed,
            settings={"fine-tuned on": task.name, f"best dev {task.metric}": f"{best.score:.4f}"},
        )
        say(f"best dev {task.metric}: {best.score:.4f}; model saved to {out_dir / 'model'}")
    return metrics


def evaluate_task(
    model_folder: str | Path,
    task: str,
    split: str = "dev",
    settings: DataSettings | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    progress: bool = False,
    device: str | torch.device = AUTO,
) -> dict[str, float]:
    """Score a fine-tuned model on a split of a task; the headline metric is under the
    task's metric name (accuracy, spearman, entity_f1, squad_f1). ``progress``: a bar of
    the batches on stderr; ``device``: where the model runs (auto: the GPU when there is
    one)."""
    spec = get_task(task)
    folder = resolve(model_folder)
    model = load_model(folder).to(resolve_device(device))
    check_model_for_task(model, spec, str(model_folder))
    tokenizer = Tokenizer.from_folder(folder, max_length=model.config.max_position_embeddings)
    data = load_split(spec, split, tokenizer, settings, limit)
    return evaluate_model(model, data, batch_size=batch_size, progress=progress)
