"""CoNLL-2003 named-entity data: reading, word -> sub-word label alignment, and back.

A model tags sub-words, the task tags words. :func:`align_labels` gives each word's tag
to its first sub-word and ``-100`` (ignored by ``cross_entropy``) to continuation
sub-words, special tokens and padding; :func:`word_predictions` reads a word's tag back
from its first sub-word. Words cut off by truncation get the outside tag, so every word
still has exactly one prediction and entity F1 stays comparable across lengths.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from distilkit.model.tokenizer import Tokenizer

IGNORE_INDEX = -100
_IOB2_TAG = re.compile(r"^(O|[BI]-\S+)$")


class ConllFormatError(ValueError):
    """A CoNLL file or a sentence does not have the expected layout."""


@dataclass
class NerSentence:
    """One sentence: words with their NER tags (IOB2) and, when read from CoNLL, POS and
    chunk tags (one per word, empty when unknown)."""

    words: list[str]
    tags: list[str]
    pos_tags: list[str] = field(default_factory=list)
    chunk_tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("tags", "pos_tags", "chunk_tags"):
            values = getattr(self, name)
            if name != "tags" and not values:
                continue
            if len(values) != len(self.words):
                raise ConllFormatError(
                    f"a sentence has {len(self.words)} words but {len(values)} {name}: "
                    "give exactly one tag per word"
                )


def conll_sentences(path: str | Path) -> Iterator[list[tuple[int, list[str]]]]:
    """The sentences of a CoNLL-style file, each a list of (line number, columns): one
    token per line, blank lines between sentences, ``-DOCSTART-`` lines skipped."""
    sentence: list[tuple[int, list[str]]] = []
    with Path(path).open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            fields = line.split()
            if fields and fields[0] != "-DOCSTART-":
                sentence.append((line_number, fields))
            elif sentence:
                yield sentence
                sentence = []
    if sentence:
        yield sentence


def read_conll(path: str | Path) -> list[NerSentence]:
    """Read a CoNLL-2003 file: ``token POS chunk NER`` per line, blank lines between
    sentences, ``-DOCSTART-`` lines skipped. NER tags must be IOB2 (``O``, ``B-X``, ``I-X``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"CoNLL file not found: {path} (set DISTILKIT_DATA or pass the data root)"
        )
    sentences: list[NerSentence] = []
    for lines in conll_sentences(path):
        for line_number, fields in lines:
            if len(fields) != 4:
                raise ConllFormatError(
                    f"{path}:{line_number}: expected 4 columns (token POS chunk NER), "
                    f"got {len(fields)}: {' '.join(fields)!r:.80}"
                )
            check_iob2(fields[3], f"{path}:{line_number}")
        words, pos_tags, chunk_tags, ner_tags = (
            list(column) for column in zip(*(f for _, f in lines), strict=True)
        )
        sentences.append(NerSentence(words, ner_tags, pos_tags, chunk_tags))
    return sentences


def check_iob2(tag: str, where: str) -> None:
    """Raise :class:`ConllFormatError` unless ``tag`` is IOB2 (``O``, ``B-X`` or ``I-X``)."""
    if not _IOB2_TAG.match(tag):
        raise ConllFormatError(
            f"{where}: NER tag {tag!r} is not IOB2 (expected O, B-TYPE or I-TYPE)"
        )


