"""Tests for distilkit.data.augment.operations and distilkit.data.augment.transfer_set."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from distilkit.data.augment.operations import (
    MASK_TOKEN,
    AugmentConfig,
    AugmentError,
    PosVocabulary,
    augment_sentence,
    augment_with_span,
    mlm_candidates,
    mlm_replace_words,
    perturb_words,
    sample_ngram_span,
)
from distilkit.data.augment.transfer_set import build_transfer_set, split_words

TAG_OF = {
    "the": "DT",
    "a": "DT",
    "an": "DT",
    "movie": "NN",
    "film": "NN",
    "plot": "NN",
    "story": "NN",
    "good": "JJ",
    "bad": "JJ",
    "long": "JJ",
    "is": "VBZ",
    "was": "VBD",
    "very": "RB",
    ".": ".",
    "!": ".",
}


class LookupTagger:
    """A stand-in for PosTagger: tags from a fixed table, NN for unknown words."""

    def tag_batch(self, sentences: list[list[str]]) -> list[list[str]]:
        return [[TAG_OF.get(word.lower(), "NN") for word in words] for words in sentences]


def is_contiguous_sublist(part: list[str], whole: list[str]) -> bool:
    return any(whole[i : i + len(part)] == part for i in range(len(whole) - len(part) + 1))


@pytest.fixture()
def vocab() -> PosVocabulary:
    sentences = [
        (["the", "movie", "is", "good", "."], ["DT", "NN", "VBZ", "JJ", "."]),
        (["a", "film", "was", "bad", "!"], ["DT", "NN", "VBD", "JJ", "."]),
        (["the", "plot", "is", "long", "."], ["DT", "NN", "VBZ", "JJ", "."]),
        (["the", "story", "was", "very", "good"], ["DT", "NN", "VBD", "RB", "JJ"]),
    ]
    return PosVocabulary.from_tagged(sentences)


# --- configuration -------------------------------------------------------------------


def test_config_defaults_are_the_papers() -> None:
    config = AugmentConfig()
    assert (config.p_mask, config.p_pos, config.p_ng) == (0.1, 0.1, 0.25)
    assert (config.n_iter, config.max_ngram, config.seed) == (20, 5, 0)


@pytest.mark.parametrize(
    "options",
    [
        {"p_mask": 1.5},
        {"p_ng": -0.1},
        {"p_mask": 0.6, "p_pos": 0.6},
        {"max_ngram": 0},
        {"n_iter": -1},
        {"seed": -3},
        {"mlm_top_k": 0},
    ],
)
def test_config_rejects_bad_values(options: dict[str, float]) -> None:
    with pytest.raises(AugmentError):
        AugmentConfig(**options)


def test_operations_need_a_numpy_generator(vocab: PosVocabulary) -> None:
    with pytest.raises(AugmentError, match=r"numpy\.random\.Generator"):
        perturb_words(["a"], ["DT"], vocab, 0.1, 0.1, rng=0)  # type: ignore[arg-type]


# --- POS vocabulary ------------------------------------------------------------------


def test_pos_vocabulary_counts_and_probabilities(vocab: PosVocabulary) -> None:
    assert vocab.words("DT") == ["the", "a"]  # most frequent first
    assert vocab.probability("the", "DT") == pytest.approx(3 / 4)
    assert vocab.probability("good", "JJ") == pytest.approx(2 / 4)
    assert vocab.probability("good", "NN") == 0.0
    assert vocab.words("XX") == []


def test_pos_replacement_follows_the_renormalised_unigram_distribution() -> None:
    counts = {"NN": Counter({"cat": 6, "dog": 3, "eel": 1})}
    vocab = PosVocabulary(counts)
    rng = np.random.default_rng(1)
    n = 20_000
    from_cat = Counter(vocab.sample_replacement("cat", "NN", rng) for _ in range(n))
    assert "cat" not in from_cat  # "another word"
    assert from_cat["dog"] / n == pytest.approx(3 / 4, abs=0.015)
    assert from_cat["eel"] / n == pytest.approx(1 / 4, abs=0.015)
    from_dog = Counter(vocab.sample_replacement("dog", "NN", rng) for _ in range(n))
    assert from_dog["cat"] / n == pytest.approx(6 / 7, abs=0.015)
    unseen = Counter(vocab.sample_replacement("yak", "NN", rng) for _ in range(n))
    for word, expected in (("cat", 0.6), ("dog", 0.3), ("eel", 0.1)):
        assert unseen[word] / n == pytest.approx(expected, abs=0.015)


def test_pos_replacement_keeps_a_word_that_has_no_alternative() -> None:
    vocab = PosVocabulary({"TO": Counter({"to": 5})})
    rng = np.random.default_rng(0)
    assert vocab.sample_replacement("to", "TO", rng) == "to"
    assert vocab.sample_replacement("x", "UNSEEN", rng) == "x"


# --- word-level rules ----------------------------------------------------------------

WORDS = ["the", "movie", "is", "very", "good", "."]
TAGS = ["DT", "NN", "VBZ", "RB", "JJ", "."]


def test_all_probabilities_zero_leaves_the_sentence_unchanged(vocab: PosVocabulary) -> None:
    config = AugmentConfig(p_mask=0.0, p_pos=0.0, p_ng=0.0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert augment_sentence(WORDS, TAGS, vocab, config, rng) == WORDS


def test_p_mask_one_masks_every_word(vocab: PosVocabulary) -> None:
    config = AugmentConfig(p_mask=1.0, p_pos=0.0, p_ng=0.0)
    out = augment_sentence(WORDS, TAGS, vocab, config, np.random.default_rng(0))
    assert out == [MASK_TOKEN] * len(WORDS)


def test_masking_draws_one_uniform_per_word(vocab: PosVocabulary) -> None:
    # Reference: X_i ~ U[0,1] from the same seed; masked exactly where X_i < p_mask.
    words = [f"w{i}" for i in range(200)]
    tags = ["NN"] * len(words)
    for seed in range(5):
        out = perturb_words(words, tags, vocab, 0.3, 0.0, np.random.default_rng(seed))
        expected = np.random.default_rng(seed).random(len(words)) < 0.3
        assert [word == MASK_TOKEN for word in out] == expected.tolist()
        # Masking only writes [MASK]; other words are untouched.
        assert all(o in (MASK_TOKEN, w) for o, w in zip(out, words, strict=True))


def test_pos_replacement_keeps_the_tag_of_every_replaced_word(vocab: PosVocabulary) -> None:
    rng = np.random.default_rng(3)
    for _ in range(100):
        out = perturb_words(WORDS, TAGS, vocab, 0.0, 1.0, rng)
        for old, new, tag in zip(WORDS, out, TAGS, strict=True):
            assert new in vocab.words(tag)
            assert new != old or len(vocab.words(tag)) == 1


def test_mask_and_pos_rates_are_respected(vocab: PosVocabulary) -> None:
    # "w" is not in the vocabulary, so a POS replacement always changes it.
    words = ["w"] * 20_000
    out = perturb_words(words, ["NN"] * len(words), vocab, 0.2, 0.3, np.random.default_rng(0))
    masked = sum(word == MASK_TOKEN for word in out) / len(out)
    replaced = sum(word in vocab.words("NN") for word in out) / len(out)
    assert masked == pytest.approx(0.2, abs=0.015)
    assert replaced == pytest.approx(0.3, abs=0.015)
    assert masked + replaced + out.count("w") / len(out) == pytest.approx(1.0)


# --- n-gram sampling -----------------------------------------------------------------


def test_ngram_span_lengths_are_uniform_on_one_to_five() -> None:
    rng = np.random.default_rng(0)
    n_draws = 10_000
    lengths = Counter()
    for _ in range(n_draws):
        start, end = sample_ngram_span(12, 5, rng)
        assert 0 <= start < end <= 12
        lengths[end - start] += 1
    assert sorted(lengths) == [1, 2, 3, 4, 5]
    for n in range(1, 6):
        assert lengths[n] / n_draws == pytest.approx(0.2, abs=0.02)


def test_ngram_length_is_capped_at_the_sentence_length() -> None:
    rng = np.random.default_rng(0)
    spans = [sample_ngram_span(3, 5, rng) for _ in range(10_000)]
    lengths = Counter(end - start for start, end in spans)
    # n ~ U{1..5} capped at 3: P(1) = P(2) = 1/5, P(3) = 3/5.
    assert lengths[3] / len(spans) == pytest.approx(0.6, abs=0.02)
    assert max(lengths) == 3
    with pytest.raises(AugmentError, match="empty"):
        sample_ngram_span(0, 5, rng)


def test_p_ng_one_always_returns_a_contiguous_ngram_of_the_input(vocab: PosVocabulary) -> None:
    config = AugmentConfig(p_mask=0.0, p_pos=0.0, p_ng=1.0)
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(9)]
    for _ in range(200):
        out = augment_sentence(words, ["NN"] * 9, vocab, config, rng)
        assert 1 <= len(out) <= 5
        assert is_contiguous_sublist(out, words)


def test_p_ng_rate_is_respected(vocab: PosVocabulary) -> None:
    config = AugmentConfig(p_mask=0.1, p_pos=0.1, p_ng=0.25)
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(8)]  # longer than 5: an n-gram is always shorter
    cut = sum(len(augment_sentence(words, ["NN"] * 8, vocab, config, rng)) < 8 for _ in range(8000))
    assert cut / 8000 == pytest.approx(0.25, abs=0.02)


def test_ngram_is_cut_after_the_word_rules(vocab: PosVocabulary) -> None:
    config = AugmentConfig(p_mask=0.3, p_pos=0.3, p_ng=1.0)
    rng = np.random.default_rng(5)
    for _ in range(100):
        perturbed, start, end = augment_with_span(WORDS, TAGS, vocab, config, rng)
        assert len(perturbed) == len(WORDS) and 1 <= end - start <= 5


def test_augment_sentence_is_deterministic_under_a_seed(vocab: PosVocabulary) -> None:
    config = AugmentConfig(p_mask=0.3, p_pos=0.3, p_ng=0.5)

    def run(seed: int) -> list[list[str]]:
        rng = np.random.default_rng(seed)
        return [augment_sentence(WORDS, TAGS, vocab, config, rng) for _ in range(30)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_mismatched_words_and_tags_are_rejected(vocab: PosVocabulary) -> None:
    with pytest.raises(AugmentError, match="one tag per word"):
        augment_sentence(["a", "b"], ["DT"], vocab, AugmentConfig(), np.random.default_rng(0))


def test_empty_sentence_stays_empty(vocab: PosVocabulary) -> None:
    config = AugmentConfig(p_ng=1.0)
    assert augment_sentence([], [], vocab, config, np.random.default_rng(0)) == []


# --- word splitting ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "hide new secretions from the parental units ",
            "hide new secretions from the parental units",
        ),
        (
            "it 's a charming and often affecting journey . ",
            "it 's a charming and often affecting journey .",
        ),
        ("A plane is taking off.", "A plane is taking off ."),
        ("Don't stop (please)!", "Don't stop ( please ) !"),
        ("Wait... what?!  1996-08-22, $5.00", "Wait ... what ? ! 1996-08-22 , $ 5.00"),
        ("café  naïve\tnew\nline", "café naïve new line"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_split_words_round_trips(text: str, words: str) -> None:
    split = split_words(text)
    assert split.words == words.split()
    assert split.join() == text
    assert all(separator.strip() == "" for separator in split.separators)


def test_join_keeps_spacing_of_kept_words_and_cuts_ngrams() -> None:
    split = split_words("A plane is taking off. ")
    replaced = ["A", "[MASK]", "is", "taking", "off", "."]
    assert split.join(replaced) == "A [MASK] is taking off. "
    assert split.join(replaced, 3, 6) == "taking off. "
    assert split.join(replaced, 1, 3) == "[MASK] is "  # the text's own trailing space
    assert split_words("  x  y z").join(None, 1, 2) == "  y"
    # A changed word never sticks to its neighbour; unchanged ones keep their spacing.
    split = split_words("Stop (now)!")
    assert split.join(["Stop", "(", MASK_TOKEN, ")", "!"]) == "Stop ( [MASK] )!"
    assert split.join(["Stop", "(", "now", ")", "?"]) == "Stop (now) ?"
    with pytest.raises(AugmentError, match="one for one"):
        split.join(["A"])


# --- transfer set --------------------------------------------------------------------

TEXTS = [
    "the movie is very good . ",
    "a film was bad ! ",
    "the plot is long . ",
    "the story was good ",
]
PAIRS = ["the film was good .", "a story is long !", "the movie was bad .", "a plot is good"]


def test_transfer_set_starts_with_the_originals_and_has_no_duplicates() -> None:
    transfer = build_transfer_set(TEXTS, config=AugmentConfig(n_iter=20), tagger=LookupTagger())
    assert transfer[: len(TEXTS)] == [(text, None) for text in TEXTS]
    assert len(transfer) == len(set(transfer))
    assert len(TEXTS) < len(transfer) <= len(TEXTS) * 21


def test_transfer_set_without_changes_holds_only_the_originals() -> None:
    config = AugmentConfig(p_mask=0.0, p_pos=0.0, p_ng=0.0, n_iter=10)
    texts = [*TEXTS, TEXTS[0]]  # a repeated original is kept: originals line up with labels
    transfer = build_transfer_set(texts, config=config, tagger=LookupTagger())
    assert transfer == [(text, None) for text in texts]


def test_transfer_set_is_deterministic_under_the_seed() -> None:
    def run(seed: int) -> list[tuple[str, str | None]]:
        return build_transfer_set(TEXTS, config=AugmentConfig(seed=seed), tagger=LookupTagger())

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_transfer_set_copies_are_made_of_corpus_words_masks_and_ngrams() -> None:
    config = AugmentConfig(p_mask=0.2, p_pos=0.2, p_ng=0.25, n_iter=10)
    transfer = build_transfer_set(TEXTS, config=config, tagger=LookupTagger())
    corpus_words = {word for text in TEXTS for word in text.split()}
    for text, pair in transfer[len(TEXTS) :]:
        assert pair is None
        assert text.endswith(" ")  # SST-2's trailing space is kept
        assert set(text.split()) <= corpus_words | {MASK_TOKEN}


def test_pairs_cycle_first_second_both_and_stay_aligned() -> None:
    # With p_mask = 1 every changed side is all [MASK], so the copies of example i are,
    # in order: (masked first, original second), (original first, masked second), (both
    # masked); the later cycles repeat them and are dropped as duplicates. Every text has
    # its own length, so no two examples' masked copies coincide.
    texts = ["good", "a film", "the plot is", "the story was good"]
    pairs = ["the film was good .", "a story is long ! !", "the movie was bad . . ."]
    pairs.append("the movie is a long good story .")
    config = AugmentConfig(p_mask=1.0, p_pos=0.0, p_ng=0.0, n_iter=10)
    transfer = build_transfer_set(texts, pairs, config=config, tagger=LookupTagger())

    def masked(text: str) -> str:
        split = split_words(text)
        return split.join([MASK_TOKEN] * len(split.words))

    expected = list(zip(texts, pairs, strict=True))
    for text, pair in zip(texts, pairs, strict=True):
        expected += [(masked(text), pair), (text, masked(pair)), (masked(text), masked(pair))]
    assert transfer == expected


def test_pair_copies_come_from_one_example() -> None:
    config = AugmentConfig(p_mask=0.4, p_pos=0.0, p_ng=0.0, n_iter=12)
    transfer = build_transfer_set(TEXTS, PAIRS, config=config, tagger=LookupTagger())

    def masked_version(copy: str, original: str) -> bool:
        a, b = copy.split(), original.split()
        return len(a) == len(b) and all(x in (MASK_TOKEN, y) for x, y in zip(a, b, strict=True))

    for text, pair in transfer[len(TEXTS) :]:
        assert pair is not None
        sources = [
            i
            for i in range(len(TEXTS))
            if masked_version(text, TEXTS[i]) and masked_version(pair, PAIRS[i])
        ]
        assert sources, f"({text!r}, {pair!r}) mixes two examples"


def test_transfer_set_rejects_bad_inputs() -> None:
    with pytest.raises(AugmentError, match="text_pairs"):
        build_transfer_set(TEXTS, PAIRS[:2], tagger=LookupTagger())
    with pytest.raises(AugmentError, match="single string"):
        build_transfer_set("a text", tagger=LookupTagger())  # type: ignore[arg-type]
    with pytest.raises(AugmentError, match=r"texts\[1\]"):
        build_transfer_set(["ok", 3], tagger=LookupTagger())  # type: ignore[list-item]


# --- masked-LM (TinyBERT-style) replacement ------------------------------------------


class FakeMaskedLM:
    """Proposes "<left neighbour>~k" for a [MASK]; records the queries it received."""

    def __init__(self) -> None:
        self.queries: list[list[str]] = []

    def __call__(self, masked_sentences: list[list[str]], top_k: int) -> list[list[list[str]]]:
        results = []
        for sentence in masked_sentences:
            self.queries.append(list(sentence))
            per_mask = []
            for i, word in enumerate(sentence):
                if word == MASK_TOKEN:
                    left = sentence[i - 1] if i else "<s>"
                    per_mask.append([f"{left}~{k}" for k in range(top_k)])
            results.append(per_mask)
        return results


def test_mlm_candidates_mask_one_word_at_a_time() -> None:
    predictor = FakeMaskedLM()
    sentences = [["the", "movie", "."], ["good"]]
    candidates = mlm_candidates(sentences, predictor, top_k=3, batch_size=2)
    assert predictor.queries == [
        [MASK_TOKEN, "movie", "."],
        ["the", MASK_TOKEN, "."],
        [MASK_TOKEN],
    ]  # punctuation is never queried
    assert candidates == [
        [["<s>~0", "<s>~1", "<s>~2"], ["the~0", "the~1", "the~2"], []],
        [["<s>~0", "<s>~1", "<s>~2"]],
    ]


def test_mlm_candidates_drop_the_original_word() -> None:
    def echo(masked: list[list[str]], top_k: int) -> list[list[list[str]]]:
        return [[["Movie", "film"]] for _ in masked]

    assert mlm_candidates([["movie"]], echo, top_k=2) == [[["film"]]]


def test_mlm_candidates_reject_a_malformed_predictor() -> None:
    def wrong(masked: list[list[str]], top_k: int) -> list[list[list[str]]]:
        return []

    with pytest.raises(AugmentError, match="one list per"):
        mlm_candidates([["a", "b"]], wrong, top_k=2)


def test_mlm_replace_words_rate_and_choices() -> None:
    words = ["w"] * 20_000
    options = [["x", "y", "z"]] * len(words)
    out = mlm_replace_words(words, options, 0.4, np.random.default_rng(0))
    counts = Counter(out)
    assert counts["w"] / len(out) == pytest.approx(0.6, abs=0.015)
    for word in "xyz":
        assert counts[word] / len(out) == pytest.approx(0.4 / 3, abs=0.015)
    assert mlm_replace_words(["a", "b"], [["c"], []], 1.0, np.random.default_rng(0)) == ["c", "b"]
    assert mlm_replace_words(["a"], [["c"]], 0.0, np.random.default_rng(0)) == ["a"]


def test_transfer_set_with_a_masked_lm() -> None:
    config = AugmentConfig(n_iter=8, mlm_p_replace=0.5, mlm_top_k=4)
    transfer = build_transfer_set(TEXTS, PAIRS, config=config, mlm_replacer=FakeMaskedLM())
    assert transfer[: len(TEXTS)] == list(zip(TEXTS, PAIRS, strict=True))
    assert len(transfer) == len(set(transfer)) > len(TEXTS)

    def replaced_from(copy: str, original: str) -> bool:
        # Every word is kept or is one of the top-4 predictions for its own position
        # (whose left neighbour in the original sentence names it); punctuation is kept.
        a, b = copy.split(), original.split()
        if len(a) != len(b):
            return False
        allowed = [
            {word}
            | ({f"{b[i - 1] if i else '<s>'}~{k}" for k in range(4)} if word.isalnum() else set())
            for i, word in enumerate(b)
        ]
        return all(x in options for x, options in zip(a, allowed, strict=True))

    for text, pair in transfer[len(TEXTS) :]:
        assert pair is not None
        assert any(
            replaced_from(text, TEXTS[i]) and replaced_from(pair, PAIRS[i])
            for i in range(len(TEXTS))
        )
    again = build_transfer_set(TEXTS, PAIRS, config=config, mlm_replacer=FakeMaskedLM())
    assert transfer == again
