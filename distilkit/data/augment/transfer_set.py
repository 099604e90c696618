"""The transfer set for distilling a teacher into a small student (Tang et al., 2019).

The teacher labels a transfer set: the original training examples followed by synthetic
copies made by :mod:`distilkit.data.augment.operations`, n_iter per example, with duplicates
dropped. Texts are split into words and the whitespace between them, so an untouched
word keeps its original spacing and punctuation attachment ("off." stays "off.") and an
unchanged copy is the original text exactly.

Sentence pairs (Tang et al., Section 3.3): "we cycle through augmenting the first
sentence only (holding the second fixed), the second sentence only (holding the first
fixed), and both sentences". Copy k of an example changes the first text when
k % 3 == 0, the second when k % 3 == 1 and both when k % 3 == 2, so every synthetic pair
comes from one example and keeps the order (first, second).

Determinism: copy draws for example i come from ``numpy.random.default_rng([seed, i])``,
so the result depends on the seed, the example, its index and the corpus vocabulary
only (not on batching or on other examples' draws).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from distilkit.data.augment.operations import (
    AugmentConfig,
    AugmentError,
    MaskedWordPredictor,
    PosVocabulary,
    augment_with_span,
    mlm_candidates,
    mlm_replace_words,
)
from distilkit.data.augment.pos_tagger import PosTagger

# A word: letters/digits with inner ' ’ - . kept (don't, n't, 's, 1996-08-22, 5.00), an
# optional leading apostrophe for clitics ('s, 're); or a run of one punctuation
# character (".", "...", "--"). Every non-space character belongs to some word, so the
# text between words is whitespace only.
WORD_PATTERN = re.compile(r"['’]?\w+(?:['’.\-]\w+)*|([^\w\s])\1*")


@dataclass(frozen=True)
class SplitText:
    """A text as words and the whitespace around them.

    separators has len(words) + 1 items: before the first word, between words, after
    the last; ``join()`` gives the text back exactly.
    """

    words: list[str]
    separators: list[str]

    def join(
        self, words: Sequence[str] | None = None, start: int = 0, end: int | None = None
    ) -> str:
        """The text with `words` (default: the original ones) in place of the words.

        A changed word that touched its neighbour with no space ("off." with "." masked)
        gets a space instead ("off [MASK]"), so it stays a word of its own for whitespace
        tokenizers. With start/end, only words[start:end] are kept (an n-gram), joined by
        their own separators; the text's leading and trailing whitespace is kept either way.
        """
        words = self.words if words is None else words
        if len(words) != len(self.words):
            raise AugmentError(
                f"got {len(words)} words for a text of {len(self.words)}: replace words one "
                "for one and cut n-grams with start/end"
            )
        end = len(words) if end is None else end
        if not self.words:
            return "".join(self.separators)
        parts = [self.separators[0]]
        for i in range(start, end):
            if i > start:
                separator = self.separators[i]
                if not separator and (
                    words[i - 1] != self.words[i - 1] or words[i] != self.words[i]
                ):
                    separator = " "
                parts.append(separator)
            parts.append(words[i])
        parts.append(self.separators[-1])
        return "".join(parts)


def split_words(text: str) -> SplitText:
    """Split a text into words (whitespace and punctuation tokenization) that round-trips:
    ``split_words(text).join() == text``."""
    if not isinstance(text, str):
        raise AugmentError(f"expected a text (str), got {type(text).__name__}")
    words: list[str] = []
    separators: list[str] = []
    position = 0
    for match in WORD_PATTERN.finditer(text):
        separators.append(text[position : match.start()])
        words.append(match.group(0))
        position = match.end()
    separators.append(text[position:])
    return SplitText(words, separators)


def _check_inputs(texts: Sequence[str], text_pairs: Sequence[str] | None) -> None:
    if isinstance(texts, str):
        raise AugmentError("texts must be a list of texts, not a single string")
    for name, column in (("texts", texts), ("text_pairs", text_pairs)):
        if column is None:
            continue
        for index, text in enumerate(column):
            if not isinstance(text, str):
                raise AugmentError(f"{name}[{index}] is a {type(text).__name__}, not a str")
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise AugmentError(
            f"got {len(texts)} texts but {len(text_pairs)} text_pairs: give one second text "
            "per first text (or text_pairs=None for single-text tasks)"
        )


def _sides_to_change(copy_index: int, paired: bool) -> tuple[bool, bool]:
    """(change first text, change second text) for the copy_index-th copy of an example."""
    if not paired:
        return True, False
    cycle = copy_index % 3
    return cycle != 1, cycle != 0


def build_transfer_set(
    texts: Sequence[str],
    text_pairs: Sequence[str] | None = None,
    config: AugmentConfig | None = None,
    tagger: PosTagger | None = None,
    mlm_replacer: MaskedWordPredictor | None = None,
    progress: bool = False,
) -> list[tuple[str, str | None]]:
    """Original examples, then up to config.n_iter synthetic copies of each.

    Returns (text, second text or None) tuples: the len(texts) originals first, unchanged
    and in order (so they line up with their labels), then, example by example, the
    copies not seen before (a copy equal to an original or to an earlier copy is dropped).

    Without `mlm_replacer`, copies follow Tang et al. (masking, POS-guided replacement,
    n-gram sampling); POS tags come from `tagger` (default: the packaged one,
    :meth:`PosTagger.load_default`), and replacement words from the words seen with each
    tag in `texts` and `text_pairs`. With `mlm_replacer` (a teacher with a masked-LM head),
    copies follow TinyBERT instead: each word is replaced with probability
    config.mlm_p_replace by one of the teacher's config.mlm_top_k predictions for it.
    """
    config = AugmentConfig() if config is None else config
    _check_inputs(texts, text_pairs)
    paired = text_pairs is not None
    # Every text of the data set, first texts then second texts: example i's second
    # text is splits[len(texts) + i].
    splits = [split_words(text) for text in [*texts, *(text_pairs or [])]]
    all_words = [split.words for split in splits]

    transfer: list[tuple[str, str | None]] = list(
        zip(texts, text_pairs if paired else [None] * len(texts), strict=True)
    )
    seen = set(transfer)

    if mlm_replacer is not None:
        candidates = mlm_candidates(all_words, mlm_replacer, config.mlm_top_k)

        def make_copy(position: int, rng: np.random.Generator) -> str:
            split = splits[position]
            replaced = mlm_replace_words(
                split.words, candidates[position], config.mlm_p_replace, rng
            )
            return split.join(replaced)

    else:
        tagger = PosTagger.load_default() if tagger is None else tagger
        all_tags = tagger.tag_batch(all_words)
        pos_vocab = PosVocabulary.from_tagged(zip(all_words, all_tags, strict=True))

        def make_copy(position: int, rng: np.random.Generator) -> str:
            split = splits[position]
            perturbed, start, end = augment_with_span(
                split.words, all_tags[position], pos_vocab, config, rng
            )
            return split.join(perturbed, start, end)

    examples = range(len(texts))
    for index in tqdm(examples, desc="augmenting", disable=not progress):
        rng = np.random.default_rng([config.seed, index])
        for copy_index in range(config.n_iter):
            change_first, change_second = _sides_to_change(copy_index, paired)
            text = make_copy(index, rng) if change_first else texts[index]
            pair = None
            if paired:
                pair = make_copy(len(texts) + index, rng) if change_second else text_pairs[index]
            candidate = (text, pair)
            if candidate not in seen:
                seen.add(candidate)
                transfer.append(candidate)
    return transfer
