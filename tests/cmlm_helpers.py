"""Tiny models and toy pairs for the C-MLM tests."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from distilkit.methods.cmlm.seq2seq import Seq2Seq, Seq2SeqConfig
from distilkit.model.checkpoint import save_model
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel

TOY_WORDS = ["cat", "dog", "sat", "mat", "hello", "world", "big", "small", "red", "blue",
             "run", "jump", "house", "tree", "book", "bird"]  # fmt: skip


def tiny_encoder_config(**overrides) -> ModelConfig:
    sizes = dict(vocab_size=99, hidden_size=32, num_heads=4, intermediate_size=37,
                 num_layers=3, max_position_embeddings=64, hidden_dropout=0.0,
                 attention_dropout=0.0, with_pooler=False)  # fmt: skip
    return ModelConfig(**{**sizes, **overrides})


def tiny_seq2seq(seed: int = 0, **overrides) -> Seq2Seq:
    config = Seq2SeqConfig(
        encoder=tiny_encoder_config(num_layers=2),
        decoder_layers=2, decoder_heads=4, decoder_intermediate_size=37,
        max_target_positions=16, dropout=0.0, pad_id=0, bos_id=2, eos_id=3, **overrides,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Seq2Seq(config)
    with torch.no_grad():  # larger weights, so outputs differ clearly between inputs
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape) * 0.2)
    return model.eval()


def tiny_mlm_teacher(folder: Path, tokenizer, seed: int = 0) -> Path:
    """A random tiny BERT with a masked-LM head, saved as a checkpoint folder."""
    torch.manual_seed(seed)
    model = TransformerModel(tiny_encoder_config(head="masked_lm", with_pooler=True))
    for module in model.modules():  # larger projections than BERT's N(0, 0.02): the toy
        if isinstance(module, torch.nn.Linear):  # teacher learns its task in 150 steps
            torch.nn.init.xavier_uniform_(module.weight)
    save_model(model, folder, tokenizer=tokenizer)
    return folder


def toy_pairs(count: int, seed: int, task: str = "reverse") -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        words = [rng.choice(TOY_WORDS) for _ in range(rng.randint(2, 5))]
        target = words[::-1] if task == "reverse" else words
        pairs.append((" ".join(words), " ".join(target)))
    return pairs
