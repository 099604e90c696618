"""What the command groups share: input readers, argument helpers, the command record."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from distilkit.data.tables import TextInput
from distilkit.encoder import Encoder, load
from distilkit.model.modeling import POOLINGS
from distilkit.train.trainer import TrainingDiverged

USER_ERRORS = (ValueError, OSError, TrainingDiverged)  # each says what to do


MODEL_HELP = (
    "the embedded 'all-MiniLM-L6-v2', a checkpoint folder (config.json + weights + "
    "vocab), or a Hugging Face Hub id (needs huggingface_hub and a network)"
)


class Command(NamedTuple):
    """One subcommand: a function adding its parser, and a function running it."""

    add_parser: Callable[[argparse._SubParsersAction], argparse.ArgumentParser]
    run: Callable[[argparse.Namespace], int]


def _note_empty(data: TextInput) -> None:
    if data.empty:
        print(
            f"note: {data.empty} empty text(s) kept, so that row i is input text i", file=sys.stderr
        )


def _shorten(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# ----------------------------------------------------------------------------- shared options
def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """The positional MODEL every command takes."""
    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP)


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """--input FILE and --column NAME, read with :func:`read_texts`."""
    parser.add_argument(
        "--input",
        required=True,
        metavar="FILE",
        help="a text file with one text per line (empty lines are kept as "
        "empty texts), or a .tsv/.csv file with a header line",
    )
    parser.add_argument(
        "--column",
        metavar="NAME",
        help="the text column of a .tsv/.csv input (needed if it has several)",
    )


def add_pooling_argument(parser: argparse.ArgumentParser, models_own: bool = False) -> None:
    """--pooling: how token vectors become a sentence vector (``models_own``: by default
    the model folder's sentence-transformers recipe, else mean)."""
    parser.add_argument(
        "--pooling",
        choices=POOLINGS,
        default=None if models_own else "mean",
        help="token vectors -> sentence vector (default: "
        + (
            "the model's own pooling, as sentence-transformers embeds it)"
            if models_own
            else "mean)"
        ),
    )


def add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    """--dtype: the precision the model runs in (read by :func:`_load`)."""
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "int8"],
        default="float32",
        help="weights' precision; bfloat16 is faster on CPUs with AVX512-BF16/AMX, int8"
        " runs the transformer blocks' matmuls in int8 (the output is float32 either way)",
    )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """--device: where the model runs (read by :func:`_load` and the training options)."""
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (the GPU when there is one, else the CPU), cpu, cuda or cuda:N",
    )


def add_progress_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--no-progress: every command that runs longer than a few seconds draws a tqdm bar
    on stderr unless this is given (stdout is the same either way)."""
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar on stderr (stdout is the same either way)",
    )


def show_progress(args: argparse.Namespace) -> bool:
    """Whether the command draws its progress bar (see :func:`add_progress_argument`)."""
    return not args.no_progress


def _load(args: argparse.Namespace) -> Encoder:
    dtype = getattr(args, "dtype", None)
    device = getattr(args, "device", "auto")
    return load(args.model, dtype=dtype, device="cpu" if dtype == "int8" else device)


def parse_layers(text: str) -> list[int]:
    parts = text.replace(" ", "").split(",")
    if all(part.lstrip("-").isdigit() for part in parts):  # no empty parts, as in "1,,2"
        return [int(part) for part in parts]
    raise argparse.ArgumentTypeError(
        f"--layers takes comma-separated teacher layer numbers such as 0,3,5; got {text!r}"
    )


def finite_float(text: str) -> float:
    """An argparse type for a number option: a finite number (not nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def weights_parser(names: tuple[str, ...], example: str) -> Callable[[str], dict[str, float]]:
    """An argparse type for ``--weights name=value,...`` over the loss ``names``."""

    def parse(text: str) -> dict[str, float]:
        weights: dict[str, float] = {}
        for item in text.split(","):
            name, _, value = (part.strip() for part in item.partition("="))
            try:
                weights[name] = finite_float(value)
            except argparse.ArgumentTypeError:
                name = ""
            if name not in names:
                raise argparse.ArgumentTypeError(
                    f"--weights takes name=value pairs with names from {names}, e.g. "
                    f"{example}; got {item!r}"
                )
        return weights

    return parse


def add_training_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--max-steps", type=int, help="optimizer steps at most")
    group.add_argument(
        "--time-budget",
        type=finite_float,
        metavar="SECONDS",
        help="stop training after this long; the LR schedule is fitted to it",
    )
    group.add_argument("--batch-size", type=int, help="sequences per optimizer step")
    group.add_argument(
        "--grad-accumulation", type=int, help="batches whose gradients add up to one step"
    )
    group.add_argument("--lr", type=finite_float, dest="learning_rate", help="peak learning rate")
    group.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16, or fp16 (CUDA, scaled)",
    )
    group.add_argument(
        "--device",
        help="auto (default: the GPU when there is one), cpu, cuda or cuda:N",
    )
    group.add_argument(
        "--compile", action="store_true", default=None, help="torch.compile the training step"
    )
    group.add_argument("--seed", type=int, help="seed of initialisation, masking and order")
    group.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    group.add_argument("--eval-every", type=int, help="steps between held-out evaluations")
    group.add_argument(
        "--no-resume", action="store_true", help="start afresh even if --out holds a checkpoint"
    )
    add_progress_argument(group)


def training_overrides(args: argparse.Namespace) -> dict:
    names = (
        "max_steps",
        "time_budget",
        "batch_size",
        "grad_accumulation",
        "learning_rate",
        "precision",
        "device",
        "compile",
        "seed",
        "checkpoint_every",
        "eval_every",
    )
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.no_progress:
        overrides["progress"] = False
    return overrides


def default_out(kind: str) -> Path:
    """``runs/<kind>-<time>``: where a run goes when no --out is given."""
    return Path("runs") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_folder(args: argparse.Namespace, kind: str) -> Path:
    """The run folder (--out, or a new one), announced with how to resume into it."""
    out = args.out or default_out(kind)
    print(f"run folder: {out}  (rerun with --out {out} to resume after an interruption)")
    return out
