"""Distillation subcommands of the ``distilkit`` command line: distill, init-student,
fit-mlm-head, cache-targets. Thin wrappers over :mod:`distilkit.methods.general`; registered in
``cli.main.COMMANDS``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from distilkit.cli.common import (
    add_progress_argument,
    add_training_options,
    finite_float,
    parse_layers,
    run_folder,
    show_progress,
    training_overrides,
    weights_parser,
)
from distilkit.data.corpus import UNITS
from distilkit.data.target_cache import DTYPES
from distilkit.methods import mobilebert
from distilkit.methods.general.config import (
    BUDGET_ONLY_MAX_STEPS,
    DEFAULT_JOB_BUDGET,
    DEMO_CORPUS,
    MIXED_CORPUS,
    DistillConfig,
)
from distilkit.methods.general.job import init_student, run_distillation
from distilkit.methods.general.mlm_head import MLMHeadConfig, fit_mlm_head
from distilkit.methods.general.objectives import DistillationWeights
from distilkit.methods.general.targets import cache_teacher_targets
from distilkit.model.hub import DEFAULT_MODEL
from distilkit.model.student import STRATEGIES
from distilkit.settings import ConfigError, from_dict, load_json

WEIGHT_NAMES = tuple(field.name for field in dataclasses.fields(DistillationWeights))


# --------------------------------------------------------------------------- distill
def add_distill_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "distill",
        help="general-purpose distillation of a teacher into a shallower student (main job)",
        description="Distill a BERT-class teacher into a student with fewer layers, then "
        "evaluate both side by side. With no arguments: the embedded all-MiniLM-L6-v2 into "
        "a 3-layer student on the shipped demo corpus, in about 15 minutes on 2 CPU cores.",
    )
    parser.add_argument("--config", type=Path, help="a distill_config.json to start from")
    parser.add_argument("--teacher", help=f"teacher model (default {DEFAULT_MODEL})")
    parser.add_argument(
        "--corpus",
        nargs="+",
        type=_corpus_path,
        help="text files or folders (.txt, .txt.gz), tables (.tsv, .csv, .jsonl; "
        "PATH:col1,col2 names the text columns, else 'text' or 'sentence' is read) or "
        f"hf:dataset:split:column (default: the mixed-genre corpus in "
        f"distilkit/resources/{MIXED_CORPUS.name}/; the books-and-WikiText demo corpus is "
        f"distilkit/resources/{DEMO_CORPUS.name}/)",
    )
    parser.add_argument("--num-layers", type=int, help="student depth (default 3)")
    parser.add_argument("--layers", type=parse_layers, help="teacher layers to keep, e.g. 0,3,5")
    parser.add_argument(
        "--strategy", choices=STRATEGIES, help="how to choose the teacher layers (default auto)"
    )
    parser.add_argument(
        "--layout", choices=("bert", "distilbert"), help="student layout (default: the teacher's)"
    )
    parser.add_argument(
        "--student-init",
        choices=("teacher", "random"),
        help="start the student from the teacher's layers (default) or at random (ablation)",
    )
    parser.add_argument("--max-len", type=int, help="tokens per training sequence (default 128)")
    parser.add_argument(
        "--corpus-unit",
        choices=UNITS,
        help="text unit of a training sequence (default sentence)",
    )
    parser.add_argument(
        "--pack",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fill sequences with consecutive units (default: one unit per sequence)",
    )
    parser.add_argument(
        "--temperature",
        type=finite_float,
        help="softmax temperature of the soft targets (default 2)",
    )
    parser.add_argument(
        "--weights",
        type=weights_parser(WEIGHT_NAMES, "ce=5,mlm=2,cos=1"),
        help="loss weights, e.g. ce=5,mlm=2,cos=1",
    )
    parser.add_argument(
        "--matryoshka",
        type=_widths,
        metavar="D1,D2,...",
        help="also teach each prefix of the sentence vector, e.g. 384,256,128,64, to keep the "
        "teacher's similarities, so `embed --dimensions 128` works (loss weight 1 unless "
        "--weights names matryoshka); the widths are saved with the student",
    )
    parser.add_argument("--out", type=Path, help="run folder (default runs/distill-<time>)")
    parser.add_argument("--no-eval", action="store_true", help="skip the side-by-side evaluation")
    parser.add_argument(
        "--quick-eval", action="store_true", help="evaluate on a subsample (faster, noisier)"
    )
    parser.add_argument(
        "--job-time-budget",
        type=finite_float,
        metavar="SECONDS",
        help="end the whole job, evaluation included, within this long: training gets what "
        "is left after setup and a measured estimate of the evaluation (default: "
        f"{DEFAULT_JOB_BUDGET:.0f} s when neither --time-budget nor --max-steps is given, "
        "else no deadline)",
    )
    _add_target_cache_options(parser)
    add_training_options(parser)
    _add_mobilebert_options(parser)
    return parser


def _add_target_cache_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target-cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read the teacher's last hidden states from a cache beside the corpus cache, "
        "filling it as training goes (default off: it pays when the teacher is large beside "
        "the student; used when the inputs are unmasked and every loss needs only the "
        "teacher's last hidden state)",
    )
    parser.add_argument(
        "--target-cache-dtype",
        choices=DTYPES,
        help="how the cache stores the targets: float32 (exact, default) or float16 (half "
        "the disk)",
    )


def _add_mobilebert_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "MobileBERT student (--student-architecture mobilebert): the teacher's depth and "
        "width between blocks, a thin bottleneck inside each block"
    )
    group.add_argument(
        "--student-architecture",
        choices=("cut", "mobilebert"),
        default="cut",
        help="cut: teacher layers kept (default); mobilebert: Sun et al. (2020)",
    )
    group.add_argument(
        "--bottleneck-size",
        type=int,
        help="width inside a block (default: the largest multiple of the teacher's heads <= 128)",
    )
    group.add_argument(
        "--ffn-stack",
        type=int,
        default=2,
        help="FFNs per block (default 2: at equal CPU time as good as the paper's 4, and faster)",
    )
    group.add_argument(
        "--norm",
        choices=("nonorm", "layernorm"),
        default="nonorm",
        help="normalisation inside MobileBERT blocks: NoNorm (element-wise affine, faster) or "
        "LayerNorm",
    )
    group.add_argument(
        "--act",
        choices=("relu", "gelu"),
        default="relu",
        help="activation of MobileBERT's feed-forward networks (default relu)",
    )
    group.add_argument(
        "--embedding-size", type=int, default=128, help="word-vector width (default 128)"
    )
    group.add_argument(
        "--transfer",
        choices=mobilebert.job.TRANSFERS,
        default="joint",
        help="layer-wise knowledge transfer before general distillation (default joint: at "
        "30 minutes of CPU it kept more of the teacher than progressive or auxiliary)",
    )


def _widths(text: str) -> list[int]:
    """``--matryoshka 384,256,128,64`` -> ``[384, 256, 128, 64]``."""
    parts = text.replace(" ", "").split(",")
    if all(part.isdigit() and int(part) > 0 for part in parts):
        return [int(part) for part in parts]
    raise argparse.ArgumentTypeError(
        f"--matryoshka takes comma-separated widths >= 1 such as 384,256,128,64; got {text!r}"
    )


def _corpus_path(value: str) -> str:
    """A local corpus path made absolute (so a saved config resumes from any folder);
    ``hf:`` dataset specs unchanged."""
    return value if value.startswith("hf:") else str(Path(value).expanduser().absolute())


def distill_config_from_args(args: argparse.Namespace) -> DistillConfig:
    """Defaults, then --config, then explicit flags (the last wins)."""
    check_depth(args)
    data = load_json(args.config) if args.config else {}
    for name in (
        "teacher",
        "corpus",
        "num_layers",
        "layers",
        "strategy",
        "layout",
        "student_init",
        "max_len",
        "corpus_unit",
        "pack",
        "target_cache",
        "target_cache_dtype",
    ):
        value = getattr(args, name)
        if value is not None:
            data[name] = value
    objective = data.setdefault("objective", {})
    if args.temperature is not None:
        objective["temperature"] = args.temperature
    if args.weights is not None:
        objective["weights"] = {**dict.fromkeys(WEIGHT_NAMES, 0.0), **args.weights}
    if args.matryoshka is not None:
        objective["matryoshka_dims"] = args.matryoshka
        weights = objective.setdefault("weights", {})
        if "matryoshka" not in (args.weights or {}) and not weights.get("matryoshka"):
            weights["matryoshka"] = 1.0  # an explicit weight (0 too) is the user's
    training = dataclasses.asdict(DistillConfig().training)
    loaded_training = data.get("training", {})
    training.update(loaded_training)
    training.update(training_overrides(args))
    if (
        args.time_budget is not None
        and args.max_steps is None
        and "max_steps" not in loaded_training
    ):
        training["max_steps"] = BUDGET_ONLY_MAX_STEPS  # the budget alone sets the length
    if (
        args.max_steps is not None
        and args.time_budget is None
        and "time_budget" not in data.get("training", {})
    ):
        training["time_budget"] = None
    data["training"] = training
    if args.job_time_budget is not None:
        data["job_time_budget"] = args.job_time_budget
    elif (
        "job_time_budget" not in data
        and args.max_steps is None
        and args.time_budget is None
        and not {"max_steps", "time_budget"} & set(loaded_training)
    ):
        data["job_time_budget"] = DEFAULT_JOB_BUDGET  # the default job keeps its 15 minutes
    if (
        data.get("job_time_budget") is not None
        and args.time_budget is None
        and "time_budget" not in loaded_training
        and getattr(args, "student_architecture", "cut") != "mobilebert"  # it keeps a budget
    ):
        training["time_budget"] = None  # training gets all the time the deadline leaves
    return from_dict(DistillConfig, data)


def run_distill(args: argparse.Namespace) -> int:
    config = distill_config_from_args(args)
    out = run_folder(args, "distill")
    if args.student_architecture == "mobilebert":
        options = mobilebert.Config(
            distill=config,
            bottleneck_size=args.bottleneck_size,
            ffn_stack=args.ffn_stack,
            norm=args.norm,
            act=args.act,
            embedding_size=args.embedding_size,
            transfer=args.transfer,
        )
        mobilebert.run(
            options, out, resume=not args.no_resume, evaluate=not args.no_eval,
            quick_eval=args.quick_eval,
        )  # fmt: skip
        return 0
    run_distillation(
        config,
        out,
        resume=not args.no_resume,
        evaluate=not args.no_eval,
        quick_eval=args.quick_eval,
    )
    return 0


# --------------------------------------------------------------------------- init-student
def add_init_student_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "init-student",
        help="cut a student out of a teacher's layers (no training)",
        description="Copy the embeddings and a choice of the teacher's blocks into a "
        "shallower student and save it (a Hugging Face and sentence-transformers folder); "
        "with --strategy auto the blocks are chosen by scoring every subset on sample text.",
    )
    parser.add_argument(
        "teacher", nargs="?", default=DEFAULT_MODEL, help=f"the teacher (default {DEFAULT_MODEL})"
    )
    parser.add_argument("--out", type=Path, required=True, help="the student folder to write")
    parser.add_argument("--num-layers", type=int, help="student depth (default 3)")
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="how to choose the teacher layers (default auto)",
    )
    parser.add_argument(
        "--layers", type=parse_layers, help="teacher layers to keep instead, e.g. 0,3,5"
    )
    parser.add_argument(
        "--layout", choices=("bert", "distilbert"), help="student layout (default: the teacher's)"
    )
    parser.add_argument("--corpus", nargs="+", help="sample text for --strategy auto")
    add_progress_argument(parser)
    parser.add_argument(
        "--sample",
        type=int,
        default=128,
        help="sequences scored per candidate with --strategy auto",
    )
    return parser


def check_depth(args: argparse.Namespace) -> None:
    """--layers sets the depth; a --num-layers that disagrees with it is an error."""
    layers, depth = args.layers, args.num_layers
    if layers is not None and depth is not None and len(layers) != depth:
        raise ConfigError(
            f"--layers {','.join(map(str, layers))} names {len(layers)} layers but "
            f"--num-layers is {depth}: give one of them, or make them agree"
        )


def run_init_student(args: argparse.Namespace) -> int:
    check_depth(args)
    folder, layers = init_student(
        args.teacher,
        args.out,
        num_layers=args.num_layers if args.num_layers is not None else 3,
        strategy=args.strategy,
        layers=args.layers,
        layout=args.layout,
        corpus=args.corpus,
        sample=args.sample,
        progress=show_progress(args),
    )
    print(f"student with teacher layers {layers} saved to {folder}")
    return 0


# --------------------------------------------------------------------------- fit-mlm-head
def add_fit_mlm_head_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "fit-mlm-head",
        help="give a teacher without one a masked-LM head (so distill can use all losses)",
        description="Train a masked-LM head (and optionally the top --train-layers blocks) on "
        "a corpus for a teacher that has none, report its held-out top-1 accuracy and save "
        "the teacher with the head.",
    )
    parser.add_argument(
        "teacher", nargs="?", default=DEFAULT_MODEL, help=f"the teacher (default {DEFAULT_MODEL})"
    )
    parser.add_argument("--out", type=Path, help="run folder (default runs/mlm-head-<time>)")
    parser.add_argument(
        "--corpus", nargs="+", help="text files or folders to train on (default: the demo corpus)"
    )
    parser.add_argument(
        "--train-layers",
        type=int,
        help="also unfreeze this many top transformer blocks (default 0)",
    )
    parser.add_argument("--config", type=Path, help="an MLM-head config JSON to start from")
    add_training_options(parser)
    return parser


def run_fit_mlm_head(args: argparse.Namespace) -> int:
    data = load_json(args.config) if args.config else {}
    data["teacher"] = args.teacher
    if args.corpus:
        data["corpus"] = args.corpus
    if args.train_layers is not None:
        data["train_layers"] = args.train_layers
    training = dataclasses.asdict(MLMHeadConfig().training)
    training.update(data.get("training", {}))
    training.update(training_overrides(args))
    data["training"] = training
    try:
        config = from_dict(MLMHeadConfig, data)
    except TypeError as error:
        raise ConfigError(str(error)) from None
    out = run_folder(args, "mlm-head")
    fit_mlm_head(config, out, resume=not args.no_resume)
    return 0


# --------------------------------------------------------------------------- cache-targets
def add_cache_targets_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "cache-targets",
        help="compute the teacher's targets for `distill` over a corpus ahead of training",
        description="Run the teacher once over every sequence of the corpus and cache its last "
        "hidden states (memory-mapped, beside the corpus cache) for distill runs with unmasked "
        "inputs (e.g. --weights cos=1) and the same teacher, corpus, --max-len and precision. "
        "Resumable: after a kill, run it again to compute only what is missing.",
    )
    parser.add_argument("--config", type=Path, help="a distill_config.json to take them from")
    parser.add_argument("--teacher", help=f"teacher model (default {DEFAULT_MODEL})")
    parser.add_argument("--corpus", nargs="+", type=_corpus_path, help="as for distill")
    parser.add_argument("--max-len", type=int, help="tokens per sequence (default 128)")
    parser.add_argument("--corpus-unit", choices=UNITS, help="as for distill (default sentence)")
    parser.add_argument(
        "--pack",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="as for distill: fill sequences with consecutive units (default: one unit per "
        "sequence, or the --config file's)",
    )
    parser.add_argument("--target-cache-dtype", choices=DTYPES, help="float32 (default) or float16")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="the teacher's precision; must be the distill run's (default auto)",
    )
    parser.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per teacher pass")
    add_progress_argument(parser)
    return parser


def run_cache_targets(args: argparse.Namespace) -> int:
    data = load_json(args.config) if args.config else {}
    for name in ("teacher", "corpus", "max_len", "corpus_unit", "pack", "target_cache_dtype"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    training = data.setdefault("training", {})
    for name in ("precision", "device"):
        if getattr(args, name) is not None:
            training[name] = getattr(args, name)
    training["progress"] = show_progress(args)
    cache_teacher_targets(from_dict(DistillConfig, data), batch_size=args.batch_size)
    return 0
