"""Task subcommands of the ``distilkit`` command line: finetune, eval, distill-task,
classify, ner, answer, distill-cmlm, generate. Thin wrappers over :mod:`distilkit.methods.finetune`,
:mod:`distilkit.methods.task`, :mod:`distilkit.deploy.pipelines` and :mod:`distilkit.methods.cmlm`.

:data:`TASK_COMMANDS` lists ``(add_parser, run)`` pairs for ``cli.COMMANDS``
(``Command(*pair)``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from distilkit.cli.common import (
    _load,
    add_device_argument,
    add_progress_argument,
    add_training_options,
    finite_float,
    parse_layers,
    run_folder,
    show_progress,
    training_overrides,
    weights_parser,
)
from distilkit.data.tables import InputError, read_texts
from distilkit.deploy.pipelines import answer, classify, ner
from distilkit.methods.cmlm.job import CMLMConfig
from distilkit.methods.cmlm.job import generate as generate_texts
from distilkit.methods.cmlm.job import run as run_cmlm
from distilkit.methods.finetune.job import (
    FineTuneConfig,
    evaluate_task,
    finetune_training,
    run_finetune,
)
from distilkit.methods.task.job import (
    METHODS,
    TaskDistillConfig,
    distill_training,
    run_task_distill,
)
from distilkit.methods.task.objectives import TaskDistillWeights
from distilkit.model.bilstm import is_bilstm_folder
from distilkit.model.hub import DEFAULT_MODEL
from distilkit.model.layer_map import KINDS as MAP_KINDS
from distilkit.model.student import STRATEGIES
from distilkit.settings import ConfigError, from_dict, load_json
from distilkit.tasks.custom import is_task_file
from distilkit.tasks.features import DataSettings
from distilkit.tasks.registry import TASKS, get_task
from distilkit.train.trainer import MAX_SEED, TrainingConfig

TASK_NAMES = sorted(TASKS)
TASK_HELP = f"{', '.join(TASK_NAMES)}, or a JSON task file for your own data (kind, files, columns)"


def task_or_file(value: str, registered: Sequence[str], kinds: str = "") -> str:
    """``value`` if it is one of ``registered``, else a task file's absolute path (saved
    configs then work from any folder); ``kinds`` names the kinds of task file allowed."""
    if value in registered:
        return value
    if is_task_file(value):
        path = Path(value).expanduser()
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"task file {value} not found")
        return str(path.resolve())
    raise argparse.ArgumentTypeError(
        f"unknown task {value!r}: use one of {tuple(registered)} or the path of a JSON task "
        f"file{' of kind ' + kinds if kinds else ''}"
    )


def _task(value: str) -> str:
    """A registered task name or a task file."""
    return task_or_file(value, TASK_NAMES)


WEIGHT_NAMES = tuple(field.name for field in dataclasses.fields(TaskDistillWeights))


def _pairs(text: str) -> list[list[int]]:
    """``0:0,1:2,2:4`` -> [[0, 0], [1, 2], [2, 4]]."""
    try:
        pairs = [[int(part) for part in item.split(":")] for item in text.split(",") if item]
    except ValueError:
        pairs = []
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise argparse.ArgumentTypeError(
            f"--layer-pairs takes student:teacher pairs such as 0:0,1:2,2:4; got {text!r}"
        )
    return pairs


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data-root", help="folder holding sst2/, stsb/, conll2003/, squad1.1/")
    group.add_argument("--max-len", type=int, help="tokens per input (default 128; QA 384)")
    group.add_argument("--doc-stride", type=int, help="QA: tokens shared by context windows")
    group.add_argument("--train-limit", type=int, help="train on a random subset of N examples")
    group.add_argument("--eval-limit", type=int, help="evaluate on a random subset of N examples")


def _add_schedule_options(parser: argparse.ArgumentParser) -> None:
    add_training_options(parser)
    parser.add_argument(
        "--evals-per-epoch", type=int, help="score dev this many times per epoch (default 1)"
    )


def _data_overrides(args: argparse.Namespace) -> dict:
    names = ("data_root", "max_len", "doc_stride", "train_limit", "eval_limit")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _config_data(args: argparse.Namespace) -> dict:
    """The --config file's contents (or {}), with the data options of the flags merged in."""
    data = load_json(args.config) if args.config else {}
    data["data"] = {**data.get("data", {}), **_data_overrides(args)}
    return data


