"""Build the small evaluation data shipped in ``distilkit/resources/data/``.

Copies the GLUE STS-B and SST-2 dev sets (byte for byte) and the STS-B license, and
draws a seeded random sample of SST-2 training sentences for the logistic-regression
probe. SST-2's train file lists every phrase of the treebank, most of them short
fragments ("hide new secretions"), so the sample keeps only rows of at least
``--min-words`` words and drops duplicate sentences before sampling.

Run from the repository root:

    python scripts/make_eval_data.py --source /work/shared/data

It prints each written file's line count and sha256 for ``resources/data/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import numpy as np

OUTPUT = Path(__file__).resolve().parent.parent / "distilkit" / "resources" / "data"
COPIES = {
    "stsb/dev.tsv": "stsb_dev.tsv",
    "stsb/LICENSE.txt": "STSB_LICENSE.txt",
    "sst2/dev.tsv": "sst2_dev.tsv",
}
SAMPLE_NAME = "sst2_train_sample.tsv"


def sample_sst2_train(
    train_path: Path, size: int, min_words: int, seed: int
) -> tuple[str, list[str]]:
    """The header line and ``size`` distinct rows (in file order) of >= ``min_words`` words."""
    lines = train_path.read_text(encoding="utf-8").splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    if header.rstrip("\r\n").split("\t") != ["sentence", "label"]:
        raise ValueError(f"{train_path} does not start with the SST-2 header 'sentence<TAB>label'")
    seen: set[str] = set()
    eligible: list[str] = []
    for row in rows:
        sentence = row.split("\t")[0].strip()
        if len(sentence.split()) >= min_words and sentence not in seen:
            seen.add(sentence)
            eligible.append(row)
    print(f"{len(rows)} rows, {len(eligible)} distinct with >= {min_words} words")
    if len(eligible) < size:
        raise ValueError(f"only {len(eligible)} eligible rows, fewer than the {size} asked for")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(eligible), size=size, replace=False))
    return header, [eligible[i] for i in chosen]


def describe(path: Path) -> str:
    """``name  lines  bytes  sha256`` of one file."""
    data = path.read_bytes()
    lines = data.count(b"\n")
    return f"{path.name}  {lines} lines  {len(data)} bytes  {hashlib.sha256(data).hexdigest()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--size", type=int, default=4000)
    parser.add_argument("--min-words", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    args.output.mkdir(parents=True, exist_ok=True)
    for source_name, target_name in COPIES.items():
        shutil.copyfile(args.source / source_name, args.output / target_name)
    header, rows = sample_sst2_train(
        args.source / "sst2" / "train.tsv", args.size, args.min_words, args.seed
    )
    (args.output / SAMPLE_NAME).write_text(header + "".join(rows), encoding="utf-8")
    for name in [*COPIES.values(), SAMPLE_NAME]:
        print(describe(args.output / name))


if __name__ == "__main__":
    main()
