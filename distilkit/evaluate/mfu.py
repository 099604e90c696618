"""Model FLOP utilisation (MFU) of a distillation run, measured against the device itself.

MFU = the matmul FLOPs a run's models did (teacher forward + student forward and
backward, the backward counted as twice the forward) per second, over the dense matmul
rate the same device reaches in the same process (:func:`peak_matmul_flops`, measured
with large square matmuls in the run's precision). Embedding look-ups, norms, softmax
and the loss arithmetic are left out, as in the usual MFU accounting.
"""

from __future__ import annotations

import time

import torch

from distilkit.model.config import ModelConfig
from distilkit.model.device import synchronize


def peak_matmul_flops(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    size: int | None = None,
    seconds: float = 1.0,
) -> float:
    """The best FLOP/s of ``(size x size) @ (size x size)`` in ``dtype`` on ``device`` over
    about ``seconds`` of repeats (size default: 8192 on CUDA, 1024 on the CPU)."""
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 1024)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    flops = 2.0 * size**3
    repeats = 10 if device.type == "cuda" else 1  # one launch is too short to time on a GPU
    best = 0.0
    with torch.inference_mode():
        torch.mm(a, b)  # warm-up: kernel selection, weight packing
        synchronize(device)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or best == 0.0:
            start = time.perf_counter()
            for _ in range(repeats):
                torch.mm(a, b)
            synchronize(device)
            best = max(best, repeats * flops / (time.perf_counter() - start))
    return best


def forward_flops(config: ModelConfig, tokens: int, pairs: int) -> float:
    """Matmul FLOPs of an encoder's blocks over padded batches holding ``tokens``
    positions in all, with ``pairs`` = the sum over batches of batch x length^2 (the
    attention's QK^T and attention x V)."""
    hidden, inner = config.hidden_size, config.intermediate_size
    linear = 2 * tokens * (4 * hidden * hidden + 2 * hidden * inner)  # Q, K, V, O, FFN
    attention = 2 * 2 * pairs * hidden
    return float(config.num_layers * (linear + attention))


def distillation_flops(
    teacher: ModelConfig,
    student: ModelConfig,
    tokens: int,
    pairs: int,
    teacher_share: float = 1.0,
) -> float:
    """Teacher forward + student forward and backward (3x its forward); the teacher ran
    on ``teacher_share`` of the batches' rows (the rest read from a target cache)."""
    return teacher_share * forward_flops(teacher, tokens, pairs) + 3 * forward_flops(
        student, tokens, pairs
    )


def distillation_mfu(
    teacher: ModelConfig,
    student: ModelConfig,
    counts: dict[str, float],
    peak: float,
    teacher_share: float = 1.0,
) -> dict[str, float]:
    """Throughput figures of one process from the trainer's ``counts`` (``padded``
    tokens, ``pairs``, ``seconds``, real ``tokens``) and the device's measured ``peak``
    FLOP/s: achieved TFLOP/s, MFU and tokens/s (this process's). ``teacher_share``: the
    share of rows the teacher ran on (1: no target cache)."""
    seconds = max(float(counts["seconds"]), 1e-9)
    achieved = distillation_flops(
        teacher, student, int(counts["padded"]), int(counts["pairs"]), teacher_share
    )
    achieved /= seconds
    return {
        "tokens_per_s": float(counts["tokens"]) / seconds,
        "achieved_tflops": achieved / 1e12,
        "peak_tflops": peak / 1e12,
        "mfu": achieved / peak if peak else 0.0,
    }


__all__ = ["distillation_flops", "distillation_mfu", "forward_flops", "peak_matmul_flops"]
