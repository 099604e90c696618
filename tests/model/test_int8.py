"""Int8 transformer blocks (distilkit.int8): close to fp32, padding-independent, usable
under early exit, and clear errors where int8 cannot run."""

from __future__ import annotations

import pytest
import torch
from early_exit_helpers import TEXTS, classifier, early_exit_model

from distilkit.encoder import Encoder, load
from distilkit.model.checkpoint import save_model
from distilkit.model.int8 import Int8Block, Int8Error, int8_available, is_int8, quantize_model

pytestmark = pytest.mark.skipif(not int8_available(), reason="no int8 kernels in this torch")


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx - exact).norm() / exact.norm())


@pytest.mark.parametrize("layout", ["bert", "distilbert"])
def test_int8_logits_are_close_to_fp32_and_the_original_is_untouched(tiny_tokenizer, layout):
    model = classifier(layout)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_model(model)
    assert all(isinstance(block, Int8Block) for block in quantized.backbone.layers)
    assert is_int8(quantized) and not is_int8(model)
    batch = tiny_tokenizer(TEXTS).model_inputs()
    with torch.inference_mode():
        exact = model(**batch).logits
        approx = quantized(**batch).logits
        hidden_exact = model.backbone(**batch).last_hidden_state
        hidden_approx = quantized.backbone(**batch).last_hidden_state
    assert approx.shape == exact.shape
    assert relative_error(approx, exact) < 0.05
    assert relative_error(hidden_approx, hidden_exact) < 0.05
    assert not torch.equal(approx, exact)  # it really ran other kernels
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_int8_weights_round_trip_per_channel():
    """Each packed weight, unpacked, is the fp32 weight to within half a step of its row."""
    block = classifier().backbone.layers[0]
    quantized = Int8Block(block, classifier().config)
    weight, bias = torch.ops.quantized.linear_unpack(quantized._ffn_output)
    exact = block.ffn.output.weight
    step = exact.abs().amax(dim=1, keepdim=True) / 127
    assert torch.all((weight.dequantize() - exact).abs() <= step / 2 + 1e-7)
    assert torch.equal(bias, block.ffn.output.bias)


def test_padding_does_not_change_an_examples_int8_output(tiny_tokenizer):
    """A padded batch and each example alone agree: the dense layers see real tokens only
    (the activation scale is per batch, so equality is approximate)."""
    quantized = quantize_model(classifier())
    with torch.inference_mode():
        together = quantized(**tiny_tokenizer(TEXTS).model_inputs()).logits
        alone = torch.cat(
            [quantized(**tiny_tokenizer([text]).model_inputs()).logits for text in TEXTS]
        )
    assert relative_error(together, alone) < 0.05


def test_early_exit_on_int8_blocks(tiny_tokenizer):
    """Threshold 0 equals the plain int8 forward; threshold 1 leaves after block 1."""
    early = early_exit_model()
    early.model = quantize_model(early.model)
    batch = tiny_tokenizer(TEXTS).model_inputs()
    with torch.inference_mode():
        plain = early.model(**batch).logits
        full = early(**batch, threshold=0.0)
        first = early(**batch, threshold=1.0)
        layer_logits = early.layer_logits(**batch)
    assert full.exit_layers.tolist() == [early.num_layers] * len(TEXTS)
    assert torch.allclose(full.logits, plain, atol=1e-5)
    assert first.exit_layers.tolist() == [1] * len(TEXTS)
    assert torch.allclose(first.logits, layer_logits[0], atol=1e-4)


def test_int8_refuses_training_autograd_attention_maps_and_requantizing(tiny_tokenizer):
    quantized = quantize_model(classifier())
    batch = tiny_tokenizer(TEXTS[:2]).model_inputs()
    with pytest.raises(Int8Error, match="inference only"):
        quantized.train()
    with pytest.raises(Int8Error, match="attention maps"), torch.no_grad():
        quantized.backbone(**batch, output_attentions=True)
    with pytest.raises(Int8Error, match="already quantized"):
        quantize_model(quantized)
    with pytest.raises(Int8Error, match="TransformerModel"):
        quantize_model(torch.nn.Linear(2, 2))
    hidden = torch.randn(3, 32, requires_grad=True)
    with pytest.raises(Int8Error, match="no_grad"):
        quantized.backbone.layers[0].forward_int8(hidden, None)


def test_load_with_dtype_int8(tmp_path, tiny_tokenizer):
    # the early-exit tests' classifier: weights that keep examples apart, so logits are not
    # noise around zero (relative error is meaningless there)
    folder = save_model(classifier("bert"), tmp_path / "model", tokenizer=tiny_tokenizer)
    exact, quantized = load(folder), load(folder, dtype="int8")
    assert isinstance(quantized, Encoder) and is_int8(quantized.model)
    assert (
        relative_error(
            torch.from_numpy(quantized.logits(TEXTS)), torch.from_numpy(exact.logits(TEXTS))
        )
        < 0.05
    )
    with pytest.raises(ValueError, match="int8"):
        load(folder, dtype="int4")
