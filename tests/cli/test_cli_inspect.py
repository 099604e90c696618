"""The inspection commands: plot-attention (checked against transformers'
output_attentions), info --plot's network diagram, and the parser's help on every
command and argument."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_drawn

import distilkit
from distilkit.cli.main import build_parser, main

transformers = pytest.importorskip("transformers")
TEXT = "the big dog sat on the red mat."


def test_plot_attention_draws_the_maps_transformers_computes(
    hf_checkpoint: Callable[[str], Path], tmp_path: Path, capsys
) -> None:
    folder = hf_checkpoint("BertModel")
    out = tmp_path / "attention.png"
    assert main(["plot-attention", str(folder), "--text", TEXT, "--layer", "-1",
                 "--output", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert_drawn(out)
    tokens = distilkit.load(folder).tokens(TEXT)
    assert f"{len(tokens)} tokens: {' '.join(tokens)}" in printed
    reference = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    ids = torch.tensor([distilkit.load(folder).tokenizer.token_to_id(t) for t in tokens])[None]
    with torch.no_grad():
        last = reference(ids, output_attentions=True).attentions[-1][0].numpy()  # (heads, T, T)
    shown = [float(x) for x in re.findall(r"layer 2 head \d: .* ([0-9.]+)$", printed, re.M)]
    assert np.allclose(shown, last.max(axis=2).mean(axis=1), atol=1e-3)  # every head, layer 2
    assert main(["plot-attention", str(folder), "--text", TEXT, "--layer", "1", "--head", "3",
                 "--output", str(tmp_path / "one.png")]) == 0  # fmt: skip
    assert "layer 1 head 3:" in capsys.readouterr().out
    assert_drawn(tmp_path / "one.png", min_width=400)


@pytest.mark.parametrize(
    ("option", "phrase"),
    [
        (["--layer", "3"], "--layer must be from 0 to 2 (or -1 for the last)"),
        (["--layer", "0", "--head", "4"], "--head must be from 0 to 3"),
        (["--layer", "0", "--text", " "], "--text is empty"),
    ],
)
def test_plot_attention_bad_options(hf_checkpoint, tmp_path: Path, capsys, option, phrase):
    argv = ["plot-attention", str(hf_checkpoint("BertModel")), "--text", TEXT,
            "--output", str(tmp_path / "x.png"), *option]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert phrase in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_info_plot_draws_the_network(hf_checkpoint, tmp_path: Path, capsys) -> None:
    out = tmp_path / "info.png"
    assert main(["info", str(hf_checkpoint("BertForSequenceClassification")),
                 "--plot", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert_drawn(out)
    assert " MB" in printed and "MiB" not in printed  # one size unit, as compare and export


def _arguments(parser: argparse.ArgumentParser, where: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield f"{where} {choice.dest}", choice.help
            for name, subparser in action.choices.items():
                yield f"{where} {name}", subparser.description
                yield from _arguments(subparser, f"{where} {name}")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield f"{where} {'/'.join(action.option_strings) or action.dest}", action.help


def test_every_command_and_argument_has_help() -> None:
    missing = [name for name, text in _arguments(build_parser(), "distilkit") if not text]
    assert not missing, f"no help text: {missing}"
