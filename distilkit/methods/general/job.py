"""General-purpose distillation end to end: the main job.

teacher + corpus -> student initialised from chosen teacher layers -> GeneralDistillation
objective in the training loop -> student checkpoint -> teacher and student evaluated side
by side -> report.md, metrics.json and plots in the run folder.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from distilkit.data.batching import IndexedSequences, LengthGroupedSampler, collate_sequences
from distilkit.data.corpus import CorpusSettings, build_corpus
from distilkit.data.masking import token_masking_weights
from distilkit.data.target_cache import TargetCache, TargetCollate
from distilkit.encoder import load
from distilkit.evaluate import report
from distilkit.evaluate import sentence as evaluation
from distilkit.evaluate.mfu import distillation_mfu, peak_matmul_flops
from distilkit.methods.general.config import (
    AUTO_TOKENS,
    DEFAULT_CORPUS,
    MIN_AUTO_WINDOWS,
    DistillConfig,
)
from distilkit.methods.general.deadline import (
    fit_to_deadline,
    fit_training_budget,
    report_deadline,
)
from distilkit.methods.general.dev_suite import SuitePlan, dev_suite
from distilkit.methods.general.objectives import GeneralDistillation
from distilkit.methods.general.targets import job_corpus, open_target_cache
from distilkit.model.card import write_student_card
from distilkit.model.checkpoint import check_save_target, load_model, save_model
from distilkit.model.hub import resolve
from distilkit.model.modeling import set_dropout
from distilkit.model.student import build_student, check_layers, rank_layer_subsets, select_layers
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import ConfigError, save_json, to_dict
from distilkit.train import distributed
from distilkit.train.distributed import say
from distilkit.train.run_folder import check_resume, guarded_run
from distilkit.train.trainer import Trainer, TrainingConfig


def heldout_batches(heldout, pad_id: int, limit: int = 256, batch_size: int = 32) -> list[dict]:
    """Fixed evaluation batches from the first ``limit`` held-out sequences."""
    count = min(len(heldout), limit)
    return [
        collate_sequences(
            [heldout[i] for i in range(start, min(start + batch_size, count))], pad_id
        )
        for start in range(0, count, batch_size)
    ]


def corpus_trainer(
    objective,
    train_set,
    heldout,
    tokenizer: Tokenizer,
    training: TrainingConfig,
    out_dir: Path,
    run_config: dict,
    target_cache: TargetCache | None = None,
) -> Trainer:
    """The training loop over packed corpus sequences: length-grouped batches sharded
    across DDP ranks, evaluation on fixed held-out batches. With ``target_cache``, batches
    carry each sequence's number in the corpus (``sequence_index``) and the teacher's
    cached last hidden states."""
    sampler = LengthGroupedSampler(
        train_set.lengths,
        training.batch_size,
        seed=training.seed,
    )
    if target_cache is None:
        dataset, collate = train_set, partial(collate_sequences, pad_id=tokenizer.pad_id)
    else:
        dataset, collate = (
            IndexedSequences(train_set),
            TargetCollate(tokenizer.pad_id, target_cache),
        )
    return Trainer(
        objective,
        dataset,
        sampler,
        collate,
        training,
        out_dir,
        eval_batches=heldout_batches(heldout, tokenizer.pad_id),
        run_config=run_config,
    )


def measure_throughput(
    trainer: Trainer, teacher, student, result, teacher_rows: dict[str, int] | None = None
) -> dict:
    """Tokens/s and MFU of the training run: teacher forward + student forward and
    backward FLOPs per second over the device's dense matmul rate, measured now in the
    run's precision (one process's figures; tokens/s over all processes). With
    ``teacher_rows`` (rows ``seen`` and run ``live`` by the teacher) only the rows the
    teacher ran count its FLOPs: the others were read from the target cache."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(trainer.precision, torch.float32)
    peak = peak_matmul_flops(trainer.device, dtype, seconds=0.5)
    share = 1.0
    if teacher_rows and teacher_rows.get("seen"):
        share = teacher_rows["live"] / teacher_rows["seen"]
    figures = distillation_mfu(teacher, student, result.throughput, peak, share)
    figures["tokens_per_s"] = result.throughput["tokens_per_s"]
    figures |= {
        "device": str(trainer.device),
        "precision": trainer.precision,
        "teacher_share": share,
        "teacher_rows": dict(teacher_rows or {}),
    }
    teacher_part = (
        "teacher forward"
        if share == 1.0
        else f"teacher forward on {100 * share:.1f}% of the rows (the rest cached)"
    )
    say(
        f"throughput: {figures['tokens_per_s']:,.0f} tokens/s on {figures['device']} "
        f"({trainer.precision}); MFU {100 * figures['mfu']:.1f}% "
        f"({figures['achieved_tflops']:.3f} of a measured {figures['peak_tflops']:.3f} TFLOP/s "
        f"dense matmul rate, {teacher_part} + student forward and backward)"
    )
    return figures


