"""Int8 inference in PyTorch itself: dynamically quantized transformer blocks.

:func:`quantize_model` returns a copy of a model whose transformer blocks run their four
matmuls (stacked Q/K/V, attention output, FFN in, FFN out) as int8 GEMMs: weights are
quantized once, symmetric per output channel; activations are quantized on the fly, per
tensor, by the kernel itself (``torch.ops.quantized.linear_dynamic``, fbgemm / oneDNN
with VNNI where the CPU has it). Everything else (embeddings, LayerNorm, the attention
softmax, the pooler and the head) stays fp32.

Unlike an ONNX export, the blocks keep the eager fast path's unpadded layout: the dense
layers see only the real tokens of a batch. And because an :class:`Int8Block` is a
:class:`~distilkit.model.modeling.TransformerBlock`, everything that runs blocks one by one
runs in int8 too, FastBERT early exit (:class:`~distilkit.methods.early_exit.model.EarlyExitModel`)
included.

Inference only: an int8 model refuses autograd and training mode with a clear error.
It is a speed mode, not a size one: the blocks keep their fp32 parameters beside the
packed int8 weights (so ``save`` still writes the fp32 model); for a small file use the
ONNX int8 export. The activation scale is per batch, so an example's output moves
slightly with the batch it is in (as with onnxruntime's dynamic int8).

MobileBERT blocks (:mod:`distilkit.model.mobilebert`) with NoNorm and a bottleneck run
their folded affine maps (:meth:`~distilkit.model.mobilebert.MobileBertBlock.folded_weights`:
Q, K, V and the residual in one matmul, the norms inside the weights) as int8 GEMMs
(:class:`Int8MobileBertBlock`); in other MobileBERT blocks every ``nn.Linear`` becomes an
:class:`Int8Linear` with the same dynamic int8 GEMM, and the block's own code runs
unchanged.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from distilkit.model.mobilebert import ACTIVATIONS, MobileBertBlock
from distilkit.model.modeling import TransformerBlock, TransformerModel
from distilkit.model.packing import Padding


class Int8Error(RuntimeError):
    """An int8 model used where it cannot run (training, autograd, missing kernels)."""


def int8_available() -> bool:
    """Whether this PyTorch build has the dynamic int8 linear kernels."""
    return hasattr(torch.ops, "quantized") and hasattr(torch.ops.quantized, "linear_dynamic")


def _pack(weight: torch.Tensor, bias: torch.Tensor) -> object:
    """Quantize ``weight`` (out, in) symmetrically per output channel and pack it with
    its fp32 ``bias`` (out,) for the int8 GEMM."""
    weight = weight.detach().float()
    scales = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # quantized tensor types carry a deprecation notice
        warnings.simplefilter("ignore")
        quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(quantized, bias.detach().float())


class InferenceOnly:
    """Mixed into int8 modules: no copies (the packed weights cannot be copied), no
    training."""

    def __deepcopy__(self, memo):
        raise Int8Error("an int8 model cannot be copied: quantize a copy of the fp32 model")

    def train(self, mode: bool = True):
        if mode:
            raise Int8Error("an int8 model is for inference only: train the fp32 model")
        return super().train(False)


class Int8Block(InferenceOnly, TransformerBlock):
    """A :class:`TransformerBlock` whose matmuls run in int8 (see the module docstring)."""

    def __init__(self, block: TransformerBlock, config):
        super().__init__(config)
        self.load_state_dict(block.state_dict())
        self.eval()
        attention, ffn = self.attention, self.ffn
        linears = (attention.query, attention.key, attention.value)
        with torch.no_grad():
            self._qkv = _pack(
                torch.cat([linear.weight for linear in linears]),
                torch.cat([linear.bias for linear in linears]),
            )
            self._attention_output = _pack(attention.output.weight, attention.output.bias)
            self._intermediate = _pack(ffn.intermediate.weight, ffn.intermediate.bias)
            self._ffn_output = _pack(ffn.output.weight, ffn.output.bias)

    def forward_int8(self, hidden: torch.Tensor, padding: Padding) -> torch.Tensor:
        """Packed ``(tokens, H)`` fp32 -> ``(tokens, H)`` fp32 through int8 matmuls."""
        if torch.is_grad_enabled() and hidden.requires_grad:
            raise Int8Error("an int8 model is for inference only: run it under torch.no_grad()")
        linear = torch.ops.quantized.linear_dynamic
        hidden = hidden.float().contiguous()
        context = self.attention.attend(linear(hidden, self._qkv, False), padding)
        norm = self.attention_norm
        hidden = F.layer_norm(
            hidden + linear(context.contiguous(), self._attention_output, False),
            norm.normalized_shape,
            norm.weight,
            norm.bias,
            norm.eps,
        )
        inner = self.ffn.activation(linear(hidden, self._intermediate, False))  # (tokens, I)
        norm = self.ffn_norm
        return F.layer_norm(
            hidden + linear(inner, self._ffn_output, False),
            norm.normalized_shape,
            norm.weight,
            norm.bias,
            norm.eps,
        )

    forward_fast = forward_int8
    forward_onednn = forward_int8

    def forward_explicit(self, hidden, key_mask):
        raise Int8Error("an int8 model does not return attention maps: ask the fp32 model for them")


class Int8MobileBertBlock(InferenceOnly, MobileBertBlock):
    """A NoNorm MobileBERT block whose folded affine maps run as int8 GEMMs."""

    def __init__(self, block: MobileBertBlock, config):
        super().__init__(config)
        self.load_state_dict(block.state_dict())
        self.eval()
        folded = self.folded_weights()
        self._first = _pack(*folded.first)
        self._attention_output = _pack(*folded.attention_output)
        self._ffns = [(_pack(*inner), _pack(*outer), g) for inner, outer, g in folded.ffns]
        self._output = _pack(*folded.output)
        self._output_scale = folded.output_scale
        self._activation = ACTIVATIONS[folded.activation]

    def forward_int8(self, hidden: torch.Tensor, padding: Padding) -> torch.Tensor:
        """Packed ``(tokens, hidden)`` fp32 -> ``(tokens, hidden)`` fp32 through int8
        matmuls (the structure of :class:`~distilkit.model.mobilebert.FoldedBlock`)."""
        if torch.is_grad_enabled() and hidden.requires_grad:
            raise Int8Error("an int8 model is for inference only: run it under torch.no_grad()")
        linear = torch.ops.quantized.linear_dynamic
        hidden = hidden.float().contiguous()
        projected = linear(hidden, self._first, False)  # (tokens, 4 * inner)
        split = 3 * self.attention.output.in_features
        context = self.attention.attend(projected[:, :split], padding).contiguous()
        attended = linear(context, self._attention_output, False) + projected[:, split:]
        for inner_weights, outer_weights, scale in self._ffns:
            inner = self._activation(linear(attended, inner_weights, False))  # (tokens, I)
            attended = torch.addcmul(linear(inner, outer_weights, False), attended, scale)
        return torch.addcmul(linear(attended, self._output, False), hidden, self._output_scale)

    forward_fast = forward_int8
    forward_onednn = forward_int8

    def forward_explicit(self, hidden, key_mask):
        raise Int8Error("an int8 model does not return attention maps: ask the fp32 model for them")


class Int8Linear(InferenceOnly, nn.Linear):
    """An ``nn.Linear`` that multiplies in int8 (inference only); keeps its fp32 weights."""

    def __init__(self, linear: nn.Linear):
        super().__init__(linear.in_features, linear.out_features)
        self.load_state_dict(linear.state_dict())
        with torch.no_grad():
            self._packed = _pack(self.weight, self.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(..., in)`` -> ``(..., out)`` fp32."""
        if torch.is_grad_enabled() and hidden.requires_grad:
            raise Int8Error("an int8 model is for inference only: run it under torch.no_grad()")
        flat = hidden.float().reshape(-1, self.in_features).contiguous()
        out = torch.ops.quantized.linear_dynamic(flat, self._packed, False)
        return out.view(*hidden.shape[:-1], self.out_features)


