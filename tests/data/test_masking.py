from __future__ import annotations

import numpy as np
import pytest
import torch

from distilkit.data.masking import (
    MaskingConfig,
    mask_tokens,
    span_deleted_views,
    token_masking_weights,
)

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL_IDS = [PAD, UNK, CLS, SEP, MASK]
VOCAB_SIZE = 199  # odd on purpose


def make_batch(batch: int = 64, seq: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] random ordinary ids [SEP] [PAD]...; rows have different lengths."""
    rng = np.random.default_rng(seed)
    input_ids = np.full((batch, seq), PAD, dtype=np.int64)
    attention_mask = np.zeros((batch, seq), dtype=np.int64)
    for row in range(batch):
        length = int(rng.integers(seq // 2, seq + 1))
        input_ids[row, :length] = rng.integers(len(SPECIAL_IDS), VOCAB_SIZE, length)
        input_ids[row, 0] = CLS
        input_ids[row, length - 1] = SEP
        attention_mask[row, :length] = 1
    return torch.from_numpy(input_ids), torch.from_numpy(attention_mask)


def run(input_ids, attention_mask, config, seed=0, token_weights=None):
    generator = torch.Generator().manual_seed(seed)
    return mask_tokens(
        input_ids,
        attention_mask,
        SPECIAL_IDS,
        MASK,
        VOCAB_SIZE,
        config,
        generator,
        token_weights=token_weights,
    )


def eligible_positions(input_ids, attention_mask):
    special = torch.isin(input_ids, torch.tensor(SPECIAL_IDS))
    return (attention_mask == 1) & ~special


@pytest.mark.parametrize("weighted", [False, True])
def test_bert_recipe_statistics(weighted):
    input_ids, attention_mask = make_batch()
    weights = token_masking_weights(np.ones(VOCAB_SIZE), 0.7, SPECIAL_IDS) if weighted else None
    masked, labels = run(input_ids, attention_mask, MaskingConfig(), token_weights=weights)
    eligible = eligible_positions(input_ids, attention_mask)
    targets = labels != -100
    n_eligible, n_targets = int(eligible.sum()), int(targets.sum())
    if weighted:
        assert n_targets == round(0.15 * n_eligible)
    else:
        # binomial(n_eligible, 0.15): the standard deviation of the share is ~0.003
        assert abs(n_targets / n_eligible - 0.15) < 0.012
    assert torch.equal(labels[targets], input_ids[targets])
    became_mask = (masked == MASK) & targets
    became_random = (masked != input_ids) & (masked != MASK) & targets
    kept = (masked == input_ids) & targets
    # shares of ~2,400 targets: standard deviations ~0.008 (80%) and ~0.006 (10%)
    assert abs(int(became_mask.sum()) / n_targets - 0.8) < 0.035
    assert abs(int(became_random.sum()) / n_targets - 0.1) < 0.025
    # a random replacement equal to the original (chance 1/194) also counts as kept
    assert abs(int(kept.sum()) / n_targets - 0.1) < 0.025
    assert torch.equal(masked[~targets], input_ids[~targets])


@pytest.mark.parametrize("weighted", [False, True])
def test_special_tokens_and_padding_are_never_targets(weighted):
    input_ids, attention_mask = make_batch(batch=16, seq=64, seed=3)
    input_ids[:, 5] = UNK
    attention_mask[:, -3:] = 0
    input_ids[0, -1] = 50  # a real id under attention_mask 0 still counts as padding
    weights = token_masking_weights(np.ones(VOCAB_SIZE), 0.7, SPECIAL_IDS) if weighted else None
    config = MaskingConfig(mlm_probability=1.0)
    masked, labels = run(input_ids, attention_mask, config, token_weights=weights)
    eligible = eligible_positions(input_ids, attention_mask)
    assert torch.equal(labels != -100, eligible)  # p = 1: every real token and nothing else
    assert torch.equal(masked[~eligible], input_ids[~eligible])


def test_random_replacements_are_ordinary_tokens():
    input_ids, attention_mask = make_batch(batch=32, seq=128)
    config = MaskingConfig(mlm_probability=1.0, mask_fraction=0.0, random_fraction=1.0)
    masked, labels = run(input_ids, attention_mask, config)
    replaced = masked[labels != -100]
    assert not torch.isin(replaced, torch.tensor(SPECIAL_IDS)).any()
    assert int(replaced.min()) >= 0 and int(replaced.max()) < VOCAB_SIZE
    # uniform over the 194 ordinary ids: every one of them shows up among ~6,000 draws
    assert len(torch.unique(replaced)) == VOCAB_SIZE - len(SPECIAL_IDS)


@pytest.mark.parametrize("weighted", [False, True])
def test_same_seed_same_masks_and_inputs_untouched(weighted):
    input_ids, attention_mask = make_batch(batch=8, seq=64)
    original_ids, original_mask = input_ids.clone(), attention_mask.clone()
    weights = token_masking_weights(np.ones(VOCAB_SIZE), 0.7, SPECIAL_IDS) if weighted else None
    first = run(input_ids, attention_mask, MaskingConfig(), seed=7, token_weights=weights)
    again = run(input_ids, attention_mask, MaskingConfig(), seed=7, token_weights=weights)
    other = run(input_ids, attention_mask, MaskingConfig(), seed=8, token_weights=weights)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])
    assert torch.equal(input_ids, original_ids) and torch.equal(attention_mask, original_mask)
    assert first[0].dtype == torch.long and first[1].dtype == torch.long


def test_smoothing_weights_formula():
    counts = np.array([900, 5, 0, 7, 1, 1000, 0, 3, 64, 12])
    weights = token_masking_weights(counts, smoothing=0.7, special_ids=[0, 4])
    expected = np.array([max(c, 1) ** -0.7 for c in counts])
    expected[[0, 4]] = 0.0
    expected /= expected.sum()
    assert weights.shape == (10,)
    assert torch.allclose(weights.double(), torch.from_numpy(expected), atol=1e-7)


def test_rare_tokens_are_masked_more_often():
    rng = np.random.default_rng(0)
    frequent, rare = 10, 11
    input_ids = torch.from_numpy(rng.choice([frequent, rare], size=(64, 256)))
    attention_mask = torch.ones_like(input_ids)
    counts = np.full(VOCAB_SIZE, 100)
    counts[frequent], counts[rare] = 10_000, 10
    weights = token_masking_weights(counts, 0.7, SPECIAL_IDS)
    _, labels = run(input_ids, attention_mask, MaskingConfig(smoothing=0.7), token_weights=weights)
    targets = labels != -100
    rate = {t: float(targets[input_ids == t].float().mean()) for t in (frequent, rare)}
    # weight ratio (10,000 / 10) ** 0.7 ~ 126: almost all 2,458 targets are rare tokens
    assert rate[rare] > 10 * rate[frequent]
    assert abs(rate[rare] - 2458 / int((input_ids == rare).sum())) < 0.02

    # equal weights: the share of targets per token follows its share of positions
    flat = token_masking_weights(np.ones(VOCAB_SIZE), 0.7, SPECIAL_IDS)
    _, labels = run(input_ids, attention_mask, MaskingConfig(), token_weights=flat)
    targets = labels != -100
    share = float((input_ids[targets] == rare).float().mean())
    assert abs(share - float((input_ids == rare).float().mean())) < 0.04


def test_config_and_input_validation():
    for bad in (
        {"mlm_probability": 0.0},
        {"mlm_probability": 1.5},
        {"mask_fraction": -0.1},
        {"mask_fraction": 0.8, "random_fraction": 0.3},
        {"smoothing": -1.0},
    ):
        with pytest.raises(ValueError):
            MaskingConfig(**bad)
    input_ids, attention_mask = make_batch(batch=2, seq=8)
    with pytest.raises(ValueError, match="same shape"):
        run(input_ids, attention_mask[:, :4], MaskingConfig())
    with pytest.raises(ValueError, match="outside"):
        run(input_ids + VOCAB_SIZE, attention_mask, MaskingConfig())
    with pytest.raises(ValueError, match="token_weights"):
        run(input_ids, attention_mask, MaskingConfig(), token_weights=torch.ones(5))
    with pytest.raises(ValueError, match="special_ids"):
        token_masking_weights(np.ones(4), 0.7, special_ids=[9])


def test_span_deleted_views_cut_one_contiguous_span_of_the_text():
    pad, cls, sep = 0, 2, 3
    rows = [[cls, *range(10, 18), sep], [cls, 20, sep], [cls, 30, 31, sep], [cls, sep]]
    width = 12
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    mask = (ids != pad).long()
    for seed in range(20):
        views, view_mask = span_deleted_views(
            ids, mask, 0.25, pad, torch.Generator().manual_seed(seed)
        )
        assert views.shape == ids.shape and view_mask.shape == ids.shape
        for row, view, real in zip(rows, views.tolist(), view_mask.tolist(), strict=True):
            length = sum(real)
            assert view[length:] == [pad] * (width - length) and real[:length] == [1] * length
            kept = view[:length]
            assert kept[0] == cls and kept[-1] == sep
            text, kept_text = row[1:-1], kept[1:-1]
            cut = {8: 2, 1: 0, 2: 1, 0: 0}[len(text)]  # round(0.25 n), at least 1, at most n - 1
            assert len(kept_text) == len(text) - cut
            # what is left is the text with one contiguous span removed
            assert any(text[:i] + text[i + cut :] == kept_text for i in range(len(text) - cut + 1))
    first = span_deleted_views(ids, mask, 0.25, pad, torch.Generator().manual_seed(1))
    again = span_deleted_views(ids, mask, 0.25, pad, torch.Generator().manual_seed(1))
    assert torch.equal(first[0], again[0])
    with pytest.raises(ValueError, match="between 0 and 1"):
        span_deleted_views(ids, mask, 1.0, pad, torch.Generator())
