"""The FLOP view of serving: the matmul FLOPs one text costs an encoder or a BiLSTM
student, and this machine's matmul ceilings (the "roofs") that ``distilkit bench`` and
``bench --encoders`` divide their achieved GFLOP/s by.

Embedding look-ups, norms and softmax are left out, as in the usual MFU accounting
(:mod:`distilkit.evaluate.mfu` counts a distillation step's FLOPs the same way).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from distilkit.evaluate.mfu import peak_matmul_flops
from distilkit.model.config import ModelConfig

CPU = torch.device("cpu")


def matmul_gflops(
    dtype: torch.dtype = torch.float32, size: int = 1024, seconds: float = 1.0
) -> float:
    """This machine's matmul ceiling: the best GFLOP/s of ``(size x size) @ (size x size)``
    in ``dtype`` over about ``seconds`` of repeats, at torch's current thread count."""
    return peak_matmul_flops("cpu", dtype, size, seconds) / 1e9


def roof_key(device: str, dtype: str) -> str:
    """The key of a ceiling in ``ceilings_gflops``: ``"fp32"`` (the CPU's), ``"cuda:0 bf16"``."""
    return dtype if device == "cpu" else f"{device} {dtype}"


def matmul_roofs(
    seconds: float, say: Callable[[str], None], device: torch.device = CPU
) -> dict[str, float]:
    """``{"fp32": GFLOP/s, "bf16": GFLOP/s}``: :func:`matmul_gflops` for about ``seconds``
    each (none when ``seconds`` is 0); with another ``device``, its dense matmul rate too
    (:func:`peak_matmul_flops` at its default size), under :func:`roof_key`."""
    if seconds <= 0:
        return {}
    dtypes = (("fp32", torch.float32), ("bf16", torch.bfloat16))
    say("measuring the matmul ceiling (fp32, bf16)")
    roofs = {name: matmul_gflops(dtype, seconds=seconds) for name, dtype in dtypes}
    if device.type != "cpu":
        say(f"measuring the matmul ceiling on {device} (fp32, bf16)")
        for name, dtype in dtypes:
            roofs[roof_key(str(device), name)] = (
                peak_matmul_flops(device, dtype, seconds=seconds) / 1e9
            )
    return roofs


def encoder_flops(
    config: ModelConfig,
    tokens: int,
    layers: int | None = None,
    branch_width: int = 0,
    head: bool = True,
) -> float:
    """Matmul FLOPs of one text of ``tokens`` real tokens through ``layers`` blocks (default
    all) and (``head``) the classifier head; with ``branch_width``, early-exit branches after
    ``min(layers, num_layers - 1)`` of them. Embedding look-ups, norms and softmax omitted."""
    hidden, inner, labels = config.hidden_size, config.intermediate_size, config.num_labels
    layers = config.num_layers if layers is None else layers
    per_layer = 2 * tokens * (4 * hidden * hidden + 2 * hidden * inner)  # Q, K, V, O, FFN
    per_layer += 2 * 2 * tokens * tokens * hidden  # QK^T and attention x V
    head_flops = 2 * hidden * hidden + 2 * hidden * labels if head else 0  # pooler, classifier
    flops = layers * per_layer + head_flops
    if branch_width:
        width = branch_width
        branch = 2 * tokens * (hidden * width + 2 * width * width)  # project, key, value
        branch += 2 * width * width + 4 * tokens * width + 2 * width * width + 2 * width * labels
        flops += min(layers, config.num_layers - 1) * branch
    return float(flops)


def bilstm_flops(config, tokens: int) -> float:
    """Matmul FLOPs of one text of ``tokens`` tokens through a BiLSTM student: the
    recurrent half of the gates in both directions (``W_hh h``; the input half is a table
    look-up) and the MLP head."""
    hidden = config.hidden_size
    recurrent = 2 * 2 * hidden * 4 * hidden  # two directions, (H) x (H, 4H) per token
    head = 2 * (config.sentence_size * config.mlp_size + config.mlp_size * config.num_labels)
    return float(tokens * recurrent + head)


__all__ = ["bilstm_flops", "encoder_flops", "matmul_gflops", "matmul_roofs", "roof_key"]
