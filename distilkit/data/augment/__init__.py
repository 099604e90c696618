"""Data augmentation for distillation into small students (Tang et al., 2019; TinyBERT)."""

from __future__ import annotations

from distilkit.data.augment.operations import (
    MASK_TOKEN,
    AugmentConfig,
    AugmentError,
    MaskedWordPredictor,
    PosVocabulary,
    augment_sentence,
    augment_with_span,
    mlm_candidates,
    mlm_replace_words,
    paper_augmentation,
    perturb_words,
    sample_ngram_span,
)
from distilkit.data.augment.pos_tagger import (
    PosTagger,
    PosTaggerError,
    default_tagger,
    read_conll_pos,
)
from distilkit.data.augment.transfer_set import SplitText, build_transfer_set, split_words

__all__ = [
    "MASK_TOKEN",
    "AugmentConfig",
    "AugmentError",
    "MaskedWordPredictor",
    "PosTagger",
    "PosTaggerError",
    "PosVocabulary",
    "SplitText",
    "augment_sentence",
    "augment_with_span",
    "build_transfer_set",
    "default_tagger",
    "mlm_candidates",
    "mlm_replace_words",
    "paper_augmentation",
    "perturb_words",
    "read_conll_pos",
    "sample_ngram_span",
    "split_words",
]
