"""C-MLM end to end: fine-tune the teacher as a conditional MLM, cache its top-k soft
targets, train the seq2seq student, decode the held-out split and score it.

Data flow: pairs -> token ids -> (alpha > 0) C-MLM teacher fine-tuning -> sweep ->
top-k cache -> student batches -> ``alpha * kd + (1 - alpha) * nll`` -> Trainer ->
beam search -> BLEU / ROUGE-L -> ``metrics.json``. With alpha = 0 no teacher is run:
the same student, data order and steps give the baseline.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from distilkit.data.batching import LengthGroupedSampler
from distilkit.methods.cmlm.data import ANSWER_OPEN, load_generation_task
from distilkit.methods.cmlm.metrics import generation_metrics
from distilkit.methods.cmlm.seq2seq import Seq2Seq, Seq2SeqConfig, beam_search, load_seq2seq
from distilkit.methods.cmlm.student import (
    PairDataset,
    Seq2SeqObjective,
    collate_pairs,
    truncate_around,
)
from distilkit.methods.cmlm.teacher import (
    CMLMTeacherObjective,
    build_cmlm_inputs,
    sweep_accuracy,
    token_counts,
)
from distilkit.methods.cmlm.topk_cache import cached_topk_targets
from distilkit.model.checkpoint import load_model, save_model
from distilkit.model.device import AUTO, resolve_device
from distilkit.model.hub import DEFAULT_MODEL, resolve
from distilkit.model.student import select_layers
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import ConfigError, build_nested, load_json, save_json, to_dict
from distilkit.train.run_folder import resume_changes
from distilkit.train.trainer import Trainer, TrainingConfig


@dataclass
class StudentShape:
    """The seq2seq student: encoder cut from the teacher, decoder trained from scratch."""

    encoder_layers: int = 2
    init_encoder: bool = True  # False: a random encoder of the same shape
    decoder_layers: int = 2
    decoder_heads: int = 6
    decoder_intermediate_size: int = 1024
    dropout: float = 0.1
    copy_source: bool = True  # pointer-generator output, copies source words; False: paper's


@dataclass
class CMLMConfig:
    """One C-MLM run (saved with its results); unknown keys are errors."""

    teacher: str = DEFAULT_MODEL
    task: str = "squad-qg"
    alpha: float = 0.5  # weight of the teacher's soft targets; 0 = baseline
    top_k: int = 8
    temperature: float = 1.0
    sweep_passes: int = 2  # teacher passes per pair; each masks every passes-th position
    max_source_length: int = 48
    max_target_length: int = 24
    max_train_pairs: int | None = 3000
    max_eval_pairs: int | None = 300
    heldout_articles: int = 8
    data_seed: int = 0
    teacher_dir: str | None = None  # C-MLM teacher workspace, shared by runs; default out/teacher
    cache_dir: str | None = None  # top-k cache; default <teacher_dir>/topk
    teacher_train_layers: int = 2
    teacher_train_embeddings: bool = False  # True only for a teacher that is not pretrained
    teacher_training: TrainingConfig = field(
        default_factory=lambda: TrainingConfig(
            max_steps=300,
            batch_size=32,
            learning_rate=3e-4,
            eval_every=100,
            checkpoint_every=100,
        )
    )
    student: StudentShape = field(default_factory=StudentShape)
    training: TrainingConfig = field(
        default_factory=lambda: TrainingConfig(
            max_steps=400,
            batch_size=32,
            learning_rate=5e-4,
            eval_every=200,
            checkpoint_every=200,
        )
    )
    beam_size: int = 4
    length_penalty: float = 1.0
    max_decode_length: int = 32

    def __post_init__(self) -> None:
        build_nested(self)
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"alpha (--alpha) must be in [0, 1], got {self.alpha}")
        if self.top_k < 1 or self.sweep_passes < 1 or self.beam_size < 1:
            raise ConfigError("top_k, sweep_passes and beam_size must be >= 1")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.max_source_length < 4 or self.max_target_length < 1:
            raise ConfigError("max_source_length must be >= 4 and max_target_length >= 1")


Config = CMLMConfig


@dataclass
class TokenizedPairs:
    sources: list[list[int]]
    targets: list[list[int]]
    references: list[str]
    source_texts: list[str]


def _say(message: str) -> None:
    print(message, flush=True)


def tokenize_pairs(
    tokenizer: Tokenizer,
    sources: list[str],
    targets: list[str],
    config: CMLMConfig,
) -> TokenizedPairs:
    """Token ids without special tokens, cut to the configured lengths (sources keep a
    window around the answer marker); pairs with an empty side are dropped."""
    anchor = tokenizer.token_to_id(ANSWER_OPEN)
    source_ids = tokenizer.encode_ids(sources)
    target_ids = tokenizer.encode_ids(targets)
    kept = TokenizedPairs([], [], [], [])
    for source, target, text, reference in zip(
        source_ids, target_ids, sources, targets, strict=True
    ):
        if source and target:
            kept.sources.append(truncate_around(source, anchor, config.max_source_length))
            kept.targets.append(target[: config.max_target_length])
            kept.references.append(reference)
            kept.source_texts.append(text)
    return kept


def _subset(sources: list[str], targets: list[str], limit: int | None, seed: int):
    if limit is None or limit >= len(sources):
        return sources, targets
    chosen = sorted(random.Random(seed).sample(range(len(sources)), limit))
    return [sources[i] for i in chosen], [targets[i] for i in chosen]


def load_pairs(config: CMLMConfig, tokenizer: Tokenizer) -> tuple[TokenizedPairs, TokenizedPairs]:
    """The run's (train, held-out) pairs: its task, split, subsets and lengths."""
    data = load_generation_task(config.task, config.heldout_articles, config.data_seed)
    seed = config.data_seed
    train = _subset(data.train_sources, data.train_targets, config.max_train_pairs, seed)
    heldout = _subset(data.eval_sources, data.eval_targets, config.max_eval_pairs, seed)
    return tokenize_pairs(tokenizer, *train, config), tokenize_pairs(tokenizer, *heldout, config)


