"""Task distillation end to end (``distilkit distill-task``).

fine-tuned teacher + task data -> teacher gate on dev -> student (a folder such as the
output of ``distilkit distill``, or a cut of the teacher's layers) -> for each stage of
the method: dry run on one batch, then :class:`~distilkit.methods.task.objectives.TaskDistillation`
in the training loop with dev evaluation every epoch -> ``student/`` (the best dev epoch
of the last stage), ``metrics.json`` and the resolved ``task_distill_config.json``.

Methods and their defaults (each a list of stages; ``custom`` takes ``stages`` as given):

* ``logits``: one stage, soft targets (KL x T^2, T = 2);
* ``tinybert``: an ``intermediate`` stage (embedding + hidden + attention MSE, uniform
  map) then a ``prediction`` stage (soft targets, T = 1);
* ``pkd``: one stage, 0.5 soft targets (T = 5) + 0.5 hard labels + 100 x patient loss
  (PKD-Skip map; ``layer_map: last`` for PKD-Last).

``augment: true`` (sentence and sentence-pair tasks) trains on the train split followed
by augmented copies of its examples (Tang et al. / TinyBERT, :mod:`distilkit.data.augment`;
``augmentation`` None: :func:`~distilkit.data.augment.paper_augmentation`). The copies
have no gold labels (their feature labels are -100, or NaN for regression), so every
stage's hard weight must then be 0; the dev split is never augmented.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from distilkit.data.augment.operations import AugmentConfig, paper_augmentation
from distilkit.data.augment.pos_tagger import default_tagger
from distilkit.data.augment.transfer_set import build_transfer_set
from distilkit.methods.task.objectives import (
    DistillOptions,
    TaskDistillation,
    TaskDistillWeights,
    check_teacher_for_task,
    dry_run,
    teacher_gate,
)
from distilkit.model.card import CardFacts
from distilkit.model.checkpoint import load_model, load_student_weights, save_model
from distilkit.model.hub import resolve
from distilkit.model.modeling import TransformerModel
from distilkit.model.student import STRATEGIES, build_student
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import ConfigError, build_nested, from_dict, load_json, save_json, to_dict
from distilkit.tasks.features import (
    DataSettings,
    TaskData,
    encode_split,
    evaluate_model,
    load_split,
    split_note,
)
from distilkit.tasks.ner import IGNORE_INDEX
from distilkit.tasks.registry import TASKS, get_task
from distilkit.tasks.spec import TaskSpec, TextExample
from distilkit.train import distributed
from distilkit.train.distributed import say
from distilkit.train.run_folder import check_resume, guarded_run
from distilkit.train.task_training import (
    BestCheckpoint,
    load_task_model,
    make_sampler,
    schedule_for_epochs,
)
from distilkit.train.trainer import Trainer, TrainingConfig

METHODS = ("logits", "tinybert", "pkd", "custom")
DEFAULT_TEMPERATURE = {"logits": 2.0, "tinybert": 1.0, "pkd": 5.0}
DEFAULT_LAYER_MAP = {"logits": "uniform", "tinybert": "uniform", "pkd": "skip"}
AUGMENT_KINDS = ("classification", "regression")  # sentence (pair) tasks


def distill_training() -> TrainingConfig:
    """Default optimisation of task distillation."""
    return TrainingConfig(batch_size=32, learning_rate=1e-4, weight_decay=0.01, warmup_fraction=0.1)


@dataclass
class StageConfig:
    """One training stage: its loss weights, length (None: ``training.max_steps``
    steps), and whether the best dev epoch (rather than the last) is its result.

    A stage with no logits or hard-label loss (TinyBERT's intermediate one) trains no
    output layer, so it is not scored on dev (unless it is the last) and keeps its last
    epoch."""

    name: str = "prediction"
    epochs: float | None = 3.0
    weights: TaskDistillWeights = field(default_factory=lambda: TaskDistillWeights(logits=1.0))
    keep_best: bool = True

    def __post_init__(self) -> None:
        build_nested(self)
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"stage {self.name!r}: epochs must be > 0, got {self.epochs}")
        if not self.name or "/" in self.name:
            raise ConfigError(f"stage name {self.name!r} must be a non-empty folder name")


@dataclass
class TaskDistillConfig:
    """A task-distillation run (saved resolved, with explicit stages, in the run folder).

    ``temperature``, ``layer_map`` and ``stages`` left as None take the method's
    defaults; ``hard_weight`` sets the hard-label weight of the last stage;
    ``intermediate_epochs`` the length of TinyBERT's intermediate stage (default: epochs).
    ``augment`` adds augmented copies of the train examples, made with ``augmentation``
    (see the module docstring).
    """

    teacher: str = ""
    task: str = "sst2"
    method: str = "logits"
    student: str | None = None  # a student folder; None: cut the teacher's layers
    num_layers: int = 3
    layers: list[int] | None = None  # teacher blocks the cut keeps; else by `strategy`
    strategy: str = "uniform"
    epochs: float | None = 3.0  # None: training.max_steps steps per stage
    intermediate_epochs: float | None = None
    hard_weight: float | None = None
    temperature: float | None = None
    logit_loss: str = "auto"  # auto | kl | mse
    layer_map: str | None = None  # uniform | skip | last | explicit
    layer_pairs: list[list[int]] | None = None
    project: bool = True
    average_attention_heads: bool = False
    stages: list[StageConfig] | None = None
    teacher_min_score: float | None = None
    evals_per_epoch: int = 1
    eval_batch_size: int = 64
    augment: bool = False
    augmentation: AugmentConfig | None = None  # None: paper_augmentation(task)
    data: DataSettings = field(default_factory=DataSettings)
    training: TrainingConfig = field(default_factory=distill_training)

    def __post_init__(self) -> None:
        build_nested(self)
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"epochs must be > 0, got {self.epochs}")
        if self.stages is not None:
            self.stages = [
                from_dict(StageConfig, stage, f"stages[{index}]")
                if isinstance(stage, dict)
                else stage
                for index, stage in enumerate(self.stages)
            ]
        if not self.teacher:
            raise ConfigError("teacher is required: a model fine-tuned for the task")
        kind = get_task(self.task).kind
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.method == "custom" and not self.stages:
            raise ConfigError("method 'custom' needs stages: [{name, epochs, weights}, ...]")
        if self.strategy not in STRATEGIES or self.strategy == "auto":
            raise ConfigError(
                f"strategy must be one of {[s for s in STRATEGIES if s != 'auto']} (the auto "
                f"choice belongs to general distillation), got {self.strategy!r}"
            )
        if self.layers is not None:
            self.num_layers = len(self.layers)
        if self.augment:
            self._check_augment(kind)

    def _check_augment(self, kind: str) -> None:
        if kind not in AUGMENT_KINDS:
            sentence_tasks = sorted(name for name, t in TASKS.items() if t.kind in AUGMENT_KINDS)
            raise ConfigError(
                f"augment makes copies of sentences (pairs), so it works for the sentence "
                f"tasks {sentence_tasks} and task files of kind {list(AUGMENT_KINDS)}, not "
                f"{self.task} ({kind}): set augment=false"
            )
        hard = [stage.name for stage in self._stages() if stage.weights.hard]
        if hard:
            raise ConfigError(
                f"augmented copies have no gold labels, so augment=true needs every stage's "
                f"hard weight to be 0, but stage(s) {hard} have a non-zero one: set hard_weight=0 "
                "(--hard-weight 0; method pkd's default hard weight is 0.5)"
            )

    @classmethod
    def load(cls, path: str | Path) -> TaskDistillConfig:
        return from_dict(cls, load_json(path))

    def resolved(self) -> TaskDistillConfig:
        """A copy with the method's defaults written out (explicit stages, temperature,
        layer map, augmentation settings), so the saved config says exactly what ran."""
        augmentation = self.augmentation
        if self.augment and augmentation is None:
            augmentation = paper_augmentation(self.task)
        return dataclasses.replace(
            self,
            stages=self._stages(),
            temperature=(
                DEFAULT_TEMPERATURE.get(self.method, 1.0)
                if self.temperature is None
                else self.temperature
            ),
            layer_map=self.layer_map or DEFAULT_LAYER_MAP.get(self.method, "uniform"),
            augmentation=augmentation,
        )

    def _stages(self) -> list[StageConfig]:
        """The stages that run: ``stages`` or the method's, with ``hard_weight`` applied."""
        stages = self.stages
        if stages is None:
            hard = 0.0 if self.hard_weight is None else self.hard_weight
            if self.method == "logits":
                stages = [
                    StageConfig(
                        "prediction", self.epochs, TaskDistillWeights(logits=1.0, hard=hard)
                    )
                ]
            elif self.method == "tinybert":
                stages = [
                    StageConfig(
                        "intermediate",
                        self.epochs
                        if self.intermediate_epochs is None
                        else self.intermediate_epochs,
                        TaskDistillWeights(embedding=1.0, hidden=1.0, attention=1.0),
                        keep_best=False,
                    ),
                    StageConfig(
                        "prediction", self.epochs, TaskDistillWeights(logits=1.0, hard=hard)
                    ),
                ]
            else:
                pkd_hard = 0.5 if self.hard_weight is None else self.hard_weight
                weights = TaskDistillWeights(logits=0.5, hard=pkd_hard, patient=100.0)
                stages = [StageConfig("pkd", self.epochs, weights)]
        elif self.hard_weight is not None:
            stages = [
                *stages[:-1],
                dataclasses.replace(
                    stages[-1],
                    weights=dataclasses.replace(stages[-1].weights, hard=self.hard_weight),
                ),
            ]
        names = [stage.name for stage in stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"stage names must differ, got {names}")
        return list(stages)

    def options(self) -> DistillOptions:
        """The loss options (of a :meth:`resolved` config)."""
        return DistillOptions(
            logit_loss=self.logit_loss,
            temperature=1.0 if self.temperature is None else self.temperature,
            layer_map=self.layer_map or "uniform",
            layer_pairs=self.layer_pairs,
            project=self.project,
            average_attention_heads=self.average_attention_heads,
        )


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def make_student(config: TaskDistillConfig, teacher, task) -> tuple[torch.nn.Module, str]:
    """The student before task distillation, and a sentence saying where it came from."""
    if config.student is not None:
        student, _, folder = load_task_model(config.student, task)
        return student, f"{folder} ({student.config.num_layers} layers)"
    student, layers = build_student(
        teacher, layers=config.layers, num_layers=config.num_layers, strategy=config.strategy
    )
    return student, f"teacher blocks {layers} (a cut of the teacher, head included)"


