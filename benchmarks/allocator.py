"""What the C allocator's inference settings (distilkit/model/allocator.py) buy: a model's
sentences/s and peak memory in a process of its own, with them and with glibc's defaults.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/allocator.py [--lines F] [--static DIR]

The settings hold for a whole process and glibc adapts its thresholds to what a process
has freed before, so every measurement is a fresh child process that loads one model and
times only it: the default teacher, its untrained 2- and 1-layer cuts (blocks 0,5 and 5: a
trained student of that depth costs the same) in fp32 and int8 and, with ``--static``, a
static student. Each round times every model twice, once with the settings and once with
``DISTILKIT_MALLOC=system`` (which goes first alternates), on the same ``--texts`` lines
(``--lines``: a file, one text per line; default a seeded sample of the mixed-genre
corpus): batch 64, one warm-up pass, the median of ``--passes``. Printed: sentences/s of
every model in both modes (median over rounds), their ratio, each model's speed over the
teacher's in each mode, and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

import numpy as np


def _texts(args: argparse.Namespace) -> list[str]:
    if args.lines:
        with open(args.lines, encoding="utf-8") as stream:
            lines = [line.strip() for line in stream if line.strip()]
        return lines[: args.texts]
    from distilkit.methods.general.config import DEFAULT_CORPUS
    from distilkit.methods.static.vocab import corpus_sentences

    sentences = list(dict.fromkeys(corpus_sentences([str(DEFAULT_CORPUS)], limit=20000)))
    rng = np.random.default_rng(0)
    return [sentences[i] for i in rng.choice(len(sentences), size=args.texts, replace=False)]


def _model(name: str, static: str | None):
    from distilkit.encoder import load
    from distilkit.evaluate.comparison import cut_of

    if name == "static":
        return load(static)
    teacher = load("all-MiniLM-L6-v2", head=None, device="cpu")
    if name == "teacher fp32":
        return teacher
    layers = [0, 5] if name.startswith("2-layer") else [5]
    cut = cut_of(teacher, layers)
    return cut.to("int8") if name.endswith("int8") else cut


def _child(args: argparse.Namespace) -> None:
    import torch

    from distilkit.evaluate.timing import time_embedders
    from distilkit.model.allocator import tune_for_inference

    outcome = tune_for_inference()  # a no-op under DISTILKIT_MALLOC=system
    torch.set_num_threads(args.threads)
    texts = _texts(args)
    model = _model(args.child, args.static)
    result = time_embedders(
        {args.child: lambda t: model.embed(t, batch_size=64, progress=False)},
        texts,
        batch_size=64,
        repeats=args.passes,
        warmup=1,
        latency_texts=0,
    )[args.child]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps({"outcome": outcome, "speed": result["sentences_per_s"], "peak_mib": peak_mib})
    )


MODELS = (
    "teacher fp32",
    "2-layer cut fp32",
    "2-layer cut int8",
    "1-layer cut fp32",
    "1-layer cut int8",
)


def _spawn(args: argparse.Namespace, name: str, tuned: bool) -> dict:
    environ = dict(os.environ)
    environ.pop("DISTILKIT_MALLOC", None)
    if not tuned:
        environ["DISTILKIT_MALLOC"] = "system"
    command = [sys.executable, __file__, "--child", name, "--threads", str(args.threads)]
    command += ["--passes", str(args.passes), "--texts", str(args.texts)]
    command += ["--static", args.static] if args.static else []
    command += ["--lines", args.lines] if args.lines else []
    done = subprocess.run(command, env=environ, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--lines", help="a text file, one text per line, to time on")
    parser.add_argument("--static", help="a static student's folder, timed as well")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    names = [*MODELS, *(["static"] if args.static else [])]
    runs = {(n, t): [] for n in names for t in (True, False)}
    for round_ in range(args.rounds):
        for name in names:
            for tuned in (True, False) if round_ % 2 == 0 else (False, True):
                runs[name, tuned].append(_spawn(args, name, tuned))
        print(f"round {round_ + 1} of {args.rounds} done", flush=True)
    outcomes = {r["outcome"] for (_, t), rs in runs.items() for r in rs if t}
    print(f"with the settings: {sorted(outcomes)}")
    speed = {key: statistics.median(r["speed"] for r in rs) for key, rs in runs.items()}
    peak = {key: statistics.median(r["peak_mib"] for r in rs) for key, rs in runs.items()}
    print(
        f"\n{'model':18s} {'tuned/s':>8s} {'system/s':>8s} {'ratio':>6s} {'x teacher':>13s}"
        f" {'peak MiB':>11s}  per-round ratios"
    )
    teacher = {t: speed["teacher fp32", t] for t in (True, False)}
    for name in names:
        fast, slow = speed[name, True], speed[name, False]
        over = f"{fast / teacher[True]:.2f} / {slow / teacher[False]:.2f}"
        peaks = f"{peak[name, True]:.0f} / {peak[name, False]:.0f}"
        pairs = zip(runs[name, True], runs[name, False], strict=True)
        rounds = " ".join(f"{a['speed'] / b['speed']:.2f}" for a, b in pairs)
        print(
            f"{name:18s} {fast:8.1f} {slow:8.1f} {fast / slow:6.2f} {over:>13s} {peaks:>11s}"
            f"  {rounds}"
        )


if __name__ == "__main__":
    main()
