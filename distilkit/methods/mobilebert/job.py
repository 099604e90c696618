"""The MobileBERT job: teacher -> thin student -> layer-wise transfer -> general
distillation -> student checkpoint -> side-by-side evaluation.

The run is a list of stages, each a :class:`~distilkit.trainer.Trainer` run in its own
folder ``stages/NN-name`` with its own checkpoints, so an interrupted run resumes inside
the stage it was in (a kill in stage 3 resumes in stage 3). A finished stage leaves the
student in ``stages/NN-name/student`` and a ``done.json``; later runs skip it.

* ``progressive``: stage ``embeddings`` (feature-map transfer on the embedding output,
  only the embeddings train), then one stage per block l (block l's feature map and
  attention, only block l trains: the blocks below are frozen, those above not yet
  run), then general distillation of the whole student;
* ``joint``: one stage of every block's transfer losses at once, then general
  distillation;
* ``auxiliary``: one stage of general distillation with every block's transfer losses
  added.

The layer-wise stages share ``transfer_fraction`` of the training budget (steps and
seconds) equally; general distillation gets the rest.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from distilkit.methods.general.config import DistillConfig
from distilkit.methods.general.job import corpus_trainer, evaluate_run, evaluation_compare
from distilkit.methods.general.objectives import GeneralDistillation
from distilkit.methods.general.targets import job_corpus
from distilkit.methods.mobilebert.objective import AuxiliaryTransfer, LayerTransfer
from distilkit.methods.mobilebert.student import build_mobilebert_student, mobilebert_config
from distilkit.model.card import write_student_card
from distilkit.model.checkpoint import load_model, load_student_weights, save_model
from distilkit.model.hub import resolve
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import ConfigError, build_nested, load_json, save_json, to_dict
from distilkit.train.run_folder import resume_changes
from distilkit.train.trainer import Objective

TRANSFERS = ("progressive", "joint", "auxiliary")


@dataclass
class Config:
    """A MobileBERT run; saved as ``mobilebert_config.json``. ``distill`` holds the
    settings shared with the main job (teacher, corpus, general-distillation objective,
    training budget); its layer-cut options are not used."""

    distill: DistillConfig = field(default_factory=DistillConfig)
    bottleneck_size: int | None = None  # None: the largest multiple of the heads <= 128
    # 2 (MobileBERT-tiny's) rather than the paper's 4: at 80 minutes of one CPU thread each
    # kept as much of the teacher (STS-B 98.2% both, dev suite 98.54% against 98.26%) at
    # 2.3-2.7x its fp32 speed against 1.8-2.1x, with 7.2 M parameters against 8.6 M
    # (docs/RESULTS.md, 2026-12-07)
    ffn_stack: int = 2
    norm: str = "nonorm"  # nonorm | layernorm
    act: str = "relu"  # relu | gelu
    embedding_size: int = 128
    intermediate_size: int | None = None  # None: 4x the bottleneck
    # progressive | joint | auxiliary; joint kept the most of the teacher at equal CPU time
    # (30 minutes, two seeds: docs/RESULTS.md, 2026-12-07): progressive's equal-time stages
    # leave the deep blocks few steps, auxiliary spends every step on both kinds of loss
    transfer: str = "joint"
    transfer_fraction: float = 0.5  # share of the budget for the layer-wise stages
    feature_weight: float = 1.0
    attention_weight: float = 1.0

    def __post_init__(self) -> None:
        build_nested(self)
        if self.transfer not in TRANSFERS:
            raise ConfigError(f"transfer must be one of {TRANSFERS}, got {self.transfer!r}")
        if not 0 < self.transfer_fraction < 1:
            raise ConfigError(
                f"transfer_fraction must be between 0 and 1, got {self.transfer_fraction}"
            )


def stage_plan(transfer: str, num_layers: int) -> list[str]:
    """Stage names in order: ``embeddings``, ``block-1``.. (progressive), ``joint``,
    ``auxiliary``, ``distill`` (general distillation)."""
    if transfer == "progressive":
        blocks = [f"block-{i + 1}" for i in range(num_layers)]
        return ["embeddings", *blocks, "distill"]
    if transfer == "joint":
        return ["joint", "distill"]
    return ["auxiliary"]


def _stage_training(config: Config, stages: list[str], name: str):
    """The stage's share of the training budget (steps and seconds)."""
    training = config.distill.training
    transfer_stages = [s for s in stages if s not in ("distill", "auxiliary")]
    if name in ("distill", "auxiliary"):
        share = 1.0 if name == "auxiliary" else 1.0 - config.transfer_fraction
    else:
        share = config.transfer_fraction / len(transfer_stages)
    budget = None if training.time_budget is None else training.time_budget * share
    return dataclasses.replace(
        training, max_steps=max(1, round(training.max_steps * share)), time_budget=budget
    )


