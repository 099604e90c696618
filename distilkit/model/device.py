"""Where a model runs: one helper that turns a device string into a ``torch.device``.

Every layer that places tensors (the :class:`~distilkit.encoder.Encoder`, the trainer,
the server's runner, the command line's ``--device``) resolves its device here, so
``"auto"`` means the same everywhere: the GPU when there is one, else the CPU.
"""

from __future__ import annotations

import torch

AUTO = "auto"


def resolve_device(device: str | torch.device | None = AUTO) -> torch.device:
    """``"auto"`` (or None): ``cuda`` when a GPU is visible, else ``cpu``; ``"cpu"``,
    ``"cuda"``, ``"cuda:1"``, ``"meta"`` as given. An accelerator that is not there is a
    ``ValueError`` that says which ones are."""
    if isinstance(device, torch.device):
        chosen = device
    elif device is None or device == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"--device must be auto, cpu, cuda or cuda:N, got {device!r}"
            ) from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device {str(chosen)!r} asked for, but no CUDA GPU is visible: use "
                "--device cpu (or auto)"
            )
        if chosen.index is not None and chosen.index >= count:
            raise ValueError(
                f"device {str(chosen)!r} asked for, but only {count} GPU(s) are visible "
                f"(cuda:0 to cuda:{count - 1})"
            )
    return chosen


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively on ``device`` (every CPU; CUDA from Ampere)."""
    if device.type != "cuda":
        return True
    return torch.cuda.is_bf16_supported()


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (for timings; a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(
    batch: dict[str, torch.Tensor], device: torch.device, non_blocking: bool = False
) -> dict[str, torch.Tensor]:
    """Every tensor of a batch dict on ``device`` (others kept as they are)."""
    return {
        key: value.to(device, non_blocking=non_blocking)
        if isinstance(value, torch.Tensor)
        else value
        for key, value in batch.items()
    }


__all__ = ["AUTO", "bf16_supported", "resolve_device", "synchronize", "to_device"]