def auto_sample_batches(corpus, tokenizer: Tokenizer, count: int) -> list[dict]:
    """Batches of the first ``count`` corpus sequences cut to ``AUTO_TOKENS`` tokens:
    short windows are enough to compare sentence geometry, and keep the search quick."""
    sample = [
        np.append(corpus[i][: AUTO_TOKENS - 1], tokenizer.sep_id)
        for i in range(min(count, len(corpus)))
    ]
    return [
        collate_sequences(sample[i : i + 32], tokenizer.pad_id) for i in range(0, len(sample), 32)
    ]


def choose_layers(config: DistillConfig, teacher, tokenizer: Tokenizer, corpus) -> list[int]:
    """The teacher layers the student starts from (explicit, by strategy, or auto-ranked)."""
    n_teacher = teacher.config.num_layers
    if config.layers is not None:
        return check_layers(config.layers, n_teacher)
    if config.strategy != "auto":
        return select_layers(n_teacher, config.num_layers, config.strategy)
    select_layers(n_teacher, config.num_layers, "first")  # depth check with a clear error
    batches = auto_sample_batches(corpus, tokenizer, config.auto_sample)
    windows = sum(len(batch["input_ids"]) for batch in batches)
    if windows < MIN_AUTO_WINDOWS:
        raise ConfigError(
            f"the auto layer choice compares the models on held-out text, and the corpus "
            f"gave only {windows} held-out sequence(s) (at least {MIN_AUTO_WINDOWS} needed): "
            "use a larger corpus, or name the layers (--layers 0,3,5) or another --strategy"
        )
    started = time.perf_counter()
    ranking = rank_layer_subsets(
        teacher, config.num_layers, batches, progress=config.training.progress
    )
    say(
        f"auto layer choice: scored {len(ranking)} subsets of {n_teacher} teacher layers "
        f"on {sum(len(b['input_ids']) for b in batches)} held-out windows "
        f"in {time.perf_counter() - started:.0f}s "
        "(similarity-structure correlation with the teacher, higher is better):"
    )
    for rank, score in enumerate(ranking[:5], 1):
        say(
            f"  {rank}. layers {list(score.layers)}  r={score.similarity_correlation:.4f}  "
            f"cos={score.embedding_cosine:.4f}"
        )
    return list(ranking[0].layers)


def check_max_len(max_len: int, teacher) -> None:
    """Refuse a sequence length the teacher has no positions for, before any work."""
    limit = teacher.config.max_tokens
    if max_len > limit:
        raise ConfigError(
            f"--max-len {max_len} is more than the teacher's {limit} positions: "
            f"use --max-len {limit} or less"
        )


def _check_same_student(config: DistillConfig, previous: DistillConfig, out_dir: Path) -> None:
    """A resumed run must build the student it checkpointed: same teacher, same depth,
    and the same teacher layers when they are named."""
    differences = [
        f"{name} {asked} (the run there: {saved})"
        for name, asked, saved in (
            ("teacher", config.teacher, previous.teacher),
            ("num_layers", config.num_layers, previous.num_layers),
            ("layers", config.layers, previous.layers),
        )
        if asked != saved and not (name == "layers" and asked is None)
    ]
    if differences:
        raise ConfigError(
            f"{out_dir} holds a run of another student, so it cannot be resumed with "
            f"{'; '.join(differences)}: rerun with its settings to resume it, or start afresh "
            "with --no-resume (or another --out)"
        )