def _training(data: dict, defaults: TrainingConfig, args: argparse.Namespace) -> dict:
    """The run's training settings: defaults, then the --config file's, then the flags.

    ``--max-steps`` sets the length instead of epochs; giving both is an error.
    """
    for flag, value in (
        ("--eval-every", args.eval_every),
        ("--checkpoint-every", args.checkpoint_every),
    ):
        if value is not None:
            raise ConfigError(
                f"{flag} does not apply here: the task commands evaluate and checkpoint every "
                "epoch (more often with --evals-per-epoch N)"
            )
    if args.evals_per_epoch is not None:
        data["evals_per_epoch"] = args.evals_per_epoch
    if args.max_steps is not None:
        if args.epochs is not None:
            raise ConfigError("give --epochs or --max-steps, not both")
        data["epochs"] = None
        data.pop("intermediate_epochs", None)
    training = dataclasses.asdict(defaults)
    training.update(data.get("training", {}))
    training.update(training_overrides(args))
    where = "--seed" if args.seed is not None else f"training.seed in {args.config}"
    _check_seed(training.get("seed"), where)
    return training


def _check_seed(seed: object, where: str) -> None:
    """A seed must be an integer in [0, MAX_SEED]; ``where`` names the option."""
    if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{where} must be an integer from 0 to {MAX_SEED}, got {seed}")


def _build(cls, data: dict):
    try:
        return from_dict(cls, data)
    except TypeError as error:
        raise ConfigError(str(error)) from None


# ----------------------------------------------------------------------------- finetune
def add_finetune_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune an encoder on a task (sst2, stsb, conll2003, squad, or a task file)",
        description="Fine-tune an encoder on a task, evaluating on dev every epoch and "
        "keeping the best epoch in OUT/model (a Hugging Face folder with the label names). "
        "SQuAD: only dev-v1.1.json is at hand, so it is split by article into train and dev.",
    )
    parser.add_argument("model", nargs="?", help=f"encoder to fine-tune (default {DEFAULT_MODEL})")
    parser.add_argument("--task", type=_task, metavar="TASK", help=TASK_HELP)
    parser.add_argument("--config", type=Path, help="a finetune_config.json to start from")
    parser.add_argument("--epochs", type=finite_float, help="passes over the train set (default 3)")
    parser.add_argument("--out", type=Path, help="run folder (default runs/finetune-<time>)")
    _add_data_options(parser)
    _add_schedule_options(parser)
    return parser


def finetune_config_from_args(args: argparse.Namespace) -> FineTuneConfig:
    """Defaults, then --config, then explicit flags (the last wins)."""
    data = _config_data(args)
    for name in ("model", "task", "epochs"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    data["training"] = _training(data, finetune_training(), args)
    return _build(FineTuneConfig, data)


def run_finetune_command(args: argparse.Namespace) -> int:
    config = finetune_config_from_args(args)
    out = run_folder(args, "finetune")
    run_finetune(config, out, resume=not args.no_resume)
    return 0


# ----------------------------------------------------------------------------- eval
def add_eval_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="print a fine-tuned model's task metric on a split",
        description="Score a fine-tuned model on a task's split with the task's metrics "
        "(accuracy, Spearman, entity F1, SQuAD EM/F1).",
    )
    parser.add_argument("model", metavar="MODEL", help="a fine-tuned checkpoint folder")
    parser.add_argument("--task", type=_task, required=True, metavar="TASK", help=TASK_HELP)
    parser.add_argument("--split", default="dev", help="train or dev (default dev)")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per batch (64)")
    parser.add_argument("--json", action="store_true", help="print all metrics as JSON")
    _add_data_options(parser)
    add_device_argument(parser)
    add_progress_argument(parser)
    return parser


def run_eval(args: argparse.Namespace) -> int:
    settings = _build(DataSettings, _data_overrides(args))
    metrics = evaluate_task(
        args.model,
        args.task,
        args.split,
        settings,
        args.eval_limit,
        args.batch_size,
        progress=show_progress(args),
        device=args.device,
    )
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    task = get_task(args.task)
    others = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != task.metric)
    print(f"{task.name} {args.split} {task.metric}: {metrics[task.metric]:.4f}  ({others})")
    return 0


