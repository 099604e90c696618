"""The main job's whole-job deadline: estimate the evaluation, shorten training to fit."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from distilkit.encoder import Encoder, load
from distilkit.evaluate import sentence as evaluation
from distilkit.evaluate.sentence import read_sst2, read_stsb
from distilkit.methods.general.config import DistillConfig
from distilkit.methods.general.dev_suite import SuitePlan, plan_suite
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import load_json, save_json
from distilkit.train.distributed import say
from distilkit.train.trainer import TrainingConfig

MIN_TRAINING_SECONDS = 60.0  # a deadline never cuts training below this


LATENCY_COST = 4.0  # a batch-1 latency pass costs about this many batched sentences


ESTIMATE_MARGIN = 1.25  # the evaluation estimate is padded by this factor


# saving the student, loading both models, the static baseline, report and plots: quiet jobs
# of 2026-12-06 (fourth session) spent 34 s (15 min) and 43 s (30 min) over the estimate
SETTLING_SECONDS = 60.0


SUITE_MARGIN = 1.1  # the student's dev-suite scoring is measured on the cut: a small pad


SUITE_KEEPS_TRAINING = 0.5  # the dev suite is left out if it would cut training below this share


def evaluation_work(protocol, teacher_layers: int, student_layers: int) -> float:
    """What the side-by-side evaluation embeds, in teacher forward passes of one sentence.

    Per model: both sides of every STS-B pair, the SST-2 probe's train and dev
    sentences, the warm-up and timed throughput passes and the batch-1 latency texts;
    then the teacher-agreement pass over STS-B again. A student's sentence costs
    ``(student_layers + 1) / (teacher_layers + 1)`` of the teacher's (the embeddings
    and tokenizer count as one layer); the static-embedding row is free. (The dev suite
    is not counted here: its teacher and cut rows are scored before training, and the
    student's scoring is timed on the cut; see :func:`fit_to_deadline`.)
    """

    pairs = len(read_stsb(protocol.stsb_path)[0])
    if protocol.stsb_pairs is not None:
        pairs = min(pairs, protocol.stsb_pairs)
    probe_train = len(read_sst2(protocol.sst2_train_path)[0])
    if protocol.sst2_train_examples is not None:
        probe_train = min(probe_train, protocol.sst2_train_examples)
    probe_dev = len(read_sst2(protocol.sst2_dev_path)[0])
    per_model = (
        2 * pairs
        + probe_train
        + probe_dev
        + (protocol.throughput_repeats + 1) * protocol.throughput_texts
        + LATENCY_COST * protocol.latency_texts
    )
    share = (student_layers + 1) / (teacher_layers + 1)
    return (per_model + 2 * pairs) * (1 + share)


def teacher_sentences_per_second(teacher, tokenizer: Tokenizer, texts: list[str]) -> float:
    """The teacher's embedding speed on ``texts`` right now (one warm-up batch untimed)."""

    encoder = Encoder(teacher, tokenizer)
    encoder.embed(texts[:16], progress=False)
    start = time.perf_counter()
    encoder.embed(texts, progress=False)
    return len(texts) / max(time.perf_counter() - start, 1e-6)


def fit_training_budget(
    job_budget: float, elapsed: float, evaluation_seconds: float, training_budget: float | None
) -> float:
    """The training seconds that end the job within ``job_budget`` (never below
    :data:`MIN_TRAINING_SECONDS`, never above ``training_budget`` when that is set)."""
    left = job_budget - elapsed - evaluation_seconds - SETTLING_SECONDS
    fitted = max(left, MIN_TRAINING_SECONDS)
    return fitted if training_budget is None else min(fitted, training_budget)


def fit_to_deadline(
    config: DistillConfig,
    teacher_folder: Path,
    teacher,
    tokenizer: Tokenizer,
    student,
    started: float,
    quick_eval: bool,
    layers: list[int] | None,
    student_dir: Path | None = None,
) -> tuple[TrainingConfig, dict, SuitePlan]:
    """Shrink the training budget so that the job, evaluation included, ends within
    ``config.job_time_budget``, and plan the dev suite's part in it.

    The evaluation's cost is estimated from the teacher's embedding speed measured now,
    on the evaluation's own STS-B sentences. The dev suite is kept when it fits beside at
    least :data:`SUITE_KEEPS_TRAINING` of the training time (its teacher and cut rows are
    then read from the suite cache or scored now, and the cut's scoring time, embedding
    and probe fitting both, is the student's estimate); otherwise it is left out with a
    note naming the command that scores ``student_dir`` afterwards
    (:func:`~distilkit.methods.general.dev_suite.plan_suite`)."""

    protocol = evaluation.QUICK_PROTOCOL if quick_eval else evaluation.FULL_PROTOCOL
    first, second, _ = evaluation.read_stsb(protocol.stsb_path)
    rate = teacher_sentences_per_second(teacher, tokenizer, (first + second)[:256])
    teacher_layers, student_layers = teacher.config.num_layers, student.config.num_layers
    side = ESTIMATE_MARGIN * evaluation_work(protocol, teacher_layers, student_layers) / rate
    # training's time without the suite; with no training budget of its own, training
    # wants all of it, so the suite is kept when it leaves training at least half of it
    room = config.job_time_budget - (time.perf_counter() - started) - side - SETTLING_SECONDS
    training_wanted = config.training.time_budget or max(room, 0.0)
    seconds_left = room - SUITE_KEEPS_TRAINING * training_wanted
    share = (student_layers + 1) / (teacher_layers + 1)
    named = f"{config.teacher} {student_dir or 'STUDENT'}"
    plan = plan_suite(
        load(teacher_folder, head=None), layers, rate, share, seconds_left, models_named=named
    )
    suite_seconds = plan.references.student_seconds if plan.references is not None else 0.0
    estimate = side + SUITE_MARGIN * suite_seconds
    elapsed = time.perf_counter() - started
    budget = fit_training_budget(
        config.job_time_budget, elapsed, estimate, config.training.time_budget
    )
    deadline = {
        "job_time_budget": config.job_time_budget,
        "setup_seconds": elapsed,
        "teacher_sentences_per_s": rate,
        "suite_seconds_student_estimate": suite_seconds,
        "suite": "left out" if plan.references is None else "kept",
        "suite_cached_rows": plan.references.cached if plan.references is not None else [],
        "evaluation_seconds_estimate": estimate,
        "training_budget": budget,
    }
    if plan.note:
        say(plan.note)
    if config.training.time_budget is None or budget < config.training.time_budget:
        say(
            f"job deadline {config.job_time_budget:.0f} s: {elapsed:.0f} s of setup, evaluation "
            f"estimated at {estimate:.0f} s (teacher at {rate:.0f} sentences/s now"
            + (
                f"; the student's dev suite {suite_seconds:.0f} s"
                if plan.references is not None
                else ""
            )
            + f"), so training gets {budget:.0f} s"
            + (
                f" instead of {config.training.time_budget:.0f} s"
                if config.training.time_budget is not None
                else ""
            )
        )
    return dataclasses.replace(config.training, time_budget=budget), deadline, plan


def report_deadline(deadline: dict, evaluation_started: float, started: float, out_dir: Path):
    """Say how the job kept to its deadline, and keep the measured figures in metrics.json."""
    now = time.perf_counter()
    deadline["evaluation_seconds"] = now - evaluation_started
    deadline["job_seconds"] = now - started
    say(
        f"job took {deadline['job_seconds']:.0f} s of its {deadline['job_time_budget']:.0f} s "
        f"(evaluation {deadline['evaluation_seconds']:.0f} s, estimated "
        f"{deadline['evaluation_seconds_estimate']:.0f} s)"
    )
    path = out_dir / "metrics.json"
    saved = load_json(path)
    saved.setdefault("extra", {}).setdefault("training", {})["deadline"] = deadline
    save_json(saved, path)
