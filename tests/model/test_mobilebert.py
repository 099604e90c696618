"""MobileBERT layout: parity with transformers' MobileBertModel, checkpoints both ways,
heads, pooling, ONNX export and int8 on tiny odd-sized random models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distilkit.model.checkpoint import load_model, save_model
from distilkit.model.config import ModelConfig
from distilkit.model.int8 import (
    Int8Linear,
    Int8MobileBertBlock,
    int8_available,
    quantize_model,
)
from distilkit.model.mobilebert import MobileBertBlock, MobileBertEmbeddings
from distilkit.model.onednn import _onednn_dtypes
from distilkit.settings import ConfigError

transformers = pytest.importorskip("transformers")

# Odd, distinct sizes: vocab 99, width between blocks 36, bottleneck 20, 4 heads (head 5),
# FFN 27, word vectors 13, 3 blocks, 3 FFNs per block.
VARIANTS = {
    "nonorm-shared-trigram": dict(
        use_bottleneck=True, key_query_shared_bottleneck=True, normalization_type="no_norm",
        trigram_input=True, hidden_act="relu",
    ),
    "layernorm-shared-gelu": dict(
        use_bottleneck=True, key_query_shared_bottleneck=True, normalization_type="layer_norm",
        trigram_input=True, hidden_act="gelu",
    ),
    "nonorm-bottleneck-attention": dict(
        use_bottleneck=True, key_query_shared_bottleneck=False, use_bottleneck_attention=True,
        normalization_type="no_norm", trigram_input=False, hidden_act="relu",
    ),
    "layernorm-no-bottleneck": dict(
        use_bottleneck=False, key_query_shared_bottleneck=False, normalization_type="layer_norm",
        trigram_input=False, hidden_act="gelu", hidden_size=24, embedding_size=24,
    ),
    "nonorm-no-bottleneck-trigram": dict(
        use_bottleneck=False, key_query_shared_bottleneck=True, normalization_type="no_norm",
        trigram_input=True, hidden_act="relu", hidden_size=24,
    ),
}  # fmt: skip


def hf_config(**overrides) -> transformers.MobileBertConfig:
    values = dict(
        vocab_size=99, hidden_size=36, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=27, max_position_embeddings=40, embedding_size=13,
        intra_bottleneck_size=20, num_feedforward_networks=3, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, type_vocab_size=2,
    )  # fmt: skip
    values.update(overrides)
    return transformers.MobileBertConfig(**values)


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every tensor drawn afresh (norm weights near 1, biases non-zero, magnitudes like a
    trained model's), so a swapped name changes the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if "LayerNorm.weight" in name:
                parameter.copy_(1.0 + 0.1 * noise)
            else:
                parameter.copy_((0.1 if parameter.dim() > 1 else 0.05) * noise)


def reference(tmp_path: Path, variant: str, architecture: str = "MobileBertModel"):
    """A random transformers MobileBERT saved to a folder, and the loaded reference."""
    config = hf_config(**VARIANTS[variant])
    config.architectures = [architecture]
    model = getattr(transformers, architecture)(config)
    randomize(model, seed=len(variant))
    folder = tmp_path / variant
    model.save_pretrained(folder)
    return folder, getattr(transformers, architecture).from_pretrained(
        folder, attn_implementation="eager"
    ).eval()


def padded_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(5, 99, (3, 11), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0
    attention_mask[2, 4:] = 0
    input_ids[attention_mask == 0] = 0
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[0, 6:] = 1
    return input_ids, attention_mask, token_type_ids


def real(tensor: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Padding positions zeroed: our fast path writes zeros there, transformers does not."""
    return tensor * attention_mask[..., None]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_hidden_states_and_attentions_match_transformers(tmp_path: Path, variant: str) -> None:
    folder, theirs = reference(tmp_path, variant)
    ours = load_model(folder)
    assert ours.config.layout == "mobilebert" and ours.new_parameters == []
    input_ids, attention_mask, token_type_ids = padded_batch()
    with torch.no_grad():
        expected = theirs(
            input_ids, attention_mask, token_type_ids, output_attentions=True,
            output_hidden_states=True,
        )  # fmt: skip
        fast = ours(input_ids, attention_mask, token_type_ids)
        explicit = ours(
            input_ids, attention_mask, token_type_ids, output_attentions=True,
            output_hidden_states=True,
        )  # fmt: skip
    want = real(expected.last_hidden_state, attention_mask)
    torch.testing.assert_close(
        real(fast.last_hidden_state, attention_mask), want, atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        real(explicit.last_hidden_state, attention_mask), want, atol=1e-5, rtol=0
    )
    torch.testing.assert_close(fast.pooled_output, expected.pooler_output, atol=1e-5, rtol=0)
    keys = attention_mask.bool()[:, None, None, :]
    assert len(explicit.attentions) == 3
    for mine, theirs_map in zip(explicit.attentions, expected.attentions, strict=True):
        torch.testing.assert_close(mine * keys, theirs_map * keys, atol=1e-5, rtol=0)
        assert float(mine.masked_select(~keys.expand_as(mine)).abs().max()) == 0.0
    for mine, theirs_hidden in zip(explicit.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(
            real(mine, attention_mask), real(theirs_hidden, attention_mask), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("variant", ["nonorm-shared-trigram", "layernorm-no-bottleneck"])
def test_save_loads_in_transformers_with_the_same_outputs(tmp_path: Path, variant: str) -> None:
    config = ModelConfig.from_hf(hf_config(**VARIANTS[variant]).to_dict())
    torch.manual_seed(0)
    from distilkit.model.modeling import TransformerModel

    ours = TransformerModel(config).eval()
    randomize(ours, seed=5)
    folder = save_model(ours, tmp_path / "ours")
    theirs = transformers.MobileBertModel.from_pretrained(folder, attn_implementation="eager")
    input_ids, attention_mask, token_type_ids = padded_batch()
    with torch.no_grad():
        mine = ours(input_ids, attention_mask, token_type_ids)
        expected = theirs.eval()(input_ids, attention_mask, token_type_ids)
    torch.testing.assert_close(
        real(mine.last_hidden_state, attention_mask),
        real(expected.last_hidden_state, attention_mask),
        atol=1e-5,
        rtol=0,
    )
    torch.testing.assert_close(mine.pooled_output, expected.pooler_output, atol=1e-5, rtol=0)
    # and back: our reader gives the same numbers again
    again = load_model(folder)
    with torch.no_grad():
        torch.testing.assert_close(
            again(input_ids, attention_mask, token_type_ids).last_hidden_state,
            mine.last_hidden_state,
            atol=0,
            rtol=0,
        )


@pytest.mark.parametrize(
    "architecture",
    [
        "MobileBertForMaskedLM",
        "MobileBertForSequenceClassification",
        "MobileBertForTokenClassification",
        "MobileBertForQuestionAnswering",
    ],
)
def test_task_heads_match_transformers_both_ways(tmp_path: Path, architecture: str) -> None:
    folder, theirs = reference(tmp_path, "nonorm-shared-trigram", architecture)
    ours = load_model(folder)
    input_ids, attention_mask, token_type_ids = padded_batch()
    with torch.no_grad():
        expected = theirs(input_ids, attention_mask, token_type_ids)
        mine = ours(input_ids, attention_mask, token_type_ids)
    expected_logits, logits = expected.logits if hasattr(expected, "logits") else None, mine.logits
    if architecture == "MobileBertForQuestionAnswering":
        expected_logits = torch.stack([expected.start_logits, expected.end_logits], dim=-1)
    if logits.dim() == 3:  # per token: compare real tokens only
        expected_logits, logits = (
            real(expected_logits, attention_mask),
            real(logits, attention_mask),
        )
    torch.testing.assert_close(logits, expected_logits, atol=1e-4, rtol=0)
    saved = save_model(ours, tmp_path / "saved")
    reread = getattr(transformers, architecture).from_pretrained(saved).eval()
    with torch.no_grad():
        again = reread(input_ids, attention_mask, token_type_ids)
    for name in ("logits", "start_logits"):
        if hasattr(expected, name) and getattr(expected, name) is not None:
            torch.testing.assert_close(
                getattr(again, name), getattr(expected, name), atol=1e-5, rtol=0
            )


def test_pooler_without_activation_is_the_cls_vector(tmp_path: Path) -> None:
    config = hf_config(**VARIANTS["nonorm-shared-trigram"], classifier_activation=False)
    theirs = transformers.MobileBertModel(config)
    randomize(theirs, seed=2)
    theirs.save_pretrained(tmp_path / "m")
    ours = load_model(tmp_path / "m")
    input_ids, attention_mask, token_type_ids = padded_batch()
    with torch.no_grad():
        expected = theirs.eval()(input_ids, attention_mask, token_type_ids).pooler_output
        pooled = ours(input_ids, attention_mask, token_type_ids).pooled_output
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=0)


def test_mobilebert_options_are_refused_elsewhere_and_checked() -> None:
    with pytest.raises(ConfigError, match="only apply to the mobilebert layout"):
        ModelConfig(vocab_size=99, hidden_size=32, num_heads=4, use_bottleneck=True)
    with pytest.raises(ConfigError, match="not divisible by num_heads"):
        ModelConfig(
            vocab_size=99, hidden_size=36, num_heads=4, layout="mobilebert", use_bottleneck=True,
            intra_bottleneck_size=18, key_query_shared_bottleneck=True,
        )  # fmt: skip
    with pytest.raises(
        ConfigError, match="key_query_shared_bottleneck or use_bottleneck_attention"
    ):
        ModelConfig(
            vocab_size=99, hidden_size=36, num_heads=4, layout="mobilebert", use_bottleneck=True,
            intra_bottleneck_size=20,
        )  # fmt: skip
    with pytest.raises(ConfigError, match="normalization_type"):
        ModelConfig(vocab_size=99, hidden_size=36, num_heads=4, layout="mobilebert",
                    normalization_type="batch_norm")  # fmt: skip


def test_onnx_export_and_int8_run_a_mobilebert(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    from distilkit.deploy.export import DEFAULT_OPSET, _export_fp32
    from distilkit.model.int8 import is_int8, quantize_model
    from distilkit.model.st_folder import SentenceModules

    folder, _ = reference(tmp_path, "nonorm-shared-trigram")
    ours = load_model(folder)
    input_ids, attention_mask, token_type_ids = padded_batch()
    with torch.no_grad():
        want = real(
            ours(input_ids, attention_mask, token_type_ids).last_hidden_state, attention_mask
        )
        quantized = quantize_model(ours)
        got = real(
            quantized(input_ids, attention_mask, token_type_ids).last_hidden_state, attention_mask
        )
    assert is_int8(quantized) and not is_int8(ours)
    # int8 is close (mean error under 10% of the mean magnitude), not equal
    assert float((got - want).abs().mean()) < 0.1 * float(want.abs().mean())
    assert float((got - want).abs().max()) > 0.0  # and really ran in int8
    path = tmp_path / "model.onnx"
    _export_fp32(ours, SentenceModules(), path, DEFAULT_OPSET)
    import onnx

    matmuls = sum(node.op_type == "MatMul" for node in onnx.load(str(path)).graph.node)
    # NoNorm folded: per block Q/K/V/residual, QK^T, attention x V, attention output, two
    # per FFN (3), output bottleneck; plus the embeddings' transformation
    assert matmuls == 3 * (1 + 2 + 1 + 2 * 3 + 1) + 1
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    hidden, _ = session.run(
        ["last_hidden_state", "sentence_embedding"],
        {
            "input_ids": input_ids.numpy(),
            "attention_mask": attention_mask.numpy(),
            "token_type_ids": token_type_ids.numpy(),
        },
    )
    torch.testing.assert_close(
        real(torch.from_numpy(hidden), attention_mask), want, atol=1e-4, rtol=0
    )


@pytest.mark.skipif(
    torch.float32 not in _onednn_dtypes(), reason="oneDNN linear kernels unavailable"
)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_folded_inference_path_matches_the_unfolded_one(
    tmp_path: Path, variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inference on a CPU folds NoNorm into the matmuls (blocks with a bottleneck, and the
    embeddings' transformation); the other layouts, and int8 blocks, take the unfolded
    fast path. Both give the same numbers, with and without padding and segment ids, and
    the folded weights follow an in-place change of any parameter."""
    folder, _ = reference(tmp_path, variant)
    ours = load_model(folder, head=None).eval()
    input_ids, attention_mask, token_type_ids = padded_batch()
    calls: list[str] = []
    for cls, name in ((MobileBertBlock, "forward_fast"), (MobileBertEmbeddings, "forward")):
        original = getattr(cls, name)

        def counting(self, *args, original=original, name=name):
            calls.append(name)
            return original(self, *args)

        monkeypatch.setattr(cls, name, counting)

    def both(*inputs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            fast = ours(*inputs).last_hidden_state
        with torch.enable_grad():  # autograd on: the unfolded path, always
            slow = ours(*inputs).last_hidden_state.detach()
        return real(fast, inputs[1]), real(slow, inputs[1])

    calls.clear()
    fast, slow = both(input_ids, attention_mask, token_type_ids)
    config = ours.config
    folded = config.use_bottleneck and config.normalization_type == "no_norm"
    embeddings_folded = config.normalization_type == "no_norm" and (
        config.trigram_input or config.word_embedding_size != config.hidden_size
    )
    assert calls.count("forward_fast") == 3 * (1 if folded else 2)  # 3 blocks, once or twice
    assert calls.count("forward") == (1 if embeddings_folded else 2)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    assert float(slow.abs().max()) > 0.1  # not trivially equal
    for inputs in (
        (input_ids, attention_mask, None),  # segment 0 throughout
        (input_ids[:1], attention_mask[:1], token_type_ids[:1]),  # no padding at all
    ):
        torch.testing.assert_close(*both(*inputs), atol=1e-5, rtol=1e-5)

    block = ours.backbone.layers[1]
    with torch.no_grad():  # as an optimizer step would: every folded kind of parameter
        for norm in (block.attention_norm, block.ffn.norm, block.ffn_stack[0].norm):
            norm.weight.mul_(-1.3)
        block.attention.key.bias.add_(0.2)
        ours.backbone.embeddings.layer_norm.weight.mul_(0.7)
        ours.backbone.embeddings.token_type_embeddings.weight[1].add_(0.3)
    changed, slow = both(input_ids, attention_mask, token_type_ids)
    assert not torch.allclose(changed, fast)
    torch.testing.assert_close(changed, slow, atol=1e-5, rtol=1e-5)

    if int8_available():  # int8: folded blocks run their folded maps, the others each Linear
        with torch.inference_mode():
            quantized = quantize_model(ours)
            int8 = real(quantized(input_ids, attention_mask, token_type_ids).last_hidden_state,
                        attention_mask)  # fmt: skip
        kinds = {type(block) for block in quantized.backbone.layers}
        assert kinds == {Int8MobileBertBlock if folded else MobileBertBlock}
        if not folded:
            assert type(quantized.backbone.layers[0].attention.query) is Int8Linear
        error = (int8 - changed).abs()
        assert 0.0 < float(error.mean()) < 0.05 * float(changed.abs().mean())
