"""Progress bars: every command that runs longer than a few seconds draws a tqdm bar on
stderr by default and none with --no-progress, and its stdout is the same either way."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from cmlm_helpers import tiny_seq2seq
from task_helpers import FILLER, THINGS, save_tiny_model, tiny_tokenizer_in

from distilkit.cli import main as cli

TEXTS = [" ".join([*FILLER[i % 5 : i % 5 + 4], THINGS[i % 6]]) for i in range(40)]
BAR = re.compile(r"\d+%\|")  # tqdm's "100%|█████|"


def _numbers_masked(text: str) -> str:
    """stdout with numbers (timings), the column widths they set and the second run's
    folder names masked."""
    return re.sub(r"[ \t]+", " ", re.sub(r"\d[\d,]*", "#", text.replace("-again", "")))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("progress")
    (root / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    (root / "corpus.txt").write_text(
        "\n\n".join(" ".join(TEXTS[i : i + 3]) + "." for i in range(0, 40, 1)) * 40,
        encoding="utf-8",
    )
    table = ["text\tlabel", *(f"{t} {'red' if i % 2 else 'blue'}\t{i % 2}" for i, t in
                               enumerate(TEXTS))]  # fmt: skip
    (root / "labelled.tsv").write_text("\n".join(table) + "\n", encoding="utf-8")
    (root / "task.json").write_text(
        json.dumps(
            {
                "name": "colours",
                "kind": "classification",
                "train": "labelled.tsv",
                "dev": "labelled.tsv",
                "text_column": "text",
                "label_column": "label",
            }
        )
    )
    save_tiny_model(root / "bare")
    save_tiny_model(root / "classifier", head="sequence_classification", num_labels=2)
    tiny_seq2seq().save(root / "seq2seq", tokenizer=tiny_tokenizer_in(root / "vocab"))
    return {"root": root}


COMMANDS = {  # name -> (arguments, where {root} and {out} are filled in, the bar's words)
    "embed": ("embed {root}/bare --input {root}/texts.txt --output {out}.npy", "encoding"),
    "search": ("search {root}/bare --input {root}/texts.txt --query cat", "encoding"),
    "plot-embeddings": (
        "plot-embeddings {root}/bare --input {root}/texts.txt --output {out}.png",
        "encoding",
    ),
    "probe": (
        "probe {root}/bare --train {root}/labelled.tsv --test {root}/labelled.tsv "
        "--output {out}.png",
        "encoding",
    ),
    "eval": ("eval {root}/classifier --task {root}/task.json", "scoring"),
    "classify": ("classify {root}/classifier --input {root}/texts.txt", "classifying"),
    "generate": ("generate {root}/seq2seq --input {root}/texts.txt --beam-size 2", "generating"),
    "export": ("export {root}/bare --onnx {out}.onnx --check-limit 8", "parity check"),
    "bench": (
        "bench {root}/bare --data {root}/texts.txt --modes 'eager fp32' --repeats 1 "
        "--latency-texts 2 --no-peer --threads 1 --out {out}",
        "timing",
    ),
    "init-student": (
        "init-student {root}/bare --num-layers 1 --corpus {root}/corpus.txt --out {out}",
        "scoring layer subsets",
    ),
    "distill-static": ("distill-static {root}/bare --dims 8 --no-eval --out {out}", "vocabulary"),
}


SLOW = ("export", "bench")  # an ONNX export each run; bench's matmul-roof measurement


@pytest.mark.parametrize(
    "command",
    [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in COMMANDS],
)
def test_a_bar_on_stderr_unless_no_progress_and_the_same_stdout(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], command: str
) -> None:
    arguments, words = COMMANDS[command]
    outputs = []
    for suffix, extra in (("", []), ("-again", ["--no-progress"])):
        out = files["root"] / f"{command}{suffix}"
        argv = shlex.split(arguments.format(root=files["root"], out=out)) + extra
        assert cli.main(argv) == 0, capsys.readouterr().err
        captured = capsys.readouterr()
        shown = BAR.search(captured.err) is not None and words in captured.err
        assert shown == (not extra), (command, captured.err[-500:])
        assert not BAR.search(captured.out)
        outputs.append(_numbers_masked(captured.out))
    assert outputs[0] == outputs[1]
    assert outputs[0].strip()


def test_every_long_command_takes_no_progress() -> None:
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "embed" in a.choices)
    trainers = ["distill", "finetune", "distill-task", "fit-mlm-head", "distill-bilstm",
                "distill-multi", "distill-cmlm", "train-early-exit"]  # fmt: skip
    for name in [*COMMANDS, "compare", *trainers]:
        options = {o for a in subparsers.choices[name]._actions for o in a.option_strings}
        assert "--no-progress" in options and "--progress" not in options, name
