"""Multi-teacher and multi-task distillation (distilkit.methods.multi_teacher.job).

Averaging is checked against the reference formula computed in numpy/scipy (mean of the
teachers' softmax at temperature T, or mean of the logits); one teacher must reduce to
plain knowledge distillation (same loss and same gradients as soft_target_loss on that
teacher). The multi-task model must share one encoder, keep the heads apart, and save
each task's model as a standalone folder with the same predictions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax

from distilkit.data.transfer import DistillationDataset, collate_items, encode_for_student
from distilkit.encoder import load
from distilkit.methods.multi_teacher.job import MultiTaskDistillation, MultiTeacherConfig
from distilkit.methods.multi_teacher.model import HeadSpec, MultiTaskModel, combine_teacher_logits
from distilkit.methods.multi_teacher.sampling import TaskBatchSampler
from distilkit.model.bilstm import load_bilstm
from distilkit.model.checkpoint import save_model
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel
from distilkit.settings import ConfigError
from distilkit.train.logit_distillation import BiLSTMSettings
from distilkit.train.losses import logit_mse_loss, soft_target_loss

SETTINGS = BiLSTMSettings(hidden_size=5, mlp_size=9, dropout=0.0, max_length=24)
TEXTS = ["the cat sat on the mat.", "hello world", "a big red dog ran to the tree!", "book"]
PAIRS = ["it was small", "the blue house", "read this book", "bird"]
HEADS = {
    "sst2": HeadSpec(num_labels=2, label_names=["negative", "positive"]),
    "stsb": HeadSpec(num_labels=1, pair=True, regression=True),
}


def random_logits(teachers: int, rows: int = 6, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=3.0, size=(rows, classes)).astype(np.float32) for _ in range(teachers)]


def bilstm_model(tokenizer, seed: int = 0) -> MultiTaskModel:
    embeddings = torch.randn(99, 32, generator=torch.Generator().manual_seed(seed))
    return MultiTaskModel.bilstm(HEADS, embeddings, tokenizer, SETTINGS, seed=seed)


# ----------------------------------------------------------------------------- averaging
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_probability_average_is_the_mean_teacher_distribution(temperature):
    teachers = random_logits(3)
    weights = [1.0, 2.0, 5.0]
    combined = combine_teacher_logits(teachers, "probs", temperature, weights)
    reference = sum(
        w * softmax(t.astype(np.float64) / temperature, axis=-1)
        for w, t in zip(weights, teachers, strict=True)
    ) / sum(weights)
    np.testing.assert_allclose(softmax(combined / temperature, axis=-1), reference, atol=1e-6)
    equal = combine_teacher_logits(teachers, "probs", temperature)
    mean = np.mean([softmax(t / temperature, axis=-1) for t in teachers], axis=0)
    np.testing.assert_allclose(softmax(equal / temperature, axis=-1), mean, atol=1e-6)


def test_logit_average_is_the_mean_of_logits():
    teachers = random_logits(4)
    np.testing.assert_allclose(
        combine_teacher_logits(teachers, "logits"), np.mean(teachers, axis=0), atol=1e-6
    )
    weighted = combine_teacher_logits(teachers, "logits", weights=[1, 0, 0, 3])
    np.testing.assert_allclose(weighted, (teachers[0] + 3 * teachers[3]) / 4, atol=1e-6)


def test_chunked_combination_equals_one_pass():
    teachers = random_logits(3, rows=50)
    np.testing.assert_array_equal(
        combine_teacher_logits(teachers, "probs", 2.0, chunk=7),
        combine_teacher_logits(teachers, "probs", 2.0, chunk=1000),
    )


def test_one_teacher_reduces_to_plain_kd(tiny_tokenizer):
    (teacher,) = random_logits(1, rows=4, classes=2)
    combined = combine_teacher_logits([teacher], "probs", 2.0)
    np.testing.assert_allclose(
        softmax(combined / 2.0, axis=-1), softmax(teacher / 2.0, axis=-1), atol=1e-6
    )
    np.testing.assert_allclose(combine_teacher_logits([teacher], "logits"), teacher, atol=0)

    model = bilstm_model(tiny_tokenizer)
    objective = MultiTaskDistillation(model, tiny_tokenizer, loss="kl", temperature=2.0)
    encoded = encode_for_student(model.task_model("sst2"), tiny_tokenizer, TEXTS, None, 24)
    batch = collate_items(
        [DistillationDataset(encoded, combined, None)[i] for i in range(4)], tiny_tokenizer.pad_id
    )
    loss = objective(batch, torch.Generator())["soft"]
    (multi_grad,) = torch.autograd.grad(loss, model.heads["sst2"][1].weight)
    student_logits = model("sst2", batch)
    plain = soft_target_loss(student_logits, torch.from_numpy(teacher), 2.0)
    (plain_grad,) = torch.autograd.grad(plain, model.heads["sst2"][1].weight)
    torch.testing.assert_close(loss, plain, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(multi_grad, plain_grad, atol=1e-6, rtol=1e-5)

    mse_objective = MultiTaskDistillation(model, tiny_tokenizer, loss="mse")
    logits_batch = batch | {"targets": torch.from_numpy(teacher)}
    torch.testing.assert_close(
        mse_objective(logits_batch, torch.Generator())["soft"],
        logit_mse_loss(model("sst2", logits_batch), torch.from_numpy(teacher)),
    )


def test_combination_refuses_bad_inputs():
    with pytest.raises(ConfigError, match="at least one teacher"):
        combine_teacher_logits([])
    with pytest.raises(ConfigError, match="same examples"):
        combine_teacher_logits([np.zeros((3, 2)), np.zeros((4, 2))])
    with pytest.raises(ConfigError, match="regression"):
        combine_teacher_logits([np.zeros((3, 1))], "probs")
    with pytest.raises(ValueError, match="mode"):
        combine_teacher_logits([np.zeros((3, 2))], "median")


# ----------------------------------------------------------------------------- multi-task
def test_multitask_bilstm_shares_the_encoder_and_keeps_heads_apart(tiny_tokenizer):
    model = bilstm_model(tiny_tokenizer)
    sst2, stsb = model.task_model("sst2"), model.task_model("stsb")
    assert sst2.encoder is stsb.encoder is model.encoder
    assert sst2.head is model.heads["sst2"] and stsb.head is not sst2.head
    assert stsb.head[1].in_features == 4 * 2 * SETTINGS.hidden_size  # siamese features
    assert sum(p.numel() for p in model.parameters()) == (
        sum(p.numel() for p in model.encoder.parameters())
        + sum(p.numel() for p in sst2.head.parameters())
        + sum(p.numel() for p in stsb.head.parameters())
    )
    objective = MultiTaskDistillation(
        model, tiny_tokenizer, regression={"stsb": True}, hard_label_weight=0.5
    )
    assert objective.weights == {"soft": 0.5, "hard": 0.5}
    encoded = encode_for_student(stsb, tiny_tokenizer, TEXTS, PAIRS, 24)
    targets = np.array([[0.5], [1.0], [4.0], [2.0]], np.float32)
    dataset = DistillationDataset(encoded, targets, np.array([1.0, 2.0], np.float32), 1)
    batch = collate_items([dataset[i] for i in range(4)], tiny_tokenizer.pad_id)
    losses = objective(batch, torch.Generator())
    logits = model("stsb", batch)
    torch.testing.assert_close(losses["soft"], ((logits - torch.from_numpy(targets)) ** 2).mean())
    torch.testing.assert_close(
        losses["hard"], ((logits[:2, 0] - torch.tensor([1.0, 2.0])) ** 2).mean()
    )
    sum(losses.values()).backward()
    assert model.heads["sst2"][1].weight.grad is None  # the other task's head is untouched
    assert model.heads["stsb"][1].weight.grad is not None
    assert model.encoder.lstm.weight_ih_l0.grad.abs().sum() > 0


def test_multitask_bilstm_saves_standalone_task_students(tiny_tokenizer, tmp_path):
    model = bilstm_model(tiny_tokenizer, seed=3).eval()
    folders = model.save(tmp_path / "students", tiny_tokenizer)
    assert sorted(folders) == ["sst2", "stsb"]
    sst2 = load_bilstm(folders["sst2"])
    stsb = load_bilstm(folders["stsb"])
    np.testing.assert_array_equal(
        sst2.predict_logits(TEXTS), model.task_model("sst2").predict_logits(TEXTS)
    )
    np.testing.assert_array_equal(
        stsb.predict_logits(TEXTS, PAIRS), model.task_model("stsb").predict_logits(TEXTS, PAIRS)
    )
    other = bilstm_model(tiny_tokenizer, seed=4)
    other.load(tmp_path / "students")
    for name, tensor in model.state_dict().items():
        assert torch.equal(other.state_dict()[name], tensor), name


def test_multitask_transformer_heads_over_one_backbone(tiny_tokenizer, tmp_path):
    config = ModelConfig(
        vocab_size=99,
        hidden_size=32,
        num_heads=4,
        intermediate_size=37,
        num_layers=2,
        max_position_embeddings=64,
        with_pooler=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    base = save_model(TransformerModel(config), tmp_path / "base", tokenizer=tiny_tokenizer)
    model = MultiTaskModel.transformer(base, HEADS, seed=1).eval()
    sst2, stsb = model.task_model("sst2"), model.task_model("stsb")
    assert sst2.backbone is stsb.backbone and sst2.backbone.pooler is not None  # pooler added
    assert stsb.config.num_labels == 1 and stsb.config.problem_type == "regression"
    folders = model.save(tmp_path / "students", tiny_tokenizer)
    with torch.no_grad():
        batch = tiny_tokenizer(TEXTS, PAIRS)
        expected = stsb(**batch.model_inputs()).logits.numpy()
    np.testing.assert_allclose(load(folders["stsb"]).logits(TEXTS, PAIRS), expected, atol=1e-5)
    assert load(folders["sst2"]).config.label_names == ["negative", "positive"]


def test_task_batch_sampler_keeps_tasks_apart_and_resumes():
    lengths = [np.arange(1, 11), np.arange(1, 8), np.arange(1, 5)]
    sampler = TaskBatchSampler(lengths, batch_size=3, seed=7)
    offsets = [0, 10, 17, 21]
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4 + 3 + 2
    for batch in batches:
        tasks = {int(np.searchsorted(offsets, i, side="right")) - 1 for i in batch}
        assert len(tasks) == 1
    assert sorted(i for batch in batches for i in batch) == list(range(21))
    assert sampler.epoch == 1
    next_epoch = list(sampler)
    assert next_epoch != batches  # a new order every epoch
    assert list(TaskBatchSampler(lengths, 3, seed=7)) == batches  # same seed, same order

    fresh = TaskBatchSampler(lengths, 3, seed=7)
    iterator = iter(fresh)
    consumed = [next(iterator) for _ in range(4)]
    state = fresh.state_dict()
    resumed = TaskBatchSampler(lengths, 3, seed=7)
    resumed.load_state_dict(state)
    assert consumed + list(resumed) == batches
    with pytest.raises(ConfigError, match="cannot resume"):
        TaskBatchSampler(lengths, 4, seed=7).load_state_dict(state)
    # the keys checkpoints hold: they must keep loading
    assert state == {
        "epoch": 0,
        "consumed": 4,
        "seed": 7,
        "batch_size": 3,
        "task_sizes": [10, 7, 4],
    }
    with pytest.raises(ConfigError, match="task_sizes"):
        TaskBatchSampler(lengths[:2], 3, seed=7).load_state_dict(state)
    with pytest.raises(ConfigError, match="outside an epoch of 9 batches"):
        TaskBatchSampler(lengths, 3, seed=7).load_state_dict({**state, "consumed": 10})
    inside = TaskBatchSampler(lengths, 3, seed=7)
    inside.load_state_dict(state)
    inside.set_epoch(0)  # a training loop calls this at the top of the epoch: position kept
    assert consumed + list(inside) == batches


def test_collate_refuses_mixed_tasks(tiny_tokenizer):
    encoded = encode_for_student(
        bilstm_model(tiny_tokenizer).task_model("sst2"), tiny_tokenizer, TEXTS, None, 24
    )
    first = DistillationDataset(encoded, None, None, 0)
    second = DistillationDataset(encoded, None, None, 1)
    with pytest.raises(ConfigError, match="mixes examples of tasks"):
        collate_items([first[0], second[1]], tiny_tokenizer.pad_id)


def test_config_validation():
    good = MultiTeacherConfig(teachers={"sst2": ["a", "b"], "stsb": ["c"]})
    assert good.combine == "probs" and good.loss == "kl"
    with pytest.raises(ConfigError, match="teachers must map"):
        MultiTeacherConfig()
    with pytest.raises(ConfigError, match="unknown task"):
        MultiTeacherConfig(teachers={"mnli": ["a"]})
    with pytest.raises(ConfigError, match="non-empty list"):
        MultiTeacherConfig(teachers={"sst2": []})
    with pytest.raises(ConfigError, match="combine"):
        MultiTeacherConfig(teachers={"sst2": ["a"]}, combine="vote")
    with pytest.raises(ConfigError, match="loss"):
        MultiTeacherConfig(teachers={"sst2": ["a"]}, loss="ce")
    with pytest.raises(ConfigError, match="hard_label_weight"):
        MultiTeacherConfig(teachers={"sst2": ["a"]}, hard_label_weight=1.0)
