"""Write the extra transfer corpora of docs/RESULTS.md from ../shared/data (text only).

* ``OUT/corpus-broad``: the text of CoNLL-2003 train (one sentence per paragraph, tokens
  joined by spaces), SST-2 train sentences, and WikiText-2 test (the demo corpus's copy);
  no labels.
* ``OUT/corpus-stsb-train``: every distinct STS-B train sentence once, leaving out those
  that also occur in STS-B dev; no scores.

    python benchmarks/make_corpora.py --data ../shared/data --out runs
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

from distilkit.distill import DEMO_CORPUS
from distilkit.evaluation import STSB_DEV


def conll_sentences(path: Path) -> list[str]:
    """The sentences of a CoNLL-2003 file, tokens joined by spaces."""
    sentences, tokens = [], []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        line = line.strip()
        if not line or line.startswith("-DOCSTART-"):
            if tokens:
                sentences.append(" ".join(tokens))
            tokens = []
        else:
            tokens.append(line.split()[0])
    return sentences


def tsv_column(path: Path, *columns: str) -> list[str]:
    """The values of ``columns`` of a TSV file with a header, row by row."""
    with path.open(encoding="utf-8", newline="") as stream:
        rows = list(csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))
    indices = [rows[0].index(column) for column in columns]
    return [row[index].strip() for row in rows[1:] for index in indices]


def write_paragraphs(texts: list[str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{text}\n\n" for text in texts), encoding="utf-8")
    print(f"{path}: {len(texts):,} paragraphs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("runs"))
    args = parser.parse_args()
    broad = args.out / "corpus-broad"
    write_paragraphs(
        conll_sentences(args.data / "conll2003" / "train.txt"), broad / "conll2003-train.txt"
    )
    write_paragraphs(
        tsv_column(args.data / "sst2" / "train.tsv", "sentence"), broad / "sst2-train.txt"
    )
    shutil.copy(DEMO_CORPUS / "wikitext-2-test.txt", broad / "wikitext-2-test.txt")
    dev = set(tsv_column(STSB_DEV, "sentence1", "sentence2"))
    train = tsv_column(args.data / "stsb" / "train.tsv", "sentence1", "sentence2")
    kept = [text for text in dict.fromkeys(train) if text not in dev]
    write_paragraphs(kept, args.out / "corpus-stsb-train" / "stsb-train-sentences.txt")


if __name__ == "__main__":
    main()
