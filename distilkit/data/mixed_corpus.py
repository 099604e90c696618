"""The mixed-genre transfer corpus: sentences of several kinds from the shared collections.

A sentence encoder is used on short texts of many kinds: questions, captions and
headlines, reviews, encyclopaedic and narrative prose. Books alone keep 97.6% of the
teacher's STS-B however long the student trains (docs/RESULTS.md), so the main job's
default corpus mixes genres. :func:`build_mixed_corpus` writes one file per genre, each
sentence a paragraph of its own (``text`` + blank line), from these sources under the
data root, and nothing else:

=================  =====================================================  =============
genre file         source                                                 licence
=================  =====================================================  =============
wiki-squad         sentences of the SQuAD v1.1 dev contexts (Wikipedia)   CC BY-SA 4.0
questions-squad    SQuAD v1.1 dev questions                               CC BY-SA 4.0
questions-wiki     WikiAnswers questions (query-wellformedness >= 0.8)    CC BY-SA 4.0
captions-news      STS-B train sentences (captions, headlines, forums)    STS licences
reviews            SST-2 train sentences of at least 5 words              research use
books              Project Gutenberg books                                public domain
wikitext           WikiText-2 test sentences                              CC BY-SA 3.0
=================  =====================================================  =============

The dev suite's files (STS-B dev, SST-2 dev, SICK, TREC, MRPC) and Multi30k are never a
source; their sentences are read only to drop any source sentence that equals one of
them (compared lowercased, on word characters). Each genre is deduplicated, sampled to
its size with ``numpy.random.default_rng(seed)`` and written in source order, so the
same data and seed give the same bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distilkit.data.corpus import iter_documents, split_paragraphs, split_sentences
from distilkit.evaluate.sentence import SST2_DEV, STSB_DEV, read_sst2, read_stsb
from distilkit.evaluate.suite_data import (
    MRPC_TRAIN,
    SICK_TRAIN,
    SICK_TRIAL,
    TREC_TRAIN,
    read_mrpc,
    read_sick,
    read_trec,
)

MIN_WORDS = 4  # shorter pieces (headings, fragments) are dropped
MAX_WORDS = 60


@dataclass(frozen=True)
class Genre:
    """One file of the corpus: its name, how many sentences it keeps, and its reader
    (data root -> sentences in source order)."""

    name: str
    size: int
    read: Callable[[Path], list[str]]


def _prose_sentences(paragraphs: Iterable[str]) -> list[str]:
    return [s for p in paragraphs for s in split_sentences(p)]


def squad_contexts(root: Path) -> list[str]:
    data = json.loads((root / "squad1.1" / "dev-v1.1.json").read_text(encoding="utf-8"))
    contexts = [p["context"] for article in data["data"] for p in article["paragraphs"]]
    return _prose_sentences(" ".join(c.split()) for c in contexts)


def squad_questions(root: Path) -> list[str]:
    data = json.loads((root / "squad1.1" / "dev-v1.1.json").read_text(encoding="utf-8"))
    return [
        " ".join(qa["question"].split())
        for article in data["data"]
        for p in article["paragraphs"]
        for qa in p["qas"]
    ]


def wikianswers_questions(root: Path, min_score: float = 0.8) -> list[str]:
    lines = (root / "query-wellformedness" / "train.tsv").read_text(encoding="utf-8").splitlines()
    questions = []
    for line in lines:
        query, _, score = line.rpartition("\t")
        if query and float(score) >= min_score:
            text = query.strip().replace(" ?", "?")
            questions.append(text[:1].upper() + text[1:])
    return questions


def stsb_train(root: Path) -> list[str]:
    first, second, _ = read_stsb(root / "stsb" / "train.tsv")
    return [text.strip() for pair in zip(first, second, strict=True) for text in pair]


def sst2_train(root: Path) -> list[str]:
    return read_sst2(root / "sst2" / "train.tsv")[0]


def books(root: Path) -> list[str]:
    return _prose_sentences(
        p for _, block in iter_documents([root / "gutenberg"]) for p in split_paragraphs(block)
    )


_WIKITEXT_MARKUP = {" @-@ ": "-", " @,@ ": ",", " @.@ ": "."}


def wikitext(root: Path) -> list[str]:
    text = (root / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8")
    lines = [
        line for line in text.splitlines() if line.strip() and not line.strip().startswith("=")
    ]
    for markup, plain in _WIKITEXT_MARKUP.items():
        lines = [line.replace(markup, plain) for line in lines]
    return _prose_sentences(" ".join(line.split()) for line in lines)


GENRES = (
    Genre("wiki-squad", 9000, squad_contexts),
    Genre("questions-squad", 7000, squad_questions),
    Genre("questions-wiki", 6000, wikianswers_questions),
    Genre("captions-news", 9000, stsb_train),
    Genre("reviews", 7000, sst2_train),
    Genre("books", 6000, books),
    Genre("wikitext", 4000, wikitext),
)


def _key(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def excluded_sentences(root: Path) -> set[str]:
    """Keys of every sentence of the dev suite and of Multi30k found under ``root`` (and
    of the STS-B and SST-2 dev files shipped in the package): none may be transfer text."""
    texts: list[str] = []
    first, second, _ = read_stsb(STSB_DEV)
    texts += first + second + read_sst2(SST2_DEV)[0]
    for name in (SICK_TRAIN, SICK_TRIAL):
        if (root / name).is_file():
            pairs = read_sick(root / name)
            texts += pairs.first + pairs.second
    if (root / TREC_TRAIN).is_file():
        texts += read_trec(root / TREC_TRAIN)[0]
    if (root / MRPC_TRAIN).is_file():
        pairs = read_mrpc(root / MRPC_TRAIN)
        texts += pairs.first + pairs.second
    for path in sorted((root / "multi30k").glob("*.en")):
        texts += path.read_text(encoding="utf-8").splitlines()
    return {_key(text) for text in texts if text.strip()}


def select(sentences: list[str], size: int, excluded: set[str], seed: int) -> list[str]:
    """Distinct, not excluded, 4-60 word sentences, ``size`` of them drawn by ``seed``,
    in source order."""
    seen: set[str] = set()
    kept = []
    for text in sentences:
        key = _key(text)
        if key in seen or key in excluded or not MIN_WORDS <= len(text.split()) <= MAX_WORDS:
            continue
        seen.add(key)
        kept.append(text)
    if len(kept) <= size:
        return kept
    chosen = np.random.default_rng(seed).choice(len(kept), size=size, replace=False)
    return [kept[i] for i in sorted(chosen)]


def build_mixed_corpus(
    root: str | Path, out_dir: str | Path, genres: Iterable[Genre] = GENRES, seed: int = 0
) -> dict[str, int]:
    """Write ``<out_dir>/<genre>.txt`` for each genre; returns sentences per genre."""
    root, out_dir = Path(root), Path(out_dir)
    excluded = excluded_sentences(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for genre in genres:
        kept = select(genre.read(root), genre.size, excluded, seed)
        (out_dir / f"{genre.name}.txt").write_text(
            "".join(f"{text}\n\n" for text in kept), encoding="utf-8"
        )
        counts[genre.name] = len(kept)
    return counts
