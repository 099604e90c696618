"""Task distillation: every loss against its formula, layer maps through the dry run, clear
setup errors, the teacher gate, and the staged job end to end on tiny data."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch
from task_helpers import (
    save_tiny_model,
    tiny_model_config,
    tiny_tokenizer_in,
    write_sst2,
    write_stsb,
)

from distilkit.data.augment.operations import AugmentConfig
from distilkit.methods.finetune.job import FineTuneConfig, run_finetune
from distilkit.methods.task.job import (
    StageConfig,
    TaskDistillConfig,
    add_augmented_copies,
    run_task_distill,
)
from distilkit.methods.task.objectives import (
    DistillOptions,
    DistillSetupError,
    TaskDistillation,
    TaskDistillWeights,
    TeacherGateError,
    dry_run,
    prediction_loss,
    teacher_gate,
)
from distilkit.model.checkpoint import load_model
from distilkit.model.modeling import TransformerModel
from distilkit.settings import ConfigError, from_dict, to_dict
from distilkit.tasks.features import DataSettings, load_split
from distilkit.tasks.ner import IGNORE_INDEX
from distilkit.tasks.registry import get_task
from distilkit.train.trainer import TrainingConfig

SST2 = get_task("sst2")
LABELS = ["negative", "positive"]
QUICK = {"batch_size": 16, "learning_rate": 1e-3, "progress": False, "log_every": 5}


# ----------------------------------------------------------------------------- helpers
def model(num_layers: int, seed: int, head="sequence_classification", **overrides):
    """A random tiny model with a task head; weights ~ N(0, 0.2) so layers differ."""
    if head == "sequence_classification":
        overrides.setdefault("label_names", LABELS)
        overrides.setdefault("num_labels", len(overrides["label_names"] or [0]))
    config = tiny_model_config(num_layers, head, **overrides)
    generator = torch.Generator().manual_seed(seed)
    built = TransformerModel(config)
    with torch.no_grad():
        for name, parameter in built.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.copy_(1 + 0.1 * noise if "norm.weight" in name else 0.2 * noise)
    return built.eval()


def batch(lengths=(9, 5, 12, 7), seed: int = 0, kind: str = "classification", extra_padding=0):
    """A padded batch of random ids [CLS] ... [SEP]: (4, max length + extra_padding)."""
    rng = np.random.default_rng(seed)
    width = max(lengths) + extra_padding
    input_ids = torch.zeros(len(lengths), width, dtype=torch.int64)
    attention_mask = torch.zeros_like(input_ids)
    for row, n in enumerate(lengths):
        input_ids[row, :n] = torch.from_numpy(rng.integers(5, 99, size=n))
        input_ids[row, 0], input_ids[row, n - 1] = 2, 3
        attention_mask[row, :n] = 1
    out = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "index": torch.arange(len(lengths)),
    }
    if kind == "classification":
        out["labels"] = torch.tensor([0, 1, 1, 0])
    elif kind == "regression":
        out["labels"] = torch.tensor([0.5, 2.0, 4.5, 1.0])
    elif kind == "token_classification":  # first sub-words: every other real token
        labels = torch.full_like(input_ids, -100)
        for row, n in enumerate(lengths):
            labels[row, 1 : n - 1 : 2] = torch.from_numpy(
                rng.integers(0, 3, size=len(range(1, n - 1, 2)))
            )
        out["labels"] = labels
    else:
        out["start_positions"] = torch.tensor([1, 2, 3, 1])
        out["end_positions"] = torch.tensor([2, 3, 5, 4])
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def kl_rows(student: np.ndarray, teacher: np.ndarray, temperature: float) -> np.ndarray:
    """KL(teacher || student) per row at temperature T, times T^2 (Hinton)."""
    p_t, p_s = softmax(teacher / temperature), softmax(student / temperature)
    return temperature**2 * (p_t * (np.log(p_t) - np.log(p_s))).sum(-1)


def as_np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().double().numpy()


def masked_mse(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean of (a - b)^2 over the masked-in tokens (B, T) and the features."""
    return float(((a - b) ** 2)[mask].mean())


