"""Build the mixed-genre transfer corpus shipped in ``distilkit/resources/mixed/``.

Run from the repository root (see ``distilkit/data/mixed_corpus.py`` for the sources):

    python scripts/make_mixed_corpus.py --source /work/shared/data

It prints each genre's sentence count and each file's sha256 for the README there.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from distilkit.data.mixed_corpus import build_mixed_corpus

OUTPUT = Path(__file__).resolve().parent.parent / "distilkit" / "resources" / "mixed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="the shared data root")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = build_mixed_corpus(args.source, args.out, seed=args.seed)
    for name, count in counts.items():
        path = args.out / f"{name}.txt"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{name}.txt  {count:,} sentences  {path.stat().st_size:,} bytes  {digest}")


if __name__ == "__main__":
    main()