@guarded_run
def run_distillation(
    config: DistillConfig,
    out_dir: str | Path,
    resume: bool = True,
    evaluate: bool = True,
    quick_eval: bool = False,
) -> dict:
    """Run the whole job; returns the metrics dict written to ``metrics.json``."""
    distributed.init_from_env(config.training.device)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    teacher_folder = resolve(config.teacher)
    teacher = load_model(teacher_folder)
    check_max_len(config.max_len, teacher)
    tokenizer = Tokenizer.from_folder(teacher_folder, max_length=config.max_len)
    if tokenizer.vocab_size > teacher.config.vocab_size:
        raise ConfigError(
            f"the tokenizer in {teacher_folder} has {tokenizer.vocab_size:,} entries but the "
            f"teacher's embedding matrix has {teacher.config.vocab_size:,} rows: the tokenizer "
            "must be the teacher's own"
        )
    say(
        f"teacher: {config.teacher} ({teacher.config.layout}, {teacher.config.num_layers} "
        f"layers, hidden {teacher.config.hidden_size}, head {teacher.config.head})"
    )

    if distributed.rank() == 0:  # rank 0 tokenizes; the others then read its cache
        corpus = job_corpus(config, tokenizer, config.training.progress)
    distributed.barrier()
    if distributed.rank() != 0:
        corpus = job_corpus(config, tokenizer, False)
    train_set, heldout = corpus.split(config.heldout_fraction, seed=config.training.seed)
    say(
        f"corpus: {len(corpus):,} sequences, {corpus.num_tokens:,} tokens "
        f"({len(train_set):,} train / {len(heldout):,} held out)"
    )

    resuming = resume and (out_dir / "checkpoints" / "latest").is_file()
    if resuming:
        previous = DistillConfig.load(out_dir / "distill_config.json")
        _check_same_student(config, previous, out_dir)
        layers = previous.layers
    elif config.student_init == "random":
        layers = None
    else:
        layers = choose_layers(config, teacher, tokenizer, heldout)
    student, _ = build_student(
        teacher,
        layers=layers or None,
        num_layers=config.num_layers,
        layout=config.layout,
        seed=config.training.seed,
    )
    if config.student_init == "random":
        with torch.random.fork_rng(devices=[]):  # same shape, seeded BERT initialisation
            torch.manual_seed(config.training.seed)
            recipe = getattr(student, "sentence_modules", None)
            student = type(student)(student.config)
            student.sentence_modules = recipe
    if config.dropout is not None:  # training only: the saved config keeps its own rates
        set_dropout(student, config.dropout)
    if config.freeze_embeddings:
        # A corpus updates only the rows of the words it contains; freezing keeps the
        # rest of the vocabulary consistent with the rows that moved.
        student.backbone.embeddings.requires_grad_(False)
    if config.train_blocks is not None:
        if not all(0 <= i < student.config.num_layers for i in config.train_blocks):
            raise ConfigError(
                f"train_blocks {config.train_blocks} must name student blocks "
                f"0..{student.config.num_layers - 1}"
            )
        for index, block in enumerate(student.backbone.layers):
            block.requires_grad_(index in config.train_blocks)
    say(
        f"student: {student.config.num_layers} layers"
        + (f" initialised from teacher layers {layers}" if layers else " (random init)")
    )
    resolved = dataclasses.replace(config, layers=layers)
    if resuming:  # before distill_config.json is rewritten: it must describe the run
        check_resume(out_dir, {"distill": to_dict(resolved)})
    if distributed.rank() == 0:
        save_json(to_dict(resolved), out_dir / "distill_config.json")

    token_weights = None
    if config.objective.masking.smoothing:
        counts = train_set.token_counts(tokenizer.vocab_size)
        token_weights = token_masking_weights(
            counts, config.objective.masking.smoothing, special_ids=tokenizer.special_ids
        )
    objective = GeneralDistillation(teacher, student, tokenizer, config.objective, token_weights)
    for note in objective.notes:
        say(f"note: {note}")
    say(
        "losses: "
        + ", ".join(f"{k} x{v:g}" for k, v in objective.weights.items())
        + f"; inputs {'masked' if objective.mask_inputs else 'unmasked'}"
    )
    # before the deadline's timing or the Trainer move the teacher: its key is its CPU tensors
    target_cache = open_target_cache(config, objective, corpus, config.training)
    training = config.training
    deadline: dict | None = None
    suite_plan: SuitePlan | None = None
    if config.job_time_budget is not None and evaluate and distributed.world_size() == 1:
        training, deadline, suite_plan = fit_to_deadline(
            config,
            teacher_folder,
            teacher,
            tokenizer,
            student,
            started,
            quick_eval,
            layers,
            out_dir / "student",
        )
    elif config.job_time_budget is not None and training.time_budget is None:
        # no evaluation to plan (--no-eval), or several processes (no rank measures the
        # evaluation for all): training still ends by the deadline, less setup and margin
        budget = fit_training_budget(
            config.job_time_budget, time.perf_counter() - started, 0.0, None
        )
        say(f"job deadline {config.job_time_budget:.0f} s: training gets {budget:.0f} s")
        training = dataclasses.replace(training, time_budget=budget)
    trainer = corpus_trainer(
        objective,
        train_set,
        heldout,
        tokenizer,
        training,
        out_dir,
        {"distill": to_dict(resolved)},
        target_cache,
    )
    try:
        result = trainer.run(resume=resume)
    finally:
        if target_cache is not None:
            target_cache.close()  # the rows written since the last checkpoint marked done
    say(
        f"training stopped by {result.stopped_by} at step {result.step} after {result.elapsed:.0f}s"
    )
    metrics: dict = {
        "training": {
            "steps": result.step,
            "stopped_by": result.stopped_by,
            "seconds": result.elapsed,
            "final_losses": result.last_losses,
            "throughput": measure_throughput(
                trainer, teacher.config, student.config, result, objective.teacher_rows
            ),
        }
    }
    if distributed.rank() != 0:
        return metrics
    student_dir = out_dir / "student"
    save_model(
        student, student_dir, tokenizer=Tokenizer.from_folder(teacher_folder), source=teacher_folder
    )
    say(f"student saved to {student_dir}")
    if deadline is not None:
        metrics["deadline"] = deadline
    metrics["total_seconds"] = time.perf_counter() - started
    if evaluate:
        heldout_metrics = trainer.evaluate()  # {"eval/sentence_cosine": ..., ...}
        evaluation_started = time.perf_counter()
        metrics["models"] = evaluate_run(
            teacher_folder,
            student_dir,
            out_dir,
            resolved,
            metrics,
            quick_eval,
            heldout_sentence_cosine=heldout_metrics.get("eval/sentence_cosine"),
            suite_plan=suite_plan,
        )
        if deadline is not None:
            report_deadline(deadline, evaluation_started, started, out_dir)
    rows = metrics.get("models") or []
    write_student_card(
        student_dir,
        student,
        config.teacher,
        teacher_layers=layers,
        corpus=config.corpus,
        steps=result.step,
        seconds=result.elapsed,
        losses=result.last_losses,
        rows=rows,
        comparison=evaluation_compare(rows),
    )
    if not evaluate:
        save_json(metrics, out_dir / "metrics.json")
    return metrics


