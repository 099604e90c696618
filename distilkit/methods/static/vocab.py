"""The static student's vocabulary: the teacher's tokens plus frequent corpus words as
whole entries, and each entry's frequency for SIF weighting.

A WordPiece tokenizer matches the longest vocabulary entry from a word's start, so a
word added to its vocabulary becomes one token: "unbelievable" is then looked up as
itself instead of averaging "un", "##bel", "##ie", "##vable".
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from tokenizers import Tokenizer as BackendTokenizer

from distilkit.data.corpus import iter_documents, split_paragraphs, split_sentences

WORD = re.compile(r"^[^\W\d_]{2,}$")  # letters only, at least two
UNUSED = re.compile(r"^\[unused\d+\]$")


def corpus_sentences(paths: Sequence[str], limit: int | None = None) -> Iterator[str]:
    """Sentences of a corpus (text files, folders, tables), in order, at most ``limit``."""
    count = 0
    for _, block in iter_documents(paths):
        for paragraph in split_paragraphs(block):
            for sentence in split_sentences(paragraph):
                yield sentence
                count += 1
                if limit is not None and count >= limit:
                    return


def word_counts(tokenizer: BackendTokenizer, texts: Iterable[str]) -> Counter:
    """How often each word occurs, after the tokenizer's normalizer and pre-tokenizer."""
    counts: Counter = Counter()
    for text in texts:
        normal = tokenizer.normalizer.normalize_str(text) if tokenizer.normalizer else text
        words = (
            tokenizer.pre_tokenizer.pre_tokenize_str(normal)
            if tokenizer.pre_tokenizer
            else [(w, None) for w in normal.split()]
        )
        counts.update(word for word, _ in words)
    return counts


def new_words(
    tokenizer: BackendTokenizer, counts: Counter, max_words: int, min_count: int
) -> list[str]:
    """The ``max_words`` most frequent words (seen ``min_count`` times or more) that are
    not vocabulary entries yet, most frequent first (ties: alphabetical)."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    candidates = [
        (word, n)
        for word, n in counts.items()
        if n >= min_count and word not in vocab and WORD.match(word)
    ]
    candidates.sort(key=lambda item: (-item[1], item[0]))
    return [word for word, _ in candidates[:max_words]]


def with_words(tokenizer: BackendTokenizer, words: Sequence[str]) -> BackendTokenizer:
    """A copy of a WordPiece ``tokenizer`` with ``words`` appended to its vocabulary
    (ids from the old size on), so that each is one token."""
    spec = json.loads(tokenizer.to_str())
    if spec["model"]["type"] != "WordPiece":
        raise ValueError(
            f"adding corpus words needs a WordPiece tokenizer, this one is "
            f"{spec['model']['type']}: drop --vocab-from"
        )
    vocab = spec["model"]["vocab"]
    next_id = tokenizer.get_vocab_size(with_added_tokens=True)
    for word in words:
        if word not in vocab:
            vocab[word] = next_id
            next_id += 1
    return BackendTokenizer.from_str(json.dumps(spec))


def excluded_ids(tokenizer: BackendTokenizer, special: Sequence[int]) -> np.ndarray:
    """Ids a text never averages: the special tokens and BERT's ``[unusedN]`` placeholders
    (kept in the table as zero rows and left out of the PCA)."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    unused = [i for token, i in vocab.items() if UNUSED.match(token)]
    return np.array(sorted(set(unused) | set(special)), dtype=np.int64)


def zipf_probabilities(size: int) -> np.ndarray:
    """model2vec's frequency estimate without a corpus: Zipf's law over the vocabulary
    order, ``p(rank) ~ 1 / (rank + 1)`` (rank 1 = first entry), normalised to sum to 1."""
    inverse = 1.0 / np.arange(2, size + 2)
    return inverse / inverse.sum()


def corpus_probabilities(
    tokenizer: BackendTokenizer, texts: Sequence[str], size: int
) -> np.ndarray:
    """Relative frequency of each id in ``texts`` tokenized by ``tokenizer``, add-one
    smoothed so unseen entries get the smallest probability, ``(size,)`` summing to 1."""
    counts = np.ones(size, dtype=np.float64)
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        np.add.at(counts, np.asarray(encoding.ids, dtype=np.int64), 1.0)
    return counts / counts.sum()


def sif_weights(probabilities: np.ndarray, coefficient: float) -> np.ndarray:
    """Arora et al.'s smooth inverse frequency: ``a / (a + p(w))`` for each entry."""
    if not 0 < coefficient < 1:
        raise ValueError(f"the SIF coefficient must be in (0, 1), got {coefficient}")
    return coefficient / (coefficient + probabilities)