# ----------------------------------------------------------------------------- prediction losses
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_classification_kl_is_hinton_kd_with_t_squared(temperature):
    generator = torch.Generator().manual_seed(1)
    student, teacher = (
        torch.randn(6, 3, generator=generator),
        torch.randn(6, 3, generator=generator),
    )
    loss = prediction_loss("classification", student, teacher, {}, "kl", temperature)
    expected = kl_rows(as_np(student), as_np(teacher), temperature).mean()
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    unscaled = kl_rows(as_np(student), as_np(teacher), temperature).mean() / temperature**2
    assert float(loss) / unscaled == pytest.approx(temperature**2, rel=1e-5)


def test_mse_logit_loss_and_regression_default():
    generator = torch.Generator().manual_seed(2)
    student, teacher = (
        torch.randn(5, 3, generator=generator),
        torch.randn(5, 3, generator=generator),
    )
    loss = prediction_loss("classification", student, teacher, {}, "mse", 3.0)
    assert float(loss) == pytest.approx(((as_np(student) - as_np(teacher)) ** 2).mean(), rel=1e-6)
    scores_s, scores_t = student[:, :1], teacher[:, :1]
    auto = prediction_loss("regression", scores_s, scores_t, {}, "auto", 3.0)  # MSE, no T
    assert float(auto) == pytest.approx(((as_np(scores_s) - as_np(scores_t)) ** 2).mean(), rel=1e-6)


def test_ner_kd_counts_first_subwords_only():
    data = batch(kind="token_classification")
    generator = torch.Generator().manual_seed(3)
    shape = (*data["input_ids"].shape, 3)
    student, teacher = (
        torch.randn(shape, generator=generator),
        torch.randn(shape, generator=generator),
    )
    loss = prediction_loss("token_classification", student, teacher, data, "kl", 2.0)
    selected = (data["labels"] != -100).numpy()
    expected = kl_rows(as_np(student)[selected], as_np(teacher)[selected], 2.0).mean()
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # continuation pieces, special tokens and padding do not count, whatever they hold
    noisy = student.clone()
    noisy[torch.from_numpy(~selected)] += 100 * torch.randn(int((~selected).sum()), 3)
    assert float(prediction_loss("token_classification", noisy, teacher, data, "kl", 2.0)) == (
        pytest.approx(float(loss), rel=1e-6)
    )
    mse = prediction_loss("token_classification", student, teacher, data, "mse", 2.0)
    diff = (as_np(student) - as_np(teacher))[selected]
    assert float(mse) == pytest.approx((diff**2).mean(), rel=1e-6)


def test_qa_kd_distills_start_and_end_over_real_tokens():
    data = batch(kind="question_answering")
    generator = torch.Generator().manual_seed(4)
    shape = (*data["input_ids"].shape, 2)
    student, teacher = (
        torch.randn(shape, generator=generator),
        torch.randn(shape, generator=generator),
    )
    loss = prediction_loss("question_answering", student, teacher, data, "kl", 3.0)
    lengths = data["attention_mask"].sum(1).tolist()
    per_side = []
    for side in (0, 1):  # start, end: each a distribution over the window's real tokens
        rows = [
            kl_rows(as_np(student)[b, :n, side], as_np(teacher)[b, :n, side], 3.0)
            for b, n in enumerate(lengths)
        ]
        per_side.append(np.mean(rows))
    assert float(loss) == pytest.approx(np.mean(per_side), rel=1e-5)
    padded = ~data["attention_mask"].bool()
    noisy = student.clone()
    noisy[padded] = 50.0  # a huge logit on padding would dominate a softmax that saw it
    assert float(prediction_loss("question_answering", noisy, teacher, data, "kl", 3.0)) == (
        pytest.approx(float(loss), rel=1e-6)
    )


