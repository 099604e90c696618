from __future__ import annotations

import gzip
import os
import pickle
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from distilkit.data.corpus import (
    CorpusError,
    CorpusSettings,
    PackedCorpus,
    build_corpus,
    default_cache_dir,
    iter_documents,
    split_paragraphs,
    split_sentences,
)
from distilkit.model.tokenizer import Tokenizer

ANIMAL_WORDS = "the cat sat on a mat dog ran in park alice was very tired of sitting by her sister"
NUMBER_WORDS = "one two three four five six seven eight nine ten"
WORDS = [*ANIMAL_WORDS.split(" "), *NUMBER_WORDS.split(" "), "cafe", "."]
GUTENBERG_BOOK = Path("/work/shared/data/gutenberg/11-0.txt")
BERT_VOCAB = Path("/work/shared/models/bert-base-uncased/vocab.txt")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Tokenizer:
    folder = tmp_path_factory.mktemp("vocab")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", "utf-8")
    return Tokenizer.from_vocab(folder / "vocab.txt")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


def build(paths, tokenizer, tmp_path, **settings) -> PackedCorpus:
    return build_corpus(
        paths,
        tokenizer,
        CorpusSettings(**settings),
        cache_dir=tmp_path / "cache",
        progress=False,
    )


def words_of(corpus: PackedCorpus, tokenizer: Tokenizer) -> list[list[str]]:
    return [tokenizer.convert_ids_to_tokens(corpus[i].tolist()) for i in range(len(corpus))]


# ---------------------------------------------------------------------------- reading
def test_paragraphs_are_joined_collapsed_and_nfc():
    text = "The  cat\nsat on\ta mat.\n\n\n  \nOne\u00a0two\n  three\n\nCafe\u0301 one.\n"
    assert split_paragraphs(text) == ["The cat sat on a mat.", "One two three", "Café one."]


def test_reads_txt_with_bom_and_crlf(tmp_path):
    path = tmp_path / "book.txt"
    path.write_bytes(b"\xef\xbb\xbfThe cat\r\nsat.\r\n\r\nOne two.\r\n")
    documents = list(iter_documents([path]))
    assert documents == [(str(path), "The cat\nsat.\n\nOne two.\n")]


