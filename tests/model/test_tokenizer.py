"""The WordPiece tokenizer wrapper: ids, pairs, truncation, padding, offsets, casing, and
agreement with `transformers`' BertTokenizer on real vocabularies."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CASED_VOCAB, TINY_VOCAB

from distilkit.model.tokenizer import Tokenizer, TokenizerError

BERT_VOCAB = Path("/work/shared/models/bert-base-uncased/vocab.txt")

TRICKY_TEXTS = [
    "Hello, World!",
    "naïve café résumé Straße",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flag 🇫🇷",
    "tab\tnewline\ncarriage\r return",
    "control \x00\x07\x1b\x7f chars",
    "zero width\u200b joiner\u200d and soft\u00adhyphen, nbsp\u00a0here",
    "中文字符 and 日本語 and 한국어",
    "don't stop-believing (ok?) [sic]",
    "   leading and trailing   ",
    "",
    "a" * 150,  # longer than WordPiece's 100-character word limit -> [UNK]
    "ﬁ ligature, Ｆｕｌｌｗｉｄｔｈ, e\u0301 combining accent",
    "numbers 3.14159 and 1,000,000 and 2nd",
    "[MASK] and [mask] and [CLS] typed in",
    "שלום مرحبا right-to-left",
    "\ufffd replacement and x\u2028y separator",
]


def ids_of(tokens: list[str], vocab: list[str] = TINY_VOCAB) -> list[int]:
    return [vocab.index(token) for token in tokens]


# ----------------------------------------------------------------------------- single and pairs
def test_single_text(tiny_tokenizer: Tokenizer) -> None:
    batch = tiny_tokenizer("the cats sat.")
    tokens = ["[CLS]", "the", "cat", "##s", "sat", ".", "[SEP]"]
    assert batch.input_ids.tolist() == [ids_of(tokens)]
    assert batch.input_ids.dtype == torch.int64
    assert batch.attention_mask.tolist() == [[1] * 7]
    assert batch.token_type_ids.tolist() == [[0] * 7]
    assert batch.word_ids == [[None, 0, 1, 1, 2, 3, None]]
    assert batch.sequence_ids == [[None, 0, 0, 0, 0, 0, None]]
    assert batch.truncated == [False]
    assert len(batch) == 1


def test_special_ids(tiny_tokenizer: Tokenizer) -> None:
    assert tiny_tokenizer.special_ids == [0, 1, 2, 3, 4]
    assert (tiny_tokenizer.pad_id, tiny_tokenizer.unk_id, tiny_tokenizer.cls_id) == (0, 1, 2)
    assert (tiny_tokenizer.sep_id, tiny_tokenizer.mask_id) == (3, 4)
    assert tiny_tokenizer.vocab_size == 99


def test_pairs_have_segment_ids(tiny_tokenizer: Tokenizer) -> None:
    batch = tiny_tokenizer(["the cat", "hello"], pairs=["sat on it", "world"])
    first = ["[CLS]", "the", "cat", "[SEP]", "sat", "on", "it", "[SEP]"]
    second = ["[CLS]", "hello", "[SEP]", "world", "[SEP]", "[PAD]", "[PAD]", "[PAD]"]
    assert batch.input_ids.tolist() == [ids_of(first), ids_of(second)]
    assert batch.token_type_ids.tolist() == [
        [0, 0, 0, 0, 1, 1, 1, 1],
        [0, 0, 0, 1, 1, 0, 0, 0],
    ]
    assert batch.attention_mask.tolist() == [[1] * 8, [1] * 5 + [0] * 3]
    assert batch.sequence_ids[0] == [None, 0, 0, None, 1, 1, 1, None]


def test_mismatched_pairs_are_an_error(tiny_tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError, match="got 2 first texts but 1 second texts"):
        tiny_tokenizer(["a", "b"], pairs=["c"])


# ----------------------------------------------------------------------------- length
def test_truncation_warns_and_cuts_to_max_length(tiny_tokenizer: Tokenizer) -> None:
    long_text = "the cat sat on the mat " * 5  # 30 words
    with pytest.warns(UserWarning, match="1 of 2 texts were longer than 10 tokens"):
        batch = tiny_tokenizer([long_text, "hello world"], max_length=10)
    assert batch.input_ids.shape == (2, 10)
    assert batch.input_ids[0].tolist() == ids_of(
        ["[CLS]", "the", "cat", "sat", "on", "the", "mat", "the", "cat", "[SEP]"]
    )
    assert batch.truncated == [True, False]


def test_model_limit_applies_when_max_length_is_larger(tiny_tokenizer: Tokenizer) -> None:
    with pytest.warns(UserWarning, match="longer than 64 tokens"):
        batch = tiny_tokenizer(["the " * 100], max_length=1000)
    assert batch.input_ids.shape == (1, 64)


def test_pair_truncation_cuts_the_longer_text_first(tiny_tokenizer: Tokenizer) -> None:
    with pytest.warns(UserWarning, match="truncated"):
        batch = tiny_tokenizer(["the cat " * 10], pairs=["hello world"], max_length=12)
    assert batch.input_ids.shape == (1, 12)
    segments = batch.sequence_ids[0]
    assert segments.count(1) == 2  # "hello world" kept whole
    assert segments.count(0) == 12 - 3 - 2


def test_no_truncation_rejects_a_text_over_the_model_limit(tiny_tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError, match="reads at most 64"):
        tiny_tokenizer(["the " * 100], truncation=False)


def test_max_length_below_three_is_an_error(tiny_tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError, match="at least 3 tokens"):
        tiny_tokenizer(["the cat"], max_length=2)


def test_padding_to_the_longest(tiny_tokenizer: Tokenizer) -> None:
    texts = ["hello", "the cat sat on the mat", "", "dog"]
    batch = tiny_tokenizer(texts)
    lengths = [3, 8, 2, 3]
    assert batch.input_ids.shape == (4, 8)
    assert batch.attention_mask.sum(1).tolist() == lengths
    for row, length in enumerate(lengths):
        assert batch.input_ids[row, length - 1] == tiny_tokenizer.sep_id
        assert bool((batch.input_ids[row, length:] == tiny_tokenizer.pad_id).all())
        assert bool((batch.token_type_ids[row, length:] == 0).all())
    assert tiny_tokenizer(texts, pad_to_multiple_of=5).input_ids.shape == (4, 10)


# ----------------------------------------------------------------------------- offsets
def test_offsets_map_back_to_the_text(tiny_tokenizer: Tokenizer) -> None:
    text = "Hello,  the CATS sat...on it!"
    batch = tiny_tokenizer(text)
    tokens = tiny_tokenizer.convert_ids_to_tokens(batch.input_ids[0].tolist())
    assert tokens == [
        "[CLS]", "hello", ",", "the", "cat", "##s", "sat", ".", ".", ".", "on", "it", "!", "[SEP]",
    ]  # fmt: skip
    offsets = batch.offsets[0]
    assert offsets[0] == offsets[-1] == (0, 0)
    for token, (start, end) in zip(tokens[1:-1], offsets[1:-1], strict=True):
        assert text[start:end].lower() == token.removeprefix("##")


def test_offsets_skip_removed_characters(tiny_tokenizer: Tokenizer) -> None:
    text = "the\x00 cat\u200b sat"
    batch = tiny_tokenizer(text)
    spans = [text[start:end] for start, end in batch.offsets[0][1:-1]]
    assert spans == ["the", "cat", "sat"]


# ----------------------------------------------------------------------------- casing
def test_cased_vocabulary_stays_cased(cased_folder: Path) -> None:
    tokenizer = Tokenizer.from_folder(cased_folder)
    assert not tokenizer.lowercase
    expected = ["Hello", "h", "##e", "##l", "##l", "##o", "The"]
    assert tokenizer.tokenize("Hello hello The") == expected
    # accents are kept when not lower-casing, so "café" is not "cafe"
    assert tokenizer.tokenize("café cafe") == ["[UNK]", "cafe"]
    forced = Tokenizer.from_folder(cased_folder, lowercase=True)
    assert forced.tokenize("Hello") == ["h", "##e", "##l", "##l", "##o"]
    assert ids_of(["Hello"], CASED_VOCAB) == [tokenizer.token_to_id("Hello")]


def test_uncased_vocabulary_lowercases_and_strips_accents(tiny_tokenizer: Tokenizer) -> None:
    assert tiny_tokenizer.tokenize("HELLO Café") == ["hello", "cafe"]


# ----------------------------------------------------------------------------- awkward text
def test_empty_strings(tiny_tokenizer: Tokenizer) -> None:
    batch = tiny_tokenizer([""])
    assert batch.input_ids.tolist() == [[2, 3]]
    assert batch.offsets == [[(0, 0), (0, 0)]]
    empty = tiny_tokenizer([])
    assert empty.input_ids.shape == (0, 0) and len(empty) == 0
    assert tiny_tokenizer.tokenize("") == []
    assert tiny_tokenizer.tokenize("   \t\n ") == []


def test_non_ascii_emoji_and_control_characters(tiny_tokenizer: Tokenizer) -> None:
    assert tiny_tokenizer.tokenize("the 😀 cat") == ["the", "[UNK]", "cat"]
    assert tiny_tokenizer.tokenize("the\x00\x07 cat\u200b\u200d") == ["the", "cat"]
    assert tiny_tokenizer.tokenize("naïve") == ["n", "##a", "##i", "##v", "##e"]
    assert tiny_tokenizer.tokenize("box") == ["[UNK]"]  # no "##x" piece in the vocabulary
    assert tiny_tokenizer.tokenize("中文") == ["[UNK]", "[UNK]"]  # each CJK char is a word


def test_special_tokens_typed_in_text_stay_whole(tiny_tokenizer: Tokenizer) -> None:
    assert tiny_tokenizer.tokenize("the [MASK] sat") == ["the", "[MASK]", "sat"]
    # only the exact spelling is special; "[" and "]" are not in the tiny vocabulary
    assert tiny_tokenizer.tokenize("[mask]") == ["[UNK]", "m", "##a", "##s", "##k", "[UNK]"]
    assert tiny_tokenizer("[CLS] [SEP]").input_ids.tolist() == [[2, 2, 3, 3]]


def test_non_string_input_is_a_clear_error(tiny_tokenizer: Tokenizer) -> None:
    with pytest.raises(TypeError, match="each text must be a str, got int"):
        tiny_tokenizer(["the", 3])  # type: ignore[list-item]


def test_encode_ids_and_decode(tiny_tokenizer: Tokenizer) -> None:
    texts = ["the cats sat.", "hello world"]
    batch = tiny_tokenizer(texts)
    encoded = tiny_tokenizer.encode_ids(texts)
    for row, ids in enumerate(encoded):
        assert batch.input_ids[row, 1 : len(ids) + 1].tolist() == ids
    assert tiny_tokenizer.decode(batch.input_ids[1].tolist()) == "hello world"
    with_specials = tiny_tokenizer.decode(batch.input_ids[1].tolist(), skip_special_tokens=False)
    assert with_specials == "[CLS] hello world [SEP] [PAD] [PAD] [PAD]"
    assert tiny_tokenizer.decode(encoded[0]) == "the cats sat."


# ----------------------------------------------------------------------------- files
def test_bad_vocabulary_files(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="vocabulary file not found"):
        Tokenizer.from_vocab(tmp_path / "missing.txt")
    no_mask = tmp_path / "no_mask.txt"
    no_mask.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
    missing = r"lacks the special token\(s\) \['\[MASK\] or <mask>'\]"
    with pytest.raises(TokenizerError, match=missing):
        Tokenizer.from_vocab(no_mask)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TokenizerError, match="no tokenizer in"):
        Tokenizer.from_folder(empty)


def test_folder_settings_are_read(tmp_path: Path, tiny_vocab_path: Path) -> None:
    shutil.copy(tiny_vocab_path, tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text('{"model_max_length": 16}')
    assert Tokenizer.from_folder(tmp_path).max_length == 16
    assert Tokenizer.from_folder(tmp_path, max_length=8).max_length == 8


@pytest.mark.parametrize("cased", [False, True])
def test_save_and_reload(
    tmp_path: Path, tiny_tokenizer: Tokenizer, cased_folder: Path, cased: bool
) -> None:
    tokenizer = Tokenizer.from_folder(cased_folder) if cased else tiny_tokenizer
    tokenizer.save(tmp_path)
    reloaded = Tokenizer.from_folder(tmp_path)
    texts = ["Hello the World, cats!", "The [MASK] sat"]
    assert torch.equal(reloaded(texts).input_ids, tokenizer(texts).input_ids)
    assert reloaded.lowercase == tokenizer.lowercase
    assert (tmp_path / "vocab.txt").read_text().splitlines() == (
        CASED_VOCAB if cased else TINY_VOCAB
    )
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert theirs(texts, padding=True)["input_ids"] == tokenizer(texts).input_ids.tolist()


# ----------------------------------------------------------------------------- vs transformers
@pytest.fixture(scope="module")
def bert_vocab_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not BERT_VOCAB.is_file():
        pytest.skip(f"{BERT_VOCAB} is not available")
    folder = tmp_path_factory.mktemp("bert_base_uncased")
    shutil.copy(BERT_VOCAB, folder / "vocab.txt")
    return folder


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_ids_and_offsets_equal_transformers_on_the_bert_vocab(
    bert_vocab_folder: Path, text: str
) -> None:
    transformers = pytest.importorskip("transformers")
    theirs = transformers.BertTokenizerFast.from_pretrained(bert_vocab_folder)
    ours = Tokenizer.from_vocab(bert_vocab_folder / "vocab.txt")
    batch = ours(text)
    expected = theirs(text, return_offsets_mapping=True)
    assert batch.input_ids[0].tolist() == expected["input_ids"]
    assert batch.offsets[0] == [tuple(span) for span in expected["offset_mapping"]]


def test_pairs_and_truncation_equal_transformers(bert_vocab_folder: Path) -> None:
    transformers = pytest.importorskip("transformers")
    theirs = transformers.BertTokenizerFast.from_pretrained(bert_vocab_folder)
    ours = Tokenizer.from_vocab(bert_vocab_folder / "vocab.txt")
    firsts = [TRICKY_TEXTS[1] * 3, TRICKY_TEXTS[7]]
    seconds = [TRICKY_TEXTS[0], TRICKY_TEXTS[12] * 4]
    with pytest.warns(UserWarning, match="2 of 2 texts"):
        batch = ours(firsts, pairs=seconds, max_length=20)
    expected = theirs(firsts, seconds, truncation="longest_first", max_length=20, padding=True)
    assert batch.input_ids.tolist() == expected["input_ids"]
    assert batch.token_type_ids.tolist() == expected["token_type_ids"]
    assert batch.attention_mask.tolist() == expected["attention_mask"]


def test_minilm_folder_tokenizer_equals_transformers(minilm_folder: Path) -> None:
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(str(minilm_folder))
    ours = Tokenizer.from_folder(minilm_folder)
    assert ours.lowercase and ours.max_length == 512
    batch = ours(TRICKY_TEXTS)
    expected = theirs(TRICKY_TEXTS, padding=True)
    assert batch.input_ids.tolist() == expected["input_ids"]
    assert batch.attention_mask.tolist() == expected["attention_mask"]


def test_batches_without_alignment_have_the_same_tensors(bert_vocab_folder: Path) -> None:
    """alignment=False (the fast path for serving) changes nothing but the alignment lists,
    for single texts, pairs and truncated pairs alike."""
    ours = Tokenizer.from_vocab(bert_vocab_folder / "vocab.txt")
    firsts = [*TRICKY_TEXTS, TRICKY_TEXTS[1] * 3]
    seconds = list(reversed(firsts))
    for pairs, limit in ((None, None), (seconds, None), (seconds, 20)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full = ours(firsts, pairs=pairs, max_length=limit)
            fast = ours(firsts, pairs=pairs, max_length=limit, alignment=False)
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            assert torch.equal(getattr(full, name), getattr(fast, name))
        assert fast.truncated == full.truncated
        assert len(full.offsets) == len(firsts) and fast.offsets == [] and fast.word_ids == []


def test_unpadded_ids_equal_the_batch_rows(bert_vocab_folder: Path) -> None:
    """encode_unpadded (the recurrent students' fast path) gives each padded batch row
    without its padding, truncated alike and without a warning; bad input is refused."""
    ours = Tokenizer.from_vocab(bert_vocab_folder / "vocab.txt")
    texts = [*TRICKY_TEXTS, TRICKY_TEXTS[1] * 3]
    for limit in (None, 9):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batch = ours(texts, max_length=limit)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            unpadded = ours.encode_unpadded(texts, limit)
        lengths = batch.attention_mask.sum(dim=1).tolist()
        assert [ids.tolist() for ids in unpadded] == [
            batch.input_ids[row, :n].tolist() for row, n in enumerate(lengths)
        ]
        assert all(ids.dtype == np.int64 for ids in unpadded)
    assert ours.encode_unpadded([]) == []
    with pytest.raises(TypeError, match="must be a str"):
        ours.encode_unpadded(["fine", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least 3 tokens"):
        ours.encode_unpadded(["fine"], max_length=2)