# ----------------------------------------------------------------------------- distill-task
def add_distill_task_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "distill-task",
        help="distill a fine-tuned teacher into a smaller student on its task",
        description="Task-specific distillation with logit KD, TinyBERT (intermediate then "
        "prediction stage) or Patient KD. The teacher is checked on dev first; each stage "
        "starts with a one-batch dry run of the layer map and shapes.",
    )
    parser.add_argument("--teacher", help="a model fine-tuned for the task")
    parser.add_argument("--task", type=_task, metavar="TASK", help=TASK_HELP)
    parser.add_argument(
        "--method",
        choices=METHODS,
        help="logits (KD on the outputs, default), tinybert (intermediate then prediction "
        "stage), pkd (Patient KD), custom (your --weights)",
    )
    parser.add_argument("--config", type=Path, help="a task_distill_config.json to start from")
    parser.add_argument(
        "--student", help="a student folder (e.g. from distilkit distill); default: a cut"
    )
    parser.add_argument("--num-layers", type=int, help="depth of the cut student (default 3)")
    parser.add_argument(
        "--layers", type=parse_layers, help="teacher blocks the cut keeps, e.g. 0,3,5"
    )
    parser.add_argument(
        "--strategy",
        choices=[s for s in STRATEGIES if s != "auto"],
        help="which teacher blocks the cut keeps (default uniform)",
    )
    parser.add_argument(
        "--epochs", type=finite_float, help="passes over the train set per stage (3)"
    )
    parser.add_argument("--intermediate-epochs", type=finite_float, help="TinyBERT's first stage")
    parser.add_argument(
        "--temperature", type=finite_float, help="softmax temperature of the logit loss (default 1)"
    )
    parser.add_argument(
        "--logit-loss",
        choices=("auto", "kl", "mse"),
        help="KL of softened outputs or MSE of logits (auto: kl, mse for regression)",
    )
    parser.add_argument("--hard-weight", type=finite_float, help="weight of the gold-label loss")
    parser.add_argument(
        "--weights",
        type=weights_parser(WEIGHT_NAMES, "logits=0.5,hard=0.5,patient=100"),
        help="loss weights of a one-stage custom method",
    )
    parser.add_argument(
        "--layer-map",
        choices=MAP_KINDS,
        help="which teacher layer each student layer learns from (default uniform)",
    )
    parser.add_argument("--layer-pairs", type=_pairs, help="explicit map, e.g. 0:0,1:2,2:4")
    parser.add_argument(
        "--average-attention-heads",
        action="store_true",
        default=None,
        help="match head-averaged attention maps (students with fewer heads)",
    )
    parser.add_argument(
        "--teacher-min-score",
        type=finite_float,
        help="the teacher's dev score must reach this (default: clearly above chance)",
    )
    parser.add_argument(
        "--augment",
        action="store_true",
        default=None,
        help="also train on augmented copies of the train sentences (sst2, stsb; needs "
        "hard weight 0: the copies have no gold labels)",
    )
    parser.add_argument(
        "--augment-copies",
        type=int,
        metavar="N",
        help="with --augment: copies drawn per example (default 20 for sst2, 10 otherwise)",
    )
    parser.add_argument("--out", type=Path, help="run folder (default runs/distill-task-<time>)")
    _add_data_options(parser)
    _add_schedule_options(parser)
    return parser


def distill_task_config_from_args(args: argparse.Namespace) -> TaskDistillConfig:
    """Defaults, then --config, then explicit flags (the last wins)."""
    data = _config_data(args)
    for name in (
        "teacher",
        "task",
        "method",
        "student",
        "num_layers",
        "layers",
        "strategy",
        "epochs",
        "intermediate_epochs",
        "temperature",
        "logit_loss",
        "hard_weight",
        "layer_map",
        "layer_pairs",
        "average_attention_heads",
        "teacher_min_score",
        "augment",
    ):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    if args.augment_copies is not None:
        if not data.get("augment"):
            raise ConfigError("--augment-copies applies only with --augment")
        data["augmentation"] = {**(data.get("augmentation") or {}), "n_iter": args.augment_copies}
    if args.layer_pairs is not None and args.layer_map is None:
        data["layer_map"] = "explicit"
    if args.weights is not None:
        data["method"] = "custom"
        data["stages"] = [
            {
                "name": "custom",
                "epochs": data.get("epochs", 3.0),
                "weights": {**dict.fromkeys(WEIGHT_NAMES, 0.0), **args.weights},
            }
        ]
    data["training"] = _training(data, distill_training(), args)
    return _build(TaskDistillConfig, data)


def run_distill_task(args: argparse.Namespace) -> int:
    config = distill_task_config_from_args(args)
    out = run_folder(args, "distill-task")
    run_task_distill(config, out, resume=not args.no_resume)
    return 0