# ----------------------------------------------------------------------------- intermediate losses
def _reference_intermediate(objective, teacher, student, data) -> dict[str, float]:
    """TinyBERT and PKD losses recomputed in float64 numpy from the models' outputs."""
    mask = data["attention_mask"].bool().numpy()
    inputs = (data["input_ids"], data["attention_mask"], data["token_type_ids"])
    with torch.no_grad():
        t = teacher(*inputs, output_hidden_states=True, output_attention_scores=True)
        s = student(*inputs, output_hidden_states=True, output_attention_scores=True)

    def project(module, hidden):
        if module is None:
            return as_np(hidden)
        return as_np(hidden) @ as_np(module.weight).T + as_np(module.bias)

    pairs = [(m.student, m.teacher) for m in objective.layer_map.matches if m.student > 0]
    embedding = masked_mse(
        project(objective.embedding_projection, s.hidden_states[0]), as_np(t.hidden_states[0]), mask
    )
    hidden = np.mean(
        [
            masked_mse(
                project(objective.hidden_projection, s.hidden_states[m]),
                as_np(t.hidden_states[n]),
                mask,
            )
            for m, n in pairs
        ]
    )
    real_pairs = mask[:, None, :, None] & mask[:, None, None, :]  # (B, 1, query, key)
    attention = np.mean(
        [
            float(
                (
                    ((as_np(s.attention_scores[m - 1]) - as_np(t.attention_scores[n - 1])) ** 2)
                    * real_pairs
                ).sum()
                / (real_pairs.sum() * s.attention_scores[0].shape[1])
            )
            for m, n in pairs
        ]
    )
    student_cls = np.stack(
        [project(objective.hidden_projection, s.hidden_states[m])[:, 0] for m, _ in pairs], 1
    )
    teacher_cls = np.stack([as_np(t.hidden_states[n])[:, 0] for _, n in pairs], 1)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    patient = float(((unit(student_cls) - unit(teacher_cls)) ** 2).sum(-1).mean())
    return {"embedding": embedding, "hidden": hidden, "attention": attention, "patient": patient}


@pytest.mark.parametrize("student_width", [32, 24])
def test_tinybert_and_pkd_losses_match_their_formulas(student_width):
    teacher = model(4, seed=1)
    student = model(2, seed=2, hidden_size=student_width)
    weights = TaskDistillWeights(embedding=1, hidden=1, attention=1, patient=1)
    objective = TaskDistillation(teacher, student, SST2, None, weights, DistillOptions())
    assert objective.layer_map.to_list() == [[0, 0], [1, 2], [2, 4]]  # uniform 4 -> 2
    assert (objective.hidden_projection is None) == (student_width == 32)
    data = batch()
    with torch.no_grad():
        losses = objective(data, torch.Generator())
    expected = _reference_intermediate(objective, teacher, student, data)
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert float(losses[name]) == pytest.approx(value, rel=1e-4), name


def test_extra_padding_changes_no_loss():
    """Padded keys and padded tokens are ignored by every loss (attention-score MSE
    included: masked scores would otherwise leak in)."""
    teacher, student = model(4, seed=3), model(2, seed=4)
    weights = TaskDistillWeights(logits=1, hard=1, embedding=1, hidden=1, attention=1, patient=1)
    objective = TaskDistillation(teacher, student, SST2, None, weights, DistillOptions())
    with torch.no_grad():
        tight = objective(batch(), torch.Generator())
        loose = objective(batch(extra_padding=5), torch.Generator())
    for name in tight:
        assert float(loose[name]) == pytest.approx(float(tight[name]), rel=1e-4, abs=1e-6), name


def test_pkd_loss_ignores_vector_scale():
    teacher, student = model(4, seed=5), model(2, seed=6)
    options = DistillOptions(layer_map="skip")
    objective = TaskDistillation(
        teacher, student, SST2, None, TaskDistillWeights(patient=1), options
    )
    data = batch()
    with torch.no_grad():
        before = float(objective(data, torch.Generator())["patient"])
        # scaling the last LayerNorm of block 1 scales the vectors the patient loss reads
        student.backbone.layers[0].ffn_norm.weight.mul_(3.0)
        student.backbone.layers[0].ffn_norm.bias.mul_(3.0)
        after = float(objective(data, torch.Generator())["patient"])
    assert after == pytest.approx(before, rel=1e-4)


# ----------------------------------------------------------------------------- layer maps
EXPECTED_MAPS = {  # (teacher, student): uniform (with embeddings), PKD-Skip, PKD-Last
    (6, 3): ([[0, 0], [1, 2], [2, 4], [3, 6]], [[1, 2], [2, 4]], [[1, 4], [2, 5]]),
    (12, 6): (
        [[0, 0], [1, 2], [2, 4], [3, 6], [4, 8], [5, 10], [6, 12]],
        [[1, 2], [2, 4], [3, 6], [4, 8], [5, 10]],
        [[1, 7], [2, 8], [3, 9], [4, 10], [5, 11]],
    ),
    (12, 4): (
        [[0, 0], [1, 3], [2, 6], [3, 9], [4, 12]],
        [[1, 3], [2, 6], [3, 9]],
        [[1, 9], [2, 10], [3, 11]],
    ),
    (6, 2): ([[0, 0], [1, 3], [2, 6]], [[1, 3]], [[1, 5]]),
}
TEACHERS: dict[int, TransformerModel] = {}


