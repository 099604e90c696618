"""Multi-process training through PyTorch's own DDP, launched by ``torchrun``.

Single-process runs go through the same calls, which then do nothing.
``torchrun --nproc_per_node 2 -m distilkit distill ...`` sets RANK / WORLD_SIZE /
MASTER_ADDR; :func:`init_from_env` joins the group (gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def init_from_env() -> bool:
    """Join the process group if launched by torchrun; True when distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def wrap(module: nn.Module) -> nn.Module:
    """DDP-wrap the trainable module when distributed (gradients are averaged across ranks)."""
    if not active():
        return module
    # Some parameters (e.g. the pooler) take no part in a distillation loss.
    return nn.parallel.DistributedDataParallel(module, find_unused_parameters=True)


def no_sync(model: nn.Module, skip: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce on accumulation micro-steps."""
    if skip and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def barrier() -> None:
    if active():
        dist.barrier()


def _device() -> torch.device:
    """Where collective tensors must live: the GPU for nccl, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def min_int(value: int) -> int:
    """The smallest ``value`` over all ranks (so every rank agrees on a schedule)."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.long, device=_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any (so all ranks stop at the same step)."""
    return min_int(0 if flag else 1) == 0


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over all ranks; every rank must pass the same keys in order."""
    if not active() or not values:
        return values
    tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return dict(zip(values, (tensor / world_size()).tolist(), strict=True))


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order (a one-element list when not distributed)."""
    if not active():
        return [obj]
    result: list[Any] = [None] * world_size()
    dist.all_gather_object(result, obj)
    return result


def say(message: str) -> None:
    """Print a progress line, on rank 0 only (every process of a DDP run would repeat it)."""
    if rank() == 0:
        print(message, flush=True)
