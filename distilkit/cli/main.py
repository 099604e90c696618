"""The ``distilkit`` command line: thin subcommands over the library.

Each command is a pair of functions, ``add_<name>_parser(subparsers) -> ArgumentParser``
and ``run_<name>(args) -> int``, listed in :data:`COMMANDS`. To add a command, write
such a pair (in this module or your own) and append ``Command(add_parser, run)`` to
``COMMANDS``; :func:`main` gives every command ``--debug`` and the error handling.

Errors the user can fix (``ValueError`` and its subclasses such as ``CheckpointError``,
``ModelNotFoundError``, ``ConfigError``, ``TokenizerError``; ``OSError`` such as
``FileNotFoundError``) print one ``error: <message>`` line on stderr and exit with
code 2, as do usage errors; ``--debug`` shows the traceback instead. Results go to
stdout; progress bars and warnings to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
import warnings
from collections.abc import Sequence
from typing import TextIO

from distilkit import __version__
from distilkit.cli import bilstm as cli_bilstm
from distilkit.cli import deploy as cli_deploy
from distilkit.cli import distill as cli_distill
from distilkit.cli import frontier as cli_frontier
from distilkit.cli import inspect as cli_inspect
from distilkit.cli import tasks as cli_tasks
from distilkit.cli.common import (
    USER_ERRORS,
    Command,
)
from distilkit.cli.model import (
    add_compare_parser,
    add_embed_parser,
    add_fill_mask_parser,
    add_info_parser,
    add_plot_embeddings_parser,
    add_search_parser,
    add_tokenize_parser,
    run_compare,
    run_embed,
    run_fill_mask,
    run_info,
    run_plot_embeddings,
    run_search,
    run_tokenize,
)
from distilkit.model.allocator import tune_for_inference

# ----------------------------------------------------------------------------- entry point
COMMANDS: list[Command] = [
    Command(add_info_parser, run_info),
    Command(add_embed_parser, run_embed),
    Command(add_search_parser, run_search),
    Command(add_fill_mask_parser, run_fill_mask),
    Command(add_tokenize_parser, run_tokenize),
    Command(add_plot_embeddings_parser, run_plot_embeddings),
    Command(add_compare_parser, run_compare),
    *(Command(*pair) for pair in cli_inspect.INSPECT_COMMANDS),
    Command(cli_distill.add_distill_parser, cli_distill.run_distill),
    Command(cli_distill.add_init_student_parser, cli_distill.run_init_student),
    Command(cli_distill.add_fit_mlm_head_parser, cli_distill.run_fit_mlm_head),
    Command(cli_distill.add_cache_targets_parser, cli_distill.run_cache_targets),
    *(Command(*pair) for pair in cli_tasks.TASK_COMMANDS),
    *(Command(*pair) for pair in cli_bilstm.BILSTM_COMMANDS),
    *(Command(*pair) for pair in cli_deploy.DEPLOY_COMMANDS),
    *(Command(*pair) for pair in cli_frontier.FRONTIER_COMMANDS),
]


# Commands whose process only runs models forward: the C allocator is tuned for them
# (distilkit/model/allocator.py); training commands keep glibc's defaults.
INFERENCE_COMMANDS = frozenset(
    {
        "answer",
        "bench",
        "classify",
        "compare",
        "embed",
        "eval",
        "fill-mask",
        "generate",
        "ner",
        "plot-embeddings",
        "probe",
        "search",
        "serve",
    }
)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (``error: distilkit distill: ...``)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser(commands: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command (default: :data:`COMMANDS`)."""
    parser = _Parser(
        prog="distilkit",
        description="Make BERT-class text encoders small and fast by knowledge distillation, "
        "and put them to work.",
    )
    parser.add_argument("--version", action="version", version=f"distilkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS if commands is None else commands:
        subparser = command.add_parser(subparsers)
        # SUPPRESS: a subcommand without --debug must not reset a top-level --debug.
        subparser.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks of errors",
        )
        subparser.set_defaults(run=command.run)
    return parser


def _error_message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.strerror}: {error.filename}"
    message = " ".join(str(error).split()) or type(error).__name__
    return message


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, --version, usage errors
        code = exit_request.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    if args.command in INFERENCE_COMMANDS:
        tune_for_inference()
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.run(args)
        except BrokenPipeError:  # output piped into `head` and the like: nothing to report
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (no flush error at exit)
            return 0
        except USER_ERRORS as error:
            if args.debug:
                raise
            print(f"error: {_error_message(error)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
