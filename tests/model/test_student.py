"""Building students: layer choice by strategy, explicit lists, auto ranking, weight copying."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from distill_helpers import random_sequences, random_teacher

from distilkit.data.batching import collate_sequences
from distilkit.model.modeling import TransformerModel, pool
from distilkit.model.student import (
    StudentError,
    build_student,
    check_layers,
    rank_layer_subsets,
    select_layers,
    student_config,
)


def uniform_reference(n_teacher: int, n_student: int) -> list[int]:
    """Evenly spread indices i * (n-1) / (k-1), rounded half up, in exact arithmetic."""
    if n_student == 1:
        return [n_teacher - 1]
    return [
        math.floor(Fraction(i * (n_teacher - 1), n_student - 1) + Fraction(1, 2))
        for i in range(n_student)
    ]


def padded_batches(count: int = 12, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    sequences = random_sequences(count, seed=seed, min_len=5, max_len=14)
    return [collate_sequences(sequences[i : i + 4], pad_id=0) for i in range(0, count, 4)]


# --------------------------------------------------------------------------- select_layers
def test_uniform_matches_distilbert_and_the_paper_examples():
    assert select_layers(12, 6, "uniform") == [0, 2, 4, 7, 9, 11]  # DistilBERT's choice
    assert select_layers(6, 3, "uniform") == [0, 3, 5]
    assert select_layers(12, 12, "uniform") == list(range(12))
    assert select_layers(12, 1, "uniform") == [11]


@pytest.mark.parametrize(
    ("n_teacher", "n_student"), [(n, k) for n in range(1, 13) for k in (1, 2, 3, 4, 6) if k <= n]
)
def test_uniform_equals_rounded_even_spacing(n_teacher: int, n_student: int):
    layers = select_layers(n_teacher, n_student, "uniform")
    assert layers == uniform_reference(n_teacher, n_student)
    assert layers == sorted(set(layers)) and len(layers) == n_student
    if n_student > 1:
        assert layers[0] == 0 and layers[-1] == n_teacher - 1


def test_other_strategies():
    assert select_layers(12, 6, "alternate") == [0, 2, 4, 6, 8, 10]
    assert select_layers(5, 3, "alternate") == [0, 2, 4]
    assert select_layers(6, 2, "first") == [0, 1]
    assert select_layers(6, 2, "last") == [4, 5]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((6, 0, "uniform"), "between 1 and 6"),
        ((6, 7, "uniform"), "between 1 and 6"),
        ((6, 4, "alternate"), "at most 3 layers.*use 'uniform'"),
        ((6, 3, "middle"), "unknown layer strategy 'middle'"),
    ],
)
def test_select_layers_errors(args, message):
    with pytest.raises(StudentError, match=message):
        select_layers(*args)


# --------------------------------------------------------------------------- check_layers
def test_check_layers_accepts_and_normalises():
    assert check_layers([0, np.int64(3), 5], 6) == [0, 3, 5]


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([0, 6], r"layer\(s\) \[6\] out of range: the teacher has layers 0..5"),
        ([-1, 2], r"layer\(s\) \[-1\] out of range"),
        ([1, 1, 2], "names a layer twice"),
        ([3, 1], "must be in increasing order"),
        ([], "the layer list is empty"),
    ],
)
def test_check_layers_errors_are_clear(layers, message):
    with pytest.raises(StudentError, match=message):
        check_layers(layers, 6)


# --------------------------------------------------------------------------- build_student
@pytest.mark.parametrize("layers", [[0, 2, 4], [1, 3], [4]])
def test_student_copies_exactly_the_chosen_teacher_tensors(layers: list[int]):
    teacher = random_teacher(num_layers=5, seed=3)
    teacher_state = teacher.state_dict()
    student, used = build_student(teacher, layers=layers)
    assert used == layers
    assert student.config.num_layers == len(layers)
    student_state = student.state_dict()
    block_names = [n for n in student_state if n.startswith("backbone.layers.0.")]
    assert len(block_names) == 16  # 4 linear layers x 2 + 2 norms x 2 + FFN 2 x 2
    for student_index, teacher_index in enumerate(layers):
        for name in block_names:
            rest = name.removeprefix("backbone.layers.0.")
            ours = student_state[f"backbone.layers.{student_index}.{rest}"]
            theirs = teacher_state[f"backbone.layers.{teacher_index}.{rest}"]
            assert torch.equal(ours, theirs), (student_index, teacher_index, rest)
    outside_blocks = [n for n in teacher_state if not n.startswith("backbone.layers.")]
    assert any(n.startswith("backbone.pooler.") for n in outside_blocks)
    assert any(n.startswith("head.") for n in outside_blocks)
    for name in outside_blocks:  # embeddings, pooler, MLM head
        assert torch.equal(student_state[name], teacher_state[name]), name
    # a copy, not shared storage, and the MLM decoder stays tied to the student's embeddings
    assert student_state["head.bias"].data_ptr() != teacher_state["head.bias"].data_ptr()
    assert student.head.word_embeddings[0] is student.backbone.embeddings.word_embeddings


def test_student_runs_like_the_teacher_cut_to_its_layers():
    """The built student and the teacher run with only those blocks are the same network."""
    teacher = random_teacher(num_layers=5, seed=4)
    student, _ = build_student(teacher, layers=[0, 3, 4])
    batch = padded_batches()[0]
    with torch.no_grad():
        cut = teacher.backbone(**batch, layer_indices=[0, 3, 4])
        ours = student(**batch)
    torch.testing.assert_close(ours.last_hidden_state, cut.last_hidden_state, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.logits, teacher.head(cut.last_hidden_state), atol=1e-5, rtol=0)


def test_distilbert_layout_folds_token_type_zero_into_positions():
    teacher = random_teacher(num_layers=4, seed=5)
    student, _ = build_student(teacher, layers=[1, 3], layout="distilbert")
    assert student.config.layout == "distilbert"
    assert student.config.type_vocab_size == 0 and not student.config.with_pooler
    assert student.backbone.embeddings.token_type_embeddings is None
    teacher_embeddings = teacher.backbone.embeddings
    torch.testing.assert_close(
        student.backbone.embeddings.position_embeddings.weight,
        teacher_embeddings.position_embeddings.weight
        + teacher_embeddings.token_type_embeddings.weight[0],
        atol=0,
        rtol=0,
    )
    batch = padded_batches()[1]
    token_type_ids = torch.zeros_like(batch["input_ids"])  # one sentence: segment 0
    with torch.no_grad():
        cut = teacher.backbone(**batch, token_type_ids=token_type_ids, layer_indices=[1, 3])
        ours = student(**batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(
        ours.last_hidden_state[real], cut.last_hidden_state[real], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        ours.logits[real], teacher.head(cut.last_hidden_state)[real], atol=1e-4, rtol=0
    )


def test_bert_student_without_head_from_headless_teacher():
    teacher = random_teacher(num_layers=3, seed=6, head=None)
    student, layers = build_student(teacher, num_layers=2, strategy="last")
    assert layers == [1, 2] and student.head is None
    assert torch.equal(student.backbone.pooler.dense.weight, teacher.backbone.pooler.dense.weight)


def test_another_width_starts_from_seeded_random_weights():
    teacher = random_teacher(num_layers=4, seed=7)
    student, layers = build_student(teacher, num_layers=2, hidden_size=24, num_heads=4, seed=11)
    assert layers is None
    assert (student.config.hidden_size, student.config.intermediate_size) == (24, 96)
    again, _ = build_student(teacher, num_layers=2, hidden_size=24, num_heads=4, seed=11)
    other, _ = build_student(teacher, num_layers=2, hidden_size=24, num_heads=4, seed=12)
    same = again.state_dict()
    assert all(torch.equal(v, same[k]) for k, v in student.state_dict().items())
    differs = other.state_dict()["backbone.layers.0.attention.query.weight"]
    assert not torch.equal(differs, same["backbone.layers.0.attention.query.weight"])
    # the caller's global RNG is left alone
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    build_student(teacher, num_layers=2, hidden_size=24, num_heads=4, seed=11)
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give either the teacher layers to keep or the student's num_layers"),
        ({"layers": [0, 1], "num_layers": 3}, "num_layers=3 but 2 layers were listed"),
        ({"layers": [0, 4]}, "out of range: the teacher has layers 0..3"),
        ({"num_layers": 5}, "between 1 and 4"),
        ({"num_layers": 2, "layout": "albert"}, "layout must be 'bert' or 'distilbert'"),
        ({"num_layers": 2, "num_heads": 2}, "can only change with hidden_size"),
    ],
)
def test_build_student_errors(kwargs, message):
    teacher = random_teacher(num_layers=4, seed=8)
    with pytest.raises(StudentError, match=message):
        build_student(teacher, **kwargs)


def test_a_distilbert_teacher_cannot_give_a_bert_student():
    teacher = random_teacher(num_layers=3, seed=9)
    distil, _ = build_student(teacher, num_layers=3, layout="distilbert")
    with pytest.raises(StudentError, match="no token types"):
        student_config(distil.config, 2, layout="bert")


# --------------------------------------------------------------------------- auto ranking
def teacher_with_identity_top(num_layers: int, identity_from: int, seed: int) -> TransformerModel:
    """A teacher whose blocks from ``identity_from`` on return their input unchanged.

    Every LayerNorm is the plain standardisation (weight 1, bias 0), so each block's input
    is already standardised; zeroing a block's attention and FFN output projections then
    leaves ``LN(LN(x)) = x``: dropping such a block costs nothing.
    """
    teacher = random_teacher(num_layers=num_layers, seed=seed)
    with torch.no_grad():
        for name, parameter in teacher.named_parameters():
            if "norm.weight" in name:
                parameter.fill_(1.0)
            elif "norm.bias" in name:
                parameter.zero_()
        for block in teacher.backbone.layers[identity_from:]:
            for linear in (block.attention.output, block.ffn.output):
                linear.weight.zero_()
                linear.bias.zero_()
    return teacher


def test_rank_layer_subsets_puts_the_lossless_cut_first_and_scores_all_subsets():
    teacher = teacher_with_identity_top(num_layers=5, identity_from=3, seed=10)
    batches = padded_batches(count=16)
    ranking = rank_layer_subsets(teacher, 3, batches)
    assert sorted(s.layers for s in ranking) == list(itertools.combinations(range(5), 3))
    best = ranking[0]
    assert best.layers == (0, 1, 2)
    assert best.similarity_correlation == pytest.approx(1.0, abs=1e-5)
    assert best.embedding_cosine == pytest.approx(1.0, abs=1e-5)
    correlations = [s.similarity_correlation for s in ranking]
    assert correlations == sorted(correlations, reverse=True)
    assert correlations[-1] < 0.99  # dropping a real block costs something


def test_rank_layer_subsets_score_matches_an_independent_computation():
    """Score of one subset recomputed from a built student: cosines -> Pearson r."""
    teacher = random_teacher(num_layers=4, seed=12)
    batches = padded_batches(count=12, seed=2)
    scores = {s.layers: s for s in rank_layer_subsets(teacher, 2, batches)}
    student, _ = build_student(teacher, layers=[1, 3])

    def sentence_vectors(model: TransformerModel) -> np.ndarray:
        with torch.no_grad():
            return (
                torch.cat(
                    [pool(model(**b).last_hidden_state, b["attention_mask"]) for b in batches]
                )
                .double()
                .numpy()
            )

    ours, reference = sentence_vectors(student), sentence_vectors(teacher)
    unit = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    unit_reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    upper = np.triu_indices(len(ours), k=1)
    r = np.corrcoef((unit @ unit.T)[upper], (unit_reference @ unit_reference.T)[upper])[0, 1]
    cosine = (unit * unit_reference).sum(1).mean()
    assert scores[(1, 3)].similarity_correlation == pytest.approx(r, abs=1e-5)
    assert scores[(1, 3)].embedding_cosine == pytest.approx(cosine, abs=1e-5)


def test_rank_layer_subsets_greedy_search_when_there_are_too_many_subsets():
    teacher = teacher_with_identity_top(num_layers=6, identity_from=3, seed=13)
    ranking = rank_layer_subsets(teacher, 3, padded_batches(count=12), max_candidates=5)
    assert len(ranking) < math.comb(6, 3)
    assert ranking[0].layers == (0, 1, 2)
    assert teacher.training is False


def test_rank_layer_subsets_restores_training_mode_and_checks_depth():
    teacher = random_teacher(num_layers=3, seed=14).train()
    rank_layer_subsets(teacher, 2, padded_batches(count=8))
    assert teacher.training
    with pytest.raises(StudentError, match="between 1 and 3"):
        rank_layer_subsets(teacher, 4, padded_batches(count=8))
