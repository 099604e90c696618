"""What the C allocator's inference settings (distilkit/model/allocator.py) buy: each model's
sentences/s and the process's peak memory with them and with glibc's defaults, in paired
child processes (the settings hold for a whole process, so the two cannot share one).

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/allocator.py [--static FOLDER]

Each round starts one child with the settings and one with ``DISTILKIT_MALLOC=system``
(which goes first alternates by round). A child loads the default teacher, its untrained
2- and 1-layer cuts (blocks 0,5 and 5: a trained student of that depth costs the same),
the 2- and 1-layer cuts in int8 and, with ``--static``, a static student; it times them
in turns on the same 256 sentences of the mixed-genre corpus (batch 64, one warm-up pass,
the median of ``--passes``) and reports its peak resident memory. Printed: sentences/s of
every model in both modes (median over rounds), the ratio, and each model's speed over
the teacher's in each mode.
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


def _child(args: argparse.Namespace) -> None:
    import torch

    from distilkit.encoder import load
    from distilkit.evaluate.comparison import cut_of
    from distilkit.evaluate.timing import time_embedders
    from distilkit.methods.general.config import DEFAULT_CORPUS
    from distilkit.methods.static.vocab import corpus_sentences
    from distilkit.model.allocator import tune_for_inference

    torch.set_num_threads(args.threads)
    sentences = list(dict.fromkeys(corpus_sentences([str(DEFAULT_CORPUS)], limit=20000)))
    rng = np.random.default_rng(0)
    texts = [sentences[i] for i in rng.choice(len(sentences), size=args.texts, replace=False)]
    teacher = load("all-MiniLM-L6-v2", head=None, device="cpu")
    models = {"teacher fp32": teacher}
    for layers in ([0, 5], [5]):
        name = f"{len(layers)}-layer cut"
        models[f"{name} fp32"] = cut_of(teacher, layers)
        models[f"{name} int8"] = cut_of(teacher, layers).to("int8")
    if args.static:
        models["static"] = load(args.static)
    results = time_embedders(
        {
            name: (lambda t, m=m: m.embed(t, batch_size=64, progress=False))
            for name, m in models.items()
        },
        texts,
        batch_size=64,
        repeats=args.passes,
        warmup=1,
        latency_texts=0,
    )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "outcome": tune_for_inference(),
                "speed": {name: r["sentences_per_s"] for name, r in results.items()},
                "peak_mib": peak_mib,
            }
        )
    )


def _spawn(args: argparse.Namespace, tuned: bool) -> dict:
    environ = dict(os.environ)
    environ.pop("DISTILKIT_MALLOC", None)
    if not tuned:
        environ["DISTILKIT_MALLOC"] = "system"
    command = [sys.executable, __file__, "--child", "--threads", str(args.threads)]
    command += ["--passes", str(args.passes), "--texts", str(args.texts)]
    command += ["--static", args.static] if args.static else []
    done = subprocess.run(command, env=environ, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--static", help="a static student's folder, timed as well")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    runs: dict[bool, list[dict]] = {True: [], False: []}
    for round_ in range(args.rounds):
        for tuned in (True, False) if round_ % 2 == 0 else (False, True):
            runs[tuned].append(_spawn(args, tuned))
            last = runs[tuned][-1]
            print(f"round {round_ + 1}: {last['outcome']:>24s}, peak {last['peak_mib']:.0f} MiB")
    names = list(runs[True][0]["speed"])
    speed = {
        tuned: {n: statistics.median(r["speed"][n] for r in runs[tuned]) for n in names}
        for tuned in runs
    }
    print(f"\n{'model':20s} {'tuned':>8s} {'system':>8s} {'ratio':>6s} {'x teacher':>16s}")
    for name in names:
        fast, slow = speed[True][name], speed[False][name]
        over = (
            f"{fast / speed[True]['teacher fp32']:.2f} / {slow / speed[False]['teacher fp32']:.2f}"
        )
        print(f"{name:20s} {fast:8.1f} {slow:8.1f} {fast / slow:6.2f} {over:>16s}")
    peaks = {t: statistics.median(r["peak_mib"] for r in runs[t]) for t in runs}
    print(
        f"peak resident memory (median): tuned {peaks[True]:.0f} MiB, system {peaks[False]:.0f} MiB"
    )


if __name__ == "__main__":
    main()