@dataclass
class NerBatch:
    """Sub-word inputs and labels for a batch of sentences, padded on the right.

    input_ids, attention_mask, token_type_ids, labels: (batch, seq) int64; labels hold
    the word's label id on its first sub-word (on all of them with
    ``label_all_subwords``) and -100 elsewhere. word_ids: per sentence, per token (unpadded),
    the word index or None for special tokens. num_words: words per sentence;
    lost_words: per sentence, how many trailing words were cut off by truncation.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    labels: torch.Tensor
    word_ids: list[list[int | None]]
    num_words: list[int]
    lost_words: list[int]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The tensors a model's forward takes, as keyword arguments."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }


def _continuation_label(tag: str, label_index: dict[str, int]) -> int:
    """Label of a non-first sub-word: B-X becomes I-X (when I-X is a label), as a
    continuation is inside the entity, not its start."""
    if tag.startswith("B-") and f"I-{tag[2:]}" in label_index:
        return label_index[f"I-{tag[2:]}"]
    return label_index[tag]


def align_labels(
    tokenizer: Tokenizer,
    sentences: list[NerSentence],
    label_names: list[str],
    max_length: int | None = None,
    label_all_subwords: bool = False,
) -> NerBatch:
    """Tokenize pre-split words and put each word's label on its first sub-word.

    max_length counts [CLS] and [SEP] (default: the tokenizer's limit). Sentences longer
    than that are truncated; the words lost are counted in ``NerBatch.lost_words`` and a
    warning says how many. A word that tokenizes to nothing (e.g. a lone zero-width
    space) has no sub-word and is handled like a lost word by :func:`word_predictions`.
    """
    limit = tokenizer.max_length if max_length is None else int(max_length)
    if not 3 <= limit <= tokenizer.max_length:
        raise ValueError(
            f"max_length must be between 3 and the tokenizer's limit {tokenizer.max_length}, "
            f"got {limit}"
        )
    label_index = {name: index for index, name in enumerate(label_names)}
    for sentence_index, sentence in enumerate(sentences):
        unknown = sorted(set(sentence.tags) - set(label_index))
        if unknown:
            raise ConllFormatError(
                f"sentence {sentence_index} has tag(s) {unknown} that are not in label_names "
                f"{label_names}: use the task's label list"
            )
        if any(not isinstance(word, str) for word in sentence.words):
            raise ConllFormatError(f"sentence {sentence_index} has a word that is not a str")

    backend = tokenizer.backend
    backend.enable_truncation(limit, strategy="longest_first", stride=0)
    try:
        encodings = (
            backend.encode_batch([s.words for s in sentences], is_pretokenized=True)
            if sentences
            else []
        )
    finally:
        backend.no_truncation()

    length = max((len(encoding.ids) for encoding in encodings), default=0)
    input_ids = np.full((len(encodings), length), tokenizer.pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(encodings), length), dtype=np.int64)
    token_type_ids = np.zeros((len(encodings), length), dtype=np.int64)
    labels = np.full((len(encodings), length), IGNORE_INDEX, dtype=np.int64)
    all_word_ids: list[list[int | None]] = []
    lost_words: list[int] = []
    for row, (sentence, encoding) in enumerate(zip(sentences, encodings, strict=True)):
        n_tokens = len(encoding.ids)
        input_ids[row, :n_tokens] = encoding.ids
        attention_mask[row, :n_tokens] = 1
        token_type_ids[row, :n_tokens] = encoding.type_ids
        word_ids = list(encoding.word_ids)
        previous_word: int | None = None
        for position, word in enumerate(word_ids):
            if word is None:
                previous_word = None
                continue
            tag = sentence.tags[word]
            if word != previous_word:
                labels[row, position] = label_index[tag]
            elif label_all_subwords:
                labels[row, position] = _continuation_label(tag, label_index)
            previous_word = word
        all_word_ids.append(word_ids)
        kept = max((word for word in word_ids if word is not None), default=-1) + 1
        lost_words.append(len(sentence.words) - kept if encoding.overflowing else 0)

    n_cut = sum(1 for lost in lost_words if lost)
    if n_cut:
        warnings.warn(
            f"{n_cut} of {len(sentences)} sentences were longer than {limit} tokens; "
            f"{sum(lost_words)} word(s) were cut off and will be predicted as the outside tag",
            stacklevel=2,
        )
    return NerBatch(
        input_ids=torch.from_numpy(input_ids),
        attention_mask=torch.from_numpy(attention_mask),
        token_type_ids=torch.from_numpy(token_type_ids),
        labels=torch.from_numpy(labels),
        word_ids=all_word_ids,
        num_words=[len(sentence.words) for sentence in sentences],
        lost_words=lost_words,
    )


def word_predictions(
    token_logits: torch.Tensor | np.ndarray,
    word_ids: list[list[int | None]],
    num_words: list[int] | None = None,
    outside_label: int = 0,
) -> list[list[int]]:
    """Per-word label ids from sub-word logits (batch, seq, num_labels).

    A word's label is the argmax at its first sub-word. Words without a sub-word (cut
    off by truncation, or tokenized to nothing) get ``outside_label`` (the index of "O";
    0 in the CoNLL label list). num_words: words per sentence (``NerBatch.num_words``);
    without it a sentence ends at its last word that has a sub-word.
    """
    if isinstance(token_logits, torch.Tensor):
        token_logits = token_logits.detach().cpu().numpy()
    token_logits = np.asarray(token_logits)
    if token_logits.ndim != 3:
        raise ValueError(
            f"token_logits must have shape (batch, seq, num_labels), got {token_logits.shape}"
        )
    if token_logits.shape[0] != len(word_ids):
        raise ValueError(
            f"token_logits has {token_logits.shape[0]} rows but word_ids has {len(word_ids)} "
            "sentences: pass the word_ids of the same batch"
        )
    if num_words is not None and len(num_words) != len(word_ids):
        raise ValueError(f"num_words has {len(num_words)} entries for {len(word_ids)} sentences")
    best_labels = token_logits.argmax(axis=-1)  # (batch, seq)
    predictions: list[list[int]] = []
    for row, sentence_word_ids in enumerate(word_ids):
        if len(sentence_word_ids) > token_logits.shape[1]:
            raise ValueError(
                f"sentence {row} has {len(sentence_word_ids)} tokens but token_logits only "
                f"{token_logits.shape[1]} positions"
            )
        seen = [word for word in sentence_word_ids if word is not None]
        count = num_words[row] if num_words is not None else max(seen, default=-1) + 1
        words = [outside_label] * count
        filled = [False] * count
        for position, word in enumerate(sentence_word_ids):
            if word is None:
                continue
            if word >= count:
                raise ValueError(
                    f"sentence {row} has a token of word {word} but num_words says it has "
                    f"{count} words: pass the num_words of the same batch"
                )
            if filled[word]:
                continue
            words[word] = int(best_labels[row, position])
            filled[word] = True
        predictions.append(words)
    return predictions
