"""Tiny teachers, token sequences and ready-made training runs for the distillation tests.

Shared by ``test_student``, ``test_objectives``, ``test_trainer``, ``test_distill``,
``test_ddp`` and the worker script ``train_worker.py`` (which runs the same training in a
subprocess, so its numbers can be compared with an in-process run). Sizes are the odd
tiny ones of ``conftest.py``: vocab 99, hidden 32, 4 heads, FFN 37.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from conftest import SPECIALS, TINY_VOCAB, WORDS

from distilkit.data.batching import LengthGroupedSampler, collate_sequences
from distilkit.data.masking import MaskingConfig
from distilkit.methods.general.objectives import GeneralDistillation, GeneralDistillationConfig
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel
from distilkit.model.student import build_student
from distilkit.model.tokenizer import Tokenizer
from distilkit.train.trainer import Trainer, TrainingConfig


def write_vocab(folder: Path) -> Path:
    """Write the tiny ``vocab.txt`` into ``folder``; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vocab.txt"
    path.write_text("".join(token + "\n" for token in TINY_VOCAB), encoding="utf-8")
    return path


def tiny_tokenizer(folder: Path, max_length: int = 64) -> Tokenizer:
    return Tokenizer.from_vocab(write_vocab(folder), max_length=max_length)


def tiny_config(
    num_layers: int = 4, head: str | None = "masked_lm", dropout: float = 0.0, **overrides
) -> ModelConfig:
    """The odd-sized encoder config; ``dropout`` sets both hidden and attention dropout."""
    sizes = {
        "vocab_size": 99,
        "hidden_size": 32,
        "num_heads": 4,
        "intermediate_size": 37,
        "max_position_embeddings": 64,
    }
    return ModelConfig(
        **{
            **sizes,
            "num_layers": num_layers,
            "head": head,
            "hidden_dropout": dropout,
            "attention_dropout": dropout,
            **overrides,
        }
    )


def randomize(model: TransformerModel, seed: int, scale: float = 0.2) -> TransformerModel:
    """Redraw every trainable parameter from ``seed`` alone (independent of the global RNG).

    Weight matrices ~ N(0, scale), biases ~ N(0, scale / 4), LayerNorm weights ~ 1 +
    N(0, 0.1): each block then changes its input substantially, so layer choices matter.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            noise = torch.randn(parameter.shape, generator=generator)
            if "norm.weight" in name:
                parameter.copy_(1.0 + 0.1 * noise)
            elif parameter.dim() == 1:
                parameter.copy_(noise * scale / 4)
            else:
                parameter.copy_(noise * scale)
    return model


def random_teacher(
    num_layers: int = 4, seed: int = 0, head: str | None = "masked_lm", dropout: float = 0.0
) -> TransformerModel:
    """A random teacher in eval mode (its config's dropout is what students inherit)."""
    return randomize(TransformerModel(tiny_config(num_layers, head, dropout)), seed).eval()


def random_sequences(
    count: int, seed: int = 0, min_len: int = 6, max_len: int = 20, vocab_size: int = 99
) -> list[np.ndarray]:
    """``count`` token sequences ``[CLS] ... [SEP]`` of ordinary ids (5..vocab-1).

    The ids follow a Zipf-like law, so a masked-LM has something to learn.
    """
    rng = np.random.default_rng(seed)
    ordinary = np.arange(len(SPECIALS), vocab_size)
    weights = 1.0 / np.arange(1, len(ordinary) + 1)
    weights /= weights.sum()
    sequences = []
    for _ in range(count):
        length = int(rng.integers(min_len, max_len + 1))
        body = rng.choice(ordinary, size=length - 2, p=weights)
        sequences.append(np.array([2, *body, 3], dtype=np.int32))  # [CLS]=2, [SEP]=3
    return sequences


def write_text_corpus(path: Path, paragraphs: int = 120, seed: int = 0) -> Path:
    """A text file of ``paragraphs`` blank-line separated paragraphs of tiny-vocab words."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(paragraphs):
        words = rng.choice(WORDS, size=int(rng.integers(6, 18)))
        lines.append(" ".join(words) + rng.choice([".", "!", "?"]) + "\n\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
    return path


@dataclasses.dataclass
class RunSettings:
    """Everything that defines a tiny distillation run (picklable, for worker scripts)."""

    teacher_layers: int = 4
    student_layers: int = 2
    dropout: float = 0.1
    mask_inputs: bool = True
    num_sequences: int = 40
    equal_lengths: bool = False
    shuffle: bool = True
    seed: int = 0
    weights: dict[str, float] | None = None  # loss weights; None = DistilBERT's ce/mlm/cos
    training: dict = dataclasses.field(default_factory=dict)  # TrainingConfig overrides


def make_trainer(
    out_dir: Path, tokenizer: Tokenizer, settings: RunSettings, objective_class=None
) -> Trainer:
    """A :class:`Trainer` for ``settings`` writing into ``out_dir`` (fully deterministic).

    ``objective_class`` (default :class:`GeneralDistillation`) lets a test inject
    faults through a subclass.
    """
    teacher = random_teacher(settings.teacher_layers, settings.seed, dropout=settings.dropout)
    student, _ = build_student(teacher, num_layers=settings.student_layers, seed=settings.seed)
    objective_config = GeneralDistillationConfig(
        masking=MaskingConfig(), mask_inputs=settings.mask_inputs
    )
    if settings.weights is not None:
        objective_config.weights = dataclasses.replace(
            objective_config.weights, **{"ce": 0.0, "mlm": 0.0, "cos": 0.0, **settings.weights}
        )
    objective = (objective_class or GeneralDistillation)(
        teacher, student, tokenizer, objective_config
    )
    if settings.equal_lengths:
        sequences = random_sequences(settings.num_sequences, settings.seed, 16, 16)
    else:
        sequences = random_sequences(settings.num_sequences, settings.seed)
    training = {
        "max_steps": 8,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "warmup_fraction": 0.25,
        "log_every": 1,
        "eval_every": 1000,
        "checkpoint_every": 4,
        "progress": False,
        "seed": settings.seed,
        **settings.training,
    }
    config = TrainingConfig(**training)
    sampler = LengthGroupedSampler(
        [len(s) for s in sequences],
        config.batch_size,
        seed=settings.seed,
        shuffle=settings.shuffle,
    )
    return Trainer(
        objective,
        sequences,
        sampler,
        lambda items: collate_sequences(items, tokenizer.pad_id),
        config,
        out_dir,
    )


def student_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Every trainable tensor of the run (student and projection), detached copies."""
    return {k: v.detach().clone() for k, v in trainer.objective.state_dict().items()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
