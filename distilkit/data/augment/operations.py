"""Word-level augmentation operations for building a distillation transfer set.

Tang et al. (2019), "Distilling Task-Specific Knowledge from BERT into Simple Neural
Networks", Section 3.3. For a sentence w_1..w_n, draw X_i ~ U[0, 1] for every word:

- X_i < p_mask: masking, w_i becomes ``[MASK]``;
- p_mask <= X_i < p_mask + p_pos: POS-guided replacement, w_i becomes another word with
  the same POS tag, drawn from the unigram distribution of the corpus re-normalised
  within that tag;
- otherwise w_i is kept (the two rules are mutually exclusive).

Then, with probability p_ng, n-gram sampling keeps only a random contiguous n-gram,
n ~ U{1..max_ngram} (capped at the sentence length). The paper uses p_mask = p_pos = 0.1,
p_ng = 0.25, and n_iter = 20 synthetic copies per example for SST-2, 10 for MNLI and QQP.

Also here: TinyBERT-style replacement by a teacher's masked-LM predictions (Jiao et al.,
2020), through the small :class:`MaskedWordPredictor` protocol, for teachers with an MLM
head.

All randomness comes from an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

MASK_TOKEN = "[MASK]"


class AugmentError(ValueError):
    """Bad input to an augmentation operation."""


@dataclass
class AugmentConfig:
    """Settings of the transfer-set augmentation.

    p_mask, p_pos, p_ng, max_ngram: Tang et al.'s rules (see the module docstring).
    n_iter: synthetic copies drawn per example (duplicates are then dropped); the paper
    uses 20 for SST-2 and 10 for the other (larger) data sets.
    seed: all draws of a transfer set derive from it.
    mlm_p_replace, mlm_top_k: TinyBERT-style replacement, used only when a masked-LM
    predictor is given: each word is replaced with probability mlm_p_replace by one of the
    teacher's top mlm_top_k predictions (TinyBERT's defaults: 0.4 and 15).
    """

    p_mask: float = 0.1
    p_pos: float = 0.1
    p_ng: float = 0.25
    n_iter: int = 20
    max_ngram: int = 5
    seed: int = 0
    mlm_p_replace: float = 0.4
    mlm_top_k: int = 15

    def __post_init__(self) -> None:
        for name in ("p_mask", "p_pos", "p_ng", "mlm_p_replace"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise AugmentError(f"{name} is a probability and must be in [0, 1], got {value}")
        if self.p_mask + self.p_pos > 1.0:
            raise AugmentError(
                f"p_mask + p_pos = {self.p_mask + self.p_pos} exceeds 1: masking and POS "
                "replacement are mutually exclusive, so their probabilities must sum to <= 1"
            )
        if self.n_iter < 0:
            raise AugmentError(f"n_iter must be >= 0, got {self.n_iter}")
        if self.max_ngram < 1:
            raise AugmentError(f"max_ngram must be >= 1, got {self.max_ngram}")
        if self.seed < 0:
            raise AugmentError(f"seed must be >= 0 (a numpy SeedSequence entropy), got {self.seed}")
        if self.mlm_top_k < 1:
            raise AugmentError(f"mlm_top_k must be >= 1, got {self.mlm_top_k}")


def paper_augmentation(task_name: str) -> AugmentConfig:
    """Tang et al.'s settings: p_mask = p_pos = 0.1, p_ng = 0.25, and 20 copies per
    example for SST-2, 10 for the other tasks."""
    return AugmentConfig(n_iter=20 if task_name == "sst2" else 10)


def _check_generator(rng: object) -> None:
    if not isinstance(rng, np.random.Generator):
        raise AugmentError(
            f"rng must be a numpy.random.Generator (numpy.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )


class PosVocabulary:
    """For every POS tag, the words seen with it and how often: the unigram word
    distribution of a corpus, re-normalised per tag."""

    def __init__(self, counts: dict[str, Counter[str]]):
        self._words: dict[str, list[str]] = {}
        self._cumulative: dict[str, np.ndarray] = {}
        self._position: dict[str, dict[str, int]] = {}
        for tag, word_counts in counts.items():
            # Sorted so the vocabulary (and every draw from it) does not depend on the
            # order in which the corpus was read.
            ordered = sorted(word_counts.items(), key=lambda item: (-item[1], item[0]))
            ordered = [(word, count) for word, count in ordered if count > 0]
            if not ordered:
                continue
            self._words[tag] = [word for word, _ in ordered]
            self._cumulative[tag] = np.cumsum([count for _, count in ordered], dtype=np.int64)
            self._position[tag] = {word: i for i, (word, _) in enumerate(ordered)}

    @classmethod
    def from_tagged(cls, sentences: Iterable[tuple[Sequence[str], Sequence[str]]]) -> PosVocabulary:
        """Count (word, tag) pairs over (words, tags) sentences."""
        counts: dict[str, Counter[str]] = {}
        for index, (words, tags) in enumerate(sentences):
            if len(words) != len(tags):
                raise AugmentError(f"sentence {index} has {len(words)} words but {len(tags)} tags")
            for word, tag in zip(words, tags, strict=True):
                counts.setdefault(tag, Counter())[word] += 1
        return cls(counts)

    @property
    def tags(self) -> list[str]:
        return sorted(self._words)

    def words(self, tag: str) -> list[str]:
        """The words seen with a tag, most frequent first (empty for an unseen tag)."""
        return list(self._words.get(tag, []))

    def probability(self, word: str, tag: str) -> float:
        """P(word | tag) under the corpus counts (0 for an unseen pair)."""
        position = self._position.get(tag, {}).get(word)
        if position is None:
            return 0.0
        cumulative = self._cumulative[tag]
        count = cumulative[position] - (cumulative[position - 1] if position else 0)
        return float(count / cumulative[-1])

    def sample_replacement(self, word: str, tag: str, rng: np.random.Generator) -> str:
        """Draw a word other than `word` from P(. | tag), re-normalised without `word`.

        Always consumes exactly one draw of `rng`. Returns `word` itself when the tag has
        no other word.
        """
        draw = rng.random()
        cumulative = self._cumulative.get(tag)
        if cumulative is None:
            return word
        total = int(cumulative[-1])
        position = self._position[tag].get(word)
        own_count = 0
        own_start = 0
        if position is not None:
            own_start = int(cumulative[position - 1]) if position else 0
            own_count = int(cumulative[position]) - own_start
        if total == own_count:
            return word
        # A point in [0, total - own_count), then skip the interval that `word` occupies.
        point = draw * (total - own_count)
        if position is not None and point >= own_start:
            point += own_count
        chosen = int(np.searchsorted(cumulative, point, side="right"))
        return self._words[tag][min(chosen, len(cumulative) - 1)]


def perturb_words(
    words: Sequence[str],
    tags: Sequence[str],
    pos_vocab: PosVocabulary,
    p_mask: float,
    p_pos: float,
    rng: np.random.Generator,
) -> list[str]:
    """Masking and POS-guided replacement: one X_i ~ U[0, 1] per word (module docstring).

    Returns a list of the same length as `words`.
    """
    _check_generator(rng)
    if len(words) != len(tags):
        raise AugmentError(f"got {len(words)} words but {len(tags)} tags: give one tag per word")
    draws = rng.random(len(words))
    perturbed: list[str] = []
    for word, tag, draw in zip(words, tags, draws, strict=True):
        if draw < p_mask:
            perturbed.append(MASK_TOKEN)
        elif draw < p_mask + p_pos:
            perturbed.append(pos_vocab.sample_replacement(word, tag, rng))
        else:
            perturbed.append(word)
    return perturbed


def sample_ngram_span(length: int, max_ngram: int, rng: np.random.Generator) -> tuple[int, int]:
    """A random n-gram [start, end) of a sentence of `length` words.

    n ~ U{1..max_ngram}, capped at `length`; the start is uniform over the valid ones.
    """
    _check_generator(rng)
    if length < 1:
        raise AugmentError("cannot sample an n-gram from an empty sentence")
    n = min(int(rng.integers(1, max_ngram + 1)), length)
    start = int(rng.integers(0, length - n + 1))
    return start, start + n


def augment_with_span(
    words: Sequence[str],
    tags: Sequence[str],
    pos_vocab: PosVocabulary,
    config: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[list[str], int, int]:
    """One synthetic copy, before the n-gram cut: (perturbed words, start, end).

    The synthetic sentence is ``perturbed[start:end]``; (0, len(words)) when n-gram
    sampling was not applied. Kept separate so callers can rebuild the text around the
    kept words (see :mod:`distilkit.data.augment.transfer_set`).
    """
    perturbed = perturb_words(words, tags, pos_vocab, config.p_mask, config.p_pos, rng)
    start, end = 0, len(perturbed)
    if rng.random() < config.p_ng and perturbed:
        start, end = sample_ngram_span(len(perturbed), config.max_ngram, rng)
    return perturbed, start, end


def augment_sentence(
    words: Sequence[str],
    tags: Sequence[str],
    pos_vocab: PosVocabulary,
    config: AugmentConfig,
    rng: np.random.Generator,
) -> list[str]:
    """One synthetic copy of a sentence by Tang et al.'s rules (masking, POS-guided
    replacement, then n-gram sampling with probability config.p_ng)."""
    perturbed, start, end = augment_with_span(words, tags, pos_vocab, config, rng)
    return perturbed[start:end]


class MaskedWordPredictor(Protocol):
    """A teacher's masked-LM head, seen as a predictor of whole words.

    Called with sentences given as word lists, each holding one or more ``[MASK]`` words,
    and ``top_k``; returns, for every sentence and every ``[MASK]`` in it (left to right),
    up to ``top_k`` candidate words, best first. Candidates should be whole words (no
    ``##`` word pieces, no special tokens); an empty list means "no candidate". This module
    only ever sends sentences with a single ``[MASK]``.

    Example: ``predictor([["a", "[MASK]", "film"]], 2) -> [[["great", "bad"]]]``.
    """

    def __call__(self, masked_sentences: list[list[str]], top_k: int) -> list[list[list[str]]]: ...


def mlm_candidates(
    sentences: Sequence[Sequence[str]],
    predictor: MaskedWordPredictor,
    top_k: int,
    batch_size: int = 256,
) -> list[list[list[str]]]:
    """Replacement candidates for every word of every sentence, from a masked LM.

    As in TinyBERT's augmentation, each word is masked on its own in its original
    sentence and the predictor proposes `top_k` words for it; this is done once per word
    (not per synthetic copy), since a masked LM's predictions are deterministic. The word
    itself is removed from its candidates (so a replacement always changes the word), and
    words with no letter or digit (punctuation) get no candidates.

    Returns candidates[sentence][word]: a list of words, possibly empty.
    """
    if top_k < 1 or batch_size < 1:
        raise AugmentError(f"top_k and batch_size must be >= 1, got {top_k} and {batch_size}")
    candidates: list[list[list[str]]] = [[[] for _ in words] for words in sentences]
    queries: list[tuple[int, int]] = [
        (s, w)
        for s, words in enumerate(sentences)
        for w, word in enumerate(words)
        if word != MASK_TOKEN and any(ch.isalnum() for ch in word)
    ]
    for start in range(0, len(queries), batch_size):
        batch = queries[start : start + batch_size]
        masked = []
        for s, w in batch:
            sentence = list(sentences[s])
            sentence[w] = MASK_TOKEN
            masked.append(sentence)
        predictions = predictor(masked, top_k)
        if len(predictions) != len(batch) or any(len(p) != 1 for p in predictions):
            raise AugmentError(
                f"the masked-LM predictor returned {len(predictions)} results for {len(batch)} "
                "sentences with one [MASK] each: it must return one list per [MASK] per sentence"
            )
        for (s, w), (words,) in zip(batch, predictions, strict=True):
            original = sentences[s][w].lower()
            candidates[s][w] = [word for word in words[:top_k] if word.lower() != original]
    return candidates


def mlm_replace_words(
    words: Sequence[str],
    candidates: Sequence[Sequence[str]],
    p_replace: float,
    rng: np.random.Generator,
) -> list[str]:
    """TinyBERT-style replacement: each word, with probability p_replace, becomes a
    candidate drawn uniformly from its list (kept when the list is empty).

    candidates: one list per word, e.g. from :func:`mlm_candidates`.
    """
    _check_generator(rng)
    if len(words) != len(candidates):
        raise AugmentError(
            f"got {len(words)} words but {len(candidates)} candidate lists: give one per word"
        )
    draws = rng.random(len(words))
    replaced: list[str] = []
    for word, options, draw in zip(words, candidates, draws, strict=True):
        if draw < p_replace and options:
            replaced.append(options[int(rng.integers(len(options)))])
        else:
            replaced.append(word)
    return replaced
