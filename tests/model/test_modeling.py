"""The one-file model: equivalent execution paths agree, and each piece matches its formula."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel, pool, set_dropout, sinusoidal_table

LENGTHS = [7, 3, 12, 1, 9]


def make_model(config: ModelConfig, seed: int = 0) -> TransformerModel:
    """A tiny model with every parameter random (so biases and LayerNorms matter)."""
    torch.manual_seed(seed)
    model = TransformerModel(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            noise = torch.randn(parameter.shape, generator=generator) * 0.1
            parameter.copy_(noise + 1.0 if "norm.weight" in name else noise)
    return model.eval()


def padded_batch(
    lengths: list[int], vocab_size: int = 99, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ids ``(batch, max_len)`` padded with 0 on the right, their mask and segments."""
    generator = torch.Generator().manual_seed(seed)
    seq = max(lengths)
    input_ids = torch.zeros(len(lengths), seq, dtype=torch.long)
    attention_mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    token_type_ids = torch.zeros(len(lengths), seq, dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(5, vocab_size, (length,), generator=generator)
        attention_mask[row, :length] = 1
        token_type_ids[row, length // 2 : length] = 1
    return input_ids, attention_mask, token_type_ids


@pytest.fixture
def model(tiny_config: ModelConfig) -> TransformerModel:
    return make_model(tiny_config)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return padded_batch(LENGTHS)


# ----------------------------------------------------------------------------- equivalent paths
def test_batched_equals_one_by_one(model: TransformerModel, batch) -> None:
    input_ids, attention_mask, token_type_ids = batch
    with torch.no_grad():
        batched = model(input_ids, attention_mask, token_type_ids)
        for row, length in enumerate(LENGTHS):
            single = model(
                input_ids[row : row + 1, :length],
                attention_mask[row : row + 1, :length],
                token_type_ids[row : row + 1, :length],
            )
            assert torch.allclose(
                batched.last_hidden_state[row, :length], single.last_hidden_state[0], atol=1e-6
            )
            assert torch.allclose(batched.pooled_output[row], single.pooled_output[0], atol=1e-6)


@pytest.mark.parametrize("explicit", [False, True])
def test_extra_padding_changes_nothing(model: TransformerModel, batch, explicit: bool) -> None:
    input_ids, attention_mask, token_type_ids = batch
    extra = torch.zeros(5, 6, dtype=torch.long)  # six more [PAD] columns
    real = attention_mask.bool()
    with torch.no_grad():
        tight = model(input_ids, attention_mask, token_type_ids, output_attentions=explicit)
        loose = model(
            torch.cat([input_ids, extra], 1),
            torch.cat([attention_mask, extra], 1),
            torch.cat([token_type_ids, extra], 1),
            output_attentions=explicit,
        )
    loose_hidden = loose.last_hidden_state[:, :12]
    assert torch.allclose(tight.last_hidden_state[real], loose_hidden[real], atol=1e-6)
    assert torch.allclose(tight.pooled_output, loose.pooled_output, atol=1e-6)


def test_all_ones_mask_equals_no_mask(model: TransformerModel, batch) -> None:
    input_ids = batch[0][:, :1]  # every row has at least one token
    with torch.no_grad():
        with_mask = model(input_ids, torch.ones_like(input_ids)).last_hidden_state
        without = model(input_ids).last_hidden_state
    assert torch.equal(with_mask, without)


def test_fast_path_writes_zeros_at_padding(model: TransformerModel, batch) -> None:
    input_ids, attention_mask, token_type_ids = batch
    with torch.no_grad():
        out = model(input_ids, attention_mask, token_type_ids, output_hidden_states=True)
    padding = ~attention_mask.bool()
    assert bool((out.last_hidden_state[padding] == 0).all())
    for hidden in out.hidden_states[1:]:  # the embeddings output (index 0) is not unpadded
        assert bool((hidden[padding] == 0).all())


@pytest.mark.parametrize("layout", ["bert", "distilbert"])
def test_fast_path_equals_explicit_path(tiny_config: ModelConfig, batch, layout: str) -> None:
    if layout == "distilbert":
        tiny_config = dataclasses.replace(
            tiny_config, layout="distilbert", type_vocab_size=0, with_pooler=False
        )
    model = make_model(tiny_config)
    input_ids, attention_mask, token_type_ids = batch
    real = attention_mask.bool()
    with torch.no_grad():
        fast = model(input_ids, attention_mask, token_type_ids, output_hidden_states=True)
        explicit = model(
            input_ids, attention_mask, token_type_ids, output_hidden_states=True,
            output_attentions=True, output_attention_scores=True,
        )  # fmt: skip
    assert fast.attentions is None and fast.attention_scores is None
    assert len(fast.hidden_states) == len(explicit.hidden_states) == tiny_config.num_layers + 1
    assert len(explicit.attentions) == len(explicit.attention_scores) == tiny_config.num_layers
    for fast_layer, explicit_layer in zip(fast.hidden_states, explicit.hidden_states, strict=True):
        assert torch.allclose(fast_layer[real], explicit_layer[real], atol=1e-6)
    assert torch.equal(fast.hidden_states[-1], fast.last_hidden_state)
    assert torch.equal(explicit.hidden_states[-1], explicit.last_hidden_state)
    assert torch.allclose(fast.last_hidden_state[real], explicit.last_hidden_state[real], atol=1e-6)
    if layout == "bert":
        assert torch.allclose(fast.pooled_output, explicit.pooled_output, atol=1e-6)
    else:
        assert fast.pooled_output is None


def test_only_scores_requested_gives_no_probabilities(model: TransformerModel, batch) -> None:
    input_ids, attention_mask, _ = batch
    with torch.no_grad():
        out = model(input_ids, attention_mask, output_attention_scores=True)
    assert out.attentions is None and len(out.attention_scores) == 3


def test_gradients_of_fast_and_explicit_paths_agree(model: TransformerModel, batch) -> None:
    """Training runs through the unpadded fast path, so its backward must be right too."""
    input_ids, attention_mask, token_type_ids = batch
    real = attention_mask.bool()
    weights = torch.randn(int(real.sum()), 32, generator=torch.Generator().manual_seed(1))

    def gradients(**options) -> dict[str, torch.Tensor]:
        model.zero_grad()
        hidden = model(input_ids, attention_mask, token_type_ids, **options).last_hidden_state
        (hidden[real] * weights).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fast = gradients()
    explicit = gradients(output_attentions=True)
    assert fast.keys() == explicit.keys()
    assert "backbone.layers.0.attention.query.weight" in fast
    for name in fast:
        assert torch.allclose(fast[name], explicit[name], atol=1e-5), name


# ----------------------------------------------------------------------------- attention
def test_attention_probabilities_sum_to_one_over_real_keys(model: TransformerModel, batch) -> None:
    input_ids, attention_mask, _ = batch
    with torch.no_grad():
        out = model(input_ids, attention_mask, output_attentions=True)
    key_is_real = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    for probs in out.attentions:
        assert probs.shape == (5, 4, 12, 12)
        assert bool((probs.masked_select(~key_is_real.expand_as(probs)) == 0).all())
        assert torch.allclose(probs.sum(-1), torch.ones(5, 4, 12), atol=1e-6)


def test_attention_scores_equal_scaled_query_key_products(model: TransformerModel, batch) -> None:
    """Recompute layer 0's QK^T/sqrt(d) and softmax from the weights, independently."""
    input_ids, attention_mask, token_type_ids = batch
    with torch.no_grad():
        out = model(
            input_ids, attention_mask, token_type_ids, output_hidden_states=True,
            output_attentions=True, output_attention_scores=True,
        )  # fmt: skip
        attention = model.backbone.layers[0].attention
        x = out.hidden_states[0]  # (B, T, H)
        query = (x @ attention.query.weight.T + attention.query.bias).view(5, 12, 4, 8)
        key = (x @ attention.key.weight.T + attention.key.bias).view(5, 12, 4, 8)
        scores = torch.einsum("bqhd,bkhd->bhqk", query, key) / math.sqrt(8)
    assert torch.allclose(out.attention_scores[0], scores, atol=1e-5)
    masked = scores.masked_fill(~attention_mask.bool()[:, None, None, :], -math.inf)
    assert torch.allclose(out.attentions[0], masked.softmax(-1), atol=1e-6)


# ----------------------------------------------------------------------------- embeddings
def test_embedding_parts_sum_is_what_forward_normalises(model: TransformerModel, batch) -> None:
    input_ids, _, token_type_ids = batch
    embeddings = model.backbone.embeddings
    with torch.no_grad():
        for segments in (token_type_ids, None):
            parts = embeddings.parts(input_ids, segments)
            assert sorted(parts) == ["position", "token_type", "word"]
            for part in parts.values():
                assert part.shape == (5, 12, 32)
            total = parts["word"] + parts["position"] + parts["token_type"]
            assert torch.allclose(
                embeddings.layer_norm(total), embeddings(input_ids, segments), atol=1e-6
            )
        assert torch.equal(parts["word"][1, 0], embeddings.word_embeddings.weight[input_ids[1, 0]])
        assert torch.equal(parts["position"][3, 5], embeddings.position_embeddings.weight[5])


def test_distilbert_embeddings_have_no_token_type(tiny_config: ModelConfig, batch) -> None:
    config = dataclasses.replace(
        tiny_config, layout="distilbert", type_vocab_size=0, with_pooler=False
    )
    embeddings = make_model(config).backbone.embeddings
    input_ids = batch[0]
    with torch.no_grad():
        parts = embeddings.parts(input_ids)
        assert sorted(parts) == ["position", "word"]
        expected = embeddings.layer_norm(parts["word"] + parts["position"])
        assert torch.allclose(expected, embeddings(input_ids), atol=1e-6)


def sinusoid_reference(positions: int, dim: int) -> np.ndarray:
    """PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(p / 10000^(2i/d))."""
    table = np.zeros((positions, dim))
    for p in range(positions):
        for j in range(dim):
            angle = p / 10000 ** (2 * (j // 2) / dim)
            table[p, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return table


@pytest.mark.parametrize("dim", [32, 33])
def test_sinusoidal_table_matches_formula(dim: int) -> None:
    table = sinusoidal_table(64, dim)
    assert table.shape == (64, dim) and table.dtype == torch.float32
    assert np.allclose(table.numpy(), sinusoid_reference(64, dim), atol=1e-6)


def test_sinusoidal_positions_are_fixed_and_survive_init(tiny_config: ModelConfig) -> None:
    config = dataclasses.replace(tiny_config, sinusoidal_positions=True)
    model = make_model(config)
    positions = model.backbone.embeddings.position_embeddings.weight
    assert not positions.requires_grad
    assert np.allclose(positions.detach().numpy(), sinusoid_reference(64, 32), atol=1e-6)


# ----------------------------------------------------------------------------- heads
@pytest.mark.parametrize(
    ("head", "shape"),
    [
        ("masked_lm", (5, 12, 99)),
        ("sequence_classification", (5, 3)),
        ("token_classification", (5, 12, 3)),
        ("question_answering", (5, 12, 2)),
    ],
)
@pytest.mark.parametrize("layout", ["bert", "distilbert"])
def test_head_output_shapes(
    tiny_config: ModelConfig, batch, head: str, shape: tuple, layout: str
) -> None:
    config = dataclasses.replace(tiny_config, head=head, num_labels=3)
    if layout == "distilbert":
        config = dataclasses.replace(
            config, layout="distilbert", type_vocab_size=0, with_pooler=False
        )
    model = make_model(config)
    input_ids, attention_mask, _ = batch
    with torch.no_grad():
        out = model(input_ids, attention_mask)
    assert out.logits.shape == shape
    if head == "question_answering":
        assert torch.equal(out.start_logits, out.logits[..., 0])
        assert torch.equal(out.end_logits, out.logits[..., 1])


def test_masked_lm_head_is_tied_and_matches_its_formula(tiny_config: ModelConfig, batch) -> None:
    model = make_model(dataclasses.replace(tiny_config, head="masked_lm"))
    word = model.backbone.embeddings.word_embeddings.weight
    assert sum(p is word for p in model.parameters()) == 1  # registered once, shared
    input_ids, attention_mask, _ = batch
    head = model.head
    with torch.no_grad():
        out = model(input_ids, attention_mask)
        hidden = out.last_hidden_state
        transformed = F.layer_norm(
            F.gelu(hidden @ head.transform.weight.T + head.transform.bias),
            (32,), head.layer_norm.weight, head.layer_norm.bias, eps=1e-12,
        )  # fmt: skip
        assert torch.allclose(out.logits, transformed @ word.T + head.bias, atol=1e-5)
        real = attention_mask.bool()
        assert torch.allclose(model.mlm_logits(hidden[real]), out.logits[real], atol=1e-6)


def test_mlm_logits_without_head_is_a_clear_error(model: TransformerModel) -> None:
    with pytest.raises(ValueError, match="no masked-LM head"):
        model.mlm_logits(torch.zeros(2, 32))


def test_bert_classifier_needs_the_pooler(tiny_config: ModelConfig, batch) -> None:
    config = dataclasses.replace(tiny_config, head="sequence_classification", with_pooler=False)
    with pytest.raises(ValueError, match="needs the pooler"):
        make_model(config)(batch[0])


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_are_clear_errors(model: TransformerModel) -> None:
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 99\)"):
        model(torch.tensor([[2, 99, 3]]))
    with pytest.raises(ValueError, match="has only 64 positions"):
        model(torch.full((1, 65), 7))
    with pytest.raises(ValueError, match=r"must be \(batch, seq\)"):
        model(torch.tensor([2, 7, 3]))
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(torch.ones(2, 4, dtype=torch.long), torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="token_type_ids must be < 2"):
        model(torch.ones(1, 4, dtype=torch.long), token_type_ids=torch.full((1, 4), 2))


# ----------------------------------------------------------------------------- pooling
def pool_reference(hidden: np.ndarray, lengths: list[int], mode: str) -> np.ndarray:
    rows = []
    for row, length in enumerate(lengths):
        tokens = hidden[row, :length]
        rows.append(
            {
                "mean": tokens.mean(0),
                "cls": tokens[0],
                "max": tokens.max(0),
                "last": tokens[-1],
            }[mode]
        )
    return np.stack(rows)


@pytest.mark.parametrize("mode", ["mean", "cls", "max", "last"])
def test_pool_matches_reference(mode: str) -> None:
    generator = torch.Generator().manual_seed(3)
    # Negative values everywhere, so a max that lets padding (zeros) in would show.
    hidden = -torch.rand(5, 12, 32, generator=generator) - 0.1
    _, attention_mask, _ = padded_batch(LENGTHS)
    hidden = hidden.masked_fill(~attention_mask.bool()[..., None], 0.0)
    pooled = pool(hidden, attention_mask, mode)
    assert pooled.shape == (5, 32)
    assert np.allclose(pooled.numpy(), pool_reference(hidden.numpy(), LENGTHS, mode), atol=1e-6)


def test_pool_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool(torch.zeros(1, 2, 3), torch.ones(1, 2), "median")


def test_set_dropout_reaches_every_dropout_and_leaves_the_config(
    tiny_config: ModelConfig, batch
) -> None:
    config = dataclasses.replace(tiny_config, hidden_dropout=0.3, attention_dropout=0.3)
    model = TransformerModel(config).train()
    torch.manual_seed(0)
    first = model(*batch).last_hidden_state
    second = model(*batch).last_hidden_state
    assert not torch.allclose(first, second)  # dropout draws differ
    set_dropout(model, 0.0)
    first = model(*batch).last_hidden_state
    second = model(*batch).last_hidden_state
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    eval_out = model.eval()(*batch).last_hidden_state
    torch.testing.assert_close(first, eval_out, rtol=1e-5, atol=1e-6)  # train == eval now
    assert model.config.hidden_dropout == model.config.attention_dropout == 0.3
