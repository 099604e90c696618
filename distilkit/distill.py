"""General-purpose distillation end to end: the main job.

teacher + corpus -> student initialised from chosen teacher layers -> GeneralDistillation
objective in the training loop -> student checkpoint -> teacher and student evaluated side
by side -> report.md, metrics.json and plots in the run folder.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from distilkit import distributed
from distilkit.checkpoint import load_model, save_model
from distilkit.config import ConfigError, build_nested, from_dict, load_json, save_json, to_dict
from distilkit.data.batching import LengthGroupedSampler, collate_sequences
from distilkit.data.corpus import UNITS, CorpusSettings, build_corpus
from distilkit.data.masking import token_masking_weights
from distilkit.hub import DEFAULT_MODEL, resolve
from distilkit.model.card import write_student_card
from distilkit.objectives import GeneralDistillation, GeneralDistillationConfig
from distilkit.student import build_student, check_layers, rank_layer_subsets, select_layers
from distilkit.tokenizer import Tokenizer
from distilkit.trainer import Trainer, TrainingConfig

DEMO_CORPUS = Path(__file__).resolve().parent / "resources" / "corpus"
AUTO_TOKENS = 64  # tokens per sequence scored by the auto layer choice
MIN_AUTO_WINDOWS = 8  # fewer held-out sequences give no usable similarity structure
DEFAULT_JOB_BUDGET = 840.0  # the no-argument job: 14 minutes in all, inside the 15 promised
MIN_TRAINING_SECONDS = 60.0  # a deadline never cuts training below this
LATENCY_COST = 4.0  # a batch-1 latency pass costs about this many batched sentences
ESTIMATE_MARGIN = 1.25  # the evaluation estimate is padded by this factor
SETTLING_SECONDS = 20.0  # saving the student, loading both models, report and plots


@dataclass
class DistillConfig:
    """Everything a general-distillation run needs; saved as ``distill_config.json``."""

    teacher: str = DEFAULT_MODEL
    corpus: list[str] = field(default_factory=lambda: [str(DEMO_CORPUS)])
    num_layers: int = 3
    layers: list[int] | None = None  # explicit teacher layers; else chosen by `strategy`
    strategy: str = "auto"  # auto | uniform | alternate | first | last
    layout: str | None = None  # None keeps the teacher's; "distilbert" converts
    student_init: str = "teacher"  # teacher | random (ablation)
    freeze_embeddings: bool = False  # keep the student's (teacher-copied) embeddings fixed
    train_blocks: list[int] | None = None  # student blocks to train (None: all)
    max_len: int = 128
    # One sentence per sequence by default: a sentence encoder is used on short texts, and
    # 128-token packed paragraphs moved the student away from that (docs/RESULTS.md).
    corpus_unit: str = "sentence"  # paragraph | sentence: the text unit of a sequence
    pack: bool = False  # fill sequences with consecutive units (False: one unit each)
    heldout_fraction: float = 0.02
    auto_sample: int = 96  # sequences scored per candidate layer subset
    # Seconds for the whole job, evaluation included: training gets what is left after
    # the setup and a measured estimate of the evaluation (None: the training budget
    # alone). The CLI's no-argument job sets DEFAULT_JOB_BUDGET.
    job_time_budget: float | None = None
    objective: GeneralDistillationConfig = field(default_factory=GeneralDistillationConfig)
    training: TrainingConfig = field(
        default_factory=lambda: TrainingConfig(
            max_steps=2000,
            time_budget=600.0,  # the default job: 10 minutes of training
            batch_size=64,
            learning_rate=5e-5,  # higher rates lose more STS-B (docs/RESULTS.md, recipe search)
            eval_every=100,
            checkpoint_every=100,
        )
    )

    def __post_init__(self) -> None:
        if self.layers is not None:
            self.num_layers = len(self.layers)  # an explicit list sets the depth
        build_nested(self)
        if self.student_init not in ("teacher", "random"):
            raise ConfigError(
                f"student_init must be 'teacher' or 'random', got {self.student_init!r}"
            )
        if not 0 < self.heldout_fraction < 0.5:
            raise ConfigError("heldout_fraction must be between 0 and 0.5")
        if self.auto_sample < MIN_AUTO_WINDOWS:
            raise ConfigError(
                f"auto_sample must be at least {MIN_AUTO_WINDOWS} sequences, got {self.auto_sample}"
            )
        if self.job_time_budget is not None and self.job_time_budget <= 0:
            raise ConfigError(f"job_time_budget must be positive, got {self.job_time_budget}")
        if self.corpus_unit not in UNITS:
            raise ConfigError(f"corpus_unit must be one of {UNITS}, got {self.corpus_unit!r}")

    @classmethod
    def load(cls, path: str | Path) -> DistillConfig:
        return from_dict(cls, load_json(path))


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
) -> Trainer:
    """The training loop over packed corpus sequences: length-grouped batches sharded
    across DDP ranks, evaluation on fixed held-out batches."""
    sampler = LengthGroupedSampler(
        train_set.lengths,
        training.batch_size,
        seed=training.seed,
        num_replicas=distributed.world_size(),
        rank=distributed.rank(),
    )
    return Trainer(
        objective,
        train_set,
        sampler,
        lambda items: collate_sequences(items, tokenizer.pad_id),
        training,
        out_dir,
        eval_batches=heldout_batches(heldout, tokenizer.pad_id),
        run_config=run_config,
    )


def evaluation_work(protocol, teacher_layers: int, student_layers: int) -> float:
    """What the side-by-side evaluation embeds, in teacher forward passes of one sentence.

    Per model: both sides of every STS-B pair, the SST-2 probe's train and dev
    sentences, the warm-up and timed throughput passes and the batch-1 latency texts;
    then the teacher-agreement pass over STS-B again. A student's sentence costs
    ``(student_layers + 1) / (teacher_layers + 1)`` of the teacher's (the embeddings
    and tokenizer count as one layer); the static-embedding row is free.
    """
    from distilkit.evaluation import read_sst2, read_stsb

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
    from distilkit.encoder import Encoder

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


def _say(message: str) -> None:
    if distributed.rank() == 0:
        print(message, flush=True)


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
    ranking = rank_layer_subsets(teacher, config.num_layers, batches)
    _say(
        f"auto layer choice: scored {len(ranking)} subsets of {n_teacher} teacher layers "
        f"on {sum(len(b['input_ids']) for b in batches)} held-out windows "
        f"in {time.perf_counter() - started:.0f}s "
        "(similarity-structure correlation with the teacher, higher is better):"
    )
    for rank, score in enumerate(ranking[:5], 1):
        _say(
            f"  {rank}. layers {list(score.layers)}  r={score.similarity_correlation:.4f}  "
            f"cos={score.embedding_cosine:.4f}"
        )
    return list(ranking[0].layers)


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


def run_distillation(
    config: DistillConfig,
    out_dir: str | Path,
    resume: bool = True,
    evaluate: bool = True,
    quick_eval: bool = False,
) -> dict:
    """Run the whole job; returns the metrics dict written to ``metrics.json``."""
    distributed.init_from_env()
    out_dir = Path(out_dir)
    started = time.perf_counter()
    teacher_folder = resolve(config.teacher)
    teacher = load_model(teacher_folder)
    tokenizer = Tokenizer.from_folder(teacher_folder, max_length=config.max_len)
    if tokenizer.vocab_size > teacher.config.vocab_size:
        raise ConfigError(
            f"the tokenizer in {teacher_folder} has {tokenizer.vocab_size:,} entries but the "
            f"teacher's embedding matrix has {teacher.config.vocab_size:,} rows: the tokenizer "
            "must be the teacher's own"
        )
    _say(
        f"teacher: {config.teacher} ({teacher.config.layout}, {teacher.config.num_layers} "
        f"layers, hidden {teacher.config.hidden_size}, head {teacher.config.head})"
    )

    settings = CorpusSettings(max_len=config.max_len, unit=config.corpus_unit, pack=config.pack)
    if distributed.rank() == 0:  # rank 0 tokenizes; the others then read its cache
        corpus = build_corpus(config.corpus, tokenizer, settings, progress=config.training.progress)
    distributed.barrier()
    if distributed.rank() != 0:
        corpus = build_corpus(config.corpus, tokenizer, settings, progress=False)
    train_set, heldout = corpus.split(config.heldout_fraction, seed=config.training.seed)
    _say(
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
    _say(
        f"student: {student.config.num_layers} layers"
        + (f" initialised from teacher layers {layers}" if layers else " (random init)")
    )
    resolved = dataclasses.replace(config, layers=layers)
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
        _say(f"note: {note}")
    _say(
        "losses: "
        + ", ".join(f"{k} x{v:g}" for k, v in objective.weights.items())
        + f"; inputs {'masked' if objective.mask_inputs else 'unmasked'}"
    )
    training = config.training
    deadline: dict | None = None
    if config.job_time_budget is not None and evaluate and distributed.world_size() == 1:
        training, deadline = _fit_to_deadline(
            config, teacher, tokenizer, student, started, quick_eval
        )
    trainer = corpus_trainer(
        objective,
        train_set,
        heldout,
        tokenizer,
        training,
        out_dir,
        {"distill": to_dict(resolved)},
    )
    result = trainer.run(resume=resume)
    _say(
        f"training stopped by {result.stopped_by} at step {result.step} after {result.elapsed:.0f}s"
    )
    metrics: dict = {
        "training": {
            "steps": result.step,
            "stopped_by": result.stopped_by,
            "seconds": result.elapsed,
            "final_losses": result.last_losses,
        }
    }
    if distributed.rank() != 0:
        return metrics
    student_dir = out_dir / "student"
    save_model(student, student_dir, tokenizer=Tokenizer.from_folder(teacher_folder))
    _say(f"student saved to {student_dir}")
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
        )
        if deadline is not None:
            _report_deadline(deadline, evaluation_started, started, out_dir)
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
    from distilkit import evaluation

    return evaluation.compare(rows[0], rows[1]) if len(rows) >= 2 else None


def _fit_to_deadline(
    config: DistillConfig,
    teacher,
    tokenizer: Tokenizer,
    student,
    started: float,
    quick_eval: bool,
) -> tuple[TrainingConfig, dict]:
    """Shrink the training budget so that the job, evaluation included, ends within
    ``config.job_time_budget``; the evaluation's cost is estimated from the teacher's
    embedding speed measured now, on the evaluation's own STS-B sentences."""
    from distilkit import evaluation

    protocol = evaluation.QUICK_PROTOCOL if quick_eval else evaluation.FULL_PROTOCOL
    first, second, _ = evaluation.read_stsb(protocol.stsb_path)
    rate = teacher_sentences_per_second(teacher, tokenizer, (first + second)[:256])
    work = evaluation_work(protocol, teacher.config.num_layers, student.config.num_layers)
    estimate = ESTIMATE_MARGIN * work / rate
    elapsed = time.perf_counter() - started
    budget = fit_training_budget(
        config.job_time_budget, elapsed, estimate, config.training.time_budget
    )
    deadline = {
        "job_time_budget": config.job_time_budget,
        "setup_seconds": elapsed,
        "teacher_sentences_per_s": rate,
        "evaluation_seconds_estimate": estimate,
        "training_budget": budget,
    }
    if config.training.time_budget is None or budget < config.training.time_budget:
        _say(
            f"job deadline {config.job_time_budget:.0f} s: {elapsed:.0f} s of setup, evaluation "
            f"estimated at {estimate:.0f} s (teacher at {rate:.0f} sentences/s now), so "
            f"training gets {budget:.0f} s"
            + (
                f" instead of {config.training.time_budget:.0f} s"
                if config.training.time_budget is not None
                else ""
            )
        )
    return dataclasses.replace(config.training, time_budget=budget), deadline