def _pair_batches(pairs: TokenizedPairs, collate, batch_size: int = 64) -> list[dict]:
    return [
        collate(list(range(start, min(start + batch_size, len(pairs.sources)))))
        for start in range(0, len(pairs.sources), batch_size)
    ]


def prepare_teacher(
    config: CMLMConfig,
    folder: Path,
    tokenizer: Tokenizer,
    train: TokenizedPairs,
    heldout: TokenizedPairs,
    teacher_dir: Path,
    resume: bool,
):
    """Fine-tune (or reuse) the C-MLM teacher in ``teacher_dir``; returns (model, metrics)."""
    settings = {
        "teacher": config.teacher,
        "task": config.task,
        "pairs": [
            config.max_train_pairs,
            config.max_eval_pairs,
            config.heldout_articles,
            config.data_seed,
            config.max_source_length,
            config.max_target_length,
        ],
        "train_layers": config.teacher_train_layers,
        "train_embeddings": config.teacher_train_embeddings,
        "sweep_passes": config.sweep_passes,
        "training": to_dict(config.teacher_training),
    }
    teacher_dir.mkdir(parents=True, exist_ok=True)
    settings_file = teacher_dir / "teacher_settings.json"
    if settings_file.is_file() and load_json(settings_file) != settings:
        raise ConfigError(
            f"{teacher_dir} holds a C-MLM teacher trained with other settings: give another "
            "--teacher-dir, or the same teacher, task, lengths and teacher training"
        )
    save_json(settings, settings_file)
    done = teacher_dir / "metrics.json"
    if resume and done.is_file():
        _say(f"reusing the C-MLM teacher in {teacher_dir / 'teacher'}")
        return load_model(teacher_dir / "teacher").eval(), load_json(done)
    model = load_model(folder, head="masked_lm")
    if "head.bias" in getattr(model, "new_parameters", []):
        counts = torch.from_numpy(token_counts(train.targets, tokenizer.vocab_size)).double()
        with torch.no_grad():  # start the new head at the targets' unigram model
            model.head.bias.copy_(torch.log((counts + 1) / (counts.sum() + len(counts))).float())

    def collate(items: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        return build_cmlm_inputs(
            [source for source, _ in items],
            [target for _, target in items],
            tokenizer.cls_id,
            tokenizer.sep_id,
            tokenizer.pad_id,
        )

    dataset = list(zip(train.sources, train.targets, strict=True))
    sampler = LengthGroupedSampler(
        [len(s) + len(t) for s, t in dataset],
        config.teacher_training.batch_size,
        seed=config.teacher_training.seed,
    )
    eval_batches = [
        build_cmlm_inputs(
            heldout.sources[s : s + 64],
            heldout.targets[s : s + 64],
            tokenizer.cls_id,
            tokenizer.sep_id,
            tokenizer.pad_id,
        )
        for s in range(0, len(heldout.sources), 64)
    ]
    objective = CMLMTeacherObjective(
        model,
        tokenizer,
        config.teacher_train_layers,
        config.sweep_passes,
        config.teacher_train_embeddings,
    )
    trainer = Trainer(
        objective,
        dataset,
        sampler,
        collate,
        config.teacher_training,
        teacher_dir,
        eval_batches,
        {"cmlm_teacher": settings},
    )
    model.eval()
    before = sweep_accuracy(model, eval_batches, tokenizer.mask_id, config.sweep_passes)
    _say(f"C-MLM teacher, held-out masked-token accuracy before: {before['cmlm_accuracy']:.2%}")
    result = trainer.run(resume=resume)
    model.eval()
    after = sweep_accuracy(model, eval_batches, tokenizer.mask_id, config.sweep_passes)
    _say(
        f"C-MLM teacher after {result.step} steps: {after['cmlm_accuracy']:.2%} "
        f"(loss {after['cmlm_loss']:.3f})"
    )

    save_model(model, teacher_dir / "teacher", tokenizer=tokenizer)
    metrics = {
        "before": before,
        "after": after,
        "steps": result.step,
        "seconds": result.elapsed,
        "heldout_pairs": len(heldout.sources),
    }
    save_json(metrics, done)
    return model, metrics


def build_seq2seq(config: CMLMConfig, folder: Path, tokenizer: Tokenizer) -> Seq2Seq:
    """The student, its encoder a uniform cut of the teacher's layers (seeded init)."""
    base = load_model(folder, head=None)
    encoder_config = copy.deepcopy(base.config)
    encoder_config.num_layers = config.student.encoder_layers
    encoder_config.with_pooler = False
    encoder_config.hidden_dropout = encoder_config.attention_dropout = config.student.dropout
    seq_config = Seq2SeqConfig(
        encoder=encoder_config,
        decoder_layers=config.student.decoder_layers,
        decoder_heads=config.student.decoder_heads,
        decoder_intermediate_size=config.student.decoder_intermediate_size,
        max_target_positions=config.max_target_length + 2,
        dropout=config.student.dropout,
        pad_id=tokenizer.pad_id,
        bos_id=tokenizer.cls_id,
        eos_id=tokenizer.sep_id,
        copy_source=config.student.copy_source,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.training.seed)
        model = Seq2Seq(seq_config)
    if config.student.init_encoder:
        layers = select_layers(base.config.num_layers, config.student.encoder_layers)
        source = base.backbone.state_dict()
        state = {}
        for name in model.encoder.state_dict():
            if name.startswith("layers."):
                _, index, rest = name.split(".", 2)
                state[name] = source[f"layers.{layers[int(index)]}.{rest}"]
            else:
                state[name] = source[name]
        model.encoder.load_state_dict(state)
    return model


def decode_texts(
    model: Seq2Seq,
    tokenizer: Tokenizer,
    sources: list[list[int]],
    beam_size: int,
    max_length: int,
    alpha: float,
    batch_size: int = 64,
    progress: bool = False,
) -> list[str]:
    """Generated texts for source ids (no special tokens), in order; ``progress``: a bar
    of the batches on stderr."""
    model.eval()
    device = model.output_bias.device  # sources follow the model
    max_length = min(max_length, model.config.max_target_positions)
    outputs: list[str] = []
    starts = range(0, len(sources), batch_size)
    for start in tqdm(starts, desc="generating", unit="batch", disable=not progress):
        chunk = [
            [tokenizer.cls_id, *s, tokenizer.sep_id] for s in sources[start : start + batch_size]
        ]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, s in enumerate(chunk):
            ids[row, : len(s)], mask[row, : len(s)] = torch.tensor(s), 1
        ids, mask = ids.to(device), mask.to(device)
        for tokens in beam_search(model, ids, mask, max_length, beam_size, alpha):
            outputs.append(tokenizer.decode(tokens))
    return outputs


def run(config: CMLMConfig, out_dir: str | Path, resume: bool = True) -> dict:
    """Train and evaluate one C-MLM student; returns (and writes) ``metrics.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    folder = resolve(config.teacher)
    tokenizer = Tokenizer.from_folder(folder)
    train, heldout = load_pairs(config, tokenizer)
    _say(f"{config.task}: {len(train.sources)} train pairs, {len(heldout.sources)} held-out")
    saved = out_dir / "run_config.json"
    if resume and saved.is_file():  # a refused resume leaves the run as it was
        resume_changes(load_json(saved), {"cmlm": to_dict(config)}, out_dir)
    save_json({"cmlm": to_dict(config)}, saved)
    teacher_metrics, topk = None, None
    if config.alpha > 0:
        teacher_dir = Path(config.teacher_dir) if config.teacher_dir else out_dir / "teacher"
        teacher, teacher_metrics = prepare_teacher(
            config, folder, tokenizer, train, heldout, teacher_dir, resume
        )
        topk = cached_topk_targets(
            teacher,
            tokenizer,
            train.sources,
            train.targets,
            Path(config.cache_dir) if config.cache_dir else teacher_dir / "topk",
            config.top_k,
            config.sweep_passes,
            config.temperature,
            progress=config.training.progress,
        )
        del teacher
    model = build_seq2seq(config, folder, tokenizer)
    dataset = PairDataset(train.sources, train.targets, topk)
    sampler = LengthGroupedSampler(
        dataset.lengths, config.training.batch_size, seed=config.training.seed
    )

    def collate(items):
        return collate_pairs(items, tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id)

    eval_set = PairDataset(heldout.sources[:64], heldout.targets[:64])
    eval_batches = [collate([eval_set[i] for i in range(len(eval_set))])]
    objective = Seq2SeqObjective(
        model,
        config.alpha,
        tokenizer,
        min(config.max_decode_length, model.config.max_target_positions),
    )
    trainer = Trainer(
        objective,
        dataset,
        sampler,
        collate,
        config.training,
        out_dir,
        eval_batches,
        {"cmlm": to_dict(config)},
    )
    result = trainer.run(resume=resume)
    train_seconds = result.elapsed
    decode_start = time.perf_counter()
    predictions = decode_texts(
        model,
        tokenizer,
        heldout.sources,
        config.beam_size,
        config.max_decode_length,
        config.length_penalty,
    )
    decode_seconds = time.perf_counter() - decode_start
    references = [r.lower() for r in heldout.references]
    scores = generation_metrics(predictions, references)
    model.save(out_dir / "student", tokenizer=tokenizer)
    with (out_dir / "predictions.tsv").open("w", encoding="utf-8") as stream:
        stream.write("prediction\treference\n")
        for prediction, reference in zip(predictions, references, strict=True):
            stream.write(f"{prediction}\t{' '.join(reference.split())}\n")
    metrics = {
        **scores,
        "alpha": config.alpha,
        "seed": config.training.seed,
        "steps": result.step,
        "train_seconds": round(train_seconds, 1),
        "decode_seconds": round(decode_seconds, 2),
        "heldout_pairs": len(references),
        "train_pairs": len(train.sources),
        "teacher": teacher_metrics,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    save_json(metrics, out_dir / "metrics.json")
    _say(
        f"BLEU {scores['bleu']:.2f}  ROUGE-L {scores['rouge_l']:.2f}  "
        f"(alpha {config.alpha}, seed {config.training.seed}, {result.step} steps)"
    )
    return metrics


def generate(
    model_dir: str | Path,
    texts: list[str],
    beam_size: int = 4,
    max_length: int = 32,
    length_penalty: float = 1.0,
    progress: bool = False,
    device: str | torch.device = AUTO,
) -> list[str]:
    """Generate one output text per input text with a saved student; ``progress``: a bar
    of the batches on stderr; ``device``: where the student runs (auto: the GPU when there
    is one)."""
    model = load_seq2seq(model_dir).to(resolve_device(device))
    tokenizer = Tokenizer.from_folder(Path(model_dir))
    limit = model.config.encoder.max_position_embeddings - 2
    sources = [ids[:limit] for ids in tokenizer.encode_ids(texts)]
    return decode_texts(
        model, tokenizer, sources, beam_size, max_length, length_penalty, progress=progress
    )


__all__ = ["CMLMConfig", "Config", "StudentShape", "generate", "load_pairs", "run"]
