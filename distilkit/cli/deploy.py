"""Deployment subcommands of the ``distilkit`` command line: export, bench,
train-early-exit, serve. Thin wrappers over :mod:`distilkit.deploy.export`,
:mod:`distilkit.deploy.bench`, :mod:`distilkit.methods.early_exit` and
:mod:`distilkit.deploy.serve`; :data:`DEPLOY_COMMANDS` lists ``(add_parser, run)`` pairs for
``cli.main.COMMANDS`` (``Command(*pair)``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from distilkit.cli.common import (
    add_progress_argument,
    add_training_options,
    default_out,
    finite_float,
    run_folder,
    show_progress,
    training_overrides,
)
from distilkit.data.tables import check_label_ids, read_labelled
from distilkit.deploy.bench_embed import ALL_MODES, bench_models
from distilkit.deploy.bench_engines import BenchSettings
from distilkit.deploy.export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, export_onnx
from distilkit.deploy.serve import ServeConfig, serve
from distilkit.encoder import load
from distilkit.evaluate.sentence import SST2_DEV
from distilkit.methods.early_exit.curves import CurvePoint
from distilkit.methods.early_exit.job import (
    CURVE_FILE,
    EarlyExitConfig,
    default_training,
    run_early_exit,
)
from distilkit.train.trainer import TrainingConfig


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:

    parser = subparsers.add_parser(
        "export",
        help="export a model with its head to ONNX (fp32 or int8) and check it against PyTorch",
        description="Export the encoder with its task head to one ONNX file with dynamic batch "
        "and sequence axes; the model config and tokenizer travel inside it, so "
        "distilkit.load(FILE) needs nothing else. Ends with a parity check "
        "against eager PyTorch (max abs diff; with --int8, prediction agreement and the "
        "accuracy change on labelled check data).",
    )
    parser.add_argument("model", metavar="MODEL", help="checkpoint folder or model name")
    parser.add_argument(
        "--onnx", type=Path, required=True, metavar="OUT.onnx", help="the ONNX file to write"
    )
    parser.add_argument("--int8", action="store_true", help="dynamic int8 quantization")
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset ({MIN_OPSET} to {MAX_OPSET}; default {DEFAULT_OPSET})",
    )
    parser.add_argument(
        "--check-data",
        type=Path,
        metavar="TSV",
        help="texts (and labels) for the parity check: a GLUE-style TSV with 'sentence' "
        "(and 'label') columns or a text file (default: the shipped SST-2 dev set)",
    )
    parser.add_argument(
        "--check-limit", type=int, default=256, help="texts checked (0: skip; default 256)"
    )
    add_progress_argument(parser)
    return parser


def run_export(args: argparse.Namespace) -> int:

    if args.check_limit < 0:
        raise ValueError("--check-limit must be >= 0")
    encoder = load(args.model)
    texts = labels = None
    if args.check_data is not None and args.check_limit:
        config = encoder.config
        names = config.label_names or [f"LABEL_{i}" for i in range(config.num_labels)]
        texts, labels = read_labelled(args.check_data, args.check_limit, names)
        if config.head != "sequence_classification":
            labels = None
        if labels is not None:
            check_label_ids(labels, names, args.check_data)
    export_onnx(
        encoder,
        args.onnx,
        int8=args.int8,
        opset=args.opset,
        check_texts=texts,
        check_labels=labels,
        check_limit=args.check_limit,
        progress=show_progress(args),
    )
    return 0


# ----------------------------------------------------------------------------- bench
def add_bench_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:

    parser = subparsers.add_parser(
        "bench",
        help="throughput, latency and fidelity of encoders or classifiers in every mode",
        description="Time models in each mode they support, in turns on the same texts, in "
        "one process. Sentence encoders (no classification head): eager fp32, bf16, eager "
        "int8, ONNX fp32 and int8 (pooling and normalisation inside the graph), beside "
        "sentence-transformers' encode on the first model (when installed); embeddings/s, "
        "batch-1 latency, cosine to fp32, fraction of the matmul roof. Sequence classifiers "
        "(the first is the teacher): the same modes plus early exit, beside transformers' "
        "eager model; accuracy and agreement. Prints a table with every ratio explained and "
        "writes bench.json, bench.md and bench.png into --out. A classifier student may be a "
        "BiLSTM (`distill-bilstm`), timed in eager fp32. On a GPU (--device) eager fp32, bf16 "
        "and the reference run on it, with tokens/s and MFU against its measured matmul rate; "
        "int8, ONNX and early exit stay CPU modes.",
    )
    parser.add_argument(
        "models",
        nargs="*",
        metavar="[NAME=]MODEL",
        help="checkpoint folders or model names, the reference (teacher) first",
    )
    parser.add_argument("--teacher", help="the teacher (same as the first MODEL)")
    parser.add_argument(
        "--student",
        action="append",
        default=[],
        metavar="[NAME=]FOLDER",
        help="a student checkpoint or BiLSTM student folder (repeat for several)",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=ALL_MODES,
        metavar="MODE",
        help=f"modes to run, from {', '.join(repr(m) for m in ALL_MODES)} (default: every "
        "mode the models support)",
    )
    parser.add_argument("--data", type=Path, help="texts (and labels); default: SST-2 dev")
    parser.add_argument("--limit", type=int, help="use only the first N texts")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per batch (32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per engine")
    parser.add_argument("--latency-texts", type=int, default=100, help="batch-1 timings")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: torch's)")
    parser.add_argument(
        "--threshold",
        type=finite_float,
        help="early-exit threshold, a normalised entropy in [0, 1] (default: the saved one)",
    )
    parser.add_argument(
        "--no-peer",
        action="store_true",
        help="skip the reference (sentence-transformers for encoders, transformers for "
        "classifiers)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="where eager fp32, bf16 and the reference run: auto (the GPU when there is one, "
        "else the CPU), cpu, cuda or cuda:N; int8, ONNX and early exit always run on the CPU",
    )
    parser.add_argument("--out", type=Path, help="output folder (default runs/bench-<time>)")
    add_progress_argument(parser)
    return parser


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _named(specs: list[str]) -> dict[str, str]:
    """``[NAME=]MODEL`` specs -> name -> model; the first is ``teacher`` unless named."""
    models: dict[str, str] = {}
    for index, spec in enumerate(specs):
        name, _, source = spec.rpartition("=")
        if not name:
            name = "teacher" if index == 0 else f"student {index}" if len(specs) > 2 else "student"
        if name in models:
            raise ValueError(f"the model name {name!r} is used twice: give NAME=MODEL")
        models[name] = source
    return models


def run_bench_command(args: argparse.Namespace) -> int:

    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be >= 1")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:  # also rejects NaN
        raise ValueError(
            "--threshold is the early-exit threshold, a normalised prediction entropy from 0 "
            f"to 1 (0: never exit early, 1: always after the first block), got {args.threshold}"
        )
    specs = ([args.teacher] if args.teacher else []) + list(args.models) + list(args.student)
    if not specs:
        raise ValueError("give the models to bench: distilkit bench MODEL [MODEL...]")
    settings = BenchSettings(
        batch_size=args.batch_size,
        repeats=args.repeats,
        latency_texts=args.latency_texts,
        num_threads=args.threads,
        threshold=args.threshold,
        peer=not args.no_peer,
        device=args.device,
    )
    texts, labels = read_labelled(args.data or SST2_DEV, args.limit)
    out = args.out or default_out("bench")
    out.mkdir(parents=True, exist_ok=True)
    result = bench_models(
        _named(specs), args.modes, texts, labels, settings, out, _say, show_progress(args)
    )
    print(result.table())
    for note in result.notes:
        print(f"  {note}")
    if result.ceilings_gflops:
        ceilings = ", ".join(f"{k} {v:.1f}" for k, v in result.ceilings_gflops.items())
        print(f"  matmul roof (GFLOP/s, this run): {ceilings}")
    result.save_json(out / "bench.json")
    (out / "bench.md").write_text(result.table(markdown=True) + "\n", encoding="utf-8")
    result.plot(out / "bench.png")
    print(f"wrote {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'}")
    return 0


# ----------------------------------------------------------------------------- early exit
def add_train_early_exit_parser(
    subparsers: argparse._SubParsersAction,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train-early-exit",
        help="train FastBERT-style early-exit branches of a fine-tuned classifier",
        description="Add a small classifier after every layer of a fine-tuned sequence "
        "classifier and train them by self-distillation (KL to the final classifier's soft "
        "predictions) on unlabeled text, backbone frozen. Then measure accuracy against "
        "average layers on dev for several thresholds, pick the threshold for "
        "--target-speedup, and write OUT/model (model + branches), the curve as JSON and "
        "a plot.",
    )
    parser.add_argument("model", metavar="MODEL", help="a fine-tuned classifier (folder)")
    parser.add_argument("--out", type=Path, help="run folder (default runs/early-exit-<time>)")
    parser.add_argument(
        "--data",
        type=Path,
        help="unlabeled training text: a text file or a TSV with a 'sentence' column "
        "(default: SST-2 train from the data root)",
    )
    parser.add_argument("--limit", type=int, help="use only the first N training texts")
    parser.add_argument("--dev", type=Path, help="labelled dev TSV (default: SST-2 dev)")
    parser.add_argument(
        "--target-speedup",
        type=finite_float,
        metavar="X",
        help="pick the threshold that runs X times fewer layers on dev",
    )
    parser.add_argument("--thresholds", type=finite_float, nargs="+", help="curve thresholds")
    parser.add_argument("--timed", action="store_true", help="also time each threshold on dev")
    parser.add_argument(
        "--temperature",
        type=finite_float,
        default=1.0,
        help="softmax temperature of the self-distillation KL (1)",
    )
    parser.add_argument("--width", type=int, default=128, help="branch width (FastBERT: 128)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text")
    add_training_options(parser)
    return parser


def run_train_early_exit(args: argparse.Namespace) -> int:
    config = EarlyExitConfig(
        model=args.model,
        data=None if args.data is None else str(args.data),
        limit=args.limit,
        dev=None if args.dev is None else str(args.dev),
        target_speedup=args.target_speedup,
        thresholds=args.thresholds,
        timed=args.timed,
        temperature=args.temperature,
        width=args.width,
        max_length=args.max_length,
        training=TrainingConfig(**(asdict(default_training()) | training_overrides(args))),
    )
    out = run_folder(args, "early-exit")
    summary = run_early_exit(config, out, resume=not args.no_resume)
    points = [CurvePoint(**point) for point in summary["curve"]]
    print(_curve_table(points, summary["threshold"]))
    print(f"wrote {out / 'model'} (threshold {summary['threshold']:.4g}), {out / CURVE_FILE}")
    return 0


def _curve_table(points, chosen: float) -> str:
    lines = ["threshold  avg layers  speed-up  accuracy %  agree %  wall-clock"]
    for point in points:
        accuracy = "-" if point.accuracy is None else f"{100 * point.accuracy:.2f}"
        clock = "-" if point.wall_clock_speedup is None else f"{point.wall_clock_speedup:.2f}x"
        mark = "  <- chosen" if point.threshold == chosen and chosen > 0 else ""
        lines.append(
            f"{point.threshold:9.4g}  {point.average_layers:10.2f}  {point.layer_speedup:7.2f}x"
            f"  {accuracy:>10}  {100 * point.agreement:7.1f}  {clock:>10}{mark}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- serve
def add_serve_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    defaults = ServeConfig()
    parser = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP (OpenAI /v1/embeddings, TEI /embed, /classify)",
        description="Serve an embedding model or classifier with dynamic batching: "
        "POST /v1/embeddings (OpenAI), POST /embed (text-embeddings-inference), POST "
        "/classify (sequence-classification heads, early exit when the folder has "
        "branches), GET /health, GET /metrics (Prometheus). Concurrent requests are merged "
        "into length-sorted batches of up to --max-batch-size texts; an idle model starts "
        "at once, and while another instance runs a free one waits at most --max-wait-ms "
        "for a fuller batch. A full queue answers 429 with Retry-After; SIGTERM drains.",
    )
    parser.add_argument("model", metavar="MODEL", help="checkpoint folder, model name or .onnx")
    parser.add_argument(
        "--host", default=defaults.host, help="address to bind (default: loopback only)"
    )
    parser.add_argument(
        "--port", type=int, default=defaults.port, help=f"TCP port (default {defaults.port})"
    )
    parser.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "int8"),
        default=defaults.dtype,
        help=f"weights to serve with (default {defaults.dtype}; int8: quantized blocks)",
    )
    parser.add_argument(
        "--device",
        default=defaults.device,
        help="auto (the GPU when there is one), cpu, cuda, cuda:1",
    )
    parser.add_argument(
        "--pooling",
        default=defaults.pooling,
        help="mean | cls | max | last: replace the pooling step of the model's own "
        "sentence-transformers recipe (default: the recipe as its folder says, Dense layers "
        "included)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=defaults.max_batch_size,
        help="texts per forward batch (1: batching off)",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=finite_float,
        default=defaults.max_wait_ms,
        help="while another instance runs, how long the oldest queued request may wait "
        "for company (an idle model starts at once)",
    )
    parser.add_argument(
        "--max-queue", type=int, default=defaults.max_queue, help="texts waiting at most"
    )
    parser.add_argument(
        "--max-input-tokens",
        type=int,
        help="tokens per text (default: the model's limit); longer texts get 413 unless "
        "the request truncates",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=defaults.max_body_bytes,
        help=f"larger request bodies get 413 (default {defaults.max_body_bytes:,})",
    )
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: no key)")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="processes")
    parser.add_argument(
        "--instances",
        type=int,
        help="forward batches in flight at once in each process (default: 2 on a CPU with "
        "2 or more cores, else 1)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="PyTorch threads per instance (default: the physical cores / instances)",
    )
    parser.add_argument("--served-model-name", help="the model name in responses")
    return parser


def run_serve(args: argparse.Namespace) -> int:
    serve(ServeConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)}))
    return 0


DEPLOY_COMMANDS: list[
    tuple[
        Callable[[argparse._SubParsersAction], argparse.ArgumentParser],
        Callable[[argparse.Namespace], int],
    ]
] = [
    (add_export_parser, run_export),
    (add_bench_parser, run_bench_command),
    (add_train_early_exit_parser, run_train_early_exit),
    (add_serve_parser, run_serve),
]