def _report_deadline(deadline: dict, evaluation_started: float, started: float, out_dir: Path):
    """Say how the job kept to its deadline, and keep the measured figures in metrics.json."""
    now = time.perf_counter()
    deadline["evaluation_seconds"] = now - evaluation_started
    deadline["job_seconds"] = now - started
    _say(
        f"job took {deadline['job_seconds']:.0f} s of its {deadline['job_time_budget']:.0f} s "
        f"(evaluation {deadline['evaluation_seconds']:.0f} s, estimated "
        f"{deadline['evaluation_seconds_estimate']:.0f} s)"
    )
    path = out_dir / "metrics.json"
    saved = load_json(path)
    saved.setdefault("extra", {}).setdefault("training", {})["deadline"] = deadline
    save_json(saved, path)


def evaluate_run(
    teacher_folder: Path,
    student_dir: Path,
    out_dir: Path,
    config: DistillConfig,
    training: dict,
    quick: bool = False,
    heldout_sentence_cosine: float | None = None,
) -> list[dict]:
    """Teacher and student side by side: the table, report.md, metrics.json and plots.

    ``heldout_sentence_cosine``: the student's mean sentence-vector cosine to the
    teacher on held-out corpus text; set beside the same figure on STS-B's sentences, it
    shows how far the transfer text is from the evaluation text.
    """
    from distilkit import evaluation, report
    from distilkit.encoder import load

    encoders = {"teacher": load(teacher_folder, head=None), "student": load(student_dir, head=None)}
    _say(
        "evaluating teacher and student side by side (STS-B dev Spearman, SST-2 dev "
        "probe accuracy, CPU throughput)..."
    )
    rows = evaluation.evaluate_side_by_side(encoders, static_baseline_of="teacher", quick=quick)
    _say(report.format_table(rows))
    comparison = evaluation.compare(rows[0], rows[1])
    _say(
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
            _say(line)
    report.write_report(
        out_dir,
        rows,
        losses_jsonl_path=out_dir / "train_log.jsonl",
        extra={"comparison": comparison, "training": training, "config": to_dict(config)},
        agreement=agreement,
    )
    _say(f"report: {out_dir / 'report.md'}")
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
) -> tuple[Path, list[int]]:
    """Cut a student out of ``teacher`` and save it (Hugging Face format) to ``out_dir``."""
    config = DistillConfig(
        teacher=teacher,
        num_layers=num_layers,
        strategy=strategy,
        layers=layers,
        layout=layout,
        max_len=max_len,
        auto_sample=sample,
        corpus=corpus or [str(DEMO_CORPUS)],
    )
    folder = resolve(teacher)
    model = load_model(folder)
    tokenizer = Tokenizer.from_folder(folder, max_length=max_len)
    heldout = None
    if layers is None and strategy == "auto":
        corpus_data = build_corpus(config.corpus, tokenizer, CorpusSettings(max_len=max_len))
        heldout = corpus_data.split(0.05, seed=0)[1]
    chosen = choose_layers(config, model, tokenizer, heldout)
    student, _ = build_student(model, layers=chosen, layout=layout)
    save_model(student, out_dir, tokenizer=Tokenizer.from_folder(folder))
    write_student_card(out_dir, student, teacher, teacher_layers=chosen)
    return Path(out_dir), chosen