def teacher_of_depth(depth: int) -> TransformerModel:
    if depth not in TEACHERS:
        TEACHERS[depth] = model(depth, seed=depth)
    return TEACHERS[depth]


@pytest.mark.parametrize(("depths"), sorted(EXPECTED_MAPS))
def test_automatic_maps_through_the_dry_run(depths):
    n_teacher, n_student = depths
    teacher, student = teacher_of_depth(n_teacher), model(n_student, seed=7)
    uniform, skip, last = EXPECTED_MAPS[depths]
    tinybert = TaskDistillWeights(embedding=1, hidden=1, attention=1)
    for kind, weights, expected in (
        ("uniform", tinybert, uniform),
        ("skip", TaskDistillWeights(logits=1, patient=1), skip),
        ("last", TaskDistillWeights(logits=1, patient=1), last),
    ):
        report = dry_run(
            teacher, student, SST2, None, weights, DistillOptions(layer_map=kind), batch()
        )
        assert report.layer_map.kind == kind
        assert report.layer_map.to_list() == expected, kind
        assert all(np.isfinite(v) for v in report.losses.values())
        assert set(report.losses) == set(weights.active())
        assert any(kind in line for line in report.lines)


def test_explicit_map_through_the_dry_run():
    pairs = [[0, 0], [1, 5], [2, 11]]
    options = DistillOptions(layer_map="explicit", layer_pairs=pairs)
    weights = TaskDistillWeights(embedding=1, hidden=1, attention=1, patient=1)
    report = dry_run(teacher_of_depth(12), model(2, seed=8), SST2, None, weights, options, batch())
    assert report.layer_map.to_list() == pairs
    assert "0->0, 1->5, 2->11" in str(report)


@pytest.mark.parametrize(
    ("overrides", "options", "weights", "phrases"),
    [
        (
            {},
            DistillOptions(layer_map="explicit", layer_pairs=[[0, 0], [4, 6]]),
            TaskDistillWeights(hidden=1),
            ["student index 4 is out of range", "3-layer student has indices 0..3"],
        ),
        (
            {},
            DistillOptions(layer_map="explicit", layer_pairs=[[1, 7]]),
            TaskDistillWeights(hidden=1),
            ["teacher index 7 is out of range", "6-layer teacher"],
        ),
        (
            {},
            DistillOptions(layer_map="explicit", layer_pairs=[[1, 0]]),
            TaskDistillWeights(attention=1),
            ["(student 1, teacher 0)", "index 0 is the embeddings"],
        ),
        (
            {"hidden_size": 24},
            DistillOptions(project=False),
            TaskDistillWeights(hidden=1),
            ["hidden width is 24", "teacher's is 32", "project=true"],
        ),
        (
            {"num_heads": 8},
            DistillOptions(),
            TaskDistillWeights(attention=1),
            ["student has 8 attention heads but the teacher 4", "average_attention_heads"],
        ),
        (
            {"label_names": ["a", "b", "c"]},
            DistillOptions(),
            TaskDistillWeights(logits=1),
            ["teacher predicts 2 labels but the student 3"],
        ),
        ({}, DistillOptions(layer_map="unifrom"), TaskDistillWeights(hidden=1), ["'unifrom'"]),
        ({}, DistillOptions(), TaskDistillWeights(), ["every loss weight is 0"]),
        ({}, DistillOptions(temperature=0.0), TaskDistillWeights(logits=1), ["temperature"]),
    ],
)
def test_setup_problems_are_clear_errors_in_the_dry_run(overrides, options, weights, phrases):
    student = model(3, seed=9, **overrides)
    with pytest.raises(DistillSetupError) as caught:
        dry_run(teacher_of_depth(6), student, SST2, None, weights, options, batch())
    message = str(caught.value)
    for phrase in phrases:
        assert phrase in message


