"""Tiny task data sets and tiny saved models for the fine-tuning and task-distillation tests.

The data use only words of the tiny 99-entry vocabulary (``conftest.WORDS``), laid out
like the real files (GLUE TSV, CoNLL-2003 columns, SQuAD v1.1 JSON) under a data root,
so the real readers and the whole jobs run on them. Each task is easy by construction:

* sst2: a sentence is positive exactly when it contains "red", negative when "blue";
* stsb: the score is 1.25 x the number of times "red" occurs in the second sentence;
* conll2003: "cat" and "dog" are persons (B-PER; "cat dog" is B-PER I-PER), "house" and
  "tree" are locations;
* squad: every context names one thing after "the big"; the question asks for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from conftest import TINY_VOCAB

from distilkit.model.checkpoint import save_model
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel
from distilkit.model.tokenizer import Tokenizer

FILLER = ["the", "sat", "on", "mat", "is", "was", "and", "of", "to", "in", "it", "this", "with"]
THINGS = ["cat", "dog", "house", "tree", "book", "bird"]


def tiny_model_config(num_layers: int = 2, head: str | None = None, **overrides) -> ModelConfig:
    """Odd tiny sizes (vocab 99, hidden 32, 4 heads, FFN 37), no dropout."""
    sizes = {
        "vocab_size": 99,
        "hidden_size": 32,
        "num_heads": 4,
        "intermediate_size": 37,
        "max_position_embeddings": 64,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
    }
    return ModelConfig(**{**sizes, "num_layers": num_layers, "head": head, **overrides})


def tiny_tokenizer_in(folder: Path) -> Tokenizer:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in TINY_VOCAB), encoding="utf-8")
    return Tokenizer.from_vocab(folder / "vocab.txt", max_length=64)


def save_tiny_model(
    folder: Path, num_layers: int = 2, head: str | None = None, seed: int = 0, **overrides
) -> Path:
    """A random tiny encoder (BERT's initialisation from ``seed``) saved with its tokenizer."""
    torch.manual_seed(seed)
    model = TransformerModel(tiny_model_config(num_layers, head, **overrides))
    tokenizer = tiny_tokenizer_in(folder.parent / f".{folder.name}-vocab")
    save_model(model, folder, tokenizer=tokenizer)
    return folder


def _sentence(rng: np.random.Generator, words: list[str], length: int) -> list[str]:
    return [str(w) for w in rng.choice(words, size=length)]


def write_sst2(root: Path, n_train: int = 160, n_dev: int = 40, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder = root / "sst2"
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        rows = ["sentence\tlabel"]
        for index in range(count):
            label = index % 2
            words = _sentence(rng, FILLER + THINGS, int(rng.integers(3, 9)))
            words.insert(int(rng.integers(0, len(words) + 1)), "red" if label else "blue")
            rows.append(" ".join(words) + " \t" + str(label))
        (folder / name).write_text("\n".join(rows) + "\n", encoding="utf-8")


def write_stsb(root: Path, n_train: int = 120, n_dev: int = 40, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    folder = root / "stsb"
    folder.mkdir(parents=True, exist_ok=True)
    header = (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    )
    for name, count in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        rows = [header]
        for index in range(count):
            first = _sentence(rng, FILLER + THINGS, 4)
            reds = int(rng.integers(0, 5))
            second = ["red"] * reds + _sentence(rng, ["blue", "big", "small"], 4 - reds)
            second = [str(word) for word in rng.permutation(second)]
            score = 1.25 * reds
            fields = [str(index), "g", "f", "2012", str(index), "s", "s"]
            rows.append("\t".join([*fields, " ".join(first), " ".join(second), f"{score:.3f}"]))
        (folder / name).write_text("\n".join(rows) + "\n", encoding="utf-8")


NER_TAGS = {"cat": "PER", "dog": "PER", "house": "LOC", "tree": "LOC"}


def write_conll(root: Path, n_train: int = 120, n_dev: int = 40, seed: int = 2) -> None:
    rng = np.random.default_rng(seed)
    folder = root / "conll2003"
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train.txt", n_train), ("valid.txt", n_dev)):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for _ in range(count):
            words = _sentence(rng, [*FILLER, "cat", "dog", "house", "tree", "book"], 6)
            previous = None
            for word in words:
                kind = NER_TAGS.get(word)
                tag = "O" if kind is None else ("I-" if previous == kind else "B-") + kind
                previous = kind
                lines.append(f"{word} NN O {tag}")
            lines.append("")
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_squad(root: Path, n_articles: int = 10, per_article: int = 8, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    data = []
    for article in range(n_articles):
        paragraphs = []
        for paragraph in range(per_article):
            thing = str(rng.choice(THINGS))
            before = " ".join(_sentence(rng, FILLER, int(rng.integers(2, 8))))
            after = " ".join(_sentence(rng, FILLER, int(rng.integers(2, 8))))
            context = f"{before} the big {thing} {after}."
            start = context.index(f"the big {thing}") + len("the big ")
            paragraphs.append(
                {
                    "context": context,
                    "qas": [
                        {
                            "id": f"q{article}-{paragraph}",
                            "question": "what is big?",
                            "answers": [{"text": thing, "answer_start": start}],
                        }
                    ],
                }
            )
        data.append({"title": f"article_{article}", "paragraphs": paragraphs})
    folder = root / "squad1.1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dev-v1.1.json").write_text(json.dumps({"data": data, "version": "1.1"}))


def write_all_tasks(root: Path) -> Path:
    write_sst2(root)
    write_stsb(root)
    write_conll(root)
    write_squad(root)
    return root
