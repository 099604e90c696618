"""Building a student from a teacher: which layers to keep, and copying their weights.

A student has the teacher's width and fewer transformer blocks, each initialised from a
chosen teacher block (DistilBERT's recipe). ``select_layers`` names the blocks by a
strategy; ``auto`` scores candidate subsets on sample text before any training and keeps
the one whose sentence-similarity structure stays closest to the teacher's.
A student of another width starts from random weights (hidden-state losses then use
learned projections, see ``methods/general/objectives.py``).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel, pool

STRATEGIES = ("uniform", "alternate", "first", "last", "auto")


class StudentError(ValueError):
    """A layer choice or student shape that cannot be built from the teacher."""


def select_layers(n_teacher: int, n_student: int, strategy: str = "uniform") -> list[int]:
    """0-based teacher block indices to initialise an ``n_student``-block student from.

    uniform: spread evenly, first and last included, rounding half up — for 12 -> 6 this is
    DistilBERT's 0,2,4,7,9,11; for 6 -> 3 it is 0,3,5.
    alternate: every other block from the first (0,2,4,...).
    first / last: the bottom or top ``n_student`` blocks.
    (``auto`` needs data: see :func:`rank_layer_subsets`.)
    """
    if not 1 <= n_student <= n_teacher:
        raise StudentError(
            f"a student needs between 1 and {n_teacher} layers (the teacher's depth), "
            f"got {n_student}"
        )
    if strategy == "uniform":
        if n_student == 1:
            return [n_teacher - 1]
        return [
            (2 * i * (n_teacher - 1) + (n_student - 1)) // (2 * (n_student - 1))
            for i in range(n_student)
        ]
    if strategy == "alternate":
        if 2 * n_student - 1 > n_teacher:
            raise StudentError(
                f"'alternate' takes every other layer, so a {n_teacher}-layer teacher gives at "
                f"most {(n_teacher + 1) // 2} layers, not {n_student}: use 'uniform'"
            )
        return list(range(0, 2 * n_student, 2))
    if strategy == "first":
        return list(range(n_student))
    if strategy == "last":
        return list(range(n_teacher - n_student, n_teacher))
    raise StudentError(f"unknown layer strategy {strategy!r}: expected one of {STRATEGIES}")


def check_layers(layers: Sequence[int], n_teacher: int) -> list[int]:
    """Validate an explicit layer list against the teacher's depth."""
    layers = [int(i) for i in layers]
    if not layers:
        raise StudentError("the layer list is empty: name at least one teacher layer")
    bad = [i for i in layers if not 0 <= i < n_teacher]
    if bad:
        raise StudentError(
            f"teacher layer(s) {bad} out of range: the teacher has layers 0..{n_teacher - 1}"
        )
    if len(set(layers)) != len(layers):
        raise StudentError(f"layer list {layers} names a layer twice")
    if layers != sorted(layers):
        raise StudentError(f"layer list {layers} must be in increasing order")
    return layers


# --------------------------------------------------------------------------- auto choice
@dataclass
class SubsetScore:
    """How well a cut of the teacher keeps its sentence geometry (higher is better)."""

    layers: tuple[int, ...]
    similarity_correlation: float  # Pearson r of pairwise cosine matrices vs the teacher
    embedding_cosine: float  # mean cosine between cut and teacher sentence vectors


@torch.inference_mode()
def _sentence_vectors(
    teacher: TransformerModel, layers: Sequence[int], batches: list[dict[str, torch.Tensor]]
) -> torch.Tensor:
    """Mean-pooled sentence vectors of the teacher run with only ``layers``: (n, hidden)."""
    vectors = []
    for batch in batches:
        encoded = teacher.backbone(
            batch["input_ids"],
            batch["attention_mask"],
            batch.get("token_type_ids"),
            layer_indices=layers,
        )
        vectors.append(pool(encoded.last_hidden_state, batch["attention_mask"], "mean"))
    return torch.cat(vectors).float()


def _similarity_matrix(vectors: torch.Tensor) -> torch.Tensor:
    unit = torch.nn.functional.normalize(vectors, dim=-1)
    upper = torch.triu_indices(len(unit), len(unit), offset=1)
    return (unit @ unit.T)[upper[0], upper[1]]


