"""Commands that use a model as it is: info, embed, search, fill-mask, tokenize,
plot-embeddings, compare."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from distilkit.cli.common import (
    _load,
    _note_empty,
    _shorten,
    add_device_argument,
    add_dtype_argument,
    add_input_arguments,
    add_model_argument,
    add_pooling_argument,
    add_progress_argument,
    show_progress,
)
from distilkit.data.tables import InputError, read_texts
from distilkit.deploy.onnx_runtime import OnnxEncoder
from distilkit.deploy.quantization import PRECISIONS, QUERY_PRECISIONS
from distilkit.deploy.search import SearchIndex
from distilkit.evaluate.comparison import compare_models
from distilkit.evaluate.model_figure import plot_model_summary
from distilkit.evaluate.plotting import (
    parameter_groups,
    plot_embedding_report,
    project_2d,
)
from distilkit.model.hub import resolve
from distilkit.model.summary import format_info
from distilkit.model.tokenizer import Tokenizer
from distilkit.train.trainer import MAX_SEED

ARRAYS_SHOWN = 20  # `info` lists this many arrays unless --all-arrays


METHOD_NAMES = {"pca": "PCA", "tsne": "t-SNE"}


# ----------------------------------------------------------------------------- info
def add_info_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "info",
        help="parameter counts, layer types, size on disk and in memory",
        description="Summarise a model: element count of every array, the total, counts per "
        "block and per layer type, size on disk and in memory.",
    )
    add_model_argument(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the full summary as JSON (every array) instead of tables",
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw the network (embeddings -> blocks -> pooling, with output shapes and "
        "parameters per stage), parameters per block and layer types to this image",
    )
    parser.add_argument(
        "--all-arrays", action="store_true", help=f"list every array, not the first {ARRAYS_SHOWN}"
    )
    return parser


def run_info(args: argparse.Namespace) -> int:

    encoder = _load(args)
    info = encoder.info()
    notes = sys.stderr if args.json else sys.stdout  # keep stdout pure JSON with --json
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        config = encoder.config
        print(
            f"{args.model}: {config.layout} layout, {config.num_layers} layers, hidden "
            f"{config.hidden_size}, {config.num_heads} heads, FFN {config.intermediate_size}, "
            f"vocabulary {config.vocab_size:,}, head {config.head or 'none'}"
        )
        print()
        print(format_info(info, max_arrays=None if args.all_arrays else ARRAYS_SHOWN))
        print()
        groups = parameter_groups(info)
        total = sum(groups.values())
        print(f"{'block':<16} {'parameters':>14} {'share':>7}")
        for name, count in groups.items():
            print(f"{name:<16} {count:>14,} {count / total:>7.1%}")
    if args.plot:
        recipe, dim = None, None
        if hasattr(encoder, "describe_recipe"):  # a sentence encoder (not an ONNX file)
            recipe = encoder.describe_recipe()
            dim = encoder.sentence.output_dim(encoder.config.hidden_size)
        path = plot_model_summary(info, args.plot, title=args.model, recipe=recipe, output_dim=dim)
        print(f"wrote {path}", file=notes)
    return 0


# ----------------------------------------------------------------------------- embed
def add_embed_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "embed",
        help="sentence embeddings of a file of texts, to a .npy matrix",
        description="Embed every text of --input and save an (n, hidden) float32 matrix to "
        "--output (.npy); row i is the i-th line (or table row) of the input.",
    )
    add_model_argument(parser)
    add_input_arguments(parser)
    parser.add_argument("--output", required=True, metavar="FILE.npy", help="where to save")
    add_pooling_argument(parser, models_own=True)
    parser.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="scale rows to unit length (default: as the model's folder says, i.e. when its "
        "sentence-transformers modules end in Normalize)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        metavar="N",
        help="texts per forward pass (default: 64)",
    )
    parser.add_argument(
        "--dimensions",
        type=int,
        metavar="K",
        help="keep the first K values of each vector (renormalised when normalized): for a "
        "student trained with `distill --matryoshka`, one of its widths (default: the folder's "
        "truncate_dim, else all)",
    )
    add_dtype_argument(parser)
    add_device_argument(parser)
    add_progress_argument(parser)
    return parser


def run_embed(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.suffix != ".npy":
        raise InputError(f"--output must name a .npy file, got {output}")
    data = read_texts(args.input, args.column)
    _note_empty(data)
    encoder = _load(args)
    start = time.perf_counter()
    if hasattr(encoder, "describe_recipe"):
        recipe = encoder.describe_recipe(args.pooling)  # also checks the pooling fits
    elif isinstance(encoder, OnnxEncoder):  # its graph's recipe, or numpy pooling
        recipe = f"{args.pooling} pooling" if args.pooling else "the graph's recipe"
    else:  # a static table: its token vectors pooled
        args.pooling = args.pooling or "mean"
        recipe = f"{args.pooling} pooling"
    cut = {}  # --dimensions: the first K values (the model's embed checks K)
    if args.dimensions is not None:
        cut = {"dimensions": args.dimensions}
    vectors = encoder.embed(
        data.texts,
        pooling=args.pooling,
        normalize=args.normalize,
        batch_size=args.batch_size,
        progress=show_progress(args),
        **cut,
    )
    seconds = time.perf_counter() - start
    output.parent.mkdir(parents=True, exist_ok=True)
    np.save(output, vectors.astype(np.float32, copy=False))
    rate = len(data.texts) / seconds if seconds > 0 else float("inf")
    print(
        f"embedded {len(data.texts):,} texts with {args.model} "
        f"({recipe}"
        f"{'' if args.normalize is None else ', normalized' if args.normalize else ', raw'}, "
        f"{args.dtype})"
    )
    print(f"wrote {output}: shape {vectors.shape}, float32")
    print(f"time {seconds:.2f} s, {rate:,.1f} sentences/s")
    return 0


# ----------------------------------------------------------------------------- search
def add_search_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "search",
        help="semantic search: the texts of a file closest in meaning to a query",
        description="Rank the texts of --input by the cosine of their sentence vectors to each "
        "query's and print the best --top-k. With --index FILE.npz the collection's vectors "
        "are saved and reused while the model, pooling and texts stay the same.",
    )
    add_model_argument(parser)
    add_input_arguments(parser)
    queries = parser.add_mutually_exclusive_group(required=True)
    queries.add_argument(
        "--query", action="append", metavar="TEXT", help="a text to search for (repeatable)"
    )
    queries.add_argument("--queries", metavar="FILE", help="a file of queries, one per line")
    parser.add_argument(
        "-k", "--top-k", type=int, default=5, metavar="K", help="hits per query (default: 5)"
    )
    parser.add_argument(
        "--index", metavar="FILE.npz", help="save the collection's vectors here and reuse them"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="how the collection's vectors are kept: float32, int8 (4x less memory) or binary "
        "(32x less; Hamming search, then --rescore x k candidates rescored)",
    )
    parser.add_argument(
        "--rescore",
        type=int,
        default=4,
        metavar="M",
        help="binary: rescore the best M x k candidates with the query vector (0: Hamming only)",
    )
    parser.add_argument(
        "--query-precision",
        choices=QUERY_PRECISIONS,
        default="float32",
        help="the query vector used for int8 scores and binary rescoring",
    )
    add_pooling_argument(parser, models_own=True)
    parser.add_argument(
        "--batch-size", type=int, default=64, metavar="N", help="texts per forward pass (64)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the hits as JSON")
    add_dtype_argument(parser)
    add_device_argument(parser)
    add_progress_argument(parser)
    return parser


def run_search(args: argparse.Namespace) -> int:

    if args.top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {args.top_k}")
    if args.rescore < 0:
        raise InputError(f"--rescore must be 0 or more, got {args.rescore}")
    if args.index is not None and Path(args.index).suffix != ".npz":
        raise InputError(f"--index must name a .npz file, got {args.index}")
    if args.queries is not None:
        queries = [text for text in read_texts(args.queries).texts if text.strip()]
    else:
        queries = args.query
    if any(not query.strip() for query in queries):
        raise InputError("a --query is empty: give the text to search for")
    data = read_texts(args.input, args.column)
    encoder = _load(args)
    start = time.perf_counter()
    quantization = {
        "precision": args.precision,
        "rescore_multiplier": args.rescore,
        "query_precision": args.query_precision,
    }
    if args.index is None:
        index = SearchIndex.build(
            encoder, data.texts, args.pooling, args.batch_size, show_progress(args), **quantization
        )
        reused = False
    else:
        index, reused = SearchIndex.cached(
            args.index,
            encoder,
            data.texts,
            args.pooling,
            args.batch_size,
            show_progress(args),
            **quantization,
        )
    built = time.perf_counter() - start
    results = index.search(encoder, queries, top_k=args.top_k, batch_size=args.batch_size)
    searched = time.perf_counter() - start - built
    where = "row" if Path(args.input).suffix.lower() in (".tsv", ".csv") else "line"
    for query, hits in zip(queries, results, strict=True):
        print(f"query: {_shorten(query, 80)}")
        print(f"{'rank':>4}  {'cosine':>6}  {where:>6}  text")
        for rank, hit in enumerate(hits, start=1):
            print(f"{rank:>4}  {hit.score:6.3f}  {hit.index + 1:>6}  {_shorten(hit.text, 80)}")
        print()
    vectors = f"reused {args.index}" if reused else f"embedded in {built:.2f} s"
    if args.index is not None and not reused:
        vectors += f", saved to {args.index}"
    plural = "query" if len(queries) == 1 else "queries"
    print(
        f"{len(index):,} texts ({vectors}; {index.precision}, {index.nbytes / 1e6:.3f} MB of "
        f"vectors); {len(queries)} {plural} in {searched:.2f} s; {where} numbers count from 1"
    )
    if args.json:
        payload = [
            {
                "query": query,
                "hits": [{"index": h.index, "score": h.score, "text": h.text} for h in hits],
            }
            for query, hits in zip(queries, results, strict=True)
        ]
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", "utf-8")
        print(f"wrote {args.json}")
    return 0


# ----------------------------------------------------------------------------- fill-mask
def add_fill_mask_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "fill-mask",
        help="most likely tokens for each [MASK] in a text",
        description="Rank the vocabulary for each [MASK] of TEXT (the model needs an MLM head).",
    )
    add_model_argument(parser)
    parser.add_argument("text", metavar="TEXT", help='e.g. "the capital of france is [MASK]."')
    parser.add_argument(
        "--top-k",
        type=int,
        default=5,
        metavar="K",
        help="how many tokens to list per mask (default: 5)",
    )
    add_device_argument(parser)
    return parser


def run_fill_mask(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {args.top_k}")
    encoder = _load(args)
    results = encoder.fill_mask(args.text, top_k=args.top_k)
    per_mask = [results] if results and isinstance(results[0], dict) else results
    for index, candidates in enumerate(per_mask, start=1):
        if index > 1:
            print()
        print(f"{encoder.tokenizer.mask_token} {index} of {len(per_mask)}")
        print(f"{'rank':>4}  {'token':<16} {'score':>7}  sequence")
        for rank, candidate in enumerate(candidates, start=1):
            print(
                f"{rank:>4}  {candidate['token_str']:<16} {candidate['score']:>7.4f}  "
                f"{candidate['sequence']}"
            )
    return 0


# ----------------------------------------------------------------------------- tokenize
def add_tokenize_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "tokenize",
        help="the word pieces and ids a model sees for a text",
        description="Print the word pieces and vocabulary ids of TEXT, with [CLS] and [SEP], "
        "and the character span each piece comes from.",
    )
    add_model_argument(parser)
    parser.add_argument("text", metavar="TEXT", help="the text to split into word pieces")
    return parser


def run_tokenize(args: argparse.Namespace) -> int:
    tokenizer = Tokenizer.from_folder(resolve(args.model))  # no need to load the weights
    batch = tokenizer([args.text])
    ids = batch.input_ids[0].tolist()
    pieces = tokenizer.convert_ids_to_tokens(ids)
    print(f"{'position':>8}  {'id':>6}  {'piece':<20} span")
    for position, (token_id, piece, (start, end)) in enumerate(
        zip(ids, pieces, batch.offsets[0], strict=True)
    ):
        span = f"{start}:{end} {args.text[start:end]!r}" if end > start else ""
        print(f"{position:>8}  {token_id:>6}  {piece:<20} {span}")
    unknown = sum(1 for token_id in ids if token_id == tokenizer.unk_id)
    print(
        f"{len(ids)} tokens ({len(ids) - 2} pieces + [CLS] and [SEP]), {unknown} unknown"
        + (", truncated to the model's limit" if batch.truncated[0] else "")
    )
    return 0


# ----------------------------------------------------------------------------- plot-embeddings
def add_plot_embeddings_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "plot-embeddings",
        help="2-D map of sentence embeddings and a token feature heat map",
        description="Embed the texts of --input, project them to 2-D (PCA or t-SNE) and draw "
        "them, coloured by --labels-column; beside it, a token-by-feature heat map "
        "of one text (--text, default: the first input text).",
    )
    add_model_argument(parser)
    add_input_arguments(parser)
    parser.add_argument("--output", required=True, metavar="FILE.png", help="image to write")
    parser.add_argument(
        "--labels-column",
        metavar="NAME",
        help="a .tsv/.csv column to colour points by (e.g. SST-2's 'label')",
    )
    parser.add_argument("--text", help="the text of the heat map (default: first input text)")
    parser.add_argument(
        "--layer",
        type=int,
        default=-1,
        help="hidden state of the heat map: 0 = embedding output, k = after "
        "layer k, -1 = last (default)",
    )
    parser.add_argument(
        "--method",
        choices=list(METHOD_NAMES),
        default="pca",
        help="projection: pca (numpy SVD, default) or tsne (scikit-learn)",
    )
    parser.add_argument("--seed", type=int, default=0, help="t-SNE random state (default: 0)")
    add_pooling_argument(parser)
    parser.add_argument(
        "--batch-size", type=int, default=64, metavar="N", help="texts per forward pass (64)"
    )
    parser.add_argument(
        "--annotate",
        type=int,
        default=20,
        metavar="N",
        help="write the (shortened) text beside at most N points (default: 20)",
    )
    add_device_argument(parser)
    add_progress_argument(parser)
    return parser


def run_plot_embeddings(args: argparse.Namespace) -> int:

    if not 0 <= args.seed <= MAX_SEED:
        raise InputError(f"--seed must be from 0 to {MAX_SEED}, got {args.seed}")

    data = read_texts(args.input, args.column, args.labels_column)
    _note_empty(data)
    encoder = _load(args)
    layers = encoder.config.num_layers
    if not -(layers + 1) <= args.layer <= layers:
        raise InputError(
            f"--layer must be between 0 and {layers} (or -1 for the last layer), got {args.layer}"
        )
    text = args.text if args.text is not None else next(t for t in data.texts if t.strip())
    vectors = encoder.embed(
        data.texts, pooling=args.pooling, batch_size=args.batch_size, progress=show_progress(args)
    )
    projection = project_2d(vectors, method=args.method, seed=args.seed)
    features = encoder.features(text, layer=args.layer)
    tokens = encoder.tokens(text)
    layer_name = {-1: "last layer", 0: "embedding output"}.get(args.layer, f"layer {args.layer}")
    path = plot_embedding_report(
        projection,
        data.labels,
        data.texts,
        features,
        tokens,
        args.output,
        title=f"{args.model}: {METHOD_NAMES[args.method]} of {args.pooling}-pooled embeddings",
        heatmap_title=f'Token features of "{_shorten(text, 50)}" ({layer_name})',
        max_annotations=args.annotate,
        label_name=args.labels_column or "label",
    )
    print(
        f"projected {len(data.texts):,} texts with {args.method}: "
        f"{projection.axis_labels[0]}, {projection.axis_labels[1]}"
    )
    print(f"heat map: {len(tokens)} tokens x {features.shape[1]} features of {_shorten(text)!r}")
    print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------- compare
def add_compare_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compare",
        help="score encoders side by side: STS-B dev, an SST-2 probe, speed (the main job's table)",
        description="Evaluate sentence encoders with the main job's protocol and print one "
        "table: parameters, size on disk, CPU throughput (the models timed in turns in this "
        "process), STS-B dev Spearman of pooled embeddings and the SST-2 dev accuracy of a "
        "logistic-regression probe, each with its retention against the first MODEL (the "
        "teacher). For every other model of the teacher's width it also prints how closely "
        "its sentence vectors follow the teacher's on the STS-B sentences, and then the dev "
        "suite (six sentence tasks scored SentEval's way) with each model's retention per task.",
    )
    parser.add_argument(
        "models", nargs="+", metavar="MODEL", help="the reference (teacher) first, then students"
    )
    add_pooling_argument(parser)
    parser.add_argument(
        "--static-baseline",
        action="store_true",
        help="add a row for the first model's averaged input word embeddings (context-free)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="300 STS-B pairs, 1,000 probe sentences, fewer timing passes and the quick dev "
        "suite (a quick look; cite only full runs)",
    )
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for the timing")
    parser.add_argument(
        "--asymmetric",
        action="store_true",
        help="also search STS-B dev paraphrases with documents indexed by the first model and "
        "queries embedded by each other one (recall@10, MRR), beside each model alone",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    add_progress_argument(parser)
    parser.add_argument(
        "--cut",
        metavar="LAYERS",
        help="add a dev-suite row for the untrained student made of these layers of the first "
        "MODEL (e.g. 0,4,5: what a student started from), so the table shows what training added",
    )
    parser.add_argument(
        "--no-suite",
        action="store_true",
        help="skip the dev suite (STS-B, SICK-R, SICK-E, "
        "SST-2, TREC, MRPC; its SICK/TREC/MRPC files are read from --data-root)",
    )
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder holding sick/, trec/, mrpc/ (default: $DISTILKIT_DATA, else ../shared/data)",
    )
    add_device_argument(parser)
    return parser


def run_compare(args: argparse.Namespace) -> int:

    if len(set(args.models)) != len(args.models):
        raise InputError(f"a model is named twice in {args.models}: name each model once")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    cut = None
    if args.cut is not None:
        try:
            cut = [int(part) for part in args.cut.split(",")]
        except ValueError:
            raise InputError(
                f"--cut takes teacher layer numbers like 0,4,5, got {args.cut!r}"
            ) from None
    compare_models(
        args.models,
        quick=args.quick,
        static_baseline=args.static_baseline,
        threads=args.threads,
        pooling=args.pooling,
        progress=show_progress(args),
        device=args.device,
        cut_layers=cut,
        dev_suite=not args.no_suite,
        data_root=args.data_root,
        json_path=args.json,
        asymmetric=args.asymmetric,
    )
    return 0
