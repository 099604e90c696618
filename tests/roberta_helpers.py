"""Tiny random RoBERTa and XLM-RoBERTa folders made with `transformers`, with a byte-level
BPE (RoBERTa) or a Unigram (SentencePiece-style, XLM-R) tokenizer made with `tokenizers`.

Shared by the RoBERTa parity tests (tests/model/test_roberta.py) and the tests that run
task distillation, BiLSTM, early exit and bench on a RoBERTa teacher.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import randomize_
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as in RoBERTa and XLM-R
TRAINING_TEXT = [
    "the cat sat on the mat.", "Hello World, this is a tiny corpus!", "a big red dog ran.",
    "Le chat est sur le tapis.", "Der Hund läuft schnell.", "el perro corre rápido.",
    "this is that; it was read.", "small blue house and the tree", "Über die Brücke gehen.",
] * 3  # fmt: skip
TEXTS = [
    "the cat sat on the mat.",
    "Hello World",
    "Le chat est sur le tapis, et le chien court vite!",
    "Über",
    "this is that; it was read. Zebra xylophone?",
]


def unigram_tokenizer() -> BackendTokenizer:
    """XLM-R's pipeline: NFKC, Metaspace, Unigram; ``<s> A </s></s> B </s>``; cased."""
    tokenizer = BackendTokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=150, special_tokens=SPECIALS, unk_token="<unk>")
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer)
    return _with_template(tokenizer)


def bpe_tokenizer() -> BackendTokenizer:
    """RoBERTa's pipeline: byte-level BPE, cased."""
    tokenizer = BackendTokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer)
    return _with_template(tokenizer)


def _with_template(tokenizer: BackendTokenizer) -> BackendTokenizer:
    ids = {t: tokenizer.token_to_id(t) for t in ("<s>", "</s>")}
    assert ids == {"<s>": 0, "</s>": 2}
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=list(ids.items()),
    )
    return tokenizer


def make_folder(root: Path, family: str, head: str = "Model", seed: int = 1) -> Path:
    """A tiny random `transformers` checkpoint of ``family`` with its tokenizer files."""
    transformers = pytest.importorskip("transformers")
    backend = unigram_tokenizer() if family == "xlm-roberta" else bpe_tokenizer()
    prefix = "XLMRoberta" if family == "xlm-roberta" else "Roberta"
    config = getattr(transformers, f"{prefix}Config")(
        vocab_size=backend.get_vocab_size(),
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=37,
        num_hidden_layers=3,
        max_position_embeddings=40,  # 38 tokens after the padding_idx offset
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        # QA's start/end pair is transformers' default num_labels 2
        **({} if head == "ForQuestionAnswering" else {"id2label": {0: "no", 1: "yes", 2: "maybe"}}),
    )
    model = getattr(transformers, f"{prefix}{head}")(config)
    randomize_(model, seed=seed)
    folder = root / f"{family}-{head}"
    model.save_pretrained(folder)
    backend.save(str(folder / "tokenizer.json"))
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 38,
        **{
            f"{role}_token": tok
            for role, tok in zip(["bos", "pad", "eos", "unk", "mask"], SPECIALS, strict=True)
        },
        "cls_token": "<s>",
        "sep_token": "</s>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return folder
