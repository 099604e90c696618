"""A tiny dev-suite data root (SICK, TREC, MRPC in SentEval's layouts) for the tests of
the suite, ``distilkit compare`` and the main job's report."""

from __future__ import annotations

from pathlib import Path

SICK_HEADER = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
WORDS = [
    "cat",
    "dog",
    "bird",
    "tree",
    "house",
    "car",
    "road",
    "river",
    "hill",
    "sun",
    "moon",
    "star",
    "rain",
    "wind",
    "sea",
]


def fake_sentences(count: int, offset: int) -> list[str]:
    return [
        f"{WORDS[(i + offset) % 15]} and {WORDS[(3 * i + offset) % 15]} number {i}"
        for i in range(count)
    ]


def write_data_root(root: Path) -> Path:
    """A tiny SICK / TREC / MRPC data root in SentEval's layouts."""
    (root / "sick").mkdir(parents=True)
    (root / "trec").mkdir()
    (root / "mrpc").mkdir()
    labels = ["NEUTRAL", "ENTAILMENT", "CONTRADICTION"]
    for name, count in (("SICK_train.txt", 60), ("SICK_trial.txt", 20)):
        first, second = fake_sentences(count, 1), fake_sentences(count, 7)
        rows = [
            f"{i}\t{a}\t{b}\t{1 + (i * 7 % 40) / 10:.1f}\t{labels[i % 3]}\n"
            for i, (a, b) in enumerate(zip(first, second, strict=True))
        ]
        (root / "sick" / name).write_text(SICK_HEADER + "".join(rows), encoding="utf-8")
    coarse = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    trec = [f"{coarse[i % 6]}:x What is {s} ?\n" for i, s in enumerate(fake_sentences(60, 3))]
    trec[0] = "HUM:ind Who was Ren\xe9 ?\n"  # a Latin-1 byte, as in the real file
    (root / "trec" / "train_5500.label").write_bytes("".join(trec).encode("latin-1"))
    mrpc = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + "".join(
        f"{i % 2}\t{i}\t{i + 100}\t{a}\t{b}\n"
        for i, (a, b) in enumerate(zip(fake_sentences(40, 2), fake_sentences(40, 5), strict=True))
    )
    (root / "mrpc" / "msr_paraphrase_train.txt").write_text(mrpc, encoding="utf-8")
    return root
