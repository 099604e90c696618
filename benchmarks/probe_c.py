"""How the dev suite's probes choose their regularisation: nested cross-validation of
each probe task's C on one model's sentence vectors.

For SICK-E, TREC and MRPC (k-fold tasks) each outer fold's C is chosen by an inner
3-fold cross-validation on that fold's training part alone (SentEval's protocol); for
SST-2 (train sample -> dev) C is chosen by 3-fold cross-validation on the train sample.
Prints, per task, every C's plain k-fold accuracy (for the curve), the C each outer fold
chose and the nested accuracy. The suite's fixed table ``PROBE_C_BY_TASK`` holds the
teacher's choices.

Usage::

    python benchmarks/probe_c.py [MODEL] [--full]
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np

import distilkit
from distilkit.evaluate import suite
from distilkit.evaluate.sentence import probe_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="all-MiniLM-L6-v2")
    parser.add_argument("--full", action="store_true", help="the full suite, not the quick one")
    args = parser.parse_args()
    settings = suite.FULL if args.full else suite.QUICK
    data = suite.load_suite_data(settings)
    encoder = distilkit.load(args.model)
    texts = data.texts()
    started = time.perf_counter()
    vectors = dict(zip(texts, encoder.embed(texts, progress=False), strict=True))
    print(
        f"# {args.model}: {len(texts)} sentences embedded in {time.perf_counter() - started:.0f} s"
    )

    def stack(items):
        return np.stack([vectors[text] for text in items])

    def pairs(task):
        return suite.pair_features(stack(task.first), stack(task.second))

    tasks = {
        "SICK-E": (pairs(data.sick_train), data.sick_train.labels),
        "TREC": (stack(data.trec[0]), data.trec[1]),
        "MRPC": (pairs(data.mrpc), data.mrpc.labels),
    }
    grid = suite.PROBE_C_GRID
    print(f"C grid {grid}; outer folds {settings.folds}, inner 3, seed {settings.seed}")
    for name, (features, labels) in tasks.items():
        started = time.perf_counter()
        flat = {
            c: suite.kfold_probe_accuracy(features, labels, settings.folds, settings.seed, c)
            for c in grid
        }
        nested, chosen = suite.nested_probe_accuracy(
            features, labels, grid, settings.folds, 3, settings.seed
        )
        common = collections.Counter(chosen).most_common(1)[0][0]
        curve = "  ".join(f"C={c:g}: {score:.2f}" for c, score in flat.items())
        print(f"{name:<7} {curve}")
        print(f"{'':<7} nested {nested:.2f}, folds chose {chosen} (most often {common:g}); "
              f"majority {100 * np.bincount(labels).max() / len(labels):.2f}; "
              f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    train, train_labels = stack(data.sst2_train[0]), data.sst2_train[1]
    dev, dev_labels = stack(data.sst2_dev[0]), data.sst2_dev[1]
    chosen, scores = suite.select_probe_c(train, train_labels, grid, 3, settings.seed)
    dev_curve = "  ".join(
        f"C={c:g}: {probe_accuracy(train, train_labels, dev, dev_labels, 0, c):.2f}" for c in grid
    )
    print("SST-2   train 3-fold: " + "  ".join(f"C={c:g}: {s:.2f}" for c, s in scores.items()))
    print(f"{'':<7} chose {chosen:g}; dev accuracy by C (not used to choose): {dev_curve}")


if __name__ == "__main__":
    main()