# --------------------------------------------------------------------------- fit-mlm-head
@dataclass
class MLMHeadConfig:
    """Fitting a masked-LM head to a teacher that has none (saved with the result)."""

    teacher: str = DEFAULT_MODEL
    corpus: list[str] = field(default_factory=lambda: [str(DEMO_CORPUS)])
    train_layers: int = 0  # top transformer blocks unfrozen along with the head
    max_len: int = 128
    heldout_fraction: float = 0.02
    training: TrainingConfig = field(
        default_factory=lambda: TrainingConfig(
            max_steps=1000,
            batch_size=32,
            learning_rate=1e-3,
            eval_every=100,
            checkpoint_every=100,
            warmup_fraction=0.02,
        )
    )

    def __post_init__(self) -> None:
        build_nested(self)


def fit_mlm_head(config: MLMHeadConfig, out_dir: str | Path, resume: bool = True) -> dict:
    """Give the teacher a masked-LM head (decoder tied to its word embeddings) and train it
    (and optionally its top ``train_layers`` blocks) on the corpus; report held-out masked
    token accuracy and loss before and after. The result folder is a teacher for
    ``distill`` with the full triple loss."""
    from distilkit.objectives import MaskedLMFitting

    distributed.init_from_env()
    out_dir = Path(out_dir)
    folder = resolve(config.teacher)
    model = load_model(folder, head="masked_lm")
    tokenizer = Tokenizer.from_folder(folder, max_length=config.max_len)
    corpus = build_corpus(config.corpus, tokenizer, CorpusSettings(max_len=config.max_len))
    train_set, heldout = corpus.split(config.heldout_fraction, seed=config.training.seed)
    if "head.bias" in getattr(model, "new_parameters", []):
        # Start the output bias at the log unigram frequency: the head begins at the
        # unigram model instead of uniform, and learns the contextual part from there.
        counts = torch.from_numpy(train_set.token_counts(tokenizer.vocab_size)).double()
        with torch.no_grad():
            model.head.bias.copy_(torch.log((counts + 1) / (counts.sum() + len(counts))).float())
    objective = MaskedLMFitting(model, tokenizer, train_layers=config.train_layers)
    trainer = corpus_trainer(
        objective,
        train_set,
        heldout,
        tokenizer,
        config.training,
        out_dir,
        {"fit_mlm_head": to_dict(config)},
    )
    before = trainer.evaluate()
    _say(
        f"held-out masked-token accuracy before: {before.get('eval/mlm_accuracy', 0):.2%} "
        f"(loss {before.get('eval/mlm_loss', float('nan')):.3f})"
    )
    result = trainer.run(resume=resume)
    after = trainer.evaluate()
    _say(
        f"held-out masked-token accuracy after {result.step} steps: "
        f"{after['eval/mlm_accuracy']:.2%} (loss {after['eval/mlm_loss']:.3f})"
    )
    metrics = {
        "before": before,
        "after": after,
        "steps": result.step,
        "seconds": result.elapsed,
        "train_layers": config.train_layers,
    }
    if distributed.rank() == 0:
        teacher_dir = out_dir / "teacher"
        save_model(model, teacher_dir, tokenizer=Tokenizer.from_folder(folder))
        save_json(metrics, out_dir / "metrics.json")
        _say(f"teacher with masked-LM head saved to {teacher_dir}")
    return metrics
