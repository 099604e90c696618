from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from distilkit.train.losses import (
    LossInputError,
    attention_prob_kl,
    attention_score_mse,
    average_teacher_logits,
    cosine_hidden_loss,
    embedding_mse_loss,
    hard_label_loss,
    hidden_mse_loss,
    logit_mse_loss,
    mlm_loss,
    pair_cosine_loss,
    pkd_loss,
    regression_loss,
    self_attention_relation_loss,
    sentence_cosine_loss,
    similarity_structure_loss,
    soft_target_loss,
    weighted_sum,
)

# Odd sizes so that no two dimensions can be confused.
BATCH, SEQ, HIDDEN, HEADS, CLASSES = 3, 7, 10, 3, 5
TEACHER_HIDDEN = 16


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator(seed), dtype=torch.float64)


def padding_mask() -> torch.Tensor:
    """(BATCH, SEQ) 0/1: lengths 7, 4 and 2."""
    lengths = torch.tensor([SEQ, 4, 2])
    return (torch.arange(SEQ)[None, :] < lengths[:, None]).long()


def np_log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------------------------------
# soft_target_loss


def reference_kd(student: np.ndarray, teacher: np.ndarray, temperature: float) -> float:
    """Mean over rows of sum_c p_t (log p_t - log p_s) at temperature T, times T^2."""
    log_p_s = np_log_softmax(student / temperature)
    log_p_t = np_log_softmax(teacher / temperature)
    kl_rows = (np.exp(log_p_t) * (log_p_t - log_p_s)).sum(axis=-1)
    return float(kl_rows.mean() * temperature**2)


def test_soft_target_matches_kldivloss() -> None:
    student, teacher = randn(BATCH, SEQ, CLASSES, seed=1), randn(BATCH, SEQ, CLASSES, seed=2)
    temperature = 2.0
    kl = nn.KLDivLoss(reduction="batchmean")(
        torch.log_softmax(student.reshape(-1, CLASSES) / temperature, dim=-1),
        torch.softmax(teacher.reshape(-1, CLASSES) / temperature, dim=-1),
    )
    loss = soft_target_loss(student, teacher, temperature=temperature)
    torch.testing.assert_close(loss, kl * temperature**2)
    assert loss.item() == pytest.approx(reference_kd(student.numpy(), teacher.numpy(), 2.0))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0, 8.0])
