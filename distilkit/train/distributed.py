"""Multi-process training through PyTorch's own DDP, launched by ``torchrun``.

Single-process runs go through the same calls, which then do nothing.
``torchrun --nproc_per_node 2 -m distilkit distill ...`` sets RANK / WORLD_SIZE /
MASTER_ADDR; :func:`init_from_env` joins the group: nccl when the run's device is a GPU
(each process on GPU ``LOCAL_RANK``), gloo on CPUs. Several machines: the same command on
each with ``--nnodes M --node_rank i --rdzv_backend c10d --rdzv_endpoint HOST:PORT``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from distilkit.model.device import resolve_device


def backend_for(device: str | torch.device | None = "auto") -> str:
    """nccl for a run on CUDA GPUs, gloo for one on CPUs."""
    return "nccl" if resolve_device(device).type == "cuda" else "gloo"


def init_from_env(device: str | torch.device | None = "auto") -> bool:
    """Join the process group if launched by torchrun; True when distributed. ``device``
    is the run's (``TrainingConfig.device``): on CUDA each process takes GPU LOCAL_RANK."""
    # torchrun sets RANK, also for a single process (--nproc_per_node 1 runs DDP too)
    if "RANK" not in os.environ or "MASTER_ADDR" not in os.environ or dist.is_initialized():
        return dist.is_initialized()
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def wrap(module: nn.Module, device: torch.device | None = None) -> nn.Module:
    """DDP-wrap the trainable module (already on ``device``) when distributed (gradients
    are averaged across ranks)."""
    if not active():
        return module
    ids = [device] if device is not None and device.type == "cuda" else None
    # Some parameters (e.g. the pooler) take no part in a distillation loss.
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


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


def shard_step(batches: Sequence[Sequence[int]], world: int, rank: int) -> list[list[int]]:
    """This rank's micro-batches of one optimizer step whose global batch is ``batches``
    (the step's ``grad_accumulation`` sampler batches, the same on every rank).

    When the rank count divides the batch count each rank takes whole batches (rank r:
    batches r, r + N, ...), so N ranks compute exactly what one process accumulating all
    of them computes; otherwise every batch is cut into N near-equal parts and rank r
    takes part r of each (a part too small to exist repeats the batch's first sequence).
    Every rank gets the same number of micro-batches.
    """
    if len(batches) % world == 0:
        return [list(batch) for batch in batches[rank::world]]
    parts = []
    for batch in batches:
        part = np.array_split(np.asarray(batch), world)[rank]
        parts.append(part.tolist() if len(part) else [int(batch[0])])
    return parts


def say(message: str) -> None:
    """Print a progress line, on rank 0 only (every process of a DDP run would repeat it)."""
    if rank() == 0:
        print(message, flush=True)