def evaluation_compare(rows: list[dict]) -> dict | None:
    """Retention and speed-up of the student (second row) against the teacher (first)."""
    return evaluation.compare(rows[0], rows[1]) if len(rows) >= 2 else None


def evaluate_run(
    teacher_folder: Path,
    student_dir: Path,
    out_dir: Path,
    config: DistillConfig,
    training: dict,
    quick: bool = False,
    heldout_sentence_cosine: float | None = None,
    suite_plan: SuitePlan | None = None,
) -> list[dict]:
    """Teacher and student side by side: the table, report.md, metrics.json and plots.

    ``heldout_sentence_cosine``: the student's mean sentence-vector cosine to the
    teacher on held-out corpus text; set beside the same figure on STS-B's sentences, it
    shows how far the transfer text is from the evaluation text.
    ``suite_plan``: the dev suite's teacher and cut rows scored before training, or why
    the suite was left out (a job with a deadline); None: all of it scored now.
    """

    encoders = {"teacher": load(teacher_folder, head=None), "student": load(student_dir, head=None)}
    say(
        "evaluating teacher and student side by side (STS-B dev Spearman, SST-2 dev "
        "probe accuracy, CPU throughput)..."
    )
    # timed in a fresh process: after training, this one's heap slows the models down
    rows = evaluation.evaluate_side_by_side(
        encoders, static_baseline_of="teacher", quick=quick, fresh_process=True
    )
    if rows[0].get("timed_in", "").startswith("this process:"):
        say(f"note: speeds measured in {rows[0]['timed_in']}")
    say(report.format_table(rows))
    comparison = evaluation.compare(rows[0], rows[1])
    say(
        f"student keeps {comparison['stsb_retention_pct']:.1f}% of the teacher's STS-B "
        f"Spearman and {comparison['sst2_retention_pct']:.1f}% of its SST-2 probe accuracy "
        f"at {comparison['speedup']:.2f}x its throughput"
    )
    agreement = None
    if encoders["student"].config.hidden_size == encoders["teacher"].config.hidden_size:
        # (a narrower student has no vectors comparable with the teacher's)
        protocol = evaluation.QUICK_PROTOCOL if quick else evaluation.FULL_PROTOCOL
        stsb = evaluation.stsb_teacher_agreement(
            encoders["student"], encoders["teacher"], limit=protocol.stsb_pairs
        )
        agreement = report.TeacherAgreement(
            heldout_sentence_cosine=heldout_sentence_cosine,
            stsb_sentence_cosine=stsb["sentence_cosine"],
            stsb_similarity_spearman=stsb["similarity_spearman"],
        )
        for line in agreement.lines():
            say(line)
    suite_note = suite_plan.note if suite_plan is not None else None
    if suite_note:
        say(suite_note)
        suite_rows = None
    else:
        references = suite_plan.references if suite_plan is not None else None
        suite_rows = dev_suite(encoders, config.layers, references)
    report.write_report(
        out_dir,
        rows,
        losses_jsonl_path=out_dir / "train_log.jsonl",
        extra={
            "comparison": comparison,
            "training": training,
            "config": to_dict(config),
            **({"dev_suite": suite_note} if suite_note else {}),
        },
        agreement=agreement,
        suite_rows=suite_rows,
    )
    say(f"report: {out_dir / 'report.md'}")
    return rows


