"""Tiny early-exit classifiers shared by the early-exit and int8 tests."""

from __future__ import annotations

import torch
from conftest import TINY_SIZES, TINY_TEXTS

from distilkit.methods.early_exit.model import BranchConfig, EarlyExitModel
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel

TEXTS = [
    *TINY_TEXTS,
    "the dog ran to the house and read a book in the tree.",
    "red bird",
    "it was the small cafe, with a blue mat!",
    "jumping cats and running dogs",
    "a",
    "the big book of small birds was read in this house, and that tree was red.",
    "hello",
]


def classifier(layout: str = "bert", num_labels: int = 3, layers: int = 4) -> TransformerModel:
    sizes = dict(TINY_SIZES, num_layers=layers)
    extra = {"type_vocab_size": 0, "with_pooler": False} if layout == "distilbert" else {}
    config = ModelConfig(
        **sizes,
        layout=layout,
        head="sequence_classification",
        num_labels=num_labels,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        classifier_dropout=0.0,
        **extra,
    )
    model = TransformerModel(config)
    # Random weights that keep the examples apart: with conftest's randomize_ (every
    # weight N(0, 0.1)) the deep states of a random model collapse to one vector, and
    # every example would be exactly as sure as every other.
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if "norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.1 * noise)
            else:
                parameter.copy_(noise * (1.5 if "embeddings" in name else 0.05))
    return model.eval()


def early_exit_model(layout: str = "bert", seed: int = 5) -> EarlyExitModel:
    """Branches with N(0, 0.3) weights, so their entropies spread over (0, 1)."""
    model = EarlyExitModel(classifier(layout), BranchConfig(width=22, num_heads=2))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.branches.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model.eval()
