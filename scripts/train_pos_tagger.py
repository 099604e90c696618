"""Train the packaged POS tagger on CoNLL-2003 and write it to distilkit/resources.

    python scripts/train_pos_tagger.py \
        --train /work/shared/data/conll2003/train.txt \
        --valid /work/shared/data/conll2003/valid.txt

Writes ``pos_tagger.npz`` and ``POS_TAGGER.md`` (source data, this command and the
measured accuracies) into the output folder, and prints the figures as JSON. Training
takes about a minute of CPU time on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from distilkit.data.augment.pos_tagger import PosTagger, read_conll_pos

REPO = Path(__file__).resolve().parent.parent
MAX_FILE_BYTES = 3 * 1024 * 1024

MODEL_CARD = """\
# Packaged POS tagger (`pos_tagger.npz`)

Used by `distilkit.data.augment` for POS-guided word replacement (Tang et al., 2019);
loaded with `PosTagger.load_default()`.

- **Model**: one-vs-rest linear SVM (scikit-learn `LinearSVC`, C = {c}) over hashed
  features (2^20 buckets) of a five-word window: the word, its prefixes and suffixes, its
  shape and capitalisation, and the neighbouring words. Each word is tagged on its own.
  Half of the training sentences are lower-cased, so lower-cased text (GLUE SST-2) is
  tagged well too. The {max_weights:,} weights of largest magnitude are kept, as float16.
- **Tags**: the {n_tags} Penn Treebank tags of the CoNLL-2003 POS column.
- **Training data**: CoNLL-2003 English `train.txt`, POS column ({n_train:,} sentences,
  {n_train_words:,} words). The text is from the Reuters RCV1 corpus: **research use only**,
  under the Reuters corpus terms. This file is a model derived from that data; the same
  terms apply to it.
- **Command**: `{command}` (seed {seed}; training
  took {cpu_seconds:.0f} s of CPU time, {seconds:.0f} s wall-clock, on one core).

| CoNLL-2003 valid ({n_valid:,} sentences, {n_valid_words:,} words) | token accuracy |
|---|---|
| as written (cased) | {valid_accuracy:.4f} |
| lower-cased | {valid_lower_accuracy:.4f} |

File size: {file_bytes:,} bytes.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, default=Path("/work/shared/data/conll2003/train.txt"))
    parser.add_argument("--valid", type=Path, default=Path("/work/shared/data/conll2003/valid.txt"))
    parser.add_argument("--out", type=Path, default=REPO / "distilkit" / "resources")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--c", type=float, default=0.1, help="the SVM's regularization C")
    parser.add_argument("--max-weights", type=int, default=200_000)
    args = parser.parse_args()

    train = read_conll_pos(args.train)
    valid = read_conll_pos(args.valid)
    start, cpu_start = time.perf_counter(), time.process_time()
    tagger = PosTagger.train(
        train, args.seed, regularization_c=args.c, max_weights=args.max_weights
    )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    valid_lower = [([word.lower() for word in words], tags) for words, tags in valid]

    args.out.mkdir(parents=True, exist_ok=True)
    model_path = args.out / "pos_tagger.npz"
    tagger.save(model_path)
    file_bytes = os.path.getsize(model_path)
    if file_bytes > MAX_FILE_BYTES:
        raise SystemExit(
            f"{model_path} is {file_bytes:,} bytes, over the 3 MB limit: lower --max-weights"
        )
    # Measure the model as loaded from disk (float16 weights), not the in-memory one.
    reloaded = PosTagger.load(model_path)
    report = {
        "seed": args.seed,
        "c": args.c,
        "max_weights": args.max_weights,
        "n_tags": len(reloaded.tags),
        "n_train": len(train),
        "n_train_words": sum(len(words) for words, _ in train),
        "n_valid": len(valid),
        "n_valid_words": sum(len(words) for words, _ in valid),
        "valid_accuracy": reloaded.evaluate(valid),
        "valid_lower_accuracy": reloaded.evaluate(valid_lower),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "file_bytes": file_bytes,
    }
    command = (
        f"python scripts/train_pos_tagger.py --train {args.train} --valid {args.valid} "
        f"--seed {args.seed} --c {args.c} --max-weights {args.max_weights}"
    )
    (args.out / "POS_TAGGER.md").write_text(
        MODEL_CARD.format(command=command, **report), encoding="utf-8"
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