# ----------------------------------------------------------------------------- pipelines
def add_classify_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "classify",
        help="label texts with a sequence-classification model",
        description="Print the most likely label and its probability for each TEXT (or each "
        "text of --input).",
    )
    parser.add_argument("model", metavar="MODEL", help="a fine-tuned classifier (folder)")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to label")
    parser.add_argument(
        "--input",
        type=Path,
        metavar="FILE",
        help="a file with one text per line, or a .tsv/.csv file with a header line",
    )
    parser.add_argument(
        "--column",
        metavar="NAME",
        help="the text column of a .tsv/.csv --input (needed if it has several)",
    )
    parser.add_argument("--pair", help="a second text for every TEXT (sentence-pair tasks)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "int8"],
        default="float32",
        help="a transformer's inference precision: int8 runs its blocks' matmuls in int8",
    )
    add_device_argument(parser)
    add_progress_argument(parser)
    return parser


def run_classify(args: argparse.Namespace) -> int:

    texts = list(args.texts)
    if args.input is not None:
        texts += read_texts(args.input, args.column).texts
    elif args.column is not None:
        raise ValueError("--column picks the text column of a .tsv/.csv --input: give --input")
    if not texts:
        raise ValueError("give texts to classify as arguments or with --input FILE")
    pairs = [args.pair] * len(texts) if args.pair is not None else None
    model = args.model
    if args.dtype != "float32":
        if is_bilstm_folder(model):
            raise ValueError(
                f"--dtype {args.dtype} applies to transformer checkpoints; {model} is a "
                "BiLSTM student: drop --dtype"
            )
        model = _load(args)  # (int8 on the CPU)
    results = classify(model, texts, pairs, progress=show_progress(args), device=args.device)
    for text, result in zip(texts, results, strict=True):
        if args.json:
            print(json.dumps({"text": text, **result}))
        elif "label" in result:
            print(f"{result['label']}\t{result['score']:.4f}\t{text}")
        else:
            print(f"{result['score']:.4f}\t{text}")
    return 0


def add_ner_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ner",
        help="find named entities with a token-classification model",
        description="Print the entities of TEXT (type, score, characters and text), word "
        "pieces merged into words and IOB2 tags into spans.",
    )
    parser.add_argument("model", metavar="MODEL", help="a fine-tuned token classifier (folder)")
    parser.add_argument("text", metavar="TEXT", help="the text to search for entities")
    parser.add_argument("--json", action="store_true", help="print the entities as JSON")
    add_device_argument(parser)
    return parser


def run_ner(args: argparse.Namespace) -> int:

    entities = ner(args.model, args.text, device=args.device)
    if args.json:
        print(json.dumps(entities, indent=2))
    elif not entities:
        print("no entities found", file=sys.stderr)
    for entity in [] if args.json else entities:
        print(
            f"{entity['entity']}\t{entity['start']}-{entity['end']}\t{entity['score']:.4f}\t"
            f"{entity['text']}"
        )
    return 0


def add_answer_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "answer",
        help="answer a question from a context (extractive QA)",
        description="Print the span of the context that best answers --question, with its "
        "score and character offsets (long contexts are read in overlapping windows).",
    )
    parser.add_argument("model", metavar="MODEL", help="a fine-tuned QA model (folder)")
    parser.add_argument("--question", required=True, help="the question to answer")
    parser.add_argument("--context", help="the context text")
    parser.add_argument("--context-file", type=Path, help="read the context from a file")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    add_device_argument(parser)
    return parser


def _read_context(path: Path) -> str:
    """The text of a --context-file; a missing or non-UTF-8 file is an error naming it."""

    if not path.is_file():
        raise InputError(f"--context-file {path} not found (or not a file)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"--context-file {path} is not UTF-8 text ({error}): save it as UTF-8"
        ) from None


def run_answer(args: argparse.Namespace) -> int:

    if (args.context is None) == (args.context_file is None):
        raise ValueError("give the context with exactly one of --context and --context-file")
    context = args.context
    if args.context_file is not None:
        context = _read_context(args.context_file)
    result = answer(args.model, args.question, context, device=args.device)
    if args.json:
        print(json.dumps(result))
    else:
        span = f"characters {result['start']}-{result['end']}"
        print(f"{result['answer']}\t(score {result['score']:.4f}, {span})")
    return 0