def add_augmented_copies(
    train: TaskData,
    tokenizer: Tokenizer,
    settings: DataSettings,
    augmentation: AugmentConfig,
    progress: bool = False,
) -> TaskData:
    """``train`` followed by the augmented copies of its examples (the transfer set of
    :func:`~distilkit.data.augment.build_transfer_set`, encoded alike). The copies have no gold
    label: their examples' is None and their features' IGNORE_INDEX (classification) or
    NaN (regression), so only label-free losses may train on them."""
    task, examples = train.task, train.examples
    paired = examples[0].text_pair is not None
    transfer = build_transfer_set(
        [example.text for example in examples],
        [example.text_pair for example in examples] if paired else None,
        augmentation,
        tagger=default_tagger(),
        progress=progress,
    )
    copies = [
        TextExample(text, pair, None, f"augmented-{index}")
        for index, (text, pair) in enumerate(transfer[len(examples) :])
    ]
    if not copies:
        return train
    regression = task.kind == "regression"
    placeholder = 0.0 if regression else 0  # encode_split wants a valid label
    encoded = encode_split(
        task, [dataclasses.replace(copy, label=placeholder) for copy in copies], tokenizer, settings
    )
    for feature in encoded.features:
        feature["labels"] = float("nan") if regression else IGNORE_INDEX
    return dataclasses.replace(
        train, features=train.features + encoded.features, examples=[*examples, *copies]
    )