def rank_layer_subsets(
    teacher: TransformerModel,
    n_student: int,
    batches: list[dict[str, torch.Tensor]],
    max_candidates: int = 256,
    progress: bool = False,
) -> list[SubsetScore]:
    """Score teacher-layer subsets of size ``n_student`` on sample batches, best first.

    Every subset is scored when there are at most ``max_candidates``; otherwise the named
    strategies plus a greedy search that drops, one at a time, the block whose removal
    hurts least. The score is the correlation between the cut model's and the teacher's
    pairwise sentence similarities (what STS-style tasks measure), ties broken by the
    mean cosine between their sentence vectors. ``progress``: a bar of the subsets
    scored on stderr.
    """
    was_training = teacher.training
    teacher.eval()
    n_teacher = teacher.config.num_layers
    select_layers(n_teacher, n_student, "first")  # validates the depth
    reference = _sentence_vectors(teacher, range(n_teacher), batches)
    reference_similarity = _similarity_matrix(reference)
    cache: dict[tuple[int, ...], SubsetScore] = {}
    total = sum(1 for _ in itertools.combinations(range(n_teacher), n_student))
    exhaustive = total <= max_candidates
    bar = tqdm(
        total=total if exhaustive else 3 + sum(range(n_student + 1, n_teacher + 1)),  # at most
        desc="scoring layer subsets",
        unit="subset",
        disable=not progress,
    )

    def score(layers: tuple[int, ...]) -> SubsetScore:
        if layers not in cache:
            bar.update()
            vectors = _sentence_vectors(teacher, layers, batches)
            similarity = _similarity_matrix(vectors)
            correlation = torch.corrcoef(torch.stack([similarity, reference_similarity]))[0, 1]
            cosine = torch.nn.functional.cosine_similarity(vectors, reference, dim=-1).mean()
            cache[layers] = SubsetScore(layers, float(correlation), float(cosine))
        return cache[layers]

    if exhaustive:
        for subset in itertools.combinations(range(n_teacher), n_student):
            score(subset)
    else:
        for strategy in ("uniform", "first", "last"):
            score(tuple(select_layers(n_teacher, n_student, strategy)))
        current = tuple(range(n_teacher))
        while len(current) > n_student:
            candidates = [tuple(i for i in current if i != drop) for drop in current]
            current = max(
                (score(c) for c in candidates),
                key=lambda s: (s.similarity_correlation, s.embedding_cosine),
            ).layers
    bar.total = bar.n  # the greedy search scored fewer (repeats come from the cache)
    bar.close()
    teacher.train(was_training)
    return sorted(cache.values(), key=lambda s: (-s.similarity_correlation, -s.embedding_cosine))


# --------------------------------------------------------------------------- building
def student_config(
    teacher_config: ModelConfig,
    num_layers: int,
    layout: str | None = None,
    hidden_size: int | None = None,
    num_heads: int | None = None,
    intermediate_size: int | None = None,
) -> ModelConfig:
    """The teacher's config with fewer layers (and optionally another layout or width)."""
    config = copy.deepcopy(teacher_config)
    config.num_layers = num_layers
    if hidden_size is not None:
        config.hidden_size = hidden_size
        config.num_heads = num_heads or teacher_config.num_heads
        config.intermediate_size = intermediate_size or 4 * hidden_size
    elif num_heads is not None or intermediate_size is not None:
        raise StudentError("num_heads and intermediate_size can only change with hidden_size")
    if layout == "distilbert":
        config.layout, config.type_vocab_size, config.with_pooler = "distilbert", 0, False
    elif layout not in (None, "bert", teacher_config.layout):
        raise StudentError(f"layout must be 'bert' or 'distilbert', got {layout!r}")
    elif layout == "bert" and teacher_config.layout == "distilbert":
        raise StudentError("a distilbert-layout teacher has no token types to give a bert student")
    config.validate()
    return config


def build_student(
    teacher: TransformerModel,
    layers: Sequence[int] | None = None,
    num_layers: int | None = None,
    strategy: str = "uniform",
    layout: str | None = None,
    hidden_size: int | None = None,
    num_heads: int | None = None,
    intermediate_size: int | None = None,
    seed: int = 0,
) -> tuple[TransformerModel, list[int] | None]:
    """A student initialised from ``teacher``; returns (student, teacher layers used).

    Same width: copies the embeddings, the blocks in ``layers`` (or chosen by
    ``strategy`` for ``num_layers`` blocks), the pooler and the masked-LM head. Converting
    to the DistilBERT layout folds the teacher's token-type-0 vector into the position
    embeddings, so single-sentence inputs give the same numbers. Another width: random
    initialisation (seeded); the layer list is then None.
    """
    n_teacher = teacher.config.num_layers
    if layers is not None:
        layers = check_layers(layers, n_teacher)
        if num_layers is not None and num_layers != len(layers):
            raise StudentError(f"num_layers={num_layers} but {len(layers)} layers were listed")
    elif num_layers is not None:
        layers = select_layers(n_teacher, num_layers, strategy)
    else:
        raise StudentError("give either the teacher layers to keep or the student's num_layers")
    config = student_config(
        teacher.config, len(layers), layout, hidden_size, num_heads, intermediate_size
    )
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        student = TransformerModel(config)
    recipe = getattr(teacher, "sentence_modules", None)  # pooling, Normalize, length limit
    if recipe is not None:
        student.sentence_modules = recipe.for_width(config.hidden_size)
    if hidden_size is not None and hidden_size != teacher.config.hidden_size:
        return student.eval(), None
    source = teacher.state_dict()
    target = student.state_dict()
    copied: dict[str, torch.Tensor] = {}
    for name in target:
        if name.startswith("backbone.layers."):
            _, _, index, rest = name.split(".", 3)
            copied[name] = source[f"backbone.layers.{layers[int(index)]}.{rest}"]
        elif name in source:
            copied[name] = source[name]
    if teacher.config.type_vocab_size and not config.type_vocab_size:
        type_zero = source["backbone.embeddings.token_type_embeddings.weight"][0]
        positions = source["backbone.embeddings.position_embeddings.weight"]
        copied["backbone.embeddings.position_embeddings.weight"] = positions + type_zero
    missing = [n for n in target if n not in copied]
    if missing and teacher.config.head == config.head:
        raise StudentError(f"could not initialise {missing[:3]} from the teacher")
    student.load_state_dict({**target, **{k: v.clone() for k, v in copied.items()}})
    return student.eval(), layers
