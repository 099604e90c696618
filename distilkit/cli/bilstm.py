"""BiLSTM and multi-teacher subcommands of the ``distilkit`` command line.

``distill-bilstm``: distil a fine-tuned teacher into a BiLSTM student (Tang et al.), on
gold labels, on teacher logits, or on teacher logits over the augmented transfer set.
``distill-multi``: distil several teachers (per task) into one student, with a head per
task when there are several tasks.

Thin wrappers over :mod:`distilkit.methods.bilstm` and :mod:`distilkit.methods.multi_teacher`;
:data:`BILSTM_COMMANDS` lists (add_parser, run) pairs for ``cli.main.COMMANDS``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path

from distilkit.cli.common import add_training_options, finite_float, run_folder, training_overrides
from distilkit.cli.tasks import task_or_file
from distilkit.data.transfer import SENTENCE_TASKS
from distilkit.methods.bilstm.job import BiLSTMDistillConfig, run_bilstm_distillation
from distilkit.methods.multi_teacher.job import MultiTeacherConfig, run_multi_teacher_distillation
from distilkit.methods.multi_teacher.model import COMBINE_MODES
from distilkit.settings import ConfigError, from_dict, load_json
from distilkit.train.logit_distillation import default_training


def _sentence_task(value: str) -> str:
    """sst2, stsb or a task file of kind classification or regression."""
    return task_or_file(value, SENTENCE_TASKS, "classification or regression")


def _teacher_spec(text: str) -> tuple[str, str]:
    task, separator, folder = text.partition("=")
    if not separator or not task or not folder:
        raise argparse.ArgumentTypeError(
            f"--teacher takes TASK=FOLDER with TASK one of {SENTENCE_TASKS} or a task file, "
            f"e.g. sst2=runs/sst2-teacher; got {text!r}"
        )
    return _sentence_task(task), folder


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="a saved run config JSON to start from")
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train on the augmented transfer set (masking, POS replacement, n-grams)",
    )
    parser.add_argument(
        "--n-iter",
        type=int,
        help="augmented copies per example (default: the paper's 20 for SST-2, 10 otherwise)",
    )
    parser.add_argument(
        "--hard-label-weight",
        type=finite_float,
        help="weight a in (1 - a) * soft + a * gold-label loss (default 0, as the paper)",
    )
    parser.add_argument(
        "--subsample", type=int, help="use this many training examples (quick runs)"
    )
    parser.add_argument("--data-root", help="folder holding sst2/ and stsb/ (GLUE TSV files)")
    parser.add_argument(
        "--cache-dir", help="teacher-logit cache (default: teacher_cache beside --out)"
    )
    parser.add_argument(
        "--teacher-batch-size", type=int, help="texts per teacher forward pass for its logits (128)"
    )
    parser.add_argument("--hidden-size", type=int, help="BiLSTM units per direction (150)")
    parser.add_argument("--mlp-size", type=int, help="width of the BiLSTM head's ReLU layer (200)")
    parser.add_argument("--max-length", type=int, help="tokens per sentence for a BiLSTM (128)")
    parser.add_argument("--out", type=Path, help="run folder (default runs/<command>-<time>)")
    add_training_options(parser)


def _apply_common(data: dict, args: argparse.Namespace, student_key: str) -> None:
    """Fold the shared flags into a config dict (flags override --config)."""
    for flag, key in (
        ("augment", "augment"),
        ("hard_label_weight", "hard_label_weight"),
        ("subsample", "subsample"),
        ("data_root", "data_root"),
        ("cache_dir", "cache_dir"),
        ("teacher_batch_size", "teacher_batch_size"),
    ):
        value = getattr(args, flag)
        if value is not None:
            data[key] = value
    if args.n_iter is not None:
        data["augmentation"] = {**(data.get("augmentation") or {}), "n_iter": args.n_iter}
    student = data.setdefault(student_key, {})
    for flag in ("hidden_size", "mlp_size", "max_length"):
        if getattr(args, flag) is not None:
            student[flag] = getattr(args, flag)
    training = dataclasses.asdict(default_training())
    training.update(data.get("training", {}))
    training.update(training_overrides(args))
    data["training"] = training


def _build(cls: type, data: dict):
    try:
        return from_dict(cls, data)
    except TypeError as error:  # a missing required field
        raise ConfigError(str(error)) from None


# --------------------------------------------------------------------------- distill-bilstm
def add_distill_bilstm_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "distill-bilstm",
        help="distil a fine-tuned teacher into a one-layer BiLSTM (Tang et al., 2019)",
        description="Train a BiLSTM student (the teacher's word-piece embeddings, one "
        "bidirectional LSTM layer, max-pooling, an MLP head; siamese for sentence pairs) on "
        "gold labels or on the teacher's logits, over the original or the augmented "
        "transfer set. Teacher logits are cached and reused by later runs.",
    )
    parser.add_argument("--teacher", help="checkpoint folder fine-tuned on --task")
    parser.add_argument(
        "--task",
        type=_sentence_task,
        help=f"one of {SENTENCE_TASKS} or a JSON task file (classification or regression; "
        "default sst2)",
    )
    parser.add_argument(
        "--targets",
        choices=("labels", "logits"),
        help="train on gold labels or on the teacher's logits (default logits)",
    )
    _add_common_options(parser)
    return parser


def bilstm_config_from_args(args: argparse.Namespace) -> BiLSTMDistillConfig:
    """Defaults, then --config, then explicit flags (the last wins)."""
    data = load_json(args.config) if args.config else {}
    for name in ("teacher", "task", "targets"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    if data.get("targets") == "labels" and args.augment is None:
        data.setdefault("augment", False)  # gold labels exist for the originals only
    _apply_common(data, args, "student")
    return _build(BiLSTMDistillConfig, data)


def run_distill_bilstm(args: argparse.Namespace) -> int:
    config = bilstm_config_from_args(args)
    out = run_folder(args, "bilstm")
    run_bilstm_distillation(config, out, resume=not args.no_resume)
    return 0


# --------------------------------------------------------------------------- distill-multi
def add_distill_multi_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "distill-multi",
        help="distil several teachers into one student (a head per task for several tasks)",
        description="Each teacher labels its task's transfer set once (cached); a task's "
        "teachers are combined by averaging probabilities or logits; one student (BiLSTM or "
        "a transformer checkpoint) with a head per task trains on all tasks' targets.",
    )
    parser.add_argument(
        "--teacher",
        dest="teachers",
        action="append",
        type=_teacher_spec,
        metavar="TASK=FOLDER",
        help="a teacher fine-tuned on TASK; repeat for several teachers and tasks",
    )
    parser.add_argument(
        "--student", help="'bilstm' (default) or a transformer checkpoint folder to start from"
    )
    parser.add_argument(
        "--combine", choices=COMBINE_MODES, help="average probabilities or logits (probs)"
    )
    parser.add_argument("--temperature", type=finite_float, help="of the average and the KL (1)")
    parser.add_argument(
        "--loss", choices=("kl", "mse"), help="soft loss for classification tasks (kl)"
    )
    _add_common_options(parser)
    return parser


def multi_config_from_args(args: argparse.Namespace) -> MultiTeacherConfig:
    """Defaults, then --config, then explicit flags (the last wins)."""
    data = load_json(args.config) if args.config else {}
    if args.teachers:
        teachers: dict[str, list[str]] = {}
        for task, folder in args.teachers:
            teachers.setdefault(task, []).append(folder)
        data["teachers"] = teachers
    for name in ("student", "combine", "temperature", "loss"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    _apply_common(data, args, "bilstm")
    return _build(MultiTeacherConfig, data)


def run_distill_multi(args: argparse.Namespace) -> int:
    config = multi_config_from_args(args)
    out = run_folder(args, "multi")
    run_multi_teacher_distillation(config, out, resume=not args.no_resume)
    return 0


BILSTM_COMMANDS: list[
    tuple[
        Callable[[argparse._SubParsersAction], argparse.ArgumentParser],
        Callable[[argparse.Namespace], int],
    ]
] = [
    (add_distill_bilstm_parser, run_distill_bilstm),
    (add_distill_multi_parser, run_distill_multi),
]