def test_several_problems_are_reported_together_and_fixes_work():
    student = model(3, seed=10, hidden_size=24, num_heads=8)
    weights = TaskDistillWeights(hidden=1, attention=1)
    options = DistillOptions(project=False, layer_map="explicit", layer_pairs=[[5, 1]])
    with pytest.raises(DistillSetupError) as caught:
        dry_run(teacher_of_depth(6), student, SST2, None, weights, options, batch())
    message = str(caught.value)
    assert "hidden width is 24" in message and "8 attention heads" in message
    assert "student index 5 is out of range" in message
    fixed = DistillOptions(average_attention_heads=True)
    report = dry_run(teacher_of_depth(6), student, SST2, None, weights, fixed, batch())
    assert "learned projections 24->32 for: hidden" in str(report)


def test_regression_refuses_kl_and_task_heads_must_match():
    stsb = get_task("stsb")
    teacher = model(4, seed=11, label_names=None, num_labels=1)
    student = model(2, seed=12, label_names=None, num_labels=1)
    with pytest.raises(DistillSetupError, match="regression"):
        dry_run(
            teacher,
            student,
            stsb,
            None,
            TaskDistillWeights(logits=1),
            DistillOptions(logit_loss="kl"),
            batch(kind="regression"),
        )
    report = dry_run(
        teacher,
        student,
        stsb,
        None,
        TaskDistillWeights(logits=1),
        DistillOptions(),
        batch(kind="regression"),
    )
    assert report.losses["logits"] > 0
    ner_student = model(2, seed=13, head="token_classification", num_labels=2)
    with pytest.raises(DistillSetupError, match="student has head 'token_classification'"):
        dry_run(
            teacher_of_depth(6),
            ner_student,
            SST2,
            None,
            TaskDistillWeights(logits=1),
            DistillOptions(),
            batch(),
        )


def test_objective_checkpoint_round_trip_keeps_projections(tmp_path):
    tokenizer = tiny_tokenizer_in(tmp_path / "vocab")
    weights = TaskDistillWeights(logits=1, embedding=1, hidden=1)
    teacher = model(4, seed=14)
    first = TaskDistillation(teacher, model(2, seed=15, hidden_size=24), SST2, tokenizer, weights)
    first.save(tmp_path / "checkpoint")
    second = TaskDistillation(
        teacher, model(2, seed=16, hidden_size=24), SST2, tokenizer, weights, seed=1
    )
    assert not torch.equal(first.hidden_projection.weight, second.hidden_projection.weight)
    second.load(tmp_path / "checkpoint")
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


# ----------------------------------------------------------------------------- teacher gate
@pytest.fixture(scope="module")
def sst2_setup(tmp_path_factory):
    """Tiny SST-2 data, a 4-layer model fine-tuned on it (dev accuracy ~1) and its dev data."""
    root = tmp_path_factory.mktemp("tasks")
    write_sst2(root / "data")
    settings = DataSettings(data_root=str(root / "data"), max_len=64)
    base = save_tiny_model(root / "base", num_layers=4)
    config = FineTuneConfig(
        model=str(base), task="sst2", epochs=8, data=settings, training=TrainingConfig(**QUICK)
    )
    metrics = run_finetune(config, root / "teacher-run")
    teacher_folder = root / "teacher-run" / "model"
    tokenizer = tiny_tokenizer_in(root / "vocab")
    dev = load_split(SST2, "dev", tokenizer, settings)
    return {
        "root": root,
        "settings": settings,
        "teacher": teacher_folder,
        "dev": dev,
        "metrics": metrics,
    }


def test_gate_accepts_a_fine_tuned_teacher(sst2_setup):
    assert sst2_setup["metrics"]["best_dev"] >= 0.95
    checked = teacher_gate(load_model(sst2_setup["teacher"]), SST2, sst2_setup["dev"])
    assert checked["accuracy"] >= 0.95
    assert checked["chance"] == pytest.approx(0.5) and checked["threshold"] == pytest.approx(0.6)


def test_gate_refuses_an_untrained_teacher(sst2_setup):
    untrained = model(4, seed=17)
    with pytest.raises(TeacherGateError, match="does not look fine-tuned for sst2"):
        teacher_gate(untrained, SST2, sst2_setup["dev"])