GATE_FILE = "teacher_gate.json"


def _gate_fingerprint(
    config: TaskDistillConfig, teacher_folder: Path, task_name: str, dev: TaskData
) -> dict:
    """What the teacher's dev score depends on: its weights, the task, the dev data."""
    files = {}
    for name in ("config.json", "model.safetensors"):
        if (teacher_folder / name).is_file():
            stat = (teacher_folder / name).stat()
            files[name] = [stat.st_size, stat.st_mtime_ns]
    fingerprint = {
        "teacher": str(teacher_folder.resolve()),
        "files": files,
        "task": task_name,
        "data": to_dict(config.data),
        "dev_examples": len(dev.examples),
        "teacher_min_score": config.teacher_min_score,
    }
    return json.loads(json.dumps(fingerprint))  # as it reads back from the file


def gated_teacher_metrics(
    config: TaskDistillConfig,
    teacher: TransformerModel,
    teacher_folder: Path,
    task: TaskSpec,
    dev: TaskData,
    cache_path: Path | None,
) -> dict[str, float]:
    """The teacher gate's dev metrics; raises :class:`TeacherGateError` as ``teacher_gate``.

    A resumed or re-run job reuses the dev score saved in ``cache_path`` when the teacher's
    weights, the task and the dev data are unchanged (scoring a QA teacher takes minutes);
    the label check, which is instant, always runs again.
    """
    fingerprint = _gate_fingerprint(config, teacher_folder, task.name, dev)
    if cache_path is not None and cache_path.is_file():
        saved = load_json(cache_path)
        if saved.get("fingerprint") == fingerprint:
            check_teacher_for_task(teacher, task)
            say(f"teacher gate passed before ({cache_path}); not scored again")
            return saved["metrics"]
    say(f"checking the teacher on {len(dev.examples):,} {task.name} dev examples...")
    metrics = teacher_gate(teacher, task, dev, config.teacher_min_score, config.eval_batch_size)
    say(
        f"teacher dev {task.metric}: {metrics[task.metric]:.4f} (chance "
        f"{metrics['chance']:.4f}, needed {metrics['threshold']:.4f}): ok"
    )
    if cache_path is not None and distributed.rank() == 0:
        save_json({"fingerprint": fingerprint, "metrics": metrics}, cache_path)
    return metrics


