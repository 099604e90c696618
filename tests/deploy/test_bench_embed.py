"""`distilkit bench MODEL [MODEL...]` on tiny encoders and classifiers: a well-formed table
and JSON with every ratio column explained, vectors checked against the eager fp32 ones,
sentence-transformers as the reference row, and the README's bench command as written."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TEXTS

import distilkit
from distilkit.cli.common import Command
from distilkit.cli.deploy import DEPLOY_COMMANDS
from distilkit.cli.main import build_parser
from distilkit.deploy.bench_embed import (
    EMBED_COLUMNS,
    ENCODER_MODES,
    RATIO_NOTES,
    REFERENCE_MODE,
    bench_models,
)
from distilkit.deploy.bench_engines import BenchError, BenchSettings
from distilkit.deploy.flops import encoder_flops

pytest.importorskip("onnxruntime")
st = pytest.importorskip("sentence_transformers")
models = pytest.importorskip("sentence_transformers.models")

TEXTS = [*TINY_TEXTS, "the dog ran to the house and read a book in the tree.", "red bird", "a"]
FAST = {"repeats": 1, "latency_texts": 2, "ceiling_seconds": 0.05, "batch_size": 3, "device": "cpu"}
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def encoder_folder(hf_checkpoint, tmp_path_factory) -> Path:
    """A tiny sentence-transformers folder (mean pooling, Normalize) built by its own classes."""
    out = tmp_path_factory.mktemp("st") / "encoder"
    transformer = models.Transformer(str(hf_checkpoint("BertModel")), max_seq_length=40)
    modules = [transformer, models.Pooling(32, pooling_mode="mean"), models.Normalize()]
    st.SentenceTransformer(modules=modules, device="cpu").save(str(out))
    return out


def run_cli(*argv: str) -> int:
    parser = build_parser([Command(*pair) for pair in DEPLOY_COMMANDS])
    args = parser.parse_args(argv)
    return args.run(args)


def test_encoder_bench_rows_ratios_and_files(encoder_folder, tmp_path) -> None:
    result = bench_models(
        {"tiny": encoder_folder},
        None,
        TEXTS,
        settings=BenchSettings(**FAST),
        work_dir=tmp_path,
        say=lambda _: None,
    )
    assert result.kind == "encoder"
    modes = [row["mode"] for row in result.rows]
    assert modes == [REFERENCE_MODE, *ENCODER_MODES]
    rows = {row["mode"]: row for row in result.rows}
    # eager fp32 is the cosine reference (1 by definition); sentence-transformers and the
    # ONNX graph (pooling and Normalize inside) give the same vectors
    for mode in ("eager fp32", REFERENCE_MODE, "onnx fp32"):
        assert rows[mode]["cosine_min"] > 0.99999, mode
    for mode in ("eager int8", "onnx int8", "bf16"):
        assert 0.9 < rows[mode]["cosine_mean"] <= 1.0 + 1e-6, mode
    assert rows["eager fp32"]["speedup_vs_fp32"] == pytest.approx(1.0)
    assert all(row["dim"] == 32 for row in result.rows)
    # FLOPs: the encoder's matmuls over real tokens, against the roof of this run
    tokens = [
        min(len(ids) + 2, 40) for ids in distilkit.load(encoder_folder).tokenizer.encode_ids(TEXTS)
    ]
    config = distilkit.load(encoder_folder).config
    flops = sum(encoder_flops(config, n, head=False) for n in tokens)
    row = rows["onnx fp32"]
    assert row["gflops_per_s"] == pytest.approx(flops * row["embeddings_per_s"] / len(TEXTS) / 1e9)
    assert row["roof_fraction"] == pytest.approx(
        row["gflops_per_s"] / result.ceilings_gflops["fp32"]
    )
    assert rows["bf16"]["roof_fraction"] == pytest.approx(
        rows["bf16"]["gflops_per_s"] / result.ceilings_gflops["bf16"]
    )
    # the table: one line per engine, every ratio column explained in the notes
    table = result.table().splitlines()
    assert len(table) == 2 + len(result.rows)
    for header in ("x ref", "x fp32", "p50 x ref", "cos mean", "% roof"):
        assert header in table[0]
        assert any(
            note.startswith(header) or f"; {header}" in note or f" / {header}" in note
            for note in result.notes
        ), header
    assert result.notes[: len(RATIO_NOTES)] == RATIO_NOTES
    assert result.table(markdown=True).startswith("| " + EMBED_COLUMNS[0][0])
    saved = json.loads(result.save_json(tmp_path / "bench.json").read_text())
    assert saved["kind"] == "encoder" and saved["texts"] == len(TEXTS)
    assert {"embeddings_per_s", "latency_ms_p50", "cosine_mean", "roof_fraction"} <= set(
        saved["rows"][0]
    )
    assert result.plot(tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_classifier_modes_are_refused_for_an_encoder(encoder_folder) -> None:
    with pytest.raises(BenchError, match="apply to classifiers"):
        bench_models({"tiny": encoder_folder}, ["early exit"], TEXTS, say=lambda _: None)


def test_cli_positional_models_encoder_and_classifier(
    encoder_folder, hf_checkpoint, tmp_path, capsys
):
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    fast = ["--data", str(data), "--batch-size", "3", "--repeats", "1", "--latency-texts", "2"]
    modes = ["--modes", "eager fp32", "onnx fp32"]
    out = ["--out", str(tmp_path / "e")]
    code = run_cli("bench", str(encoder_folder), f"again={encoder_folder}", *modes, *fast, *out)
    assert code == 0
    printed = capsys.readouterr().out
    assert f"teacher / {REFERENCE_MODE}" in printed and "again / onnx fp32" in printed
    assert "x fp32: embeddings/s relative to the same model's eager fp32 row" in printed
    saved = json.loads((tmp_path / "e" / "bench.json").read_text())
    assert [row["name"] for row in saved["rows"]] == [
        f"teacher / {REFERENCE_MODE}", "teacher / eager fp32", "teacher / onnx fp32",
        "again / eager fp32", "again / onnx fp32",
    ]  # fmt: skip
    # classifiers, positional as README's table shows: TEACHER STUDENT
    teacher = hf_checkpoint("BertForSequenceClassification")
    student = hf_checkpoint("DistilBertForSequenceClassification")
    code = run_cli("bench", str(teacher), str(student), "--modes", "eager fp32",
                   *fast, "--out", str(tmp_path / "c"))  # fmt: skip
    assert code == 0
    saved = json.loads((tmp_path / "c" / "bench.json").read_text())
    assert saved["kind"] == "classifier"
    assert [row["name"] for row in saved["rows"]] == [
        "teacher / transformers fp32", "teacher / eager fp32", "student / eager fp32",
    ]  # fmt: skip


def readme_bench_commands() -> list[str]:
    """The ``distilkit bench`` lines of the README's shell blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    return [
        line.split("#")[0].strip()
        for block in blocks
        for line in block.splitlines()
        if line.startswith("distilkit bench ")
    ]


def test_the_readme_has_a_bench_example() -> None:
    assert readme_bench_commands()


@pytest.mark.slow
def test_the_readme_bench_command_runs_as_written(tmp_path, monkeypatch, capsys) -> None:
    """The README's command, word for word, on the embedded all-MiniLM-L6-v2."""
    monkeypatch.chdir(tmp_path)  # its default --out, runs/bench-<time>, lands here
    torch.set_num_threads(torch.get_num_threads())
    for command in readme_bench_commands():
        argv = shlex.split(command)[1:]
        assert run_cli(*argv) == 0
        printed = capsys.readouterr().out
        assert "onnx fp32" in printed and "% roof" in printed
    (out,) = (tmp_path / "runs").iterdir()
    rows = json.loads((out / "bench.json").read_text())["rows"]
    cosines = {row["mode"]: row["cosine_mean"] for row in rows}
    assert cosines["onnx fp32"] > 0.99999 and cosines["onnx int8"] > 0.98
    assert np.isfinite([row["embeddings_per_s"] for row in rows]).all()