def _quantize_linears(module: nn.Module) -> None:
    """Swap every ``nn.Linear`` below ``module`` for an :class:`Int8Linear`, in place."""
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, Int8Linear(child))
        else:
            _quantize_linears(child)


def quantize_model(model: TransformerModel) -> TransformerModel:
    """A copy of ``model`` (fp32 or bf16; left unchanged) with int8 transformer blocks.

    Raises :class:`Int8Error` when this PyTorch build lacks the int8 kernels.
    """
    if not int8_available():
        raise Int8Error(
            "this PyTorch build has no dynamic int8 linear kernels (torch.ops.quantized."
            "linear_dynamic): use the ONNX int8 export instead"
        )
    if not isinstance(model, TransformerModel):
        raise Int8Error(f"quantize_model takes a TransformerModel, got {type(model).__name__}")
    if is_int8(model):
        raise Int8Error("this model is already quantized")
    quantized = copy.deepcopy(model).float().eval()
    layers = quantized.backbone.layers
    for index, block in enumerate(layers):
        if isinstance(block, MobileBertBlock) and block.foldable:
            layers[index] = Int8MobileBertBlock(block, quantized.config)
        elif isinstance(block, MobileBertBlock):
            _quantize_linears(block)
        else:
            layers[index] = Int8Block(block, quantized.config)
    for parameter in quantized.parameters():
        parameter.requires_grad_(False)
    return quantized


def is_int8(model: nn.Module) -> bool:
    """Whether ``model`` contains int8 blocks."""
    return any(
        isinstance(module, Int8Block | Int8MobileBertBlock | Int8Linear)
        for module in model.modules()
    )