def test_gate_refuses_a_label_order_mismatch(sst2_setup):
    teacher = load_model(sst2_setup["teacher"])
    teacher.config.label_names = ["positive", "negative"]
    with pytest.raises(TeacherGateError, match="the same names in another order"):
        teacher_gate(teacher, SST2, sst2_setup["dev"])
    teacher.config.label_names = ["bad", "good"]
    with pytest.raises(TeacherGateError, match=r"labels \['bad', 'good'\] do not match"):
        teacher_gate(teacher, SST2, sst2_setup["dev"])


def test_gate_flags_swapped_outputs_without_label_names(sst2_setup):
    teacher = load_model(sst2_setup["teacher"])
    teacher.config.label_names = None  # generic LABEL_0 / LABEL_1: only the score can tell
    with torch.no_grad():
        teacher.head.classifier.weight.copy_(teacher.head.classifier.weight.flip(0))
        teacher.head.classifier.bias.copy_(teacher.head.classifier.bias.flip(0))
    with pytest.raises(TeacherGateError, match="label order differs"):
        teacher_gate(teacher, SST2, sst2_setup["dev"])


def test_gate_refuses_a_teacher_without_the_task_head(sst2_setup):
    with pytest.raises(TeacherGateError, match="needs a 'sequence_classification' head"):
        teacher_gate(model(2, seed=18, head=None), SST2, sst2_setup["dev"])


# ----------------------------------------------------------------------------- the job
STAGE_DIRS = ("stage1-intermediate", "stage2-prediction")


def test_tinybert_job_runs_both_stages_and_resumes(sst2_setup, tmp_path, capsys):
    config = TaskDistillConfig(
        teacher=str(sst2_setup["teacher"]),
        task="sst2",
        method="tinybert",
        num_layers=2,
        epochs=2,
        data=sst2_setup["settings"],
        training=TrainingConfig(**QUICK),
    )
    metrics = run_task_distill(config, tmp_path / "run")
    assert [stage["stage"] for stage in metrics["stages"]] == ["intermediate", "prediction"]
    intermediate, prediction = metrics["stages"]
    assert intermediate["dev"] is None and prediction["dev"] == metrics["student"]["dev"]
    logs = [(tmp_path / "run" / stage / "train_log.jsonl").read_text() for stage in STAGE_DIRS]
    assert "eval/" not in logs[0] and "eval/accuracy" in logs[1]
    assert metrics["student"]["parameters"] < metrics["teacher"]["parameters"]
    student = load_model(tmp_path / "run" / "student")
    assert student.config.num_layers == 2 and student.config.label_names == LABELS
    saved = TaskDistillConfig.load(tmp_path / "run" / "task_distill_config.json")
    assert saved == config.resolved()
    assert saved.stages[0].weights == TaskDistillWeights(embedding=1, hidden=1, attention=1)
    assert saved.temperature == 1.0 and saved.layer_map == "uniform"
    output = capsys.readouterr().out
    assert "dry run ok" in output and "teacher dev accuracy" in output
    again = run_task_distill(config, tmp_path / "run")
    output = capsys.readouterr().out
    assert "already done" in output and "teacher gate passed before" in output
    assert "checking the teacher" not in output
    assert again["student"]["dev"] == metrics["student"]["dev"]
    assert again["teacher"] == metrics["teacher"]


def test_rerun_scores_the_teacher_again_when_its_weights_change(sst2_setup, tmp_path, capsys):
    teacher_dir = tmp_path / "teacher"
    shutil.copytree(sst2_setup["teacher"], teacher_dir)
    config = TaskDistillConfig(
        teacher=str(teacher_dir),
        task="sst2",
        num_layers=2,
        epochs=1,
        data=sst2_setup["settings"],
        training=TrainingConfig(**QUICK),
    )
    run_task_distill(config, tmp_path / "run")
    assert (tmp_path / "run" / "teacher_gate.json").is_file()
    capsys.readouterr()
    depth = load_model(teacher_dir).config.num_layers
    untrained = save_tiny_model(
        tmp_path / "untrained", num_layers=depth, head="sequence_classification", label_names=LABELS
    )
    shutil.copy(untrained / "model.safetensors", teacher_dir / "model.safetensors")
    with pytest.raises(TeacherGateError, match="does not look fine-tuned"):
        run_task_distill(config, tmp_path / "run")
    assert "checking the teacher" in capsys.readouterr().out