def test_reads_gzip_and_folders_recursively_in_order(tmp_path):
    write(tmp_path / "corpus" / "b.txt", "two\n")
    write(tmp_path / "corpus" / "a" / "z.txt", "one\n")
    with gzip.open(tmp_path / "corpus" / "c.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("three\r\n")
    write(tmp_path / "corpus" / "c-LICENSE.txt", "license terms\n")
    write(tmp_path / "corpus" / "notes.md", "not a corpus file\n")
    write(tmp_path / "corpus" / ".hidden" / "x.txt", "hidden\n")
    documents = list(iter_documents([tmp_path / "corpus"]))
    names = [Path(name).relative_to(tmp_path / "corpus") for name, _ in documents]
    assert names == [Path("a/z.txt"), Path("b.txt"), Path("c.txt.gz")]
    assert [text for _, text in documents] == ["one\n", "two\n", "three\n"]


def test_missing_binary_and_empty_inputs_are_clear_errors(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        list(iter_documents([tmp_path / "nope.txt"]))
    (tmp_path / "nul.txt").write_bytes(b"abc\x00\x01\x02def")
    with pytest.raises(CorpusError, match=r"nul\.txt.*binary.*text corpus"):
        list(iter_documents([tmp_path / "nul.txt"]))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin1\.txt.*UTF-8.*text corpus"):
        list(iter_documents([tmp_path / "latin1.txt"]))
    write(tmp_path / "blank.txt", "\n  \n\t\n")
    with pytest.raises(CorpusError, match="empty"):
        list(iter_documents([tmp_path / "blank.txt"]))
    (tmp_path / "folder").mkdir()
    with pytest.raises(CorpusError, match=r"no \.txt"):
        list(iter_documents([tmp_path / "folder"]))


def test_tables_give_one_document_per_cell_of_the_named_columns(tmp_path):
    tsv = write(
        tmp_path / "pairs.tsv",
        "id\tsentence1\tsentence2\tscore\n1\tthe cat sat .\tthe dog ran .\t4.0\n"
        "2\tone two .\t\t1.0\n",
    )
    assert list(iter_documents([f"{tsv}:sentence1,sentence2"])) == [
        (f"{tsv}:2", "the cat sat ."),
        (f"{tsv}:2", "the dog ran ."),
        (f"{tsv}:3", "one two ."),  # the empty cell is skipped
    ]
    jsonl = write(tmp_path / "notes.jsonl", '{"text": "alice was tired ."}\n\n{"text": 7}\n')
    csv_file = write(tmp_path / "reviews.csv", 'sentence,label\n"a mat, a cat .",1\n')
    # Without named columns a table's "text" (else "sentence") column is read.
    assert [text for _, text in iter_documents([jsonl, csv_file])] == [
        "alice was tired .",
        "7",
        "a mat, a cat .",
    ]


def test_table_corpus_errors_name_the_file_and_the_fix(tmp_path, tokenizer):
    tsv = write(tmp_path / "pairs.tsv", "id\tsentence1\n1\tthe cat sat .\n")
    with pytest.raises(CorpusError, match=r"no column named text or sentence.*pairs.tsv:sentence1"):
        list(iter_documents([tsv]))
    with pytest.raises(CorpusError, match=r"pairs.tsv:2: no column 'sentence2'"):
        list(iter_documents([f"{tsv}:sentence1,sentence2"]))
    with pytest.raises(CorpusError, match="name the table's text columns"):
        list(iter_documents([f"{tsv}:sentence1,"]))
    with pytest.raises(CorpusError, match="only a table"):
        list(iter_documents([f"{write(tmp_path / 'a.txt', 'the cat .')}:text"]))
    ragged = write(tmp_path / "ragged.tsv", "a\tb\n1\n")
    with pytest.raises(CorpusError, match=r"ragged.tsv:2: 1 columns, but the header has 2"):
        list(iter_documents([f"{ragged}:a"]))
    with pytest.raises(CorpusError, match="corpus path not found"):
        list(iter_documents([tmp_path / "absent.tsv"]))


def test_table_columns_are_part_of_the_cache_key(tmp_path, tokenizer):
    tsv = write(
        tmp_path / "pairs.tsv",
        "sentence1\tsentence2\nthe cat sat on a mat .\tone two three four five .\n",
    )
    first = build([f"{tsv}:sentence1"], tokenizer, tmp_path, unit="sentence", pack=False)
    both = build([f"{tsv}:sentence1,sentence2"], tokenizer, tmp_path, unit="sentence", pack=False)
    assert first.folder != both.folder
    assert [words_of(c, tokenizer) for c in (first, both)] == [
        [["[CLS]", "the", "cat", "sat", "on", "a", "mat", ".", "[SEP]"]],
        [
            ["[CLS]", "the", "cat", "sat", "on", "a", "mat", ".", "[SEP]"],
            ["[CLS]", "one", "two", "three", "four", "five", ".", "[SEP]"],
        ],
    ]


def test_hf_datasets_need_the_library(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # importing it now fails
    with pytest.raises(CorpusError, match="pip install datasets"):
        list(iter_documents(["hf:wikitext:wikitext-2-raw-v1:train:text"]))
    with pytest.raises(CorpusError, match="hf:<dataset>"):
        list(iter_documents(["hf:wikitext:text"]))


# ---------------------------------------------------------------------------- building
def test_filtering_counts_what_was_dropped(tmp_path, tokenizer):
    text = (
        "the cat sat on a mat .\n\n"  # 7 pieces: kept
        "one two\nthree\n\n"  # 3 pieces: too short
        "zebra quokka axolotl the cat\n\n"  # 3 of 5 [UNK]: too many
        "zebra the cat sat on a\n"  # 1 of 6 [UNK]: kept
    )
    corpus = build([write(tmp_path / "a.txt", text)], tokenizer, tmp_path)
    assert corpus.meta["dropped_paragraphs"] == {"too_short": 1, "too_many_unk": 1}
    assert corpus.meta["dropped_tokens"] == {"too_short": 3, "too_many_unk": 5}
    assert corpus.meta["num_paragraphs"] == 2
    kept = ["the", "cat", "sat", "on", "a", "mat", ".", "[UNK]", "the", "cat", "sat", "on", "a"]
    assert words_of(corpus, tokenizer) == [["[CLS]", *kept, "[SEP]"]]
    looser = build([tmp_path / "a.txt"], tokenizer, tmp_path, max_unk_fraction=0.6, min_tokens=2)
    assert looser.meta["dropped_paragraphs"] == {"too_short": 0, "too_many_unk": 0}


def test_packing_rule(tmp_path, tokenizer):
    # body = max_len - 2 = 8 pieces: paragraphs of 3, 4, 5, 20 and 2 pieces
    paragraphs = ["one " * 3, "two " * 4, "three " * 5, "four " * 20, "five " * 2]
    path = write(tmp_path / "a.txt", "\n\n".join(paragraphs))
    corpus = build([path], tokenizer, tmp_path, max_len=10, min_tokens=1)
    expected_bodies = [
        ["one"] * 3 + ["two"] * 4,  # 3 + 4 fit together; 5 more would not
        ["three"] * 5,
        ["four"] * 8,  # the 20-piece paragraph is cut into 8 + 8 + 4 ...
        ["four"] * 8,
        ["four"] * 4 + ["five"] * 2,  # ... and its tail is packed with what follows
    ]
    assert words_of(corpus, tokenizer) == [["[CLS]", *b, "[SEP]"] for b in expected_bodies]
    assert corpus.lengths.tolist() == [len(b) + 2 for b in expected_bodies]
    assert corpus.num_tokens == sum(len(b) + 2 for b in expected_bodies)


def test_sentence_splitting():
    assert split_sentences('He left. "Why?" she asked. Mr. Holmes stayed.') == [
        "He left.",
        '"Why?" she asked.',
        "Mr. Holmes stayed.",
    ]
    # abbreviations with inner stops, lower-case continuations and closing quotes
    assert split_sentences("The U.S. Navy came at 3 p.m. today! Really? \u201cNo.\u201d Fine") == [
        "The U.S. Navy came at 3 p.m. today!",
        "Really?",
        "\u201cNo.\u201d",
        "Fine",
    ]
    assert split_sentences("e.g. this one. and that") == ["e.g. this one. and that"]
    assert split_sentences("") == []


def test_sentence_units_unpacked(tmp_path, tokenizer):
    text = "the cat sat . the dog ran in a park . one two\n\nalice was very tired .\n"
    # a sentence starts with a capital; the uncased vocabulary lower-cases it again
    path = write(tmp_path / "a.txt", text.replace(". one", ". One").replace(". the", ". The"))
    corpus = build([path], tokenizer, tmp_path, unit="sentence", pack=False, min_tokens=1)
    assert words_of(corpus, tokenizer) == [
        ["[CLS]", "the", "cat", "sat", ".", "[SEP]"],
        ["[CLS]", "the", "dog", "ran", "in", "a", "park", ".", "[SEP]"],
        ["[CLS]", "one", "two", "[SEP]"],
        ["[CLS]", "alice", "was", "very", "tired", ".", "[SEP]"],
    ]
    assert corpus.meta["num_paragraphs"] == 4  # units kept
    # packed sentences fill sequences as paragraphs do; unpacked paragraphs stand alone
    # (sentences of 4, 7, 2 and 5 pieces; 10 fit between [CLS] and [SEP])
    packed = build([path], tokenizer, tmp_path, unit="sentence", max_len=12, min_tokens=1)
    assert packed.lengths.tolist() == [4 + 2, 7 + 2 + 2, 5 + 2]
    paragraphs = build([path], tokenizer, tmp_path, pack=False, min_tokens=1)
    assert paragraphs.lengths.tolist() == [13 + 2, 5 + 2]


def test_sequences_are_bounded_and_never_cross_files(tmp_path, tokenizer):
    rng = np.random.default_rng(0)
    animals, numbers = ANIMAL_WORDS.split(" "), NUMBER_WORDS.split(" ")

    def paragraphs(words: list[str]) -> str:
        # 40 pieces leave a tail of 10 in the packer; with the short ends that makes 20 < 30
        sizes = [5, *rng.integers(5, 60, 37), 40, 5]
        return "\n\n".join(" ".join(rng.choice(words, size)) for size in sizes)

    write(tmp_path / "corpus" / "animals.txt", paragraphs(animals))
    write(tmp_path / "corpus" / "numbers.txt", paragraphs(numbers))
    corpus = build([tmp_path / "corpus"], tokenizer, tmp_path, max_len=32)
    assert corpus.meta["num_documents"] == 2
    cls_id, sep_id = tokenizer.cls_id, tokenizer.sep_id
    for index in range(len(corpus)):
        sequence = corpus[index]
        assert sequence.dtype == np.int32 and len(sequence) <= 32
        assert sequence[0] == cls_id and sequence[-1] == sep_id
        assert cls_id not in sequence[1:-1] and sep_id not in sequence[1:-1]
        words = set(tokenizer.convert_ids_to_tokens(sequence[1:-1].tolist()))
        assert words <= set(animals) or words <= set(numbers)
    # nothing lost: the pieces of all sequences are those of all paragraphs, in order
    expected = [
        piece
        for name in ("animals.txt", "numbers.txt")
        for piece in tokenizer.encode_ids([(tmp_path / "corpus" / name).read_text()])[0]
    ]
    packed = np.concatenate([corpus[i][1:-1] for i in range(len(corpus))])
    assert packed.tolist() == expected


def test_cache_is_reused_without_tokenizing(tmp_path, tokenizer, monkeypatch):
    path = write(tmp_path / "a.txt", "the cat sat on a mat .\n\none two three four five\n")
    first = build([path], tokenizer, tmp_path)
    assert (first.folder / "meta.json").is_file()
    assert np.load(first.folder / "tokens.npy", mmap_mode="r").dtype == np.int32
    assert np.load(first.folder / "offsets.npy").dtype == np.int64

    def refuse(*args, **kwargs):
        raise AssertionError("tokenized again instead of using the cache")

    monkeypatch.setattr(Tokenizer, "encode_ids", refuse)
    second = build([path], tokenizer, tmp_path)
    assert second.folder == first.folder
    assert [second[i].tolist() for i in range(len(second))] == [
        first[i].tolist() for i in range(len(first))
    ]
    with pytest.raises(AssertionError, match="tokenized again"):  # other settings: rebuilt
        build([path], tokenizer, tmp_path, max_len=64)
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp")]
    assert leftovers == []


def test_cache_is_invalidated_when_a_file_changes(tmp_path, tokenizer):
    path = write(tmp_path / "a.txt", "the cat sat on a mat .\n")
    first = build([path], tokenizer, tmp_path)
    write(path, "one two three four five six .\n")
    second = build([path], tokenizer, tmp_path)
    assert second.folder != first.folder
    assert tokenizer.convert_ids_to_tokens(second[0].tolist())[1] == "one"


def test_default_cache_location(tmp_path, monkeypatch, tokenizer):
    path = write(tmp_path / "corpus" / "a.txt", "the cat sat on a mat .\n")
    assert default_cache_dir([path]) == tmp_path / "corpus" / ".distilkit-cache"
    assert default_cache_dir([tmp_path / "corpus"]) == tmp_path / "corpus" / ".distilkit-cache"
    first = build_corpus([tmp_path / "corpus"], tokenizer, progress=False)
    assert first.folder.parent == tmp_path / "corpus" / ".distilkit-cache"
    # the cache inside the corpus folder is not read as corpus text, nor changes its key
    assert build_corpus([tmp_path / "corpus"], tokenizer, progress=False).folder == first.folder
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home_cache = tmp_path / "home" / ".cache" / "distilkit" / "corpus"
    assert default_cache_dir(["hf:wikitext:train:text"]) == home_cache
    shared = write(tmp_path / "shared" / "a.txt", "the cat\n")
    shared.parent.chmod(0o555)  # read-only shared data, even when running as root
    try:
        assert default_cache_dir([shared]) == home_cache
    finally:
        shared.parent.chmod(0o755)


def test_no_usable_text_and_bad_settings(tmp_path, tokenizer):
    path = write(tmp_path / "a.txt", "one two\n\nzebra quokka emu\n")
    with pytest.raises(CorpusError, match="all 2 paragraphs were dropped"):
        build([path], tokenizer, tmp_path)
    for bad in (
        {"max_len": 513},
        {"max_len": 2},
        {"min_tokens": 0},
        {"max_unk_fraction": 2},
        {"unit": "word"},
    ):
        with pytest.raises(CorpusError):
            CorpusSettings(**bad)


# ---------------------------------------------------------------------------- the corpus
@pytest.fixture
def small_corpus(tmp_path, tokenizer) -> PackedCorpus:
    rng = np.random.default_rng(1)
    text = "\n\n".join(" ".join(rng.choice(WORDS, rng.integers(5, 30))) for _ in range(200))
    return build([write(tmp_path / "a.txt", text)], tokenizer, tmp_path, max_len=16)


def test_split_is_deterministic_and_partitions(small_corpus):
    train, heldout = small_corpus.split(0.1, seed=0)
    again_train, _ = small_corpus.split(0.1, seed=0)
    other_train, _ = small_corpus.split(0.1, seed=1)
    count = len(small_corpus)
    assert len(heldout) == round(0.1 * count) and len(train) + len(heldout) == count

    def rows(corpus: PackedCorpus) -> list[tuple[int, ...]]:
        return [tuple(corpus[i].tolist()) for i in range(len(corpus))]

    assert rows(train) == rows(again_train) and rows(train) != rows(other_train)
    assert sorted(rows(train) + rows(heldout)) == sorted(rows(small_corpus))
    assert train.num_tokens + heldout.num_tokens == small_corpus.num_tokens
    with pytest.raises(CorpusError):
        small_corpus.split(1.0, seed=0)


def test_token_counts_match_a_counter(small_corpus, tokenizer):
    for corpus in (small_corpus, small_corpus.split(0.25, seed=0)[1]):
        counter = Counter(t for i in range(len(corpus)) for t in corpus[i].tolist())
        expected = np.zeros(tokenizer.vocab_size, dtype=np.int64)
        for token, count in counter.items():
            expected[token] = count
        assert np.array_equal(corpus.token_counts(tokenizer.vocab_size), expected)
    with pytest.raises(CorpusError, match="another tokenizer"):
        small_corpus.token_counts(3)


def test_indexing_and_pickling(small_corpus):
    assert np.array_equal(small_corpus[-1], small_corpus[len(small_corpus) - 1])
    with pytest.raises(IndexError):
        small_corpus[len(small_corpus)]
    view = small_corpus.split(0.5, seed=0)[0]
    restored = pickle.loads(pickle.dumps(view))
    assert len(pickle.dumps(view)) < 4 * view.num_tokens  # tokens are not copied
    assert all(np.array_equal(restored[i], view[i]) for i in range(len(view)))


@pytest.mark.skipif(not GUTENBERG_BOOK.is_file(), reason=f"{GUTENBERG_BOOK} is not available")
@pytest.mark.skipif(not BERT_VOCAB.is_file(), reason=f"{BERT_VOCAB} is not available")
def test_a_real_gutenberg_book(tmp_path):
    tokenizer = Tokenizer.from_vocab(BERT_VOCAB)
    corpus = build([GUTENBERG_BOOK], tokenizer, tmp_path)
    assert corpus.meta["num_tokens"] > 30_000 and corpus.lengths.max() == 128
    assert corpus.lengths.mean() > 80  # paragraphs are packed, not one per sequence
    assert all(corpus[i][0] == tokenizer.cls_id for i in range(len(corpus)))
    assert all(corpus[i][-1] == tokenizer.sep_id for i in range(len(corpus)))
    text = " ".join(tokenizer.decode(corpus[i].tolist()) for i in range(len(corpus)))
    assert "down the rabbit - hole" in text
    # hard-wrapped lines of a paragraph were joined: this sentence spans two lines in the file
    assert "it was labelled “ orange marmalade ”" in text
    assert os.fspath(GUTENBERG_BOOK) in corpus.meta["sources"][0]


def test_a_killed_builds_leftovers_are_removed_by_the_next_build(tmp_path):
    """A kill during tokenization left .distilkit-cache/.tmp-* (a partial tokens file)."""
    from distilkit.data.corpus import remove_stale_builds

    dead = tmp_path / f".tmp-abc-{2**22 + 12345}-deadbeef"  # no such process
    dead.mkdir()
    (dead / "tokens.bin").write_bytes(b"\0" * 10)
    alive = tmp_path / f".tmp-abc-{os.getpid()}-cafe0000"  # a build running now
    alive.mkdir()
    remove_stale_builds(tmp_path)
    assert not dead.exists() and alive.exists()
