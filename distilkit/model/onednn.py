"""oneDNN inference kernels on a CPU: when they may run, and the weights they run on.

Without autograd and dropout on a CPU, the blocks' fast paths run on oneDNN's fused
linear kernels (``torch.ops.mkldnn._linear_pointwise``, the ones ``torch.compile`` uses on
CPU): weights reordered once into its blocked layout, the bias, the activation and a
residual addition done inside the matmul. Each block derives its inference weights from
its parameters (stacked, reordered, or with norms folded in) and caches them here, keyed by
the parameters' storage and version, so the cache is rebuilt whenever a parameter changes.
``DISTILKIT_ONEDNN=0`` in the environment turns these kernels off.
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")

# activation name -> (post-op, algorithm) of torch.ops.mkldnn._linear_pointwise
ONEDNN_ACTIVATIONS = {
    "gelu": ("gelu", "none"),
    "gelu_new": ("gelu", "tanh"),
    "gelu_pytorch_tanh": ("gelu", "tanh"),
    "relu": ("relu", ""),
}


@functools.cache
def _onednn_dtypes() -> tuple[torch.dtype, ...]:
    """The dtypes oneDNN's linear kernels serve well here: () if they are missing or off."""
    if os.environ.get("DISTILKIT_ONEDNN", "1") == "0" or not torch.backends.mkldnn.is_available():
        return ()
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return ()
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():  # native bf16 (AVX512-BF16, AMX)
        return (torch.float32, torch.bfloat16)
    return (torch.float32,)


def use_onednn(hidden: torch.Tensor, training: bool) -> bool:
    """Whether a block's ``forward_onednn`` may run on ``hidden``: inference (no autograd,
    no dropout), on a CPU, in a dtype oneDNN serves, oneDNN enabled, and no autocast (its
    kernels would not see the casts autocast makes for F.linear)."""
    return (
        not training
        and not torch.is_grad_enabled()
        and hidden.device.type == "cpu"
        and hidden.dtype in _onednn_dtypes()
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")
    )


# Derived copies of parameters for inference, per owning module and purpose. A weak
# dictionary rather than a module attribute, so deepcopy, pickling and state_dict never
# see them (oneDNN's reordered tensors cannot be copied).
_INFERENCE_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cached_weights(
    owner: nn.Module, purpose: str, parameters: Sequence[torch.Tensor], build: Callable[[], T]
) -> T:
    """``build()`` (weights derived from ``parameters``, for use without autograd), cached
    per ``owner`` and ``purpose`` and rebuilt when a parameter changes.

    An in-place update (optimizer step, ``load_state_dict``) bumps a parameter's version
    counter, a cast or move gives it new storage. The cache holds the old storage until
    then, so a new tensor cannot reuse its address and pass for it.
    """
    try:
        key = tuple((p.data_ptr(), p._version) for p in parameters)
    except RuntimeError:  # parameters made inside inference_mode keep no version counter
        key = tuple((p.data_ptr(), -1) for p in parameters)
    entries = _INFERENCE_WEIGHTS.setdefault(owner, {})
    cached = entries.get(purpose)
    if cached is not None and cached[0] == key:
        return cached[2]
    with torch.no_grad():
        built = build()
    entries[purpose] = (key, [p.detach() for p in parameters], built)
    return built


def inference_weights(
    owner: nn.Module, groups: Sequence[Sequence[nn.Linear]], reorder: bool
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per group of Linears, ``(weight, bias)`` stacked along the output dimension
    (``(sum of outputs, inputs)`` and ``(sum of outputs,)``), reordered for oneDNN if asked;
    cached (:func:`cached_weights`)."""
    parameters = [p for group in groups for linear in group for p in (linear.weight, linear.bias)]

    def build() -> list[tuple[torch.Tensor, torch.Tensor]]:
        stacked = []
        for group in groups:
            weight = torch.cat([linear.weight for linear in group]) if len(group) > 1 else None
            weight = group[0].weight.detach() if weight is None else weight.detach()
            bias = torch.cat([linear.bias for linear in group]).detach()
            stacked.append((reorder_weight(weight) if reorder else weight, bias))
        return stacked

    return cached_weights(owner, f"stacked, reorder={reorder}", parameters, build)


def reorder_weight(weight: torch.Tensor) -> torch.Tensor:
    """A Linear weight ``(out, in)`` in oneDNN's blocked layout, for ``_linear_pointwise``."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous())
