"""The inference fast path (oneDNN kernels, cached stacked weights) against a float64
reference written from the BERT formulas, and the rules for when it may run."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerBlock, TransformerModel
from distilkit.model.onednn import _onednn_dtypes, inference_weights, use_onednn
from distilkit.model.packing import Padding

LENGTHS = [7, 3, 12, 1, 9]
ONEDNN = torch.float32 in _onednn_dtypes()
needs_onednn = pytest.mark.skipif(not ONEDNN, reason="oneDNN linear kernels unavailable")


def make_model(config: ModelConfig, seed: int = 0) -> TransformerModel:
    """A tiny model with every parameter random (so biases and LayerNorms matter)."""
    torch.manual_seed(seed)
    model = TransformerModel(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                noise = torch.randn(parameter.shape, generator=generator) * 0.1
                parameter.copy_(noise + 1.0 if "norm.weight" in name else noise)
    return model.eval()


def padded_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random ids ``(batch, max_len)`` padded with 0 on the right, their mask and segments."""
    generator = torch.Generator().manual_seed(seed)
    seq = max(lengths)
    input_ids = torch.zeros(len(lengths), seq, dtype=torch.long)
    attention_mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    token_type_ids = torch.zeros(len(lengths), seq, dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(5, 99, (length,), generator=generator)
        attention_mask[row, :length] = 1
        token_type_ids[row, length // 2 : length] = 1
    return input_ids, attention_mask, token_type_ids


def activate(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "gelu":
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return x.clamp(min=0)


def reference_hidden(
    model: TransformerModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor,
    layer_indices: list[int] | None = None,
) -> torch.Tensor:
    """Last hidden state ``(batch, seq, hidden)`` in float64, straight from the formulas."""
    config = model.config
    p = {name: t.detach().double() for name, t in model.backbone.named_parameters()}
    heads, head_dim = config.num_heads, config.hidden_size // config.num_heads

    def norm(x: torch.Tensor, prefix: str) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        variance = ((x - mean) ** 2).mean(-1, keepdim=True)
        normed = (x - mean) / torch.sqrt(variance + config.layer_norm_eps)
        return normed * p[prefix + ".weight"] + p[prefix + ".bias"]

    def dense(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return x @ p[prefix + ".weight"].T + p[prefix + ".bias"]

    batch, seq = input_ids.shape
    x = p["embeddings.word_embeddings.weight"][input_ids]
    x = x + p["embeddings.position_embeddings.weight"][:seq]
    if config.type_vocab_size > 0:
        x = x + p["embeddings.token_type_embeddings.weight"][token_type_ids]
    x = norm(x, "embeddings.layer_norm")
    keys = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    for index in range(config.num_layers) if layer_indices is None else layer_indices:
        prefix = f"layers.{index}."
        q, k, v = (
            dense(x, prefix + "attention." + name).view(batch, seq, heads, head_dim).transpose(1, 2)
            for name in ("query", "key", "value")
        )
        scores = (q @ k.transpose(-1, -2) / math.sqrt(head_dim)).masked_fill(~keys, -math.inf)
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, -1)
        x = norm(x + dense(context, prefix + "attention.output"), prefix + "attention_norm")
        inner = activate(dense(x, prefix + "ffn.intermediate"), config.hidden_act)
        x = norm(x + dense(inner, prefix + "ffn.output"), prefix + "ffn_norm")
    return x


@pytest.fixture
def onednn_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of TransformerBlock.forward_onednn (one entry per block run)."""
    calls: list[int] = []
    original = TransformerBlock.forward_onednn

    def counting(self, hidden, padding):
        calls.append(1)
        return original(self, hidden, padding)

    monkeypatch.setattr(TransformerBlock, "forward_onednn", counting)
    return calls


def assert_matches_reference(model, inputs, atol=1e-5, layer_indices=None) -> None:
    real = inputs[1].bool()
    hidden = model.backbone(*inputs, layer_indices=layer_indices).last_hidden_state
    expected = reference_hidden(model, *inputs, layer_indices=layer_indices)
    assert hidden.dtype == torch.float32
    assert torch.allclose(hidden[real].double(), expected[real], atol=atol)
    assert bool((hidden[~real] == 0).all())  # zeros at padding, as before


# ----------------------------------------------------------------------------- equivalence
@needs_onednn
@pytest.mark.parametrize("activation", ["gelu", "gelu_new", "relu"])
@pytest.mark.parametrize("lengths", [LENGTHS, [6, 6], [5]], ids=["padded", "full", "single"])
@pytest.mark.parametrize("grad_off", [torch.inference_mode, torch.no_grad])
def test_onednn_path_matches_reference(
    tiny_config: ModelConfig, onednn_calls, activation, lengths, grad_off
) -> None:
    model = make_model(dataclasses.replace(tiny_config, hidden_act=activation))
    with grad_off():
        assert_matches_reference(model, padded_batch(lengths))
    assert len(onednn_calls) == tiny_config.num_layers


@needs_onednn
def test_onednn_path_distilbert_layout_and_layer_cut(tiny_config: ModelConfig, onednn_calls):
    config = dataclasses.replace(
        tiny_config, layout="distilbert", type_vocab_size=0, with_pooler=False
    )
    model = make_model(config)
    with torch.inference_mode():
        assert_matches_reference(model, padded_batch(LENGTHS))
        assert_matches_reference(model, padded_batch(LENGTHS), layer_indices=[2, 0])
    assert len(onednn_calls) == config.num_layers + 2


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
@pytest.mark.parametrize("lengths", [LENGTHS, [6, 6]], ids=["padded", "full"])
def test_generic_fast_path_matches_reference(tiny_config, onednn_calls, lengths) -> None:
    """With oneDNN switched off (or absent) the portable path gives the same numbers."""
    model = make_model(tiny_config)
    with torch.backends.mkldnn.flags(enabled=False), torch.inference_mode():
        assert_matches_reference(model, padded_batch(lengths))
    assert_matches_reference(model, padded_batch(lengths))  # with autograd
    assert onednn_calls == []


@needs_onednn
def test_bfloat16_onednn_path_stays_close(tiny_config: ModelConfig, onednn_calls) -> None:
    if torch.bfloat16 not in _onednn_dtypes():
        pytest.skip("no native bfloat16 matmuls on this CPU")
    model = make_model(tiny_config)
    inputs = padded_batch(LENGTHS)
    real = inputs[1].bool()
    expected = reference_hidden(model, *inputs)[real]
    with torch.inference_mode():
        hidden = model.to(torch.bfloat16).backbone(*inputs).last_hidden_state
    assert hidden.dtype == torch.bfloat16 and len(onednn_calls) == tiny_config.num_layers
    cosine = F.cosine_similarity(hidden[real].double(), expected, dim=-1)
    assert float(cosine.min()) > 0.999
    assert bool((hidden[~real] == 0).all())


# ----------------------------------------------------------------------------- when it runs
def test_autograd_and_dropout_never_take_the_inference_path(tiny_config, onednn_calls) -> None:
    config = dataclasses.replace(tiny_config, hidden_dropout=0.5, attention_dropout=0.5)
    model = make_model(config)
    inputs = padded_batch(LENGTHS)
    hidden = model.backbone(*inputs).last_hidden_state  # eval mode, autograd on
    hidden.sum().backward()
    assert model.backbone.layers[0].attention.query.weight.grad is not None
    model.train()
    with torch.no_grad():  # training mode without autograd: dropout must still apply
        first = model.backbone(*inputs).last_hidden_state
        second = model.backbone(*inputs).last_hidden_state
    assert not torch.equal(first, second)
    assert onednn_calls == []
    probe = torch.zeros(2, 3)
    assert not use_onednn(probe, training=False)  # autograd is on here
    with torch.no_grad():
        assert not use_onednn(probe, training=True)
        assert use_onednn(probe, training=False) == ONEDNN
        assert not use_onednn(probe.double(), training=False)


def test_autocast_takes_the_portable_path(tiny_config: ModelConfig, onednn_calls) -> None:
    """A float32 teacher under bf16 autocast (distillation): F.linear's casts must happen."""
    model = make_model(tiny_config)
    inputs = padded_batch(LENGTHS)
    real = inputs[1].bool()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        hidden = model.backbone(*inputs).last_hidden_state
    assert onednn_calls == []
    expected = reference_hidden(model, *inputs)[real]
    cosine = F.cosine_similarity(hidden[real].double(), expected, dim=-1)
    assert float(cosine.min()) > 0.999


# ----------------------------------------------------------------------------- the weight cache
@needs_onednn
def test_cache_follows_in_place_updates_and_reloads(tiny_config: ModelConfig) -> None:
    model = make_model(tiny_config)
    inputs = padded_batch(LENGTHS)
    with torch.inference_mode():
        before = model.backbone(*inputs).last_hidden_state.clone()
    with torch.no_grad():  # as an optimizer step would
        model.backbone.layers[1].attention.key.weight.mul_(-1.5)
        model.backbone.layers[2].ffn.output.bias.add_(0.3)
    with torch.inference_mode():
        assert not torch.allclose(model.backbone(*inputs).last_hidden_state, before)
        assert_matches_reference(model, inputs)
    model.load_state_dict(make_model(tiny_config, seed=1).state_dict())
    with torch.inference_mode():
        assert_matches_reference(model, inputs)


@needs_onednn
def test_cast_round_trip_rebuilds_the_cache(tiny_config: ModelConfig) -> None:
    """bf16 and back gives rounded weights, possibly at the old addresses: no stale cache."""
    model = make_model(tiny_config)
    inputs = padded_batch(LENGTHS)
    with torch.inference_mode():
        model.backbone(*inputs)
    model.to(torch.bfloat16).to(torch.float32)
    with torch.inference_mode():
        assert_matches_reference(model, inputs)


def test_parameters_made_in_inference_mode(tiny_config: ModelConfig) -> None:
    """Such tensors have no version counter; the cache must still work on them."""
    model = make_model(tiny_config)
    inputs = padded_batch(LENGTHS)
    with torch.inference_mode():
        model.double().float()  # every parameter is now an inference tensor
        assert model.backbone.layers[0].attention.query.weight.is_inference()
        assert_matches_reference(model, inputs)
        assert_matches_reference(model, inputs)  # second call: served from the cache


def test_cache_stays_off_the_module(tiny_config: ModelConfig) -> None:
    model = make_model(tiny_config)
    keys = list(model.state_dict())
    with torch.inference_mode():
        expected = model.backbone(*padded_batch(LENGTHS)).last_hidden_state
    assert list(model.state_dict()) == keys
    twin = copy.deepcopy(model)  # the reordered oneDNN weights could not be deep-copied
    with torch.inference_mode():
        assert torch.equal(twin.backbone(*padded_batch(LENGTHS)).last_hidden_state, expected)


def test_inference_weights_stack_in_order(tiny_config: ModelConfig) -> None:
    attention = make_model(tiny_config).backbone.layers[0].attention
    linears = [attention.query, attention.key, attention.value]
    with torch.no_grad():
        (weight, bias), (single, single_bias) = inference_weights(
            attention, [linears, [attention.output]], reorder=False
        )
        assert torch.equal(weight, torch.cat([linear.weight for linear in linears]))
        assert torch.equal(bias, torch.cat([linear.bias for linear in linears]))
        assert single.data_ptr() == attention.output.weight.data_ptr()  # no copy of one
        assert torch.equal(single_bias, attention.output.bias)
        again = inference_weights(attention, [linears, [attention.output]], reorder=False)
        assert again[0][0] is weight  # cached


# ----------------------------------------------------------------------------- packing
def test_padding_pad_and_unpad() -> None:
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    padding = Padding(2, 3, mask.reshape(-1).nonzero().squeeze(1), mask.bool()[:, None, None])
    packed = torch.arange(8.0).view(4, 2)  # 4 real tokens
    padded = padding.pad(packed)
    assert padded.shape == (2, 3, 2)
    assert torch.equal(padded[1, 1:], torch.zeros(2, 2))
    assert torch.equal(padded[mask.bool()], packed)
    assert torch.equal(padding.unpad(padded), packed)
    full = Padding(2, 3)
    tokens = torch.randn(6, 4)
    assert full.pad(tokens).data_ptr() == tokens.data_ptr()  # a view, no copy
    assert torch.equal(full.unpad(full.pad(tokens)), tokens)
