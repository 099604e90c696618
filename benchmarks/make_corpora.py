"""Write the extra transfer corpora of docs/RESULTS.md from ../shared/data (text only).

* ``OUT/corpus-broad``: the text of CoNLL-2003 train (one sentence per paragraph, tokens
  joined by spaces), SST-2 train sentences, and WikiText-2 test (the demo corpus's copy);
  no labels.
* ``OUT/corpus-stsb-train``: every distinct STS-B train sentence once, leaving out those
  that also occur in STS-B dev; no scores.
* ``OUT/corpus-gutenberg-clauses``: the Gutenberg books cut into short pieces (clauses
  at , ; : and dashes, merged until at least 6 words; median 8 words), to test whether
  STS-B-length text helps (it did not, docs/RESULTS.md).

    python benchmarks/make_corpora.py --data ../shared/data --out runs
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

from distilkit.data.corpus import iter_documents, split_paragraphs, split_sentences
from distilkit.evaluate.sentence import STSB_DEV, read_sst2, read_stsb
from distilkit.methods.general.config import DEMO_CORPUS
from distilkit.tasks.ner import read_conll


def stsb_sentences(path: Path) -> list[str]:
    """The sentences of a GLUE STS-B file, pair by pair (first, second, first, ...)."""
    first, second, _ = read_stsb(path)
    return [text.strip() for pair in zip(first, second, strict=True) for text in pair]


_CLAUSE_BREAK = re.compile(r"(?<=[,;:])\s+|\s+(?=--)|\s*\u2014\s*|\s*--\s*")


def split_clauses(sentence: str, min_words: int = 6, min_tail: int = 4) -> list[str]:
    """A sentence cut at clause punctuation, pieces merged until ``min_words`` long; a
    last piece shorter than ``min_tail`` words is dropped.

    >>> split_clauses("When he came, she left; the door, of course, stayed open.")
    ['When he came, she left; the door,', 'of course, stayed open.']
    """
    clauses: list[str] = []
    words: list[str] = []
    for piece in _CLAUSE_BREAK.split(sentence):
        if piece and piece.strip():
            words.extend(piece.split())
            if len(words) >= min_words:
                clauses.append(" ".join(words))
                words = []
    if len(words) >= min_tail:
        clauses.append(" ".join(words))
    return clauses


def write_paragraphs(texts: list[str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{text}\n\n" for text in texts), encoding="utf-8")
    print(f"{path}: {len(texts):,} paragraphs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("runs"))
    args = parser.parse_args()
    try:
        write_corpora(args.data, args.out)
    except (ValueError, FileNotFoundError) as error:  # the readers' errors say what to do
        parser.error(str(error))


def write_corpora(data: Path, out: Path) -> None:
    broad = out / "corpus-broad"
    conll = read_conll(data / "conll2003" / "train.txt")
    write_paragraphs([" ".join(s.words) for s in conll], broad / "conll2003-train.txt")
    write_paragraphs(read_sst2(data / "sst2" / "train.tsv")[0], broad / "sst2-train.txt")
    shutil.copy(DEMO_CORPUS / "wikitext-2-test.txt", broad / "wikitext-2-test.txt")
    dev = set(stsb_sentences(STSB_DEV))
    train = stsb_sentences(data / "stsb" / "train.tsv")
    kept = [text for text in dict.fromkeys(train) if text not in dev]
    write_paragraphs(kept, out / "corpus-stsb-train" / "stsb-train-sentences.txt")
    clauses = [
        clause
        for _, block in iter_documents([data / "gutenberg"])
        for paragraph in split_paragraphs(block)
        for sentence in split_sentences(paragraph)
        for clause in split_clauses(sentence)
    ]
    write_paragraphs(clauses, out / "corpus-gutenberg-clauses" / "gutenberg-clauses.txt")


if __name__ == "__main__":
    main()
