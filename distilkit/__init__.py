"""distilkit: make BERT-class text encoders small and fast by knowledge distillation."""

from __future__ import annotations

from distilkit.encoder import Encoder, load
from distilkit.model.allocator import tune_for_inference
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel
from distilkit.model.tokenizer import Tokenizer

__version__ = "0.1.0"
__all__ = [
    "Encoder",
    "ModelConfig",
    "Tokenizer",
    "TransformerModel",
    "__version__",
    "load",
    "tune_for_inference",
]
