"""Speed-quality frontier subcommands: distill-static and compress. Thin wrappers over
:mod:`distilkit.methods.static` and :mod:`distilkit.methods.compress`;
:data:`FRONTIER_COMMANDS` lists ``(add_parser, run)`` pairs for ``cli.main.COMMANDS``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from distilkit.cli.common import (
    add_device_argument,
    add_progress_argument,
    finite_float,
    show_progress,
)
from distilkit.methods import compress
from distilkit.methods.compress.config import SUITES, TRANSFORMER_FORMS
from distilkit.methods.compress.scoring import RULE
from distilkit.methods.general.config import DEFAULT_CORPUS
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
    add_device_argument(parser)
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
        config,
        args.out,
        resume=not args.no_resume,
        progress=show_progress(args),
        device=args.device,
    )
    print(f"static student ({metrics['vocabulary']:,} x {metrics['dims']}) saved to {args.out}")
    return 0


# --------------------------------------------------------------------------- compress
def positive_minutes(text: str) -> float:
    """An argparse type for --time-budget: a finite number of minutes > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of minutes > 0, got {text!r}")
    return value


def _numbers(text: str) -> list[int]:
    """An argparse type for a list such as ``1,2,3``: comma-separated whole numbers."""
    parts = text.replace(" ", "").split(",")
    if not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected numbers such as 1,2,3; got {text!r}")
    return [int(part) for part in parts]


def add_compress_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    rule = RULE.format(batch="--batch-size", keep=97.0).replace("97.0%", "100 x --keep %")
    parser = subparsers.add_parser(
        "compress",
        help="build, score and time candidate students; keep the fastest that holds --keep",
        description="Build candidate students of TEACHER (static tables at --static-dims, "
        "students of --student-layers layers trained by the main job, MobileBERT with "
        "--mobilebert), score each in its deployable forms (--forms: eager fp32, bf16 where "
        "the CPU has it natively, eager int8, ONNX fp32 and int8) on the dev suite as "
        "retention of the teacher and on agreement with the teacher on held-out --corpus "
        "lines, time each on this machine's CPU beside the teacher, and save the pick in "
        "OUT/picked "
        f"with OUT/report.md and OUT/frontier.png. The pick: {rule}. The search keeps to "
        "--time-budget (each step is estimated first and skipped when it does not fit) and "
        "a search started again with the same --out continues where it stopped. Students "
        "train on --device (the GPU when there is one); scoring and timing stay on the CPU.",
    )
    parser.add_argument(
        "teacher",
        nargs="?",
        default=DEFAULT_MODEL,
        help="the sentence encoder to compress (default: the embedded all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--keep",
        type=finite_float,
        default=0.97,
        help="fraction of the teacher's mean dev-suite score to keep, in (0, 1] (0.97)",
    )
    parser.add_argument(
        "--corpus",
        nargs="+",
        default=[str(DEFAULT_CORPUS)],
        metavar="PATH",
        help="your text: students train on it and agreement is measured on held-out lines "
        "of it (default: the mixed-genre corpus)",
    )
    parser.add_argument(
        "--time-budget",
        type=positive_minutes,
        default=40.0,
        metavar="MIN",
        help="minutes for the whole search (40)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the folder to write")
    parser.add_argument(
        "--static-dims",
        type=_numbers,
        default=[256, 128],
        metavar="D,D",
        help="widths of the static students (256,128)",
    )
    parser.add_argument(
        "--student-layers",
        type=_numbers,
        default=[1, 2, 3],
        metavar="L,L",
        help="layer counts of the trained students, in training order (1,2,3)",
    )
    parser.add_argument("--mobilebert", action="store_true", help="also train a MobileBERT student")
    parser.add_argument(
        "--forms",
        nargs="+",
        choices=TRANSFORMER_FORMS,
        default=list(TRANSFORMER_FORMS),
        help="deployable forms of each transformer student (all; bf16 only where native)",
    )
    parser.add_argument(
        "--suite",
        choices=SUITES,
        default="quick",
        help="dev-suite size every form is scored on (quick: the main job's subsets)",
    )
    parser.add_argument(
        "--data-root",
        default=None,
        help="folder with the dev suite's sick/, trec/, mrpc/ (default: $DISTILKIT_DATA)",
    )
    parser.add_argument(
        "--heldout-lines",
        type=int,
        default=512,
        help="corpus sentences held out of training, for agreement and timing (512)",
    )
    parser.add_argument(
        "--timing-lines",
        type=int,
        default=256,
        help="of those, the sentences every form is timed on (256)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="batch size of scoring and timing (64)"
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="where the students train: auto (the GPU when there is one, else the CPU), cpu, "
        "cuda or cuda:N; every form is scored and timed on the CPU, where it deploys",
    )
    parser.add_argument(
        "--no-resume",
        action="store_true",
        help="refuse to continue an earlier search in --out instead of continuing it",
    )
    parser.add_argument(
        "--retime",
        action="store_true",
        help="time every form of the search in --out again on this machine now and pick "
        "again (run it where the model will serve); nothing is rebuilt or rescored",
    )
    return parser


def run_compress(args: argparse.Namespace) -> int:
    config = compress.Config(
        teacher=args.teacher,
        keep=args.keep,
        corpus=args.corpus,
        time_budget=60.0 * args.time_budget,
        static_dims=args.static_dims,
        student_layers=args.student_layers,
        mobilebert=args.mobilebert,
        forms=args.forms,
        suite=args.suite,
        data_root=args.data_root,
        heldout_lines=args.heldout_lines,
        timing_lines=args.timing_lines,
        batch_size=args.batch_size,
        device=args.device,
    )
    if args.retime and args.no_resume:
        raise ConfigError("--retime times an earlier search again: drop --no-resume")
    result = compress.run(config, args.out, resume=not args.no_resume, retime=args.retime)
    if result["picked"] is None:
        print("nothing was picked: no candidate was scored within --time-budget; give more time")
        return 1
    print(f"saved {result['saved']}; load it with {result['load']}")
    return 0


FRONTIER_COMMANDS: list[
    tuple[
        Callable[[argparse._SubParsersAction], argparse.ArgumentParser],
        Callable[[argparse.Namespace], int],
    ]
] = [(add_distill_static_parser, run_distill_static), (add_compress_parser, run_compress)]
