"""Speed-quality frontier subcommands: distill-static (and compress). Thin wrappers over
:mod:`distilkit.methods.static` and :mod:`distilkit.deploy.compress`;
:data:`FRONTIER_COMMANDS` lists ``(add_parser, run)`` pairs for ``cli.main.COMMANDS``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from distilkit.cli.common import add_progress_argument, finite_float, show_progress
from distilkit.methods.static.job import LOSSES, WEIGHTINGS, StaticConfig, run_static_distillation
from distilkit.model.hub import DEFAULT_MODEL
from distilkit.settings import ConfigError


# --------------------------------------------------------------------------- distill-static
def add_distill_static_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "distill-static",
        help="a static student: one teacher vector per vocabulary entry, averaged (model2vec)",
        description="Embed every vocabulary token (and, with --vocab-from, the corpus's most "
        "frequent words as whole entries) with the teacher, reduce to --dims by PCA, weight "
        "by SIF, optionally train the table against the teacher's sentence vectors on "
        "--train-corpus, and save a sentence-transformers StaticEmbedding folder that "
        "distilkit.load and sentence-transformers read.",
    )
    parser.add_argument(
        "teacher",
        nargs="?",
        default=DEFAULT_MODEL,
        help="the sentence encoder to distil (default: the embedded all-MiniLM-L6-v2)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the model folder to write")
    parser.add_argument("--dims", type=int, default=256, help="PCA dimensions (default 256)")
    parser.add_argument(
        "--vocab-from",
        nargs="+",
        default=[],
        metavar="CORPUS",
        help="text whose most frequent words join the vocabulary as whole entries",
    )
    parser.add_argument("--vocab-words", type=int, default=10000, help="corpus words added")
    parser.add_argument(
        "--train-corpus",
        nargs="+",
        default=[],
        metavar="CORPUS",
        help="train the table against the teacher's sentence vectors on this text "
        "(default: no training)",
    )
    parser.add_argument(
        "--train-sentences",
        type=int,
        default=20000,
        help="sentences of --train-corpus used (20000)",
    )
    parser.add_argument(
        "--epochs", type=int, default=3, help="passes over the training sentences (3)"
    )
    parser.add_argument(
        "--lr", type=finite_float, default=0.01, help="learning rate of the table (0.01)"
    )
    parser.add_argument(
        "--loss",
        choices=LOSSES,
        default="cosine",
        help="training loss against the teacher (cosine)",
    )
    parser.add_argument(
        "--weighting",
        choices=WEIGHTINGS,
        default="zipf",
        help="token weights: SIF from Zipf ranks, from corpus counts, or none (zipf)",
    )
    parser.add_argument("--no-eval", action="store_true", help="skip STS-B / SST-2 scoring")
    parser.add_argument(
        "--no-resume", action="store_true", help="start afresh even if --out holds a started run"
    )
    add_progress_argument(parser)
    return parser


def run_distill_static(args: argparse.Namespace) -> int:
    resumable = (args.out / "static_config.json").exists() or (args.out / ".work").exists()
    if args.out.is_dir() and any(args.out.iterdir()) and not resumable:
        raise ConfigError(f"{args.out} exists and holds other files: pick another --out")
    config = StaticConfig(
        teacher=args.teacher,
        dims=args.dims,
        vocab_from=args.vocab_from,
        vocab_words=args.vocab_words,
        train_corpus=args.train_corpus,
        train_sentences=args.train_sentences,
        epochs=args.epochs,
        lr=args.lr,
        loss=args.loss,
        weighting=args.weighting,
        evaluate=not args.no_eval,
    )
    metrics = run_static_distillation(
        config, args.out, resume=not args.no_resume, progress=show_progress(args)
    )
    print(f"static student ({metrics['vocabulary']:,} x {metrics['dims']}) saved to {args.out}")
    return 0


FRONTIER_COMMANDS: list[
    tuple[
        Callable[[argparse._SubParsersAction], argparse.ArgumentParser],
        Callable[[argparse.Namespace], int],
    ]
] = [(add_distill_static_parser, run_distill_static)]
