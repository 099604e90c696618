"""Commands that look inside a model: probe (a classifier on frozen vectors of your own
labelled data, beside a static baseline) and plot-attention (token-by-token maps)."""

from __future__ import annotations

import argparse
from pathlib import Path

from distilkit.cli.common import (
    _load,
    _shorten,
    add_device_argument,
    add_model_argument,
    add_progress_argument,
    show_progress,
)
from distilkit.data.tables import InputError
from distilkit.evaluate.plotting import plot_attention, plot_confusion_matrices
from distilkit.evaluate.probe import CLASSIFIER_NAMES, CLASSIFIERS, read_labelled_table, run_probe
from distilkit.train.trainer import MAX_SEED

DEFAULT_PROBE_PLOT = "probe_confusion.png"


# ----------------------------------------------------------------------------- probe
def add_probe_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "probe",
        help="train a classifier on a model's frozen vectors of your labelled data",
        description="Embed the texts of --train and --test with MODEL (frozen), train a "
        "classifier on the train vectors and report its test accuracy beside a static "
        "baseline (context-free word vectors, the same logistic regression) and chance; "
        "draw the confusion matrices to --output.",
    )
    add_model_argument(parser)
    parser.add_argument(
        "--train",
        required=True,
        metavar="FILE",
        help="labelled texts to train on: a .tsv, .csv or .jsonl table with a header",
    )
    parser.add_argument(
        "--test", required=True, metavar="FILE", help="labelled texts to score, the same layout"
    )
    parser.add_argument(
        "--text-column",
        metavar="NAME",
        help="the column of texts (default: 'text' or 'sentence')",
    )
    parser.add_argument(
        "--label-column", metavar="NAME", help="the column of labels (default: 'label')"
    )
    parser.add_argument(
        "--classifier",
        choices=CLASSIFIERS,
        default="logistic",
        help="; ".join(f"{key}: {name}" for key, name in CLASSIFIER_NAMES.items())
        + " (Wolfram's DistilBERT head); default logistic",
    )
    parser.add_argument(
        "--baseline",
        default="static",
        metavar="static|FILE.txt|none",
        help="the context-free baseline: 'static' (the model's own input word embeddings "
        "averaged, default), a GloVe or word2vec text vector file, or 'none'",
    )
    parser.add_argument(
        "--output",
        metavar="FILE.png",
        help=f"where to draw the confusion matrices (default: {DEFAULT_PROBE_PLOT} here; "
        "an existing file of that default name is never overwritten)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the classifiers (default: 0)")
    parser.add_argument(
        "--batch-size", type=int, default=64, metavar="N", help="texts per forward pass (64)"
    )
    add_device_argument(parser)
    add_progress_argument(parser)
    return parser


def run_probe_command(args: argparse.Namespace) -> int:
    if not 0 <= args.seed <= MAX_SEED:
        raise InputError(f"--seed must be from 0 to {MAX_SEED}, got {args.seed}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    output = Path(args.output or DEFAULT_PROBE_PLOT)
    if args.output is None and output.exists():
        raise InputError(f"{output} exists: name the image to write with --output FILE.png")
    train = read_labelled_table(args.train, args.text_column, args.label_column)
    test = read_labelled_table(args.test, args.text_column, args.label_column)
    baseline = None if args.baseline == "none" else args.baseline
    encoder = _load(args)
    report = run_probe(
        encoder,
        train,
        test,
        classifier=args.classifier,
        baseline=baseline,
        model_name=args.model,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=show_progress(args),
    )
    print(
        f"probe: {report.train_count:,} train and {report.test_count:,} test texts, "
        f"{len(report.label_names)} classes ({', '.join(report.label_names[:8])}"
        f"{', ...' if len(report.label_names) > 8 else ''})"
    )
    print(report.format())
    path = plot_confusion_matrices(
        [row.confusion for row in report.rows],
        [f"{row.name}: {row.accuracy:.1f}%" for row in report.rows],
        report.label_names,
        output,
        title=f"Test confusion matrices ({report.test_count:,} texts of {Path(args.test).name})",
    )
    print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------- plot-attention
def add_plot_attention_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "plot-attention",
        help="token-by-token attention maps of one layer (every head, or one)",
        description="Run MODEL on --text and draw the attention maps of --layer: for each "
        "head, row i shows how token i spreads its attention over the tokens, with the "
        "word pieces as labels.",
    )
    add_model_argument(parser)
    parser.add_argument("--text", required=True, metavar="TEXT", help="the text to look at")
    parser.add_argument(
        "--layer",
        type=int,
        required=True,
        metavar="L",
        help="the layer, counted from 0 (-1: the last)",
    )
    parser.add_argument(
        "--head", type=int, metavar="H", help="one head, counted from 0 (default: every head)"
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="FILE.png",
        help="the image to write",
    )
    add_device_argument(parser)
    return parser


def run_plot_attention(args: argparse.Namespace) -> int:
    if not args.text.strip():
        raise InputError("--text is empty: give the text to look at")
    encoder = _load(args)
    layers, heads = encoder.config.num_layers, encoder.config.num_heads
    if not -layers <= args.layer < layers:
        raise InputError(
            f"--layer must be from 0 to {layers - 1} (or -1 for the last) for this "
            f"{layers}-layer model, got {args.layer}"
        )
    if args.head is not None and not 0 <= args.head < heads:
        raise InputError(
            f"--head must be from 0 to {heads - 1} for this {heads}-head model, got {args.head}"
        )
    layer = args.layer % layers
    maps = encoder.attentions(args.text)[layer]  # (heads, tokens, tokens)
    chosen = list(range(heads)) if args.head is None else [args.head]
    tokens = encoder.tokens(args.text)
    path = plot_attention(
        maps[chosen],
        tokens,
        args.output,
        layer=layer,
        heads=chosen,
        title=f'{args.model}: attention of "{_shorten(args.text, 60)}"',
    )
    print(f"{len(tokens)} tokens: {' '.join(tokens)}")
    for head in chosen:
        top = maps[head].max(axis=1)
        print(f"layer {layer} head {head}: mean of each row's largest weight {top.mean():.3f}")
    print(f"wrote {path}")
    return 0


INSPECT_COMMANDS = [
    (add_probe_parser, run_probe_command),
    (add_plot_attention_parser, run_plot_attention),
]
