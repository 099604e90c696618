"""The mixed-genre corpus builder: reads each source, never takes a dev-suite or Multi30k
sentence, samples by seed, writes the same bytes twice."""

from __future__ import annotations

import json
from pathlib import Path

from distilkit.data import mixed_corpus
from distilkit.data.mixed_corpus import GENRES, Genre, build_mixed_corpus, select
from distilkit.evaluate.sentence import read_stsb

STSB_HEADER = (
    "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
)
LEAKED = "The leaked sentence is in the dev suite too."  # planted in sources and eval files


def write_sources(root: Path) -> Path:
    """A data root with every source of the corpus and every file it must not use."""
    squad = {
        "data": [
            {
                "title": "T",
                "paragraphs": [
                    {
                        "context": f"Wiki prose comes first here. {LEAKED} Then a third one.",
                        "qas": [
                            {"question": "Which squad question is this?", "id": "1", "answers": []}
                        ],
                    }
                ],
            }
        ]
    }
    (root / "squad1.1").mkdir(parents=True)
    (root / "squad1.1" / "dev-v1.1.json").write_text(json.dumps(squad))
    (root / "query-wellformedness").mkdir()
    (root / "query-wellformedness" / "train.tsv").write_text(
        "what is a good wiki answer ?\t1.0\nbad query words here\t0.2\n"
    )
    dev_first, _, _ = read_stsb(mixed_corpus.STSB_DEV)
    (root / "stsb").mkdir()
    (root / "stsb" / "train.tsv").write_text(
        STSB_HEADER
        + f"0\tg\tf\ty\t0\ts\ts\tA caption of a man riding.\t{LEAKED}\t3.0\n"
        + f"1\tg\tf\ty\t1\ts\ts\t{dev_first[0]}\tA headline about the markets today.\t2.0\n"
    )
    (root / "sst2").mkdir()
    (root / "sst2" / "train.tsv").write_text(
        "sentence\tlabel\na gorgeous and moving film review \t1\ntoo short \t0\n"
    )
    (root / "gutenberg").mkdir()
    (root / "gutenberg" / "1-0.txt").write_text(
        "The book begins with a long\nwrapped sentence. It goes on for a while.\n"
    )
    (root / "wikitext-2-raw").mkdir()
    (root / "wikitext-2-raw" / "wiki.test.raw").write_text(
        " = Heading = \n The wikitext line has a @-@ hyphen in it . \n"
    )
    for folder, name, line in (
        ("sick", "SICK_train.txt", f"1\t{LEAKED}\tOnly in sick train here.\t3.0\tNEUTRAL\n"),
        (
            "sick",
            "SICK_trial.txt",
            "2\tOnly in sick trial here.\tAnother sick one.\t3.0\tNEUTRAL\n",
        ),
    ):
        (root / folder).mkdir(exist_ok=True)
        (root / folder / name).write_text(
            "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n" + line
        )
    (root / "trec").mkdir()
    (root / "trec" / "train_5500.label").write_text("DESC:def What is only in trec here ?\n")
    (root / "mrpc").mkdir()
    (root / "mrpc" / "msr_paraphrase_train.txt").write_text(
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tOnly in mrpc here.\tMrpc two.\n"
    )
    (root / "multi30k").mkdir()
    (root / "multi30k" / "train.en").write_text("The wikitext line has a-hyphen in it.\n")
    return root


def corpus_text(folder: Path) -> str:
    return "".join(path.read_text() for path in sorted(folder.glob("*.txt")))


def test_every_source_is_read_and_no_dev_suite_or_multi30k_sentence_is_kept(tmp_path):
    root = write_sources(tmp_path / "data")
    counts = build_mixed_corpus(root, tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(counts) == sorted(genre.name for genre in GENRES)
    assert "Wiki prose comes first here." in (out / "wiki-squad.txt").read_text()
    assert "Which squad question is this?" in (out / "questions-squad.txt").read_text()
    assert (out / "questions-wiki.txt").read_text() == "What is a good wiki answer?\n\n"
    assert (out / "captions-news.txt").read_text() == (
        "A caption of a man riding.\n\nA headline about the markets today.\n\n"
    )  # the leaked sentence and the STS-B dev sentence are dropped
    assert (out / "reviews.txt").read_text() == "a gorgeous and moving film review\n\n"
    assert "The book begins with a long wrapped sentence." in (out / "books.txt").read_text()
    assert (out / "wikitext.txt").read_text() == ""  # equals a Multi30k line once normalised
    text = corpus_text(out)
    assert LEAKED not in text and "Only in" not in text and "Heading" not in text
    assert counts["wiki-squad"] == 2 and counts["captions-news"] == 2


def test_the_build_is_deterministic_and_sampled_by_seed(tmp_path):
    root = write_sources(tmp_path / "data")
    build_mixed_corpus(root, tmp_path / "a")
    build_mixed_corpus(root, tmp_path / "b")
    assert corpus_text(tmp_path / "a") == corpus_text(tmp_path / "b")
    sentences = [f"sentence number {i} of the source" for i in range(50)]
    first = select(sentences, 10, set(), seed=1)
    assert first == select(sentences, 10, set(), seed=1) != select(sentences, 10, set(), seed=2)
    assert first == sorted(first, key=sentences.index) and len(set(first)) == 10
    small = [Genre("wiki-squad", 1, mixed_corpus.squad_contexts)]
    assert build_mixed_corpus(root, tmp_path / "c", small) == {"wiki-squad": 1}


def test_the_source_list_names_no_evaluation_file():
    sources = " ".join(genre.read.__name__ for genre in GENRES)
    for banned in ("sick", "trec", "mrpc", "multi30k"):
        assert banned not in sources.lower()