# ----------------------------------------------------------------------------- C-MLM (generation)
def add_distill_cmlm_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "distill-cmlm",
        help="C-MLM: distill a BERT teacher into a seq2seq generator (Chen et al., 2020)",
        description="Fine-tune the teacher as a conditional masked LM on (source, target) "
        "pairs, cache its top-k soft targets, and train a small encoder-decoder on "
        "alpha * KL(teacher top-k || student) + (1 - alpha) * NLL; --alpha 0 is the "
        "baseline without a teacher. Scores BLEU and ROUGE-L on the held-out split.",
    )
    parser.add_argument("--config", type=Path, help="a run_config.json ('cmlm' key) to start from")
    parser.add_argument("--teacher", help=f"teacher model (default {DEFAULT_MODEL})")
    parser.add_argument(
        "--task",
        help="squad-qg (question generation, SQuAD v1.1 dev split by article), "
        "multi30k-de-en, or a JSON task file of kind 'generation' (default squad-qg)",
    )
    parser.add_argument("--out", type=Path, help="run folder (default runs/distill-cmlm-<time>)")
    parser.add_argument(
        "--alpha", type=finite_float, help="weight of the teacher's soft targets (0.5)"
    )
    parser.add_argument("--top-k", type=int, help="teacher probabilities kept per position (8)")
    parser.add_argument("--teacher-dir", help="C-MLM teacher workspace, shared by runs")
    parser.add_argument("--teacher-steps", type=int, help="C-MLM fine-tuning steps (300)")
    parser.add_argument("--train-limit", type=int, help="train pairs at most (3000)")
    parser.add_argument("--eval-limit", type=int, help="held-out pairs scored (300)")
    parser.add_argument("--beam-size", type=int, help="beam width when scoring (4)")
    parser.add_argument(
        "--copy-source",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pointer-generator output: the student may copy source words (on; "
        "--no-copy-source: the paper's plain output)",
    )
    add_training_options(parser)
    return parser


def distill_cmlm_config_from_args(args: argparse.Namespace) -> CMLMConfig:
    data = load_json(args.config).get("cmlm", {}) if args.config else {}
    flags = {
        "teacher": args.teacher,
        "task": args.task,
        "alpha": args.alpha,
        "top_k": args.top_k,
        "teacher_dir": args.teacher_dir,
        "max_train_pairs": args.train_limit,
        "max_eval_pairs": args.eval_limit,
        "beam_size": args.beam_size,
    }
    data.update({key: value for key, value in flags.items() if value is not None})
    if args.copy_source is not None:
        data["student"] = {**data.get("student", {}), "copy_source": args.copy_source}
    training = dataclasses.asdict(CMLMConfig().training)
    training.update(data.get("training", {}))
    training.update(training_overrides(args))
    _check_seed(training.get("seed"), "--seed")
    data["training"] = training
    if args.teacher_steps is not None:
        data["teacher_training"] = {
            **dataclasses.asdict(CMLMConfig().teacher_training),
            **data.get("teacher_training", {}),
            "max_steps": args.teacher_steps,
        }
    return _build(CMLMConfig, data)


def run_distill_cmlm(args: argparse.Namespace) -> int:
    config = distill_cmlm_config_from_args(args)
    run_cmlm(config, run_folder(args, "distill-cmlm"), resume=not args.no_resume)
    return 0


def add_generate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate",
        help="generate text with a seq2seq student (from distill-cmlm)",
        description="Decode each source text with a distill-cmlm student (beam search, or "
        "greedy with --beam-size 1) and print one generated text per line.",
    )
    parser.add_argument("model", metavar="MODEL", help="a distill-cmlm student folder")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="source texts to generate from")
    parser.add_argument("--input", type=Path, metavar="FILE", help="one source text per line")
    parser.add_argument("--beam-size", type=int, default=4, help="beam width (1: greedy)")
    parser.add_argument("--max-length", type=int, default=32, help="generated tokens at most")
    parser.add_argument("--length-penalty", type=finite_float, default=1.0, help="0: none")
    add_device_argument(parser)
    add_progress_argument(parser)
    return parser


def run_generate(args: argparse.Namespace) -> int:
    texts = list(args.texts)
    if args.input is not None:
        texts += read_texts(args.input, None).texts
    if not texts:
        raise ValueError("give source texts as arguments or with --input FILE")
    if args.beam_size < 1 or args.max_length < 1:
        raise ValueError("--beam-size and --max-length must be at least 1")
    for output in generate_texts(
        args.model,
        texts,
        args.beam_size,
        args.max_length,
        args.length_penalty,
        progress=show_progress(args),
        device=args.device,
    ):
        print(output)
    return 0


TASK_COMMANDS = [
    (add_finetune_parser, run_finetune_command),
    (add_eval_parser, run_eval),
    (add_distill_task_parser, run_distill_task),
    (add_classify_parser, run_classify),
    (add_ner_parser, run_ner),
    (add_answer_parser, run_answer),
    (add_distill_cmlm_parser, run_distill_cmlm),
    (add_generate_parser, run_generate),
]