def test_soft_target_is_kl_at_temperature_times_t_squared(temperature: float) -> None:
    student, teacher = randn(BATCH, CLASSES, seed=3), randn(BATCH, CLASSES, seed=4)
    loss = soft_target_loss(student, teacher, temperature=temperature)
    expected = reference_kd(student.numpy(), teacher.numpy(), temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_soft_target_gradient_scale_is_independent_of_large_temperature() -> None:
    teacher = randn(BATCH, CLASSES, seed=5) * 3

    def gradient_norm(temperature: float) -> float:
        student = (randn(BATCH, CLASSES, seed=6) * 3).requires_grad_()
        soft_target_loss(student, teacher, temperature=temperature).backward()
        return student.grad.norm().item()

    # Without the T^2 factor these would differ by a factor of 4.
    assert gradient_norm(40.0) == pytest.approx(gradient_norm(80.0), rel=0.02)


def test_soft_target_zero_when_student_equals_teacher() -> None:
    logits = randn(BATCH, SEQ, CLASSES, seed=7)
    assert soft_target_loss(logits.clone(), logits).item() == pytest.approx(0.0, abs=1e-12)


def test_soft_target_mask_ignores_unselected_positions() -> None:
    student, teacher = randn(BATCH, SEQ, CLASSES, seed=8), randn(BATCH, SEQ, CLASSES, seed=9)
    mask = padding_mask()
    loss = soft_target_loss(student, teacher, mask=mask)
    selected = mask.bool()
    expected = reference_kd(student[selected].numpy(), teacher[selected].numpy(), 2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    student_changed, teacher_changed = student.clone(), teacher.clone()
    student_changed[~selected] = 1e6
    teacher_changed[~selected] = float("nan")
    torch.testing.assert_close(soft_target_loss(student_changed, teacher_changed, mask=mask), loss)
    torch.testing.assert_close(soft_target_loss(student, teacher, mask=selected), loss)


def test_soft_target_empty_mask_gives_zero_with_gradient() -> None:
    student = randn(BATCH, SEQ, CLASSES, seed=10).requires_grad_()
    loss = soft_target_loss(student, randn(BATCH, SEQ, CLASSES, seed=11), mask=torch.zeros(3, 7))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


def test_soft_target_never_backprops_into_teacher() -> None:
    student = randn(BATCH, CLASSES, seed=12).requires_grad_()
    teacher = randn(BATCH, CLASSES, seed=13).requires_grad_()
    soft_target_loss(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_soft_target_bad_inputs() -> None:
    student, teacher = randn(BATCH, SEQ, CLASSES, seed=14), randn(BATCH, SEQ, CLASSES, seed=15)
    with pytest.raises(LossInputError, match="mask has shape"):
        soft_target_loss(student, teacher, mask=torch.ones(BATCH, SEQ, CLASSES))
    with pytest.raises(LossInputError, match="only 0 and 1"):
        soft_target_loss(student, teacher, mask=torch.full((BATCH, SEQ), 2))
    with pytest.raises(LossInputError, match="must match"):
        soft_target_loss(student, teacher[..., :4])
    with pytest.raises(LossInputError, match="temperature"):
        soft_target_loss(student, teacher, temperature=0.0)


# ---------------------------------------------------------------------------------------
# logit_mse_loss, mlm_loss, hard_label_loss, regression_loss


def test_logit_mse_matches_numpy_and_ignores_masked_positions() -> None:
    student, teacher = randn(BATCH, SEQ, CLASSES, seed=16), randn(BATCH, SEQ, CLASSES, seed=17)
    mask = padding_mask()
    selected = mask.bool().numpy()
    expected = ((student.numpy()[selected] - teacher.numpy()[selected]) ** 2).mean()
    loss = logit_mse_loss(student, teacher, mask=mask)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    student_changed = student.clone()
    student_changed[~mask.bool()] = -1e5
    torch.testing.assert_close(logit_mse_loss(student_changed, teacher, mask=mask), loss)
    unmasked = ((student.numpy() - teacher.numpy()) ** 2).mean()
    assert logit_mse_loss(student, teacher).item() == pytest.approx(unmasked, rel=1e-12)
    assert logit_mse_loss(teacher.clone(), teacher).item() == 0.0


def test_mlm_loss_matches_cross_entropy_with_ignore_index() -> None:
    vocab = 11
    logits = randn(BATCH, SEQ, vocab, seed=18)
    labels = torch.randint(0, vocab, (BATCH, SEQ), generator=generator(19))
    labels[torch.rand(BATCH, SEQ, generator=generator(20)) < 0.6] = -100
    labels[0, 0] = 4  # at least one labelled position
    reference = nn.CrossEntropyLoss(ignore_index=-100)(logits.reshape(-1, vocab), labels.view(-1))
    torch.testing.assert_close(mlm_loss(logits, labels), reference)


def test_mlm_loss_custom_ignore_index_and_no_labels() -> None:
    logits = randn(BATCH, SEQ, 11, seed=21).requires_grad_()
    labels = torch.full((BATCH, SEQ), -1)
    loss = mlm_loss(logits, labels, ignore_index=-1)
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(LossInputError, match=r"\[0, 11\)"):
        mlm_loss(logits, torch.full((BATCH, SEQ), 11))
    with pytest.raises(LossInputError, match="labels have shape"):
        mlm_loss(logits, torch.zeros(BATCH, dtype=torch.long))


def test_hard_label_loss_matches_numpy() -> None:
    logits = randn(BATCH, CLASSES, seed=22)
    labels = torch.tensor([4, 0, 2])
    log_probs = np_log_softmax(logits.numpy())
    expected = -np.mean([log_probs[i, labels[i]] for i in range(BATCH)])
    assert hard_label_loss(logits, labels).item() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(LossInputError, match="integer class ids"):
        hard_label_loss(logits, labels.double())
    with pytest.raises(LossInputError, match=r"\(batch, classes\)"):
        hard_label_loss(logits, labels[:2])


def test_regression_loss_matches_numpy() -> None:
    predictions, targets = randn(BATCH, 1, seed=23), randn(BATCH, seed=24)
    expected = ((predictions.numpy()[:, 0] - targets.numpy()) ** 2).mean()
    assert regression_loss(predictions, targets).item() == pytest.approx(expected, rel=1e-12)
    assert regression_loss(predictions[:, 0], targets).item() == pytest.approx(expected)
    with pytest.raises(LossInputError, match="predictions have shape"):
        regression_loss(randn(BATCH, 2, seed=25), targets)


# ---------------------------------------------------------------------------------------
# cosine_hidden_loss, hidden_mse_loss, embedding_mse_loss


def test_cosine_hidden_matches_cosine_embedding_loss_on_real_tokens() -> None:
    student, teacher = randn(BATCH, SEQ, HIDDEN, seed=26), randn(BATCH, SEQ, HIDDEN, seed=27)
    mask = padding_mask()
    selected = mask.bool()
    reference = nn.CosineEmbeddingLoss()(
        student[selected], teacher[selected], torch.ones(int(selected.sum()))
    )
    loss = cosine_hidden_loss(student, teacher, mask)
    torch.testing.assert_close(loss, reference)
    student_changed = student.clone()
    student_changed[~selected] = randn(int((~selected).sum()), HIDDEN, seed=28) * 100
    torch.testing.assert_close(cosine_hidden_loss(student_changed, teacher, mask), loss)
    # Cosine ignores length: a scaled teacher is a perfect target.
    assert cosine_hidden_loss(teacher * 3.5, teacher, mask).item() == pytest.approx(0, abs=1e-12)


def test_cosine_hidden_width_mismatch() -> None:
    with pytest.raises(LossInputError, match="width is 10 but teacher hidden width is 16"):
        cosine_hidden_loss(
            randn(BATCH, SEQ, HIDDEN, seed=29),
            randn(BATCH, SEQ, TEACHER_HIDDEN, seed=30),
            padding_mask(),
        )


def test_hidden_mse_matches_numpy_over_real_tokens_and_features() -> None:
    student, teacher = randn(BATCH, SEQ, HIDDEN, seed=31), randn(BATCH, SEQ, HIDDEN, seed=32)
    mask = padding_mask()
    selected = mask.bool().numpy()
    expected = ((student.numpy()[selected] - teacher.numpy()[selected]) ** 2).mean()
    loss = hidden_mse_loss(student, teacher, mask)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    teacher_changed = teacher.clone()
    teacher_changed[~mask.bool()] = 1e8
    torch.testing.assert_close(hidden_mse_loss(student, teacher_changed, mask), loss)
    full = ((student.numpy() - teacher.numpy()) ** 2).mean()
    assert hidden_mse_loss(student, teacher).item() == pytest.approx(full, rel=1e-12)


def test_hidden_mse_with_projection() -> None:
    torch.manual_seed(0)  # only for nn.Linear's initialisation
    projection = nn.Linear(HIDDEN, TEACHER_HIDDEN).double()
    student = randn(BATCH, SEQ, HIDDEN, seed=33)
    teacher = randn(BATCH, SEQ, TEACHER_HIDDEN, seed=34)
    mask = padding_mask()
    weight = projection.weight.detach().numpy()
    bias = projection.bias.detach().numpy()
    projected = student.numpy() @ weight.T + bias
    selected = mask.bool().numpy()
    expected = ((projected[selected] - teacher.numpy()[selected]) ** 2).mean()
    loss = hidden_mse_loss(student, teacher, mask, projection=projection)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0


def test_hidden_mse_width_mismatch_says_pass_a_projection() -> None:
    with pytest.raises(LossInputError, match="pass a projection"):
        hidden_mse_loss(randn(BATCH, SEQ, HIDDEN, seed=35), randn(BATCH, SEQ, 16, seed=36))


def test_embedding_mse_is_hidden_mse() -> None:
    student, teacher = randn(BATCH, SEQ, HIDDEN, seed=37), randn(BATCH, SEQ, HIDDEN, seed=38)
    mask = padding_mask()
    torch.testing.assert_close(
        embedding_mse_loss(student, teacher, mask), hidden_mse_loss(student, teacher, mask)
    )


def test_hidden_losses_empty_mask_and_teacher_detached() -> None:
    student = randn(BATCH, SEQ, HIDDEN, seed=39).requires_grad_()
    teacher = randn(BATCH, SEQ, HIDDEN, seed=40).requires_grad_()
    empty = torch.zeros(BATCH, SEQ, dtype=torch.bool)
    for loss_fn in (cosine_hidden_loss, hidden_mse_loss):
        assert loss_fn(student, teacher, empty).item() == 0.0
        loss_fn(student, teacher, padding_mask()).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------
# sentence_cosine_loss, similarity_structure_loss (mean-pooled sentence vectors)


def numpy_mean_pooled(hidden: torch.Tensor) -> np.ndarray:
    """Loop over the batch: the average of each row's real tokens."""
    lengths = padding_mask().sum(dim=1).tolist()
    return np.stack([hidden[i, :n].numpy().mean(axis=0) for i, n in enumerate(lengths)])


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_sentence_cosine_matches_numpy_and_ignores_padding() -> None:
    student, teacher = randn(BATCH, SEQ, HIDDEN, seed=90), randn(BATCH, SEQ, HIDDEN, seed=91)
    mask = padding_mask()
    expected = np.mean(
        1 - (unit(numpy_mean_pooled(student)) * unit(numpy_mean_pooled(teacher))).sum(axis=1)
    )
    loss = sentence_cosine_loss(student, teacher, mask)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    student_changed = student.clone()
    student_changed[~mask.bool()] = 1e6
    torch.testing.assert_close(sentence_cosine_loss(student_changed, teacher, mask), loss)
    # Per-token differences that cancel in the average leave it at zero.
    shuffled = teacher.clone()
    shuffled[0] = teacher[0].flip(0)  # row 0 has no padding: same mean
    assert sentence_cosine_loss(shuffled * 2, teacher, mask).item() == pytest.approx(0, abs=1e-12)
    assert cosine_hidden_loss(shuffled, teacher, mask).item() > 0.1


def test_similarity_structure_matches_numpy_and_allows_other_widths() -> None:
    student = randn(BATCH, SEQ, HIDDEN, seed=92)
    teacher = randn(BATCH, SEQ, TEACHER_HIDDEN, seed=93)
    mask = padding_mask()
    student_sim = unit(numpy_mean_pooled(student)) @ unit(numpy_mean_pooled(student)).T
    teacher_sim = unit(numpy_mean_pooled(teacher)) @ unit(numpy_mean_pooled(teacher)).T
    off_diagonal = ~np.eye(BATCH, dtype=bool)
    expected = ((student_sim - teacher_sim)[off_diagonal] ** 2).mean()
    loss = similarity_structure_loss(student, teacher, mask)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    teacher_changed = teacher.clone()
    teacher_changed[~mask.bool()] = -1e6
    torch.testing.assert_close(similarity_structure_loss(student, teacher_changed, mask), loss)
    # A rotated and scaled copy of the teacher has the same similarity structure.
    rotation, _ = torch.linalg.qr(randn(TEACHER_HIDDEN, TEACHER_HIDDEN, seed=94))
    assert similarity_structure_loss(3 * teacher @ rotation, teacher, mask).item() == (
        pytest.approx(0, abs=1e-12)
    )
    single = similarity_structure_loss(student[:1], teacher[:1], mask[:1])
    assert single.item() == 0.0


def test_sentence_losses_keep_teacher_detached_and_check_shapes() -> None:
    student = randn(BATCH, SEQ, HIDDEN, seed=95).requires_grad_()
    teacher = randn(BATCH, SEQ, HIDDEN, seed=96).requires_grad_()
    (
        sentence_cosine_loss(student, teacher, padding_mask())
        + similarity_structure_loss(student, teacher, padding_mask())
    ).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    with pytest.raises(LossInputError, match="project first"):
        sentence_cosine_loss(student, randn(BATCH, SEQ, TEACHER_HIDDEN, seed=97), padding_mask())
    with pytest.raises(LossInputError, match="must agree on batch and sequence length"):
        similarity_structure_loss(student, randn(BATCH, SEQ - 1, HIDDEN, seed=98), padding_mask())


# ---------------------------------------------------------------------------------------
# attention_score_mse, attention_prob_kl


def masked_scores(seed: int, heads: int, fill: float) -> torch.Tensor:
    """(BATCH, heads, SEQ, SEQ) scores whose padded keys and queries hold ``fill``."""
    scores = randn(BATCH, heads, SEQ, SEQ, seed=seed)
    real = padding_mask().bool()
    pairs = real[:, None, :, None] & real[:, None, None, :]
    return scores.masked_fill(~pairs, fill)


def reference_score_mse(student: torch.Tensor, teacher: torch.Tensor) -> float:
    """Explicit loops over the real (query, key) pairs."""
    lengths = padding_mask().sum(dim=1).tolist()
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for h in range(student.shape[1]):
            for q in range(lengths[b]):
                for k in range(lengths[b]):
                    total += (student[b, h, q, k].item() - teacher[b, h, q, k].item()) ** 2
                    count += 1
    return total / count


@pytest.mark.parametrize(("student_fill", "teacher_fill"), [(-1e4, float("-inf")), (-1e9, -1e4)])
def test_attention_score_mse_ignores_padded_pairs(student_fill: float, teacher_fill: float) -> None:
    student = masked_scores(41, HEADS, student_fill).requires_grad_()
    teacher = masked_scores(42, HEADS, teacher_fill)
    loss = attention_score_mse(student, teacher, padding_mask())
    clean_student = masked_scores(41, HEADS, 0.0)
    clean_teacher = masked_scores(42, HEADS, 0.0)
    assert loss.item() == pytest.approx(reference_score_mse(clean_student, clean_teacher))
    loss.backward()
    assert torch.isfinite(student.grad).all()
    real = padding_mask().bool()
    padded_pairs = ~(real[:, None, :, None] & real[:, None, None, :]).expand_as(student)
    assert (student.grad[padded_pairs] == 0).all()


def test_attention_score_mse_zero_for_equal_scores_with_inf_padding() -> None:
    scores = masked_scores(43, HEADS, float("-inf"))
    assert attention_score_mse(scores.clone(), scores, padding_mask()).item() == 0.0


def test_attention_score_mse_head_mismatch() -> None:
    student = masked_scores(44, 2, -1e4)
    teacher = masked_scores(45, HEADS, float("-inf"))
    with pytest.raises(LossInputError, match=r"2 attention heads but teacher has 3.*average_heads"):
        attention_score_mse(student, teacher, padding_mask())
    loss = attention_score_mse(student, teacher, padding_mask(), average_heads=True)
    clean_student = masked_scores(44, 2, 0.0).mean(dim=1, keepdim=True)
    clean_teacher = masked_scores(45, HEADS, 0.0).mean(dim=1, keepdim=True)
    assert loss.item() == pytest.approx(reference_score_mse(clean_student, clean_teacher))


def test_attention_shape_errors() -> None:
    scores = masked_scores(46, HEADS, 0.0)
    with pytest.raises(LossInputError, match=r"\(batch, heads, seq, seq\)"):
        attention_score_mse(scores[0], scores[0], padding_mask())
    with pytest.raises(LossInputError, match="mask has shape"):
        attention_score_mse(scores, scores, padding_mask()[:, :5])
    with pytest.raises(LossInputError, match="square"):
        attention_prob_kl(scores, scores[..., :5], padding_mask())


def reference_prob_kl(student: torch.Tensor, teacher: torch.Tensor) -> float:
    """Explicit loops: KL per real query row over real keys, mean over heads and queries."""
    lengths = padding_mask().sum(dim=1).tolist()
    total, rows = 0.0, 0
    for b in range(student.shape[0]):
        n = lengths[b]
        for h in range(student.shape[1]):
            for q in range(n):
                p_t = teacher[b, h, q, :n].numpy()
                p_s = student[b, h, q, :n].numpy()
                total += float((p_t * (np.log(p_t) - np.log(p_s))).sum())
                rows += 1
    return total / rows


def test_attention_prob_kl_matches_loops_and_ignores_padded_queries() -> None:
    student_probs = torch.softmax(masked_scores(47, HEADS, float("-inf")), dim=-1)
    teacher_probs = torch.softmax(masked_scores(48, HEADS, -1e4), dim=-1)
    # Padded query rows of the -inf student are NaN (softmax of all -inf): must not leak.
    assert torch.isnan(student_probs).any()
    student_probs.requires_grad_()
    loss = attention_prob_kl(student_probs, teacher_probs, padding_mask())
    assert loss.item() == pytest.approx(reference_prob_kl(student_probs.detach(), teacher_probs))
    loss.backward()
    assert torch.isfinite(student_probs.grad).all()
    # Second reference: torch's KLDivLoss on each item's real (query, key) block.
    lengths = padding_mask().sum(dim=1).tolist()
    kl_sum = sum(
        nn.KLDivLoss(reduction="sum")(
            student_probs.detach()[b, :, :n, :n].log(), teacher_probs[b, :, :n, :n]
        )
        for b, n in enumerate(lengths)
    )
    assert loss.item() == pytest.approx(kl_sum.item() / (HEADS * sum(lengths)))


def test_attention_prob_kl_zero_for_equal_maps_and_head_averaging() -> None:
    probs = torch.softmax(masked_scores(49, HEADS, -1e4), dim=-1)
    assert attention_prob_kl(probs.clone(), probs, padding_mask()).item() == pytest.approx(
        0.0, abs=1e-12
    )
    student = torch.softmax(masked_scores(50, 2, -1e4), dim=-1)
    with pytest.raises(LossInputError, match="average_heads"):
        attention_prob_kl(student, probs, padding_mask())
    loss = attention_prob_kl(student, probs, padding_mask(), average_heads=True)
    expected = reference_prob_kl(student.mean(dim=1, keepdim=True), probs.mean(dim=1, keepdim=True))
    assert loss.item() == pytest.approx(expected)


# ---------------------------------------------------------------------------------------
# pkd_loss


def reference_pkd(student: np.ndarray, teacher: np.ndarray) -> float:
    student_unit = student / np.linalg.norm(student, axis=-1, keepdims=True)
    teacher_unit = teacher / np.linalg.norm(teacher, axis=-1, keepdims=True)
    return float(((student_unit - teacher_unit) ** 2).sum(axis=-1).mean())


def test_pkd_loss_matches_numpy() -> None:
    layers = 5
    student, teacher = randn(BATCH, layers, HIDDEN, seed=51), randn(BATCH, layers, HIDDEN, seed=52)
    expected = reference_pkd(student.numpy(), teacher.numpy())
    assert pkd_loss(student, teacher).item() == pytest.approx(expected, rel=1e-12)
    assert pkd_loss(student[:, 2], teacher[:, 2]).item() == pytest.approx(
        reference_pkd(student[:, 2].numpy(), teacher[:, 2].numpy()), rel=1e-12
    )
    torch.testing.assert_close(
        pkd_loss(student[:, :1], teacher[:, :1]), pkd_loss(student[:, 0], teacher[:, 0])
    )


def test_pkd_loss_is_scale_invariant_and_zero_for_parallel_vectors() -> None:
    student, teacher = randn(BATCH, 4, HIDDEN, seed=53), randn(BATCH, 4, HIDDEN, seed=54)
    student_scale = torch.rand(BATCH, 4, 1, generator=generator(55), dtype=torch.float64) * 9 + 0.1
    teacher_scale = torch.rand(BATCH, 4, 1, generator=generator(56), dtype=torch.float64) * 9 + 0.1
    torch.testing.assert_close(
        pkd_loss(student * student_scale, teacher * teacher_scale), pkd_loss(student, teacher)
    )
    assert pkd_loss(teacher * 2.5, teacher).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(LossInputError, match="project the student"):
        pkd_loss(student, randn(BATCH, 4, TEACHER_HIDDEN, seed=57))


# ---------------------------------------------------------------------------------------
# weighted_sum


def test_weighted_sum_value_and_zero_weight_skips_term() -> None:
    losses = {
        "soft_target": torch.tensor(1.5),
        "mlm": torch.tensor(0.25),
        "cosine_hidden": torch.tensor(float("nan")),
    }
    weights = {"soft_target": 5.0, "mlm": 2.0, "cosine_hidden": 0.0}
    assert weighted_sum(losses, weights).item() == pytest.approx(5 * 1.5 + 2 * 0.25)
    assert weighted_sum({"mlm": torch.tensor(3.0)}, {"mlm": 0.0}).item() == 0.0


def test_weighted_sum_errors_name_the_key() -> None:
    losses = {"soft_target": torch.tensor(1.0), "mlm": torch.tensor(2.0)}
    with pytest.raises(LossInputError, match=r"no weight for loss.*'mlm'"):
        weighted_sum(losses, {"soft_target": 1.0})
    with pytest.raises(LossInputError, match=r"'mlmm'.*name no loss"):
        weighted_sum(losses, {"soft_target": 1.0, "mlm": 1.0, "mlmm": 2.0})
    with pytest.raises(LossInputError, match="'mlm' must be finite and >= 0"):
        weighted_sum(losses, {"soft_target": 1.0, "mlm": -1.0})
    with pytest.raises(LossInputError, match="scalar"):
        weighted_sum({"mlm": torch.ones(2)}, {"mlm": 1.0})


def test_weighted_sum_gradient() -> None:
    a = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    weighted_sum({"a": a * a, "b": b}, {"a": 0.5, "b": 4.0}).backward()
    assert a.grad.item() == pytest.approx(2.0) and b.grad.item() == pytest.approx(4.0)


# ---------------------------------------------------------------------------------------
# average_teacher_logits


def np_softmax(x: np.ndarray) -> np.ndarray:
    return np.exp(np_log_softmax(x))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.5])
def test_average_teacher_probs_equal_reference_mean(temperature: float) -> None:
    teachers = [randn(BATCH, SEQ, CLASSES, seed=s) * 2 for s in (60, 61, 62)]
    weights = [0.5, 1.5, 2.0]
    averaged = average_teacher_logits(
        teachers, mode="probs", temperature=temperature, weights=weights
    )
    mean_probs = sum(
        w / sum(weights) * np_softmax(t.numpy() / temperature)
        for w, t in zip(weights, teachers, strict=True)
    )
    np.testing.assert_allclose(averaged.numpy(), temperature * np.log(mean_probs), rtol=1e-10)
    np.testing.assert_allclose(
        torch.softmax(averaged / temperature, dim=-1).numpy(), mean_probs, rtol=1e-10
    )


def test_average_teacher_logits_mode_is_weighted_mean() -> None:
    teachers = [randn(BATCH, CLASSES, seed=s) for s in (63, 64)]
    averaged = average_teacher_logits(teachers, mode="logits", weights=[1.0, 3.0])
    expected = 0.25 * teachers[0].numpy() + 0.75 * teachers[1].numpy()
    np.testing.assert_allclose(averaged.numpy(), expected, rtol=1e-12)


def test_average_teacher_zero_weight_drops_teacher() -> None:
    teachers = [randn(BATCH, CLASSES, seed=s) for s in (65, 66)]
    averaged = average_teacher_logits(teachers, temperature=2.0, weights=[0.0, 1.0])
    np.testing.assert_allclose(
        torch.softmax(averaged / 2.0, dim=-1).numpy(), np_softmax(teachers[1].numpy() / 2.0)
    )


def test_one_teacher_reduces_to_plain_kd() -> None:
    student, teacher = randn(BATCH, SEQ, CLASSES, seed=67), randn(BATCH, SEQ, CLASSES, seed=68)
    for mode in ("probs", "logits"):
        averaged = average_teacher_logits([teacher], mode=mode, temperature=2.0)
        torch.testing.assert_close(
            soft_target_loss(student, averaged, temperature=2.0),
            soft_target_loss(student, teacher, temperature=2.0),
        )
    assert torch.equal(average_teacher_logits([teacher], mode="logits"), teacher)


def test_average_teacher_logits_is_detached_and_checks_inputs() -> None:
    teacher = randn(BATCH, CLASSES, seed=69).requires_grad_()
    assert not average_teacher_logits([teacher, teacher * 2]).requires_grad
    with pytest.raises(LossInputError, match="at least one teacher"):
        average_teacher_logits([])
    with pytest.raises(LossInputError, match="'mean'"):
        average_teacher_logits([teacher], mode="mean")
    with pytest.raises(LossInputError, match="teacher 1 logits have shape"):
        average_teacher_logits([teacher, teacher[:, :4]])
    with pytest.raises(LossInputError, match="2 weights for 1 teachers"):
        average_teacher_logits([teacher], weights=[1.0, 1.0])
    with pytest.raises(LossInputError, match="not all 0"):
        average_teacher_logits([teacher], weights=[0.0])


# ---------------------------------------------------------------------------------------
# self_attention_relation_loss (MiniLMv2)


def reference_relation_kl(student: np.ndarray, teacher: np.ndarray, heads: int) -> float:
    """Per sequence of real tokens only: mean over heads and queries of
    KL(softmax(t t^T / sqrt(d)) || softmax(s s^T / sqrt(d))) summed over keys."""
    total, rows = 0.0, 0
    for side_s, side_t in zip(student, teacher, strict=True):
        for h in range(heads):
            relations = []
            for side in (side_s, side_t):
                d = side.shape[-1] // heads
                x = side[:, h * d : (h + 1) * d]
                relations.append(np_log_softmax(x @ x.T / np.sqrt(d)))
            log_s, log_t = relations
            total += float((np.exp(log_t) * (log_t - log_s)).sum())
            rows += side_s.shape[0]
    return total / rows


def test_relation_loss_matches_a_per_sequence_reference_and_ignores_padding() -> None:
    mask = padding_mask()
    lengths = mask.sum(1).tolist()
    student = randn(BATCH, SEQ, 12, seed=31)
    teacher = randn(BATCH, SEQ, 18, seed=32)  # other width: only seq x seq relations meet
    loss = self_attention_relation_loss(student, teacher, mask, relation_heads=3)
    expected = reference_relation_kl(
        [student[i, :n].numpy() for i, n in enumerate(lengths)],
        [teacher[i, :n].numpy() for i, n in enumerate(lengths)],
        heads=3,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    # Whatever the padded positions hold changes nothing.
    noise = randn(BATCH, SEQ, 12, seed=33) * 1e3
    padded_student = torch.where(mask[..., None].bool(), student, noise)
    assert self_attention_relation_loss(padded_student, teacher, mask, 3).item() == (
        pytest.approx(loss.item(), rel=1e-12)
    )
    # Batched equals one sequence at a time, weighted by its real queries.
    singles = [
        self_attention_relation_loss(
            student[i : i + 1, :n], teacher[i : i + 1, :n], mask[i : i + 1, :n], 3
        ).item()
        * n
        for i, n in enumerate(lengths)
    ]
    assert loss.item() == pytest.approx(sum(singles) / sum(lengths), rel=1e-9)


def test_relation_loss_is_zero_for_equal_relations_and_has_gradients() -> None:
    mask = padding_mask()
    teacher = randn(BATCH, SEQ, 12, seed=34)
    assert self_attention_relation_loss(teacher.clone(), teacher, mask, 4).item() == (
        pytest.approx(0.0, abs=1e-12)
    )
    student = randn(BATCH, SEQ, 12, seed=35).requires_grad_()
    loss = self_attention_relation_loss(student, teacher, mask, 4)
    assert loss.item() > 0
    loss.backward()
    assert torch.isfinite(student.grad).all()
    assert student.grad[~mask.bool()].abs().max() == 0  # padding gets no gradient


def test_relation_loss_errors_name_the_problem() -> None:
    mask = padding_mask()
    with pytest.raises(LossInputError, match="not divisible by relation_heads=5"):
        self_attention_relation_loss(
            randn(BATCH, SEQ, 12, seed=1), randn(BATCH, SEQ, 15, seed=2), mask, 5
        )
    with pytest.raises(LossInputError, match="agree in batch and sequence"):
        self_attention_relation_loss(
            randn(BATCH, SEQ, 12, seed=1), randn(BATCH, SEQ - 1, 12, seed=2), mask, 3
        )
    with pytest.raises(LossInputError, match="at least 1"):
        self_attention_relation_loss(
            randn(BATCH, SEQ, 12, seed=1), randn(BATCH, SEQ, 12, seed=2), mask, 0
        )


# ---------------------------------------------------------------------------------------
# pair_cosine_loss


def test_pair_cosine_loss_matches_numpy_and_allows_other_widths() -> None:
    student_a, student_b = randn(5, HIDDEN, seed=41), randn(5, HIDDEN, seed=42)
    teacher_a, teacher_b = randn(5, TEACHER_HIDDEN, seed=43), randn(5, TEACHER_HIDDEN, seed=44)

    def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))

    expected = np.mean(
        (
            cosines(student_a.numpy(), student_b.numpy())
            - cosines(teacher_a.numpy(), teacher_b.numpy())
        )
        ** 2
    )
    loss = pair_cosine_loss(student_a, student_b, teacher_a, teacher_b)
    assert loss.item() == pytest.approx(float(expected), rel=1e-12)
    # Zero when the student's pair cosines equal the teacher's (here: the same vectors scaled).
    assert pair_cosine_loss(3 * teacher_a, 2 * teacher_b, teacher_a, teacher_b).item() == (
        pytest.approx(0.0, abs=1e-12)
    )
    with pytest.raises(LossInputError, match="pairs but the teacher"):
        pair_cosine_loss(student_a, student_b, teacher_a[:4], teacher_b[:4])
    with pytest.raises(LossInputError, match="one shape"):
        pair_cosine_loss(student_a, student_b[:4], teacher_a, teacher_b)


