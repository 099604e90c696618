"""Data augmentation for distillation into small students (Tang et al., 2019; TinyBERT)."""

from __future__ import annotations

from distilkit.augment.pos_tagger import PosTagger, PosTaggerError, read_conll_pos

__all__ = ["PosTagger", "PosTaggerError", "read_conll_pos"]
