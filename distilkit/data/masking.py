"""Masked-LM input corruption, the BERT / DistilBERT recipe.

A share ``mlm_probability`` of the real (non-special, non-padding) tokens is chosen as
prediction targets. Of those, ``mask_fraction`` become [MASK], ``random_fraction`` a
random ordinary token, and the rest keep their id. DistilBERT's optional "smoothing"
chooses targets in proportion to ``count ** -smoothing`` so rare tokens are picked more
often than their frequency alone would give.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = -100  # label of positions that are not predicted (cross_entropy's default)


@dataclass
class MaskingConfig:
    """Masked-LM settings.

    mlm_probability: share of real tokens chosen as targets, in (0, 1].
    mask_fraction / random_fraction: shares of targets replaced by [MASK] / a random
    token; the remaining ``1 - mask_fraction - random_fraction`` keep their id.
    smoothing: ``None`` picks targets uniformly; a float (DistilBERT uses 0.7) picks them
    with probability proportional to ``token_count ** -smoothing``.
    """

    mlm_probability: float = 0.15
    mask_fraction: float = 0.8
    random_fraction: float = 0.1
    smoothing: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.mlm_probability <= 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1], got {self.mlm_probability}")
        for name in ("mask_fraction", "random_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.mask_fraction + self.random_fraction > 1.0 + 1e-9:
            raise ValueError(
                f"mask_fraction + random_fraction must be at most 1, got "
                f"{self.mask_fraction} + {self.random_fraction}"
            )
        if self.smoothing is not None and self.smoothing < 0.0:
            raise ValueError(f"smoothing must be None or >= 0, got {self.smoothing}")


def token_masking_weights(
    token_counts: np.ndarray | torch.Tensor | Sequence[int],
    smoothing: float = 0.7,
    special_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Per-token target weights ``max(count, 1) ** -smoothing``, 0 for ``special_ids``.

    token_counts: (vocab,) occurrences of each id in the corpus
    (:meth:`PackedCorpus.token_counts`). Returns (vocab,) float32 weights summing to 1.
    """
    counts = np.asarray(token_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"token_counts must be a non-empty (vocab,) vector, got {counts.shape}")
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    weights = np.maximum(counts, 1.0) ** -smoothing
    special = [i for i in special_ids if 0 <= i < counts.size]
    if len(special) != len(special_ids):
        raise ValueError(
            f"special_ids {list(special_ids)} do not fit a vocabulary of {counts.size}"
        )
    weights[special] = 0.0
    total = weights.sum()
    if total <= 0:
        raise ValueError("every token is special: there is nothing to mask")
    return torch.from_numpy(weights / total).float()


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    special_ids: Sequence[int],
    mask_id: int,
    vocab_size: int,
    config: MaskingConfig,
    generator: torch.Generator,
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt a batch for masked-LM training; the inputs are not modified.

    input_ids, attention_mask: (batch, seq); padding has attention_mask 0.
    token_weights: (vocab,) from :func:`token_masking_weights`. Without it each real
    token is a target independently with probability ``mlm_probability``; with it exactly
    ``round(mlm_probability * real tokens in the batch)`` targets are drawn without
    replacement in proportion to their token's weight.
    Returns ``(masked_input_ids, labels)``, both (batch, seq) int64; labels hold the
    original id at targets and -100 elsewhere.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} and input_ids "
            f"{tuple(input_ids.shape)} must have the same shape"
        )
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id {mask_id} is outside the vocabulary of {vocab_size}")
    on_host = generator.device.type == "cpu"  # on an accelerator nothing here waits for it
    if (
        on_host
        and input_ids.numel()
        and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size)
    ):
        raise ValueError(
            f"input_ids hold ids outside [0, {vocab_size}): the tokenizer and vocab_size disagree"
        )
    device = generator.device
    input_ids_cpu = input_ids.to(device=device, dtype=torch.long)
    special = _on_device(tuple(sorted(set(special_ids))), device)
    eligible = ~torch.isin(input_ids_cpu, special)  # (batch, seq)
    if attention_mask is not None:
        eligible &= attention_mask.to(device) > 0

    if token_weights is None:
        draws = torch.rand(input_ids_cpu.shape, generator=generator, device=device)
        targets = eligible & (draws < config.mlm_probability)
    else:
        if token_weights.shape != (vocab_size,):
            raise ValueError(
                f"token_weights must be ({vocab_size},), got {tuple(token_weights.shape)}"
            )
        position_weights = token_weights.to(device, torch.float64)[input_ids_cpu.flatten()]
        position_weights = position_weights * eligible.flatten()
        n_targets = round(config.mlm_probability * int(eligible.sum()))
        n_targets = min(n_targets, int((position_weights > 0).sum()))
        targets = torch.zeros(input_ids_cpu.numel(), dtype=torch.bool, device=device)
        if n_targets > 0:
            chosen = torch.multinomial(
                position_weights, n_targets, replacement=False, generator=generator
            )
            targets[chosen] = True
        targets = targets.view_as(input_ids_cpu)

    labels = torch.where(targets, input_ids_cpu, torch.full_like(input_ids_cpu, IGNORE_INDEX))
    masked = input_ids_cpu.clone()
    action = torch.rand(input_ids_cpu.shape, generator=generator, device=device)
    to_mask = targets & (action < config.mask_fraction)
    to_random = targets & ~to_mask & (action < config.mask_fraction + config.random_fraction)
    # random tokens are never special
    ordinary = _ordinary_ids(vocab_size, tuple(sorted(set(special_ids))))
    if not on_host:  # fixed shapes, no boolean indexing: nothing waits for the device
        if not ordinary:
            raise ValueError("every vocabulary id is special: no ordinary token to substitute")
        ordinary_ids = _on_device(ordinary, device)
        picks = torch.randint(len(ordinary), masked.shape, generator=generator, device=device)
        masked = torch.where(to_mask, torch.full_like(masked, mask_id), masked)
        masked = torch.where(to_random, ordinary_ids[picks], masked)
        return masked.to(input_ids.device), labels.to(input_ids.device)
    masked[to_mask] = mask_id
    ordinary_ids = torch.tensor(ordinary, dtype=torch.long)
    if len(ordinary_ids) == 0 and bool(to_random.any()):
        raise ValueError("every vocabulary id is special: no ordinary token to substitute")
    picks = torch.randint(
        len(ordinary_ids), (int(to_random.sum()),), generator=generator, device=device
    )
    masked[to_random] = ordinary_ids[picks]
    return masked.to(input_ids.device), labels.to(input_ids.device)