# --------------------------------------------------------------------------- init-student
def init_student(
    teacher: str,
    out_dir: str | Path,
    num_layers: int = 3,
    strategy: str = "auto",
    layers: list[int] | None = None,
    layout: str | None = None,
    corpus: list[str] | None = None,
    max_len: int = 128,
    sample: int = 96,
    progress: bool = False,
) -> tuple[Path, list[int]]:
    """Cut a student out of ``teacher`` and save it (Hugging Face format) to ``out_dir``;
    ``progress``: bars of the corpus tokenizing and the auto layer choice on stderr."""
    config = DistillConfig(
        teacher=teacher,
        num_layers=num_layers,
        strategy=strategy,
        layers=layers,
        layout=layout,
        max_len=max_len,
        auto_sample=sample,
        corpus=corpus or [str(DEFAULT_CORPUS)],
    )
    config.training.progress = progress
    folder = resolve(teacher)
    check_save_target(Path(out_dir), source=folder)  # before any work
    model = load_model(folder)
    max_len = min(max_len, model.config.max_tokens)  # only the auto choice's sample
    tokenizer = Tokenizer.from_folder(folder, max_length=max_len)
    heldout = None
    if layers is None and strategy == "auto":
        corpus_data = build_corpus(
            config.corpus, tokenizer, CorpusSettings(max_len=max_len), progress=progress
        )
        heldout = corpus_data.split(0.05, seed=0)[1]
    chosen = choose_layers(config, model, tokenizer, heldout)
    student, _ = build_student(model, layers=chosen, layout=layout)
    save_model(student, out_dir, tokenizer=Tokenizer.from_folder(folder), source=folder)
    write_student_card(out_dir, student, teacher, teacher_layers=chosen)
    return Path(out_dir), chosen
