"""Score finished ``cmlm_qg.py`` runs again with another beam width (1: greedy), on the
same held-out pairs, without training; checks first that the run's own beam reproduces
its ``metrics.json``.

    PYTHONPATH=. python benchmarks/cmlm_rescore.py runs/cmlm-copy --beam-size 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from distilkit.methods.cmlm.job import CMLMConfig, decode_texts, load_pairs
from distilkit.methods.cmlm.metrics import generation_metrics
from distilkit.methods.cmlm.seq2seq import load_seq2seq
from distilkit.model.hub import resolve
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import from_dict


def score(folder: Path, beam_size: int | None) -> dict[str, float]:
    """BLEU / ROUGE-L of the run in ``folder`` decoded with ``beam_size`` (None: its own)."""
    if not (folder / "student").is_dir() or not (folder / "run_config.json").is_file():
        print(f"error: {folder} holds no finished cmlm_qg.py run: give its --out", file=sys.stderr)
        raise SystemExit(2)
    saved = json.loads((folder / "run_config.json").read_text())["cmlm"]
    config = from_dict(CMLMConfig, saved)
    tokenizer = Tokenizer.from_folder(resolve(config.teacher))
    _, heldout = load_pairs(config, tokenizer)
    predictions = decode_texts(
        load_seq2seq(folder / "student"),
        tokenizer,
        heldout.sources,
        beam_size or config.beam_size,
        config.max_decode_length,
        config.length_penalty,
    )
    return generation_metrics(predictions, [r.lower() for r in heldout.references])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="a cmlm_qg.py --out folder")
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--alphas", nargs="+", default=["0.5", "0"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    torch.set_num_threads(1)
    first = args.out / f"alpha{args.alphas[0]}-seed{args.seeds[0]}"
    check, saved = score(first, None), json.loads((first / "metrics.json").read_text())
    print(f"check {first.name}, its own beam: BLEU {check['bleu']:.4f} "
          f"(metrics.json {saved['bleu']:.4f})")  # fmt: skip
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:
        for alpha in args.alphas:
            metrics = score(args.out / f"alpha{alpha}-seed{seed}", args.beam_size)
            results.setdefault(alpha, []).append(metrics)
            row = {"alpha": alpha, "seed": seed, "beam": args.beam_size}
            print(json.dumps(row | {k: round(metrics[k], 2) for k in ("bleu", "rouge_l")}))
    for alpha, runs in results.items():
        for name in ("bleu", "rouge_l"):
            values = [r[name] for r in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"beam {args.beam_size} alpha={alpha} {name}: mean "
                  f"{statistics.mean(values):.2f} std {spread:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