def _objective(name: str, config: Config, teacher, student, tokenizer) -> Objective:
    """The stage's objective, with only the stage's parameters left trainable."""
    weights = {"feature_weight": config.feature_weight, "attention_weight": config.attention_weight}
    every_block = list(range(student.config.num_layers))
    student.requires_grad_(False)
    if name == "embeddings":
        student.backbone.embeddings.requires_grad_(True)
        return LayerTransfer(teacher, student, tokenizer, [], embeddings=True, **weights)
    if name.startswith("block-"):
        index = int(name.removeprefix("block-")) - 1
        student.backbone.layers[index].requires_grad_(True)
        return LayerTransfer(teacher, student, tokenizer, [index], **weights)
    student.requires_grad_(True)
    if student.backbone.pooler is not None:  # nothing trains the pooler of an encoder
        student.backbone.pooler.requires_grad_(False)
    if name == "joint":
        return LayerTransfer(teacher, student, tokenizer, every_block, embeddings=True, **weights)
    general = GeneralDistillation(teacher, student, tokenizer, config.distill.objective)
    if name == "distill":
        return general
    layers = LayerTransfer(teacher, student, tokenizer, every_block, embeddings=True, **weights)
    return AuxiliaryTransfer(general, layers)


def run(
    config: Config,
    out_dir: str | Path,
    resume: bool = True,
    evaluate: bool = True,
    quick_eval: bool = False,
    stop_at: tuple[str, int] | None = None,
) -> dict:
    """Run the job; returns the metrics written to ``metrics.json``.

    ``stop_at=(stage, steps)`` stops inside that stage after that many of its steps, as
    a kill would (for tests of resumption); the run then returns ``{"stopped_at": ...}``.
    """
    out_dir = Path(out_dir)
    started = time.perf_counter()
    distill = config.distill
    teacher_folder = resolve(distill.teacher)
    teacher = load_model(teacher_folder)
    tokenizer = Tokenizer.from_folder(teacher_folder, max_length=distill.max_len)
    student_config = mobilebert_config(
        teacher.config,
        bottleneck_size=config.bottleneck_size,
        ffn_stack=config.ffn_stack,
        norm=config.norm,
        act=config.act,
        embedding_size=config.embedding_size,
        intermediate_size=config.intermediate_size,
    )
    saved_config = out_dir / "mobilebert_config.json"
    if resume and saved_config.is_file():
        resume_changes(load_json(saved_config), to_dict(config), out_dir)
    save_json(to_dict(config), saved_config)
    student = build_mobilebert_student(teacher, student_config, seed=distill.training.seed)
    _say(
        f"student: MobileBERT, {student_config.num_layers} blocks of width "
        f"{student_config.hidden_size} with a {student_config.intra_bottleneck_size}-wide "
        f"bottleneck, {student_config.num_feedforward_networks} FFNs of "
        f"{student_config.intermediate_size}, {student_config.normalization_type}, "
        f"{student_config.hidden_act}, word vectors of {student_config.word_embedding_size}"
    )
    corpus = job_corpus(distill, tokenizer, distill.training.progress)
    train_set, heldout = corpus.split(distill.heldout_fraction, seed=distill.training.seed)
    stages = stage_plan(config.transfer, student_config.num_layers)
    stage_metrics = []
    for number, name in enumerate(stages):
        stage_dir = out_dir / "stages" / f"{number:02d}-{name}"
        done = stage_dir / "done.json"
        if resume and done.is_file():
            load_student_weights(student, stage_dir / "student")
            stage_metrics.append(load_json(done))
            continue
        objective = _objective(name, config, teacher, student, tokenizer)
        training = _stage_training(config, stages, name)
        trainer = corpus_trainer(
            objective, train_set, heldout, tokenizer, training, stage_dir, {"stage": name}
        )
        _say(f"stage {number + 1}/{len(stages)}: {name}, " + ", ".join(objective.weights))
        stop = stop_at[1] if stop_at is not None and stop_at[0] == name else None
        result = trainer.run(resume=resume, stop_after_steps=stop)
        if result.stopped_by == "interrupted":
            return {"stopped_at": [name, result.step]}
        save_model(student, stage_dir / "student", tokenizer=tokenizer)
        summary = {
            "stage": name,
            "steps": result.step,
            "seconds": result.elapsed,
            "stopped_by": result.stopped_by,
            "final_losses": result.last_losses,  # held-out losses: the stage's train_log.jsonl
        }
        save_json(summary, done)
        stage_metrics.append(summary)
    student.requires_grad_(True)
    student_dir = out_dir / "student"
    save_model(student, student_dir, tokenizer=Tokenizer.from_folder(teacher_folder))
    _say(f"student saved to {student_dir}")
    metrics: dict = {
        "training": {
            "stages": stage_metrics,
            "seconds": sum(stage["seconds"] for stage in stage_metrics),
            "steps": sum(stage["steps"] for stage in stage_metrics),
        },
        "total_seconds": time.perf_counter() - started,
    }
    if evaluate:
        metrics["models"] = evaluate_run(
            teacher_folder, student_dir, out_dir, distill, metrics, quick_eval
        )
    else:
        save_json(metrics, out_dir / "metrics.json")
    rows = metrics.get("models") or []
    write_student_card(
        student_dir,
        student,
        distill.teacher,
        corpus=distill.corpus,
        steps=metrics["training"]["steps"],
        seconds=metrics["training"]["seconds"],
        losses=stage_metrics[-1]["final_losses"] if stage_metrics else None,
        rows=rows,
        comparison=evaluation_compare(rows),
    )
    return metrics


def _say(message: str) -> None:
    print(message, flush=True)