@guarded_run
def run_task_distill(config: TaskDistillConfig, out_dir: str | Path, resume: bool = True) -> dict:
    """Run every stage; returns (and writes to ``metrics.json``) teacher and student dev
    metrics. The student is saved to ``out_dir/student``."""
    distributed.init_from_env(config.training.device)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    config = config.resolved()
    task = get_task(config.task)
    teacher_folder = resolve(config.teacher)
    teacher = load_model(teacher_folder)
    tokenizer = Tokenizer.from_folder(
        teacher_folder, max_length=teacher.config.max_position_embeddings
    )
    if note := split_note(task, config.data):
        say(f"note: {note}")
    dev = load_split(task, "dev", tokenizer, config.data, config.data.eval_limit)
    teacher_metrics = gated_teacher_metrics(
        config, teacher, teacher_folder, task, dev, out_dir / GATE_FILE if resume else None
    )
    train = load_split(task, "train", tokenizer, config.data, config.data.train_limit)
    num_original = len(train.examples)
    if config.augment:
        train = add_augmented_copies(
            train, tokenizer, config.data, config.augmentation, config.training.progress
        )
        say(
            f"augmentation: {len(train.examples) - num_original:,} copies of the "
            f"{num_original:,} train examples added ({config.augmentation.n_iter} drawn per "
            "example, duplicates dropped)"
        )
    student, origin = make_student(config, teacher, task)
    say(f"student: {origin}; {len(train.examples):,} train examples")
    if resume:
        for number, stage in enumerate(config.stages, start=1):
            check_resume(out_dir / f"stage{number}-{stage.name}", {"task_distill": to_dict(config)})
    if distributed.rank() == 0:
        save_json(to_dict(config), out_dir / "task_distill_config.json")
    options = config.options()
    first_batch = train.collate([train[i] for i in range(min(len(train), 8))])
    stage_results = []
    for number, stage in enumerate(config.stages, start=1):
        stage_dir = out_dir / f"stage{number}-{stage.name}"
        result_dir = stage_dir / "student"
        if resume and (result_dir / "config.json").is_file():
            load_student_weights(student, result_dir)
            say(f"stage {number} ({stage.name}) already done: {result_dir}")
            stage_results.append(load_json(stage_dir / "stage_metrics.json"))
            continue
        weights = stage.weights
        # A stage that trains no output layer (TinyBERT's intermediate one) is not scored
        # on dev: its head is still untrained, so the score would mean nothing.
        scored = bool(weights.logits or weights.hard) or number == len(config.stages)
        report = dry_run(teacher, student, task, tokenizer, weights, options, first_batch)
        say(f"stage {number} ({stage.name}) dry run ok:\n  " + "\n  ".join(report.lines))
        best = (
            BestCheckpoint(stage_dir / "best", task.metric, tokenizer)
            if stage.keep_best and scored
            else None
        )
        objective = TaskDistillation(
            teacher, student, task, tokenizer, weights, options, dev, best, config.training.seed
        )
        sampler = make_sampler(train, config.training)
        training = schedule_for_epochs(
            config.training, len(sampler), stage.epochs, config.evals_per_epoch
        )
        trainer = Trainer(
            objective,
            train,
            sampler,
            train.collate,
            training,
            stage_dir,
            eval_batches=dev.batches(config.eval_batch_size) if scored else None,
            run_config={"task_distill": to_dict(config), "stage": number},
        )
        result = trainer.run(resume=resume)
        if best is not None:
            load_student_weights(student, stage_dir / "best")
        stage_metrics = {
            "stage": stage.name,
            "steps": result.step,
            "seconds": result.elapsed,
            "final_losses": result.last_losses,
            "dev": evaluate_model(student, dev, batch_size=config.eval_batch_size)
            if scored
            else None,
        }
        if distributed.rank() == 0:
            save_model(student, result_dir, tokenizer=tokenizer)
            save_json(stage_metrics, stage_dir / "stage_metrics.json")
        score = (
            f"student dev {task.metric} {stage_metrics['dev'][task.metric]:.4f}"
            if scored
            else "not scored on dev (no output-layer loss)"
        )
        say(f"stage {number} ({stage.name}) done after {result.step} steps: {score}")
        stage_results.append(stage_metrics)
    student_dev = stage_results[-1]["dev"]
    metrics = {
        "task": task.name,
        "metric": task.metric,
        "method": config.method,
        "teacher": {"dev": teacher_metrics, "parameters": count_parameters(teacher)},
        "student": {"dev": student_dev, "parameters": count_parameters(student)},
        "retention_pct": 100.0 * student_dev[task.metric] / teacher_metrics[task.metric],
        "train_examples": num_original,
        "augmented_copies": len(train.examples) - num_original,
        "stages": stage_results,
        "seconds": time.perf_counter() - started,
    }
    if distributed.rank() == 0:
        card = CardFacts(
            name=f"{student.config.num_layers}-layer {task.name} student of "
            f"{Path(str(config.teacher)).name}",
            teacher=str(config.teacher),
            steps=sum(stage["steps"] for stage in stage_results),
            seconds=sum(stage["seconds"] for stage in stage_results),
            settings={
                "task, method": f"{task.name}, {config.method}",
                f"dev {task.metric}": f"{student_dev[task.metric]:.4f} "
                f"({metrics['retention_pct']:.1f}% of the teacher's "
                f"{teacher_metrics[task.metric]:.4f})",
            },
        )
        save_model(student, out_dir / "student", tokenizer=tokenizer, card=card)
        save_json(metrics, out_dir / "metrics.json")
        say(
            f"student dev {task.metric} {student_dev[task.metric]:.4f} = "
            f"{metrics['retention_pct']:.1f}% of the teacher's; saved to {out_dir / 'student'}"
        )
    return metrics
