"""Early exit: branches, batched adaptive inference, curves, threshold choice, training, files.

The reference for adaptive inference is the plain model (threshold 0) and
:func:`simulate_exits` on every classifier's logits from the normal backbone forward
(an independent code path); batched inference is checked against one example at a time.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from early_exit_helpers import TEXTS, classifier, early_exit_model
from scipy.stats import entropy as scipy_entropy

from distilkit.methods.early_exit.curves import (
    accuracy_vs_layers,
    add_wall_clock,
    collect_layer_logits,
    pick_threshold,
    plot_curve,
    simulate_exits,
)
from distilkit.methods.early_exit.model import (
    BRANCHES_FILE,
    SETTINGS_FILE,
    BranchConfig,
    EarlyExitError,
    EarlyExitModel,
    has_branches,
    normalized_entropy,
)
from distilkit.methods.early_exit.objectives import SelfDistillationObjective, train_branches
from distilkit.model.modeling import TransformerModel
from distilkit.train.trainer import TrainingConfig


@pytest.fixture(params=["bert", "distilbert"])
def layout(request) -> str:
    return request.param


def inputs(tokenizer, texts=TEXTS) -> dict[str, torch.Tensor]:
    return tokenizer(texts).model_inputs()


# ----------------------------------------------------------------------------- entropy
def test_normalized_entropy_matches_scipy():
    logits = torch.tensor([[0.0, 0.0, 0.0], [2.0, -1.0, 0.5], [30.0, 0.0, 0.0]])
    expected = [
        scipy_entropy(torch.softmax(row.double(), -1).numpy()) / math.log(3) for row in logits
    ]
    assert torch.allclose(normalized_entropy(logits).double(), torch.tensor(expected), atol=1e-6)
    assert float(normalized_entropy(logits)[0]) == pytest.approx(1.0, abs=1e-6)


# ----------------------------------------------------------------------------- inference
def test_threshold_zero_runs_every_layer_and_equals_the_normal_forward(tiny_tokenizer, layout):
    model = early_exit_model(layout)
    batch = inputs(tiny_tokenizer)
    assert not bool(batch["attention_mask"].all())  # padded rows are part of the test
    for context in (torch.inference_mode, torch.no_grad):
        with context():
            out = model(**batch, threshold=0.0)
            reference = model.model(**batch).logits
        assert out.exit_layers.tolist() == [4] * len(TEXTS)
        assert torch.allclose(out.logits, reference, atol=1e-6, rtol=0)


def test_threshold_one_exits_at_the_first_layer(tiny_tokenizer, layout):
    model = early_exit_model(layout)
    batch = inputs(tiny_tokenizer)
    with torch.inference_mode():
        out = model(**batch, threshold=1.0)
        first_branch = model.layer_logits(**batch)[0]
    assert out.exit_layers.tolist() == [1] * len(TEXTS)
    assert torch.allclose(out.logits, first_branch, atol=1e-5, rtol=0)
    assert torch.allclose(out.entropy, normalized_entropy(first_branch), atol=1e-5)


def thresholds_with_mixed_exits(model: EarlyExitModel, batch) -> list[float]:
    """The median entropy of each branch: half the examples still running are sure
    enough at that branch (fewer if earlier ones left), so the running batch shrinks."""
    with torch.inference_mode():
        entropies = normalized_entropy(model.layer_logits(**batch)[:-1])  # (L - 1, n)
    return [float(row.quantile(0.5)) for row in entropies]  # 12 texts: between two


def test_batched_early_exit_equals_one_example_at_a_time(tiny_tokenizer, layout):
    model = early_exit_model(layout)
    batch = inputs(tiny_tokenizer)
    thresholds = thresholds_with_mixed_exits(model, batch)
    for threshold in thresholds:
        with torch.inference_mode():
            together = model(**batch, threshold=threshold)
            alone = [model(**inputs(tiny_tokenizer, [t]), threshold=threshold) for t in TEXTS]
        assert together.exit_layers.tolist() == [int(o.exit_layers) for o in alone]
        assert together.predictions.tolist() == [int(o.predictions) for o in alone]
        assert torch.allclose(together.logits, torch.cat([o.logits for o in alone]), atol=1e-5)
        if threshold == thresholds[0]:  # half leave after block 1, the rest run on
            assert 1 in together.exit_layers.tolist()
            assert len(set(together.exit_layers.tolist())) >= 2


def test_adaptive_inference_equals_simulation_from_all_layer_logits(tiny_tokenizer, layout):
    model = early_exit_model(layout)
    batch = inputs(tiny_tokenizer)
    with torch.inference_mode():
        layer_logits = model.layer_logits(**batch).numpy()
    for threshold in [0.0, *thresholds_with_mixed_exits(model, batch), 1.0]:
        with torch.inference_mode():
            out = model(**batch, threshold=threshold)
        logits, layers = simulate_exits(layer_logits, threshold)
        assert out.exit_layers.tolist() == layers.tolist()
        assert np.allclose(out.logits.numpy(), logits, atol=1e-5)


def test_exited_rows_take_their_padding_columns_with_them(tiny_tokenizer):
    """A long text that is sure after block 1 leaves; a shorter one runs on without the
    columns only the long one needed, and ends as it does alone."""
    model = early_exit_model()
    with torch.inference_mode():
        first = normalized_entropy(model.layer_logits(**inputs(tiny_tokenizer))[0])
    lengths = inputs(tiny_tokenizer)["attention_mask"].sum(1)
    pairs = [
        (long, short)
        for long in range(len(TEXTS))
        for short in range(len(TEXTS))
        if lengths[long] > lengths[short] + 3 and first[long] < first[short]
    ]
    long, short = pairs[0]
    threshold = float((first[long] + first[short]) / 2)
    with torch.inference_mode():
        out = model(**inputs(tiny_tokenizer, [TEXTS[long], TEXTS[short]]), threshold=threshold)
        short_alone = model(**inputs(tiny_tokenizer, [TEXTS[short]]), threshold=threshold)
    assert int(out.exit_layers[0]) == 1
    assert int(out.exit_layers[1]) == int(short_alone.exit_layers[0]) > 1
    assert torch.allclose(out.logits[1], short_alone.logits[0], atol=1e-5)


def test_bf16_early_exit_runs_and_mostly_agrees(tiny_tokenizer):
    model = early_exit_model()
    batch = inputs(tiny_tokenizer)
    with torch.inference_mode():
        fp32 = model(**batch, threshold=0.0)
        model.to(torch.bfloat16)
        bf16 = model(**batch, threshold=0.0)
    assert bf16.logits.dtype == torch.float32
    assert torch.allclose(bf16.logits, fp32.logits, atol=0.1)


def test_bad_models_and_inputs_are_clear_errors(tiny_config, tiny_tokenizer):
    with pytest.raises(EarlyExitError, match="sequence-classification"):
        EarlyExitModel(TransformerModel(tiny_config))
    with pytest.raises(EarlyExitError, match="regression"):
        EarlyExitModel(classifier(num_labels=1))
    model = early_exit_model()
    batch = inputs(tiny_tokenizer)
    with pytest.raises(EarlyExitError, match=r"\[0, 1\]"):
        model(**batch, threshold=1.5)
    with pytest.raises(EarlyExitError, match="batch, seq"):
        model(batch["input_ids"][0])
    with pytest.raises(EarlyExitError, match="token ids"):
        model(batch["input_ids"] + 1000)
    with pytest.raises(EarlyExitError, match="num_heads"):
        BranchConfig(width=21, num_heads=2)


# ----------------------------------------------------------------------------- curves
# Hand-made logits for 3 layers x 4 examples x 2 classes. Entropies are set by the
# margin; example 3 is never sure before the last layer.
SURE, UNSURE = [4.0, 0.0], [0.1, 0.0]
HAND_LOGITS = np.array(
    [
        [SURE, UNSURE, UNSURE, UNSURE],  # layer 1: example 0 is sure
        [SURE, [0.0, 4.0], UNSURE, UNSURE],  # layer 2: example 1 is sure (class 1)
        [SURE, [0.0, 4.0], [0.0, 1.0], [1.0, 0.0]],  # final head
    ],
    dtype=np.float32,
)


def test_simulation_and_curve_on_hand_made_logits():
    sure = float(normalized_entropy(torch.tensor(SURE)))
    unsure = float(normalized_entropy(torch.tensor(UNSURE)))
    assert sure < 0.5 < unsure
    logits, layers = simulate_exits(HAND_LOGITS, 0.5)
    assert layers.tolist() == [1, 2, 3, 3]
    assert logits.argmax(-1).tolist() == [0, 1, 1, 0]
    labels = [0, 1, 0, 0]
    points = accuracy_vs_layers(HAND_LOGITS, labels, [0.0, 0.5, 1.0])
    assert [p.average_layers for p in points] == [3.0, 9 / 4, 1.0]
    assert [p.layer_speedup for p in points] == [1.0, 3 / (9 / 4), 3.0]
    assert [p.accuracy for p in points] == [0.75, 0.75, 0.75]  # layer 1 says class 0 for all
    assert [p.agreement for p in points] == [1.0, 1.0, 0.5]
    assert points[1].exits_per_layer == [1, 1, 2]


def test_pick_threshold_is_the_smallest_that_reaches_the_target(tiny_tokenizer):
    model = early_exit_model()
    layer_logits = collect_layer_logits(model, tiny_tokenizer, TEXTS * 3, batch_size=5)
    grid = np.linspace(0, 1, 4001)
    speedups = np.array([p.layer_speedup for p in accuracy_vs_layers(layer_logits, None, grid)])
    for target in (1.0, 1.3, 2.0, 2.5, 4.0):
        threshold = pick_threshold(layer_logits, target)
        assert 4 / simulate_exits(layer_logits, threshold)[1].mean() >= target
        # brute force: the picked threshold makes the same exits as the smallest grid
        # threshold that reaches the target (it sits mid-way in the interval of those)
        smallest = grid[np.argmax(speedups >= target)]
        assert smallest <= threshold + 1e-9
        same = (
            simulate_exits(layer_logits, smallest)[1] == simulate_exits(layer_logits, threshold)[1]
        )
        assert same.all()
    with pytest.raises(EarlyExitError, match="between 1 and 4"):
        pick_threshold(layer_logits, 4.5)


def test_collect_layer_logits_keeps_the_text_order(tiny_tokenizer):
    model = early_exit_model()
    collected = collect_layer_logits(model, tiny_tokenizer, TEXTS, batch_size=4)
    with torch.inference_mode():
        direct = model.layer_logits(**inputs(tiny_tokenizer)).numpy()
    assert np.allclose(collected, direct, atol=1e-5)


def test_wall_clock_and_plot(tiny_tokenizer, tmp_path):
    model = early_exit_model()
    layer_logits = collect_layer_logits(model, tiny_tokenizer, TEXTS)
    points = accuracy_vs_layers(layer_logits, [0, 1, 2] * 4, [0.0, 0.5, 1.0])
    batches = [tiny_tokenizer(TEXTS[:6]), tiny_tokenizer(TEXTS[6:])]
    reference = add_wall_clock(points, model, batches, repeats=1)
    assert reference > 0
    assert all(p.seconds > 0 and p.wall_clock_speedup > 0 for p in points)
    path = plot_curve(points, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- files
def test_save_and_load_round_trip(tmp_path, tiny_tokenizer):
    model = early_exit_model("distilbert")
    model.threshold = 0.4
    folder = model.save(tmp_path / "model", tokenizer=tiny_tokenizer)
    assert has_branches(folder)
    assert json.loads((folder / SETTINGS_FILE).read_text())["threshold"] == 0.4
    loaded = EarlyExitModel.from_folder(folder)
    assert loaded.threshold == 0.4
    batch = inputs(tiny_tokenizer)
    with torch.inference_mode():
        assert torch.equal(loaded.layer_logits(**batch), model.layer_logits(**batch))
    # branches of another model are refused
    other = EarlyExitModel(classifier("distilbert", layers=3), BranchConfig(width=22))
    with pytest.raises(EarlyExitError, match="another model"):
        other.load_branches(folder)
    (folder / BRANCHES_FILE).unlink()
    with pytest.raises(EarlyExitError, match="train-early-exit"):
        EarlyExitModel.from_folder(folder)


# ----------------------------------------------------------------------------- training
def test_objective_is_the_mean_kl_of_the_branches_to_the_final_classifier(tiny_tokenizer):
    model = early_exit_model()
    objective = SelfDistillationObjective(model, tiny_tokenizer, temperature=2.0).train()
    assert not objective.early_exit.model.training  # the frozen model stays in eval mode
    batch = inputs(tiny_tokenizer)
    loss = objective(batch, torch.Generator())["kl"]
    with torch.no_grad():
        layer_logits = model.layer_logits(**batch)
    expected = torch.stack(
        [
            # KL(teacher || student) * T^2, written out
            (
                torch.softmax(layer_logits[-1] / 2, -1)
                * (
                    torch.log_softmax(layer_logits[-1] / 2, -1)
                    - torch.log_softmax(layer_logits[index] / 2, -1)
                )
            )
            .sum(-1)
            .mean()
            * 4
            for index in range(3)
        ]
    ).mean()
    assert torch.allclose(loss, expected, atol=1e-5)
    loss.backward()
    assert all(p.grad is None for p in model.model.parameters())
    assert all(p.grad is not None for p in model.branches.parameters())


def test_training_moves_the_branches_towards_the_final_classifier(tiny_tokenizer, tmp_path):
    model = EarlyExitModel(classifier(), BranchConfig(width=22))
    frozen = {k: v.clone() for k, v in model.model.state_dict().items()}
    corpus = TEXTS * 8
    before = SelfDistillationObjective(model, tiny_tokenizer).evaluate([inputs(tiny_tokenizer)])
    training = TrainingConfig(
        max_steps=40,
        batch_size=8,
        learning_rate=5e-3,
        warmup_fraction=0.0,
        progress=False,
        log_every=10,
        checkpoint_every=40,
        eval_every=40,
    )
    result = train_branches(
        model, tiny_tokenizer, corpus, tmp_path / "run", training, eval_texts=TEXTS
    )
    assert result.step == 40
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").open()]
    losses = [r["loss/kl"] for r in log if "loss/kl" in r]
    assert losses[-1] < 0.5 * losses[0]
    after = SelfDistillationObjective(model, tiny_tokenizer).evaluate([inputs(tiny_tokenizer)])
    assert sum(after.values()) >= sum(before.values())
    for name, tensor in model.model.state_dict().items():
        assert torch.equal(tensor, frozen[name]), f"{name} changed: the backbone must stay frozen"
    # the checkpoint is a loadable early-exit folder with the trained branches
    checkpoint = result.checkpoint / "model"
    loaded = EarlyExitModel.from_folder(checkpoint)
    batch = inputs(tiny_tokenizer)
    with torch.inference_mode():
        assert torch.allclose(loaded.layer_logits(**batch), model.layer_logits(**batch))
