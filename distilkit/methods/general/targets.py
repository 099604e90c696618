"""The main job's teacher-target cache: whether a run can use it, where it lives, and
filling it ahead of training (``distilkit cache-targets``).

The cache (:mod:`distilkit.data.target_cache`) sits beside the corpus cache
(``.distilkit-cache/targets-<key>/``), so every run over the same corpus and teacher shares
it: later epochs, ablation runs, the students of ``distilkit compress``, a second run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from distilkit.data.corpus import CorpusSettings, PackedCorpus, build_corpus
from distilkit.data.target_cache import (
    TargetCache,
    corpus_fingerprint,
    fill_target_cache,
    target_cache_key,
)
from distilkit.data.teacher_cache import model_fingerprint
from distilkit.methods.general.config import DistillConfig
from distilkit.methods.general.objectives import GeneralDistillation
from distilkit.model.checkpoint import load_model
from distilkit.model.device import resolve_device
from distilkit.model.hub import resolve
from distilkit.model.modeling import TransformerModel
from distilkit.model.tokenizer import Tokenizer
from distilkit.train import distributed
from distilkit.train.distributed import say
from distilkit.train.trainer import TrainingConfig, resolve_precision


def job_corpus(config: DistillConfig, tokenizer: Tokenizer, progress: bool) -> PackedCorpus:
    """The job's packed corpus (built once, then read from its cache)."""
    settings = CorpusSettings(max_len=config.max_len, unit=config.corpus_unit, pack=config.pack)
    return build_corpus(config.corpus, tokenizer, settings, progress=progress)


def _open(
    config: DistillConfig,
    teacher: TransformerModel,
    corpus: PackedCorpus,
    training: TrainingConfig,
) -> TargetCache:
    """The cache of ``teacher`` (on the CPU, in float32) over ``corpus``, run in
    ``training``'s precision: created by the first process, opened read-only by the other
    DDP ranks."""
    precision = resolve_precision(training.precision, resolve_device(training.device))
    key = target_cache_key(
        model_fingerprint(teacher),
        corpus_fingerprint(corpus),
        config.max_len,
        precision,
        config.target_cache_dtype,
    )
    assert corpus.folder is not None  # corpus_fingerprint refuses a corpus not on disk

    def open_cache(writable: bool) -> TargetCache:
        return TargetCache.open(
            Path(corpus.folder).parent,
            key,
            corpus.offsets,
            teacher.config.hidden_size,
            config.target_cache_dtype,
            writable=writable,
        )

    cache = open_cache(True) if distributed.rank() == 0 else None
    distributed.barrier()
    cache = cache or open_cache(False)
    if cache.rebuilt:
        say(f"note: the teacher-target cache was damaged ({cache.rebuilt}): rebuilt")
    say(
        f"teacher-target cache: {cache.num_done:,} of {cache.num_sequences:,} corpus sequences "
        f"cached ({cache.full_bytes / 1e9:.2f} GB when full, {config.target_cache_dtype}) "
        f"in {cache.folder}"
    )
    return cache


def open_target_cache(
    config: DistillConfig,
    objective: GeneralDistillation,
    corpus: PackedCorpus,
    training: TrainingConfig,
) -> TargetCache | None:
    """The cache a run reads its teacher targets from (and fills), given to ``objective``;
    None, with a one-line note, when it is switched off or the objective cannot use it.
    Call it while the teacher is still on the CPU in float32 (before the Trainer)."""
    if not config.target_cache:
        return None
    blocker = objective.target_cache_blocker()
    if blocker is not None:
        say(f"note: no teacher-target cache: {blocker}")
        return None
    cache = _open(config, objective.teacher, corpus, training)
    objective.use_target_cache(cache)
    return cache


def teacher_last_runner(teacher: TransformerModel, training: TrainingConfig):
    """``teacher_last(input_ids, attention_mask) -> (batch, seq, hidden)`` on the run's
    device and precision, as the Trainer runs the teacher (cast on CUDA, autocast)."""
    device = resolve_device(training.device)
    precision = resolve_precision(training.precision, device)
    teacher.to(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if device.type == "cuda" and dtype is not None:
        teacher.to(dtype)

    @torch.inference_mode()
    def teacher_last(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        ids, mask = input_ids.to(device), attention_mask.to(device)
        if dtype is None:
            return teacher.backbone(ids, mask).last_hidden_state
        with torch.autocast(device.type, dtype=dtype):
            return teacher.backbone(ids, mask).last_hidden_state

    return teacher_last


def cache_teacher_targets(config: DistillConfig, batch_size: int = 64) -> dict:
    """Fill the teacher-target cache of ``config``'s teacher and corpus ahead of training
    (every sequence, held-out ones too); resumable after a kill. Returns counts."""
    teacher_folder = resolve(config.teacher)
    teacher = load_model(teacher_folder)
    tokenizer = Tokenizer.from_folder(teacher_folder, max_length=config.max_len)
    corpus = job_corpus(config, tokenizer, config.training.progress)
    weights, masked = config.objective.weights, config.objective.mask_inputs
    if masked is None:  # as GeneralDistillation decides it for a student cut from the teacher
        masked = teacher.config.head == "masked_lm" and bool(weights.ce or weights.mlm)
    if masked or weights.hidden or weights.relations or weights.pairs:
        say(
            "note: a distill run with these settings will not read the cached targets (its "
            "inputs are masked, or a hidden, relations or pairs loss needs more of the "
            "teacher): pass --weights cos=1 (or other last-hidden-state losses)"
        )
    cache = _open(config, teacher, corpus, config.training)
    teacher_last = teacher_last_runner(teacher, config.training)
    computed = fill_target_cache(
        cache, corpus, teacher_last, tokenizer.pad_id, batch_size, config.training.progress
    )
    cache.close()
    say(f"computed {computed:,} sequences; {cache.num_done:,} of {cache.num_sequences:,} cached")
    return {"computed": computed, "cached": cache.num_done, "sequences": cache.num_sequences}