def test_pkd_job_with_a_narrower_student_folder(sst2_setup, tmp_path):
    narrow = save_tiny_model(tmp_path / "narrow", num_layers=2, hidden_size=24, seed=3)
    config = TaskDistillConfig(
        teacher=str(sst2_setup["teacher"]),
        task="sst2",
        method="pkd",
        student=str(narrow),
        epochs=2,
        data=sst2_setup["settings"],
        training=TrainingConfig(**QUICK),
    )
    metrics = run_task_distill(config, tmp_path / "run")
    stage = tmp_path / "run" / "stage1-pkd"
    assert (stage / "best" / "config.json").is_file()
    checkpoints = sorted((stage / "checkpoints").glob("step-*"))
    assert (checkpoints[-1] / "model" / "projections.safetensors").is_file()
    assert metrics["stages"][0]["final_losses"].keys() >= {"logits", "hard", "patient"}
    assert load_model(tmp_path / "run" / "student").config.hidden_size == 24


def test_job_refuses_an_untrained_teacher_before_training(sst2_setup, tmp_path):
    untrained = save_tiny_model(
        tmp_path / "untrained", num_layers=2, head="sequence_classification", label_names=LABELS
    )
    config = TaskDistillConfig(teacher=str(untrained), task="sst2", data=sst2_setup["settings"])
    with pytest.raises(TeacherGateError):
        run_task_distill(config, tmp_path / "run")
    assert not (tmp_path / "run" / "stage1-prediction").exists()


def test_config_rejects_misspelt_options():
    with pytest.raises(ConfigError, match="temprature"):
        from_dict(TaskDistillConfig, {"teacher": "t", "temprature": 2.0})
    with pytest.raises(ConfigError, match=r"stages\[0\]\.wieghts"):
        from_dict(
            TaskDistillConfig, {"teacher": "t", "method": "custom", "stages": [{"wieghts": {}}]}
        )
    with pytest.raises(ConfigError, match=r"stages\[0\]\.weights\.patinet"):
        from_dict(TaskDistillConfig, {"teacher": "t", "stages": [{"weights": {"patinet": 1}}]})
    with pytest.raises(ConfigError, match=r"data\.max_lenght"):
        from_dict(TaskDistillConfig, {"teacher": "t", "data": {"max_lenght": 64}})
    with pytest.raises(ConfigError, match="method"):
        TaskDistillConfig(teacher="t", method="tiny-bert")
    custom = from_dict(
        TaskDistillConfig,
        {
            "teacher": "t",
            "method": "custom",
            "hard_weight": 0.3,
            "stages": [{"name": "one", "weights": {"logits": 1}}],
        },
    )
    assert custom.resolved().stages == [
        StageConfig("one", 3.0, TaskDistillWeights(logits=1, hard=0.3))
    ]


def test_method_defaults_resolve_to_explicit_stages():
    logits = TaskDistillConfig(teacher="t", epochs=2).resolved()
    assert logits.temperature == 2.0
    assert logits.stages == [StageConfig("prediction", 2, TaskDistillWeights(logits=1))]
    pkd = TaskDistillConfig(teacher="t", method="pkd", layer_map="last").resolved()
    assert pkd.layer_map == "last" and pkd.temperature == 5.0
    assert pkd.stages[0].weights == TaskDistillWeights(logits=0.5, hard=0.5, patient=100)
    tinybert = TaskDistillConfig(teacher="t", method="tinybert", intermediate_epochs=5).resolved()
    assert [(s.name, s.epochs, s.keep_best) for s in tinybert.stages] == [
        ("intermediate", 5, False),
        ("prediction", 3.0, True),
    ]
    assert dataclasses.replace(tinybert, stages=None).resolved() == tinybert.resolved()