@functools.lru_cache(maxsize=32)
def _ordinary_ids(vocab_size: int, special_ids: tuple[int, ...]) -> tuple[int, ...]:
    """The vocabulary ids that are not special, in order."""
    return tuple(sorted(set(range(vocab_size)) - set(special_ids)))


@functools.lru_cache(maxsize=32)
def _on_device(ids: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``ids`` as a long tensor on ``device``, copied there once (a copy from the host
    would wait for the device's queue on every batch)."""
    return torch.tensor(ids, dtype=torch.long, device=device)


def span_deleted_views(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    fraction: float,
    pad_id: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A second view of every sequence with one contiguous span of its text deleted.

    input_ids, attention_mask: ``(batch, seq)``, each real sequence ``[CLS] text [SEP]``
    followed by padding. From a text of ``n`` tokens, ``max(1, round(fraction * n))``
    consecutive tokens (at most ``n - 1``) are cut at a random start drawn from
    ``generator``; [CLS] and [SEP] stay. Returns ``(view_ids, view_mask)`` of the same
    shape, right-padded with ``pad_id``. A text of one token is left whole.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the deleted fraction must be between 0 and 1, got {fraction}")
    view_ids = torch.full_like(input_ids, pad_id)
    view_mask = torch.zeros_like(attention_mask)
    for row, length in enumerate(attention_mask.sum(dim=1).tolist()):
        ids = input_ids[row, :length]
        text = length - 2
        if text >= 2:
            cut = min(text - 1, max(1, round(fraction * text)))
            start = 1 + int(torch.randint(0, text - cut + 1, (1,), generator=generator))
            ids = torch.cat([ids[:start], ids[start + cut :]])
        view_ids[row, : len(ids)] = ids
        view_mask[row, : len(ids)] = 1
    return view_ids, view_mask
