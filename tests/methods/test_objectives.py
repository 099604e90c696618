"""Objectives: which losses are on, and each loss against a hand computation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from distill_helpers import (
    random_sequences,
    random_teacher,
    randomize,
    tiny_config,
    tiny_tokenizer,
)

from distilkit.data.batching import LengthGroupedSampler, collate_sequences
from distilkit.data.masking import MaskingConfig, mask_tokens
from distilkit.methods.general.objectives import (
    DistillationWeights,
    GeneralDistillation,
    GeneralDistillationConfig,
    MaskedLMFitting,
)
from distilkit.model.modeling import TransformerModel
from distilkit.model.student import build_student
from distilkit.model.tokenizer import Tokenizer
from distilkit.train.trainer import Trainer, TrainingConfig


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return tiny_tokenizer(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    """Six padded sequences of 6..20 tokens: (6, 20) ids and mask."""
    return collate_sequences(random_sequences(6, seed=3), pad_id=0)


def weights(**values: float) -> DistillationWeights:
    return DistillationWeights(**{"ce": 0.0, "mlm": 0.0, "cos": 0.0, **values})


def objective_config(**kwargs) -> GeneralDistillationConfig:
    return GeneralDistillationConfig(**kwargs)


# --------------------------------------------------------------------------- which losses
@pytest.mark.parametrize(
    ("teacher_head", "student_head", "losses", "notes"),
    [
        ("masked_lm", "masked_lm", {"ce", "mlm", "cos"}, []),
        (None, "masked_lm", {"mlm", "cos"}, ["the teacher has no masked-LM head"]),
        (
            "masked_lm",
            None,
            {"cos"},
            ["no soft-target loss: the student has no", "no masked-LM loss: the student has no"],
        ),
        (None, None, {"cos"}, ["the teacher has no masked-LM head", "no masked-LM loss"]),
    ],
)
def test_losses_follow_the_heads(tokenizer, batch, teacher_head, student_head, losses, notes):
    teacher = random_teacher(3, seed=1, head=teacher_head)
    student = randomize(TransformerModel(tiny_config(2, head=student_head)), seed=2)
    objective = GeneralDistillation(teacher, student, tokenizer)
    assert set(objective.weights) == losses
    assert objective.weights.get("ce", 5.0) == 5.0 and objective.weights.get("mlm", 2.0) == 2.0
    assert len(objective.notes) == len(notes)
    for note, expected in zip(objective.notes, notes, strict=True):
        assert expected in note
    assert objective.mask_inputs == bool({"ce", "mlm"} & losses)
    computed = objective(batch, torch.Generator().manual_seed(0))
    assert set(computed) == losses
    assert all(torch.isfinite(v) and v.dim() == 0 for v in computed.values())


def test_explicit_mask_inputs_and_extra_losses(tokenizer):
    teacher = random_teacher(3, seed=1)
    student, _ = build_student(teacher, num_layers=2)
    config = objective_config(weights=weights(cos=1.0, mse=0.5), mask_inputs=True)
    objective = GeneralDistillation(teacher, student, tokenizer, config)
    assert objective.weights == {"cos": 1.0, "mse": 0.5}
    assert objective.mask_inputs is True


def test_nothing_to_train_on_is_an_error(tokenizer):
    teacher = random_teacher(3, seed=1, head=None)
    student = TransformerModel(tiny_config(2, head=None))
    with pytest.raises(ValueError, match="every loss weight is zero or unavailable"):
        GeneralDistillation(teacher, student, tokenizer, objective_config(weights=weights()))
    only_ce = objective_config(weights=weights(ce=1.0))  # ce needs two MLM heads
    with pytest.raises(ValueError, match="nothing to train on"):
        GeneralDistillation(teacher, student, tokenizer, only_ce)


def test_vocabulary_mismatch_is_a_clear_error(tokenizer):
    teacher = random_teacher(3, seed=1)
    student = TransformerModel(tiny_config(2, vocab_size=120))
    with pytest.raises(ValueError, match=r"99 entries but the student's has 120.*share a vocab"):
        GeneralDistillation(teacher, student, tokenizer)


def test_hidden_loss_needs_a_valid_layer_map(tokenizer):
    teacher = random_teacher(3, seed=1)
    student, _ = build_student(teacher, num_layers=2)
    config = objective_config(weights=weights(hidden=1.0))
    with pytest.raises(ValueError, match="needs hidden_layer_map"):
        GeneralDistillation(teacher, student, tokenizer, config)
    config.hidden_layer_map = [[1, 1], [5, 3]]
    with pytest.raises(ValueError):
        GeneralDistillation(teacher, student, tokenizer, config)


# --------------------------------------------------------------------------- values
def test_losses_equal_a_hand_computation_on_the_masked_positions(tokenizer, batch):
    teacher = random_teacher(4, seed=1)
    student, _ = build_student(teacher, layers=[0, 3])
    objective = GeneralDistillation(teacher, student, tokenizer, objective_config(temperature=3.0))
    losses = {k: v.item() for k, v in objective(batch, torch.Generator().manual_seed(7)).items()}

    # the same masks, drawn again from the same seed
    masked, labels = mask_tokens(
        batch["input_ids"],
        batch["attention_mask"],
        tokenizer.special_ids,
        tokenizer.mask_id,
        99,
        MaskingConfig(),
        torch.Generator().manual_seed(7),
    )
    selected = labels != -100
    assert 3 <= int(selected.sum()) < int(batch["attention_mask"].sum())
    with torch.no_grad():  # full forward passes (the objective runs the head on targets only)
        teacher_out = teacher(masked, batch["attention_mask"])
        student_out = student(masked, batch["attention_mask"])
    student_logits = student_out.logits[selected].double() / 3.0  # (targets, vocab)
    teacher_logits = teacher_out.logits[selected].double() / 3.0
    teacher_probs = teacher_logits.softmax(-1)
    kl = (teacher_probs * (teacher_probs.log() - student_logits.log_softmax(-1))).sum(-1)
    assert losses["ce"] == pytest.approx(float(kl.mean()) * 9.0, rel=1e-4, abs=1e-6)
    mlm = F.cross_entropy(student_out.logits[selected].double(), labels[selected])
    assert losses["mlm"] == pytest.approx(float(mlm), rel=1e-5)
    real = batch["attention_mask"].bool()
    a, b = student_out.last_hidden_state[real].double(), teacher_out.last_hidden_state[real]
    cosine = (a * b.double()).sum(-1) / (a.norm(dim=-1) * b.double().norm(dim=-1))
    assert losses["cos"] == pytest.approx(float((1 - cosine).mean()), rel=1e-5)


def test_hidden_and_mse_losses_equal_a_hand_computation(tokenizer, batch):
    teacher = random_teacher(4, seed=1)
    student, _ = build_student(teacher, layers=[1, 2])
    config = objective_config(
        weights=weights(mse=1.0, hidden=1.0), hidden_layer_map=[[1, 2], [2, 4]]
    )
    objective = GeneralDistillation(teacher, student, tokenizer, config)
    assert objective.mask_inputs is False
    losses = objective(batch, torch.Generator().manual_seed(0))
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        teacher_hidden = teacher(**batch, output_hidden_states=True).hidden_states
        student_hidden = student(**batch, output_hidden_states=True).hidden_states

    def mse(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(((a[real].double() - b[real].double()) ** 2).mean())

    expected_hidden = (
        mse(student_hidden[1], teacher_hidden[2]) + mse(student_hidden[2], teacher_hidden[4])
    ) / 2
    assert losses["hidden"].item() == pytest.approx(expected_hidden, rel=1e-5)
    assert losses["mse"].item() == pytest.approx(
        mse(student_hidden[-1], teacher_hidden[-1]), rel=1e-5
    )


def test_a_student_identical_to_the_teacher_has_nothing_to_learn(tokenizer, batch):
    teacher = random_teacher(3, seed=1)
    config = objective_config(weights=weights(ce=5.0, cos=1.0, mse=1.0))
    objective = GeneralDistillation(teacher, copy.deepcopy(teacher), tokenizer, config)
    objective.eval()
    losses = objective(batch, torch.Generator().manual_seed(0))
    assert losses["cos"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["ce"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["mse"].item() == pytest.approx(0.0, abs=1e-10)
    metrics = objective.evaluate([batch])
    assert metrics["token_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["sentence_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert 0.0 <= metrics["mlm_accuracy"] <= 1.0 and metrics["mlm_loss"] > 0


def test_relations_loss_equals_a_hand_computation_and_vanishes_for_a_copy(tokenizer, batch):
    from distilkit.train.losses import self_attention_relation_loss

    teacher = random_teacher(4, seed=1)
    student, _ = build_student(teacher, layers=[0, 2])
    config = objective_config(
        weights=weights(relations=1.0), relation_heads=2, relation_teacher_layer=3
    )
    objective = GeneralDistillation(teacher, student, tokenizer, config)
    losses = objective(batch, torch.Generator().manual_seed(0))
    mask = batch["attention_mask"]
    with torch.no_grad():
        teacher_hidden = teacher(**batch, output_hidden_states=True).hidden_states
        student_hidden = student(**batch, output_hidden_states=True).hidden_states
    expected = 0.0
    for name in ("query", "key", "value"):
        student_vectors = getattr(student.backbone.layers[1].attention, name)(student_hidden[1])
        teacher_vectors = getattr(teacher.backbone.layers[2].attention, name)(teacher_hidden[2])
        expected += self_attention_relation_loss(student_vectors, teacher_vectors, mask, 2).item()
    assert losses["relations"].item() == pytest.approx(expected, rel=1e-5)
    copy_objective = GeneralDistillation(
        teacher, copy.deepcopy(teacher), tokenizer, objective_config(weights=weights(relations=1.0))
    ).eval()
    copy_losses = copy_objective(batch, torch.Generator().manual_seed(0))
    assert copy_losses["relations"].item() == pytest.approx(0.0, abs=1e-6)


def test_pairs_loss_compares_each_sentence_with_its_view(tokenizer, batch):
    from distilkit.data.masking import span_deleted_views
    from distilkit.model.modeling import pool

    teacher = random_teacher(3, seed=1)
    student, _ = build_student(teacher, layers=[0, 2])
    config = objective_config(weights=weights(cos=1.0, pairs=1.0), view_deletion=0.3)
    objective = GeneralDistillation(teacher, student, tokenizer, config)
    losses = objective(batch, torch.Generator().manual_seed(7))
    views, view_mask = span_deleted_views(
        batch["input_ids"], batch["attention_mask"], 0.3, tokenizer.pad_id,
        torch.Generator().manual_seed(7),
    )  # fmt: skip
    with torch.no_grad():
        vectors = {}
        for name, model in (("student", student), ("teacher", teacher)):
            first = pool(model(**batch).last_hidden_state, batch["attention_mask"])
            second = pool(model(input_ids=views, attention_mask=view_mask).last_hidden_state,
                          view_mask)  # fmt: skip
            vectors[name] = F.cosine_similarity(first, second, dim=-1)
    expected = float(((vectors["student"] - vectors["teacher"]) ** 2).mean())
    assert losses["pairs"].item() == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="view_deletion must be between 0 and 1"):
        GeneralDistillation(
            teacher,
            student,
            tokenizer,
            objective_config(weights=weights(pairs=1.0), view_deletion=0.0),
        )


def test_matryoshka_loss_is_each_renormalised_prefix_against_the_teachers_similarities(
    tokenizer, batch
):
    teacher = random_teacher(3, seed=1)
    student, _ = build_student(teacher, layers=[0, 2])
    dims = [32, 20, 7]
    config = objective_config(weights=weights(cos=1.0, matryoshka=1.0), matryoshka_dims=dims)
    objective = GeneralDistillation(teacher, student, tokenizer, config)
    losses = objective(batch, torch.Generator().manual_seed(0))
    mask = batch["attention_mask"].double()
    with torch.no_grad():  # mean-pooled sentence vectors, by hand, in float64

        def sentence(model):
            hidden = model(**batch).last_hidden_state.double()
            return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

        student_vectors, teacher_vectors = sentence(student), sentence(teacher)
    teacher_unit = teacher_vectors / teacher_vectors.norm(dim=1, keepdim=True)
    rows = len(mask)
    expected = 0.0
    for d in dims:
        prefix = student_vectors[:, :d] / student_vectors[:, :d].norm(dim=1, keepdim=True)
        errors = [
            float(prefix[i] @ prefix[j] - teacher_unit[i] @ teacher_unit[j]) ** 2
            for i in range(rows)
            for j in range(rows)
            if i != j
        ]
        expected += sum(errors) / len(errors) / len(dims)
    assert losses["matryoshka"].item() == pytest.approx(expected, rel=1e-5)
    assert losses["matryoshka"].item() > 1e-4  # a cut student does not yet match
    # the widths travel with the student (its saved folder records them), largest first
    assert student.sentence_modules.matryoshka_dims == (32, 20, 7)
    with pytest.raises(ValueError, match="must not exceed the student's sentence vector"):
        GeneralDistillation(
            teacher,
            build_student(teacher, layers=[0, 2])[0],
            tokenizer,
            objective_config(weights=weights(matryoshka=1.0), matryoshka_dims=[33, 8]),
        )


@pytest.mark.parametrize(
    ("dims", "weight", "message"),
    [
        ([64, 64], 1.0, "distinct widths"),
        ([], 1.0, "distinct widths"),
        ([0, 8], 1.0, "distinct widths"),
        (None, 1.0, "needs both its widths and a weight"),
        ([16, 8], 0.0, "needs both its widths and a weight"),
    ],
)
def test_matryoshka_settings_are_checked(dims, weight, message):
    from distilkit.settings import ConfigError

    with pytest.raises(ConfigError, match=message):
        objective_config(weights=weights(cos=1.0, matryoshka=weight), matryoshka_dims=dims)


def test_relations_options_are_checked(tokenizer):
    teacher = random_teacher(3, seed=1)
    student, _ = build_student(teacher, layers=[0, 2])
    with pytest.raises(ValueError, match="relation_teacher_layer=4 is out of range"):
        GeneralDistillation(
            teacher,
            student,
            tokenizer,
            objective_config(weights=weights(relations=1.0), relation_teacher_layer=4),
        )
    width = teacher.config.hidden_size
    with pytest.raises(ValueError, match="must divide both"):
        GeneralDistillation(
            teacher,
            student,
            tokenizer,
            objective_config(weights=weights(relations=1.0), relation_heads=width + 1),
        )


# --------------------------------------------------------------------------- other widths
def test_width_mismatch_creates_a_projection_that_is_trained_and_saved(tokenizer, tmp_path):
    teacher = random_teacher(3, seed=1)
    student, _ = build_student(teacher, num_layers=2, hidden_size=24, num_heads=4, seed=3)
    config = objective_config(weights=weights(mlm=2.0, cos=1.0, mse=1.0))
    objective = GeneralDistillation(teacher, student, tokenizer, config)
    projection = objective.projection
    assert isinstance(projection, torch.nn.Linear)
    assert (projection.in_features, projection.out_features) == (24, 32)
    assert any(p is projection.weight for p in objective.parameters())
    before = projection.weight.detach().clone()

    sequences = random_sequences(16, seed=4)
    trainer = Trainer(
        objective,
        sequences,
        LengthGroupedSampler([len(s) for s in sequences], 4, seed=0),
        lambda items: collate_sequences(items, 0),
        TrainingConfig(max_steps=3, batch_size=4, checkpoint_every=3, progress=False),
        tmp_path / "run",
    )
    trainer.run()
    assert not torch.equal(projection.weight.detach(), before)
    assert float((projection.weight.detach() - before).abs().max()) > 1e-4

    # the projection is part of the checkpoint and comes back on load
    fresh_student, _ = build_student(teacher, num_layers=2, hidden_size=24, num_heads=4, seed=9)
    restored = GeneralDistillation(teacher, fresh_student, tokenizer, config)
    restored.load(trainer.latest_checkpoint() / "model")
    for name, tensor in objective.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor), name


# --------------------------------------------------------------------------- MLM fitting
def test_masked_lm_fitting_trains_the_head_and_top_blocks_only(tokenizer, batch):
    model = random_teacher(4, seed=5)
    objective = MaskedLMFitting(model, tokenizer, train_layers=1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        n for n, _ in model.named_parameters() if n.startswith(("head.", "backbone.layers.3."))
    }
    assert "backbone.embeddings.word_embeddings.weight" not in trainable  # the tied decoder
    losses = objective(batch, torch.Generator().manual_seed(2))
    masked, labels = mask_tokens(
        batch["input_ids"],
        batch["attention_mask"],
        tokenizer.special_ids,
        tokenizer.mask_id,
        99,
        MaskingConfig(),
        torch.Generator().manual_seed(2),
    )
    with torch.no_grad():
        logits = model(masked, batch["attention_mask"]).logits
    selected = labels != -100
    expected = F.cross_entropy(logits[selected], labels[selected])
    assert losses["mlm"].item() == pytest.approx(float(expected), rel=1e-5)


def test_masked_lm_fitting_errors(tokenizer):
    with pytest.raises(ValueError, match="needs a model with a masked_lm head"):
        MaskedLMFitting(random_teacher(2, seed=1, head=None), tokenizer)
    with pytest.raises(ValueError, match="between 0 and 2"):
        MaskedLMFitting(random_teacher(2, seed=1), tokenizer, train_layers=3)


def test_save_and_load_round_trip(tokenizer, tmp_path: Path):
    teacher = random_teacher(3, seed=1)
    student, _ = build_student(teacher, num_layers=2)
    objective = GeneralDistillation(teacher, student, tokenizer)
    randomize(student, seed=21)
    objective.save(tmp_path / "model")
    other, _ = build_student(teacher, num_layers=2)
    restored = GeneralDistillation(teacher, other, tokenizer)
    restored.load(tmp_path / "model")
    for name, tensor in student.state_dict().items():
        assert torch.equal(other.state_dict()[name], tensor), name
