"""What the training loop trains: the :class:`Objective` interface every method implements."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn


class Objective(nn.Module):
    """What the loop trains; implementations live in each method's ``objectives.py``.

    An objective is a module that holds every trainable parameter (the student and any
    projections; a teacher is kept out of its parameters) and whose ``forward(batch,
    generator)`` returns unweighted named losses for one batch; DDP wraps it whole.
    ``weights`` gives the weight of each loss; ``evaluate`` returns held-out metrics;
    ``save`` writes the student (Hugging Face format) and extras into a folder and
    ``load`` reads them back for an exact resume.
    """

    weights: dict[str, float]

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def evaluate(self, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        return {}

    def save(self, folder: Path) -> None:
        raise NotImplementedError

    def load(self, folder: Path) -> None:
        raise NotImplementedError

    def frozen_models(self) -> list[nn.Module]:
        """Models the objective runs but does not train (its teacher, kept out of its
        parameters in ``self._teacher``): the trainer puts them on the device too."""
        return list(getattr(self, "_teacher", []))


__all__ = ["Objective"]