# ----------------------------------------------------------------------------- augmentation
def test_augmented_job_trains_on_originals_then_copies(sst2_setup, tmp_path, capsys):
    config = TaskDistillConfig(
        teacher=str(sst2_setup["teacher"]),
        task="sst2",
        num_layers=2,
        epochs=1,
        augment=True,
        augmentation=AugmentConfig(n_iter=2),
        data=sst2_setup["settings"],
        training=TrainingConfig(**QUICK),
    )
    metrics = run_task_distill(config, tmp_path / "run")
    assert metrics["train_examples"] == 160 and 0 < metrics["augmented_copies"] <= 320
    assert math.isfinite(metrics["stages"][0]["final_losses"]["logits"])
    assert metrics["stages"][0]["steps"] == math.ceil((160 + metrics["augmented_copies"]) / 16)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["augmented_copies"] == metrics["augmented_copies"]
    assert f"augmentation: {metrics['augmented_copies']:,} copies" in capsys.readouterr().out
    loaded = TaskDistillConfig.load(tmp_path / "run" / "task_distill_config.json")
    assert loaded == config.resolved() and loaded.augmentation.n_iter == 2


def test_augmented_copies_follow_the_originals_without_labels(tmp_path):
    write_stsb(tmp_path / "data", n_train=12)
    settings = DataSettings(data_root=str(tmp_path / "data"), max_len=64)
    stsb = get_task("stsb")
    tokenizer = tiny_tokenizer_in(tmp_path / "vocab")
    train = load_split(stsb, "train", tokenizer, settings)
    augmented = add_augmented_copies(train, tokenizer, settings, AugmentConfig(n_iter=3))
    assert augmented.features[:12] == train.features and augmented.examples[:12] == train.examples
    copies = augmented.features[12:]
    assert copies and all(math.isnan(feature["labels"]) for feature in copies)
    assert all(example.label is None for example in augmented.examples[12:])
    assert all(example.text_pair is not None for example in augmented.examples[12:])
    batch = augmented.collate([augmented[i] for i in (0, 12)])
    assert batch["labels"].dtype == torch.float32 and torch.isnan(batch["labels"][1])


def test_augmented_copies_of_a_classification_task_are_ignore_index(sst2_setup):
    tokenizer, settings = tiny_tokenizer_in(sst2_setup["root"] / "vocab"), sst2_setup["settings"]
    train = load_split(SST2, "train", tokenizer, settings, 10)
    augmented = add_augmented_copies(train, tokenizer, settings, AugmentConfig(n_iter=2))
    assert len(augmented) > 10
    assert [f["labels"] for f in augmented.features[10:]] == [IGNORE_INDEX] * (len(augmented) - 10)


def test_augment_config_errors_are_clear():
    with pytest.raises(ConfigError, match=r"stage\(s\) \['pkd'\].*hard_weight=0.*pkd"):
        TaskDistillConfig(teacher="t", method="pkd", augment=True)
    with pytest.raises(ConfigError, match=r"stage\(s\) \['prediction'\]"):
        TaskDistillConfig(teacher="t", augment=True, hard_weight=0.5)
    with pytest.raises(
        ConfigError, match=r"\['sst2', 'stsb'\] and task files of kind .*, not conll2003"
    ):
        TaskDistillConfig(teacher="t", task="conll2003", augment=True)
    with pytest.raises(ConfigError, match="not squad"):
        TaskDistillConfig(teacher="t", task="squad", augment=True)
    with pytest.raises(ConfigError, match=r"augmentation\.n_iters"):
        from_dict(TaskDistillConfig, {"teacher": "t", "augmentation": {"n_iters": 3}})
    pkd = TaskDistillConfig(teacher="t", method="pkd", augment=True, hard_weight=0).resolved()
    assert pkd.stages[0].weights == TaskDistillWeights(logits=0.5, patient=100)
    TaskDistillConfig(teacher="t", task="conll2003", hard_weight=0.5)  # no augment: fine


def test_augment_config_round_trips_through_json():
    stsb = TaskDistillConfig(teacher="t", task="stsb", augment=True).resolved()
    assert stsb.augmentation == AugmentConfig(n_iter=10)
    assert TaskDistillConfig(teacher="t", augment=True).resolved().augmentation.n_iter == 20
    assert TaskDistillConfig(teacher="t").resolved().augmentation is None
    for config in (stsb, TaskDistillConfig(teacher="t", augmentation={"n_iter": 3, "p_ng": 0.5})):
        again = from_dict(TaskDistillConfig, json.loads(json.dumps(to_dict(config))))
        assert again == config and isinstance(again.augmentation, AugmentConfig)
