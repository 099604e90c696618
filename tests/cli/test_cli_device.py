"""``--device`` on every command that runs a model: the value reaches the code that
places the model (recorded where the device string is resolved; ``meta`` is recorded and
then placed on the CPU so the command runs to its end), and a device that is not there is
a one-line error with exit code 2. The trainer's own placement is checked in
tests/train/test_device_placement.py; that inputs follow the model, in
tests/deploy/test_inputs_follow_the_model.py; the bench's modes on the device, in
tests/deploy/test_bench_device.py; compress's students' training device, in
tests/methods/test_compress.py."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pytest
import torch
from cmlm_helpers import tiny_seq2seq
from task_helpers import save_tiny_model, tiny_tokenizer_in, write_sst2

from distilkit.cli import bilstm, tasks
from distilkit.cli import main as cli
from distilkit.cli.main import build_parser
from distilkit.model import device as device_module

# commands that run no model, or (export) whose work is CPU-bound by design (see README)
NO_DEVICE = {"info", "tokenize", "init-student", "export"}


@pytest.fixture
def placed(monkeypatch) -> list[str]:
    """Every device string resolved by distilkit while the test runs, in order."""
    original = device_module.resolve_device
    asked: list[str] = []

    def record(device=device_module.AUTO):
        asked.append(str(device))
        return original("cpu" if str(device) == "meta" else device)

    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "") or ""
        if name.startswith("distilkit") and getattr(module, "resolve_device", None) is original:
            monkeypatch.setattr(module, "resolve_device", record)
    return asked


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, hf_checkpoint) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("device")
    write_sst2(root / "data", n_train=8, n_dev=12)
    train = root / "train.tsv"
    train.write_text("text\tlabel\nthe cat\ta\na dog\tb\nthe mat\ta\nmy dog\tb\n", "utf-8")
    train.with_name("texts.txt").write_text("the cat sat\na dog\nthe mat\n", "utf-8")
    student = root / "seq2seq"
    tiny_seq2seq().save(student, tokenizer=tiny_tokenizer_in(root / "vocab"))
    return {
        "root": root,
        "data": root / "data",
        "table": train,
        "encoder": hf_checkpoint("BertModel"),
        "mlm": hf_checkpoint("BertForMaskedLM"),
        "texts": train.with_name("texts.txt"),
        "classifier": hf_checkpoint("BertForSequenceClassification"),
        "tagger": hf_checkpoint("BertForTokenClassification"),
        "reader": hf_checkpoint("BertForQuestionAnswering"),
        "sst2": save_tiny_model(root / "sst2", head="sequence_classification", num_labels=2),
        "seq2seq": student,
    }


def command_lines(inputs: dict[str, Path], tmp_path: Path) -> dict[str, list]:
    """One working command line per command that runs a model outside the trainer
    (compare and serve are not run here: each hands --device to `load` as these do)."""
    return {
        "embed": ["embed", inputs["encoder"], "--input", inputs["texts"], "--output",
                  tmp_path / "vectors.npy", "--no-progress"],
        "search": ["search", inputs["encoder"], "--input", inputs["texts"], "--query", "a cat",
                   "--no-progress"],
        "fill-mask": ["fill-mask", inputs["mlm"], "the [MASK] sat"],
        "plot-embeddings": ["plot-embeddings", inputs["encoder"], "--input", inputs["texts"],
                            "--output", tmp_path / "map.png", "--no-progress"],
        "probe": ["probe", inputs["encoder"], "--train", inputs["table"], "--test",
                  inputs["table"], "--baseline", "none", "--output", tmp_path / "probe.png",
                  "--no-progress"],
        "plot-attention": ["plot-attention", inputs["encoder"], "--text", "the cat",
                           "--layer", "0", "--output", tmp_path / "attention.png"],
        "eval": ["eval", inputs["sst2"], "--task", "sst2", "--data-root", inputs["data"],
                 "--no-progress"],
        "classify": ["classify", inputs["classifier"], "the red cat"],
        "ner": ["ner", inputs["tagger"], "the cat sat in the house"],
        "answer": ["answer", inputs["reader"], "--question", "who sat?", "--context",
                   "the cat sat on the mat."],
        "generate": ["generate", inputs["seq2seq"], "the cat", "--max-length", "4",
                     "--no-progress"],
        "distill-static": ["distill-static", inputs["encoder"], "--out", tmp_path / "static",
                           "--dims", "5", "--no-eval", "--no-progress"],
        "bench": ["bench", inputs["sst2"], "--modes", "eager fp32", "--no-peer", "--limit", "4",
                  "--repeats", "1", "--latency-texts", "1", "--out", tmp_path / "bench",
                  "--no-progress"],
    }  # fmt: skip


COMMANDS = [
    "embed", "search", "fill-mask", "plot-embeddings",
    "probe", "plot-attention", "eval", "classify", "ner", "answer", "generate", "distill-static",
    "bench",
]  # fmt: skip


def run(argv: list, capsys) -> tuple[int, str, str]:
    code = cli.main([str(part) for part in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_command_that_runs_a_model_takes_device():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    without = {
        name
        for name, command in sub.choices.items()
        if "--device" not in {o for action in command._actions for o in action.option_strings}
    }
    assert without == NO_DEVICE


@pytest.mark.parametrize("command", COMMANDS)
def test_device_reaches_the_model(command, inputs, tmp_path, capsys, placed):
    argv = command_lines(inputs, tmp_path)[command]
    code, _, err = run([*argv, "--device", "meta"], capsys)
    assert code == 0, err
    assert "meta" in placed


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_device_is_a_one_line_error(command, inputs, tmp_path, capsys):
    argv = command_lines(inputs, tmp_path)[command]
    bad = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 7}"
    code, out, err = run([*argv, "--device", bad], capsys)
    message = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(message) == 1, err
    assert f"device {bad!r} asked for" in message[0] and "Traceback" not in err
    assert "wrote" not in out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.cuda
@pytest.mark.parametrize("command", ["classify", "ner", "answer", "generate"])
def test_a_command_answers_the_same_on_cuda_as_on_the_cpu(command, inputs, tmp_path, capsys):
    argv = command_lines(inputs, tmp_path)[command]
    answers = []
    for device in ("cpu", "cuda"):
        code, out, _ = run([*argv, "--device", device], capsys)
        assert code == 0
        answers.append(re.sub(r"\d+\.\d+", "#", out))  # a score may differ in its last digit
    assert answers[0] == answers[1]


@pytest.mark.parametrize(
    ("argv", "build"),
    [
        (["finetune", "--task", "sst2"], "finetune_config_from_args"),
        (["distill-task", "--task", "sst2", "--teacher", "t"], "distill_task_config_from_args"),
        (["distill-cmlm"], "distill_cmlm_config_from_args"),
        (["distill-bilstm", "--task", "sst2", "--teacher", "t"], "bilstm_config_from_args"),
        (["distill-multi", "--teacher", "sst2=t"], "multi_config_from_args"),
    ],
)
def test_a_training_command_puts_device_in_its_training_config(argv, build):
    args = build_parser().parse_args([*argv, "--device", "meta"])
    config = getattr(tasks if hasattr(tasks, build) else bilstm, build)(args)
    assert config.training.device == "meta"
