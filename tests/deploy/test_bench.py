"""`distilkit bench` on tiny models: a well-formed table, JSON and plot, numbers that follow
from independent computations (accuracy, agreement, FLOPs by torch's FLOP counter), and
the deploy subcommands end to end."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_SIZES, TINY_TEXTS
from torch.utils.flop_counter import FlopCounterMode

from distilkit.cli.common import Command
from distilkit.cli.deploy import DEPLOY_COMMANDS
from distilkit.cli.main import build_parser
from distilkit.deploy.bench import BENCH_COLUMNS, run_bench
from distilkit.deploy.bench_engines import BenchError, BenchSettings, file_stem
from distilkit.deploy.flops import encoder_flops, matmul_gflops
from distilkit.encoder import load
from distilkit.methods.early_exit.curves import collect_layer_logits, simulate_exits
from distilkit.methods.early_exit.model import (
    BranchConfig,
    EarlyExitModel,
    has_branches,
    normalized_entropy,
)
from distilkit.model.bilstm import BiLSTMClassifier, load_bilstm
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel

TEXTS = [
    *TINY_TEXTS,
    "the dog ran to the house and read a book in the tree.",
    "red bird",
    "it was the small cafe, with a blue mat!",
    "jumping cats",
    "a",
]
LABELS = np.array([0, 1, 2, 1, 0, 2, 1, 0, 2, 1])
FAST = {"repeats": 1, "latency_texts": 3, "ceiling_seconds": 0.05, "batch_size": 4, "device": "cpu"}


@pytest.fixture(scope="module")
def teacher(hf_checkpoint) -> Path:
    return hf_checkpoint("BertForSequenceClassification")


@pytest.fixture(scope="module")
def student(tmp_path_factory, tiny_tokenizer) -> Path:
    """A 2-layer DistilBERT-layout classifier with branches; the saved threshold lets
    about half of the texts leave after the first block."""
    config = ModelConfig(
        **(TINY_SIZES | {"num_layers": 2}),
        layout="distilbert",
        type_vocab_size=0,
        with_pooler=False,
        head="sequence_classification",
        num_labels=3,
    )
    torch.manual_seed(0)
    model = EarlyExitModel(TransformerModel(config).eval(), BranchConfig(width=14, num_heads=2))
    with torch.no_grad():
        for parameter in model.branches.parameters():
            parameter.normal_(0, 0.5)
    entropies = normalized_entropy(
        torch.from_numpy(collect_layer_logits(model, tiny_tokenizer, TEXTS)[0])
    )
    model.threshold = float(entropies.quantile(0.5))
    return model.save(tmp_path_factory.mktemp("student") / "model", tokenizer=tiny_tokenizer)


def test_bench_table_json_and_plot(teacher, student, tmp_path):
    messages = []
    result = run_bench(
        {"teacher": teacher, "student": student},
        ["eager fp32", "bf16", "early exit"],
        TEXTS,
        LABELS,
        BenchSettings(**FAST),
        say=messages.append,
    )
    names = [row["name"] for row in result.rows]
    threshold = EarlyExitModel.from_folder(student).threshold
    assert names == [
        "teacher / transformers fp32",
        "teacher / eager fp32",
        "teacher / bf16",
        "student / eager fp32",
        "student / bf16",
        f"student / early exit ({threshold:.3g})",
    ]
    assert any("teacher / early exit" in m and "no trained branches" in m for m in messages)

    # the table: a header, a rule, one line per engine, ratios against the peer
    lines = result.table().splitlines()
    assert len(lines) == 2 + len(names)
    assert all(header in lines[0] for header, _, _ in BENCH_COLUMNS)
    assert set(lines[1]) <= {"-", " "}
    for line, name in zip(lines[2:], names, strict=True):
        assert line.startswith(name)
    assert re.search(r"\s1\.00x\s", lines[2])  # the peer against itself
    # every ratio or share column says what it is against
    for column in ("x ref", "% of teacher", "agree %"):
        assert any(note.startswith(column + ":") for note in result.notes)
    markdown = result.table(markdown=True).splitlines()
    assert len(markdown) == 2 + len(names)
    assert all(line.count("|") == len(BENCH_COLUMNS) + 1 for line in markdown)

    # JSON: everything needed to rebuild the table
    saved = json.loads(result.save_json(tmp_path / "bench.json").read_text())
    assert saved["texts"] == len(TEXTS)
    assert saved["settings"]["batch_size"] == 4
    assert saved["ceilings_gflops"]["fp32"] > 0 and saved["ceilings_gflops"]["bf16"] > 0
    for row in saved["rows"]:
        assert row["sentences_per_s"] > 0
        assert row["latency_ms_p50"] > 0 and row["latency_ms_p95"] >= row["latency_ms_p50"]
        assert 0 <= row["accuracy"] <= 1 and row["gflops_per_s"] > 0
    assert result.plot(tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"

    rows = {row["name"]: row for row in result.rows}
    # accuracy and agreement against independent computations
    teacher_logits = load(teacher).logits(TEXTS)
    teacher_accuracy = float((teacher_logits.argmax(-1) == LABELS).mean())
    assert rows["teacher / eager fp32"]["accuracy"] == pytest.approx(teacher_accuracy)
    assert rows["teacher / transformers fp32"]["accuracy"] == pytest.approx(teacher_accuracy)
    assert rows["teacher / eager fp32"]["agreement"] == 1.0
    assert rows["teacher / transformers fp32"]["agreement"] == 1.0  # same weights
    student_accuracy = float((load(student).logits(TEXTS).argmax(-1) == LABELS).mean())
    assert rows["student / eager fp32"]["accuracy_retention_pct"] == pytest.approx(
        100 * student_accuracy / teacher_accuracy
    )
    # early exit: the average layers of the simulation from every classifier's logits
    early = EarlyExitModel.from_folder(student)
    layer_logits = collect_layer_logits(early, early_tokenizer(student), TEXTS)
    _, exits = simulate_exits(layer_logits, threshold)
    row = rows[names[-1]]
    assert row["average_layers"] == pytest.approx(float(exits.mean()))
    assert 1 < row["average_layers"] < 2
    # GFLOP/s = FLOPs of one pass (by formula, per text) / seconds of one pass
    tokenizer = early_tokenizer(student)
    counts = [len(ids) + 2 for ids in tokenizer.encode_ids(TEXTS)]
    flops = sum(
        encoder_flops(early.model.config, n, int(layers), branch_width=14)
        for n, layers in zip(counts, exits, strict=True)
    )
    seconds_per_pass = len(TEXTS) / row["sentences_per_s"]
    assert row["gflops_per_s"] == pytest.approx(flops / seconds_per_pass / 1e9)
    assert row["ceiling_fraction"] == pytest.approx(
        row["gflops_per_s"] / result.ceilings_gflops["fp32"]
    )
    bf16 = rows["student / bf16"]
    assert bf16["ceiling_fraction"] == pytest.approx(
        bf16["gflops_per_s"] / result.ceilings_gflops["bf16"]
    )


def early_tokenizer(folder: Path):
    return load(folder).tokenizer


def test_bench_onnx_modes(teacher, tmp_path):
    result = run_bench(
        {"teacher": teacher},
        ["eager fp32", "onnx fp32", "onnx int8"],
        TEXTS,
        LABELS,
        BenchSettings(**FAST | {"peer": False, "ceiling_seconds": 0}),
        work_dir=tmp_path,
        say=lambda _: None,
    )
    rows = {row["mode"]: row for row in result.rows}
    assert list(rows) == ["eager fp32", "onnx fp32", "onnx int8"]
    assert rows["onnx fp32"]["agreement"] == 1.0
    assert 0 <= rows["onnx int8"]["agreement"] <= 1
    assert rows["onnx fp32"]["ceiling_fraction"] is None  # no ceiling measured
    assert (tmp_path / "0-teacher.fp32.onnx").is_file()  # file names from model names, sanitised
    assert (tmp_path / "0-teacher.int8.onnx").is_file()


def test_bench_int8_modes(teacher, student):
    """Eager int8 and early exit on int8 blocks: rows for both, the exits of the int8
    engine within the model's depth, and predictions close to each model's fp32 ones."""
    result = run_bench(
        {"teacher": teacher, "student": student},
        ["eager fp32", "eager int8", "early exit int8"],
        TEXTS,
        LABELS,
        BenchSettings(**FAST | {"peer": False, "ceiling_seconds": 0}),
        say=lambda _: None,
    )
    threshold = EarlyExitModel.from_folder(student).threshold
    rows = {row["name"]: row for row in result.rows}
    assert list(rows) == [
        "teacher / eager fp32",
        "teacher / eager int8",
        "student / eager fp32",
        "student / eager int8",
        f"student / early exit int8 ({threshold:.3g})",
    ]
    assert rows["teacher / eager int8"]["agreement"] >= 0.8
    assert rows["student / eager int8"]["agreement"] >= 0.8
    assert 1 <= rows[f"student / early exit int8 ({threshold:.3g})"]["average_layers"] <= 2


def test_bench_threshold_per_model(teacher, student):
    """A threshold per model name overrides the saved one: 1 exits at the first block."""
    result = run_bench(
        {"teacher": teacher, "student": student},
        ["early exit"],
        TEXTS,
        LABELS,
        BenchSettings(
            **FAST | {"peer": False, "ceiling_seconds": 0, "threshold": {"student": 1.0}}
        ),
        say=lambda _: None,
    )
    assert [row["name"] for row in result.rows] == ["student / early exit (1)"]
    assert result.rows[0]["average_layers"] == 1.0


def test_bench_times_a_bilstm_student(teacher, tiny_tokenizer, tmp_path):
    """A BiLSTM student runs in eager fp32 beside the teacher (its other modes are
    skipped); its accuracy and FLOPs follow from independent computations."""
    torch.manual_seed(0)
    bilstm = BiLSTMClassifier.from_teacher(
        torch.randn(99, 32), tiny_tokenizer, num_labels=3, hidden_size=7, mlp_size=11
    )
    folder = bilstm.save(tmp_path / "bilstm")
    messages = []
    result = run_bench(
        {"teacher": teacher, "bilstm": folder},
        ["eager fp32", "eager int8"],
        TEXTS,
        LABELS,
        BenchSettings(**FAST | {"peer": False, "ceiling_seconds": 0}),
        say=messages.append,
    )
    rows = {row["name"]: row for row in result.rows}
    assert list(rows) == ["teacher / eager fp32", "teacher / eager int8", "bilstm / eager fp32"]
    assert any("bilstm / eager int8" in m and "eager fp32 only" in m for m in messages)
    row = rows["bilstm / eager fp32"]
    expected = (load_bilstm(folder).predict_logits(TEXTS).argmax(-1) == LABELS).mean()
    assert row["accuracy"] == pytest.approx(float(expected))
    counts = [len(ids) + 2 for ids in tiny_tokenizer.encode_ids(TEXTS)]
    flops = sum(2 * 2 * 7 * 28 * n + 2 * (14 * 11 + 11 * 3) for n in counts)
    seconds_per_pass = len(TEXTS) / row["sentences_per_s"]
    assert row["gflops_per_s"] == pytest.approx(flops / seconds_per_pass / 1e9)
    with pytest.raises(BenchError, match="first model is the teacher"):
        run_bench({"bilstm": folder}, ["eager fp32"], TEXTS, LABELS, BenchSettings(**FAST))


def math_attention(query, key, value, attn_mask=None, dropout_p=0.0):
    """Attention as two plain matmuls, which torch's FLOP counter sees (its count of the
    fused kernel depends on which kernel runs)."""
    scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(-1) @ value


def test_encoder_flops_match_torch_flop_counter(tiny_tokenizer, monkeypatch):
    """The formula against torch's own count of the model's matmuls."""
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", math_attention)
    config = ModelConfig(**TINY_SIZES, head="sequence_classification", num_labels=3)
    model = EarlyExitModel(TransformerModel(config), BranchConfig(width=14, num_heads=2))
    batch = tiny_tokenizer(["the cat sat on the mat, and it was big"])
    tokens = batch.input_ids.shape[1]
    with FlopCounterMode(display=False) as counter:  # grad on: the portable fast path
        model.model(**batch.model_inputs())
    assert encoder_flops(config, tokens) == counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        model.layer_logits(**batch.model_inputs())
    # layer_logits runs every block and every branch
    assert encoder_flops(config, tokens, branch_width=14) == counter.get_total_flops()
    assert encoder_flops(config, tokens, layers=1) < encoder_flops(config, tokens)


def test_matmul_ceiling_and_bad_settings():
    assert matmul_gflops(torch.float32, size=128, seconds=0.05) > 0
    assert matmul_gflops(torch.bfloat16, size=128, seconds=0.05) > 0
    with pytest.raises(BenchError):
        BenchSettings(batch_size=0)
    with pytest.raises(BenchError, match="unknown mode"):
        run_bench({"t": "x"}, ["eager fp64"], TEXTS)
    with pytest.raises(BenchError, match="labels"):
        run_bench({"t": "x"}, ["eager fp32"], TEXTS, LABELS[:3])


def test_bench_without_branches_says_why_nothing_is_timed(teacher):
    """Early exit only, on a teacher without branches: the error names the cause."""
    with pytest.raises(BenchError, match=r"no trained early-exit branches.*train-early-exit"):
        run_bench(
            {"teacher": teacher},
            ["early exit"],
            TEXTS,
            settings=BenchSettings(**FAST | {"peer": False, "ceiling_seconds": 0}),
            say=lambda _: None,
        )


@pytest.mark.parametrize("threshold", [5.0, -0.1, math.nan, {"student": 2.0}])
def test_bench_settings_reject_a_threshold_outside_0_1(threshold):
    with pytest.raises(BenchError, match="normalised prediction entropy from 0 to 1"):
        BenchSettings(threshold=threshold)
    with pytest.raises(BenchError, match="num_threads must be at least 1"):
        BenchSettings(num_threads=0)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--threshold", "5"], "--threshold is the early-exit threshold"),
    ],
)
def test_cli_bench_rejects_bad_threads_and_threshold(option, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        run_cli("bench", "--teacher", "unused", *option, "--out", str(tmp_path / "b"))


def test_cli_bench_rejects_a_nan_threshold_while_parsing(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_cli("bench", "--teacher", "unused", "--threshold", "nan", "--out", str(tmp_path))
    assert "--threshold: expected a finite number, got 'nan'" in capsys.readouterr().err


def test_bench_refuses_a_model_without_a_classifier(hf_checkpoint):
    with pytest.raises(BenchError, match="sequence classifiers"):
        run_bench(
            {"encoder": hf_checkpoint("BertModel")},
            ["eager fp32"],
            TEXTS,
            settings=BenchSettings(**FAST),
            say=lambda _: None,
        )


# ----------------------------------------------------------------------------- CLI
def run_cli(*argv: str) -> int:
    parser = build_parser([Command(*pair) for pair in DEPLOY_COMMANDS])
    args = parser.parse_args(argv)
    return args.run(args)


def write_tsv(path: Path, texts: list[str], labels: np.ndarray) -> Path:
    rows = "".join(f"{t}\t{label}\n" for t, label in zip(texts, labels, strict=True))
    path.write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    return path


def test_cli_bench_writes_table_json_markdown_and_plot(teacher, student, tmp_path, capsys):
    data = write_tsv(tmp_path / "dev.tsv", TEXTS, LABELS)
    code = run_cli(
        "bench", "--teacher", str(teacher), "--student", f"small={student}",
        "--modes", "eager fp32", "early exit", "--data", str(data), "--limit", "8",
        "--batch-size", "4", "--repeats", "1", "--latency-texts", "2", "--out", str(tmp_path / "b"),
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "teacher / transformers fp32" in printed and "small / early exit" in printed
    saved = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert saved["texts"] == 8 and len(saved["rows"]) == 4
    assert (tmp_path / "b" / "bench.md").read_text().startswith("| engine |")
    assert (tmp_path / "b" / "bench.png").is_file()


def test_cli_train_early_exit(teacher, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS * 4) + "\n", encoding="utf-8")
    dev = write_tsv(tmp_path / "dev.tsv", TEXTS, LABELS)
    code = run_cli(
        "train-early-exit", str(teacher), "--out", str(tmp_path / "run"), "--data", str(corpus),
        "--dev", str(dev), "--target-speedup", "1.5", "--width", "8", "--max-steps", "6",
        "--batch-size", "8", "--no-progress",
    )  # fmt: skip
    assert code == 0
    folder = tmp_path / "run" / "model"
    assert has_branches(folder)
    summary = json.loads((tmp_path / "run" / "early_exit_curve.json").read_text())
    model = EarlyExitModel.from_folder(folder)
    assert summary["threshold"] == model.threshold > 0
    chosen = [p for p in summary["curve"] if p["threshold"] == model.threshold]
    assert chosen and chosen[0]["layer_speedup"] >= 1.5
    assert "<- chosen" in capsys.readouterr().out
    assert (tmp_path / "run" / "early_exit_curve.png").is_file()


@pytest.mark.parametrize("name", ["../../escaped=x", "/etc/passwd", "a/b", "..", ""])
def test_model_names_never_become_paths(name, tmp_path):
    """`bench --student "../../escaped=..."` wrote an ONNX file outside --out."""

    stem = file_stem(1, name)
    assert "/" not in stem and not stem.startswith(".")
    assert (tmp_path / f"{stem}.fp32.onnx").resolve().parent == tmp_path.resolve()