def test_matryoshka_similarity_loss_matches_its_formula() -> None:
    from distilkit.train.losses import matryoshka_similarity_loss

    generator = torch.Generator().manual_seed(3)
    student = torch.randn(5, 11, generator=generator, requires_grad=True)
    teacher = torch.randn(5, 7, generator=generator)
    dims = [11, 6, 2]
    expected = 0.0
    for d in dims:
        prefix = student.detach()[:, :d].numpy()
        prefix = prefix / np.linalg.norm(prefix, axis=1, keepdims=True)  # renormalised
        unit = teacher.numpy() / np.linalg.norm(teacher.numpy(), axis=1, keepdims=True)
        errors = [
            (prefix[i] @ prefix[j] - unit[i] @ unit[j]) ** 2
            for i in range(5)
            for j in range(5)
            if i != j
        ]
        expected += np.mean(errors) / len(dims)
    loss = matryoshka_similarity_loss(student, teacher, dims)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert student.grad is not None and student.grad[:, 6:].abs().sum() > 0
    scaled = matryoshka_similarity_loss(student * 3.0, teacher, dims)  # renormalised: same
    assert scaled.item() == pytest.approx(loss.item(), rel=1e-5)
    with pytest.raises(LossInputError, match="Matryoshka"):
        matryoshka_similarity_loss(student, teacher, [12])
