"""The task-side methods on a tiny random RoBERTa teacher (made with `transformers`, a
byte-level BPE tokenizer): task distillation (logits, TinyBERT, PKD), the BiLSTM student,
early exit and bench, each through its command on a JSON task file of our own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from roberta_helpers import make_folder

from distilkit.cli.main import main
from distilkit.model.checkpoint import load_model
from distilkit.model.tokenizer import Tokenizer

pytest.importorskip("transformers")

WORDS = ["the", "cat", "sat", "on", "mat", "a", "big", "red", "dog", "ran", "small", "blue"]
LABELS = ["no", "yes", "maybe"]  # the order of the teacher's outputs (make_folder's id2label)
QUICK = ["--no-progress"]


def sentences(count: int, seed: int) -> list[tuple[str, str]]:
    """(text, label) rows: "yes" with "cat", "maybe" with "dog", else "no"."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        picks = torch.randint(len(WORDS), (int(torch.randint(3, 8, (1,), generator=generator)),))
        words = [WORDS[i] for i in picks.tolist()]
        label = "yes" if "cat" in words else "maybe" if "dog" in words else "no"
        rows.append((" ".join(words), label))
    return rows


def run(argv: list) -> int:
    return main([str(arg) for arg in argv])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("roberta-methods")
    teacher = make_folder(root, "roberta", "ForSequenceClassification", seed=3)
    for split, count, seed in (("train", 48, 0), ("dev", 16, 1)):
        rows = sentences(count, seed)
        (root / f"{split}.csv").write_text(
            "text,label\n" + "".join(f"{text},{label}\n" for text, label in rows), "utf-8"
        )
        (root / f"{split}.tsv").write_text(
            "sentence\tlabel\n"
            + "".join(f"{text}\t{LABELS.index(label)}\n" for text, label in rows),
            "utf-8",
        )
    task = root / "task.json"
    task.write_text(
        json.dumps(
            {"name": "words", "kind": "classification", "train": "train.csv", "dev": "dev.csv",
             "text_column": "text", "label_column": "label", "label_names": LABELS}
        )
    )  # fmt: skip
    return {"root": root, "teacher": teacher, "task": task}


@pytest.mark.parametrize(
    "method",
    [
        "logits",
        pytest.param("tinybert", marks=pytest.mark.slow),
        pytest.param("pkd", marks=pytest.mark.slow),
    ],
)
def test_distill_task_from_a_roberta_teacher(workspace, method: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["distill-task", "--teacher", str(workspace["teacher"]), "--task",
            str(workspace["task"]), "--method", method, "--num-layers", "2", "--epochs", "1",
            "--batch-size", "16", "--max-len", "24", "--teacher-min-score", "0", *QUICK,
            "--out", str(out)]  # fmt: skip
    if method == "tinybert":
        argv += ["--intermediate-epochs", "1"]
    assert main(argv) == 0
    student_folder = out / "student"
    config = json.loads((student_folder / "config.json").read_text())
    assert config["model_type"] == "roberta" and config["num_hidden_layers"] == 2
    assert config["architectures"] == ["RobertaForSequenceClassification"]
    # transformers reads the student to the same logits as distilkit
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoModelForSequenceClassification.from_pretrained(student_folder)
    tokenizer = Tokenizer.from_folder(student_folder)
    batch = tokenizer(["the cat sat", "a big red dog ran on the mat"])
    with torch.no_grad():
        theirs = reference.eval()(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        ours = load_model(student_folder).eval()(batch.input_ids, batch.attention_mask).logits
    assert (ours - theirs.logits).abs().max() <= 1e-5


@pytest.mark.slow  # about 2 minutes: four commands, an ONNX export
def test_bilstm_early_exit_and_bench_on_a_roberta_teacher(workspace, tmp_path: Path, capsys):
    teacher, root = workspace["teacher"], workspace["root"]
    # Tang et al.'s BiLSTM on the teacher's logits: it starts from RoBERTa's word embeddings
    assert run(["distill-bilstm", "--teacher", teacher, "--task", workspace["task"],
                "--no-augment", "--hidden-size", "5", "--mlp-size", "7", "--max-length", "20",
                "--batch-size", "8", "--max-steps", "6", "--eval-every", "3",
                "--checkpoint-every", "100", *QUICK,
                "--out", tmp_path / "bilstm"]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "bilstm" / "metrics.json").read_text())
    vocab = json.loads((teacher / "config.json").read_text())["vocab_size"]
    assert metrics["student"]["parameters"]["embedding"] == vocab * 32  # RoBERTa's word table
    assert 0.0 <= metrics["student"]["dev"]["accuracy"] <= 1.0
    # FastBERT branches on the RoBERTa classifier
    assert run(["train-early-exit", teacher, "--data", root / "train.tsv", "--dev",
                root / "dev.tsv", "--max-steps", "4", "--batch-size", "8", "--width", "8",
                *QUICK, "--out", tmp_path / "exit"]) == 0  # fmt: skip
    curve = json.loads((tmp_path / "exit" / "early_exit_curve.json").read_text())
    layers = {round(point["threshold"], 6): point["average_layers"] for point in curve["curve"]}
    assert layers[0.0] == 3.0 and layers[1.0] == 1.0  # never exit / always after block 1
    capsys.readouterr()
    # bench: distilkit's engines beside transformers' on the RoBERTa teacher
    assert run(["bench", "--teacher", teacher, "--student", f"exit={tmp_path / 'exit' / 'model'}",
                "--student", f"bilstm={tmp_path / 'bilstm' / 'student'}", "--modes",
                "eager fp32", "onnx fp32", "early exit", "--threshold", "0", "--data",
                root / "dev.tsv", "--repeats", "1", "--latency-texts", "1", "--out",
                tmp_path / "bench"]) == 0  # fmt: skip
    result = json.loads((tmp_path / "bench" / "bench.json").read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert "teacher / transformers fp32" in rows
    # the same weights predict the same labels on every engine (threshold 0: no early exit)
    for engine in ("teacher / eager fp32", "teacher / onnx fp32"):
        assert rows[engine]["accuracy"] == rows["teacher / transformers fp32"]["accuracy"]
    assert rows["exit / onnx fp32"]["agreement"] == 1.0
    exit_row = next(row for name, row in rows.items() if name.startswith("exit / early exit"))
    assert exit_row["agreement"] == 1.0 and exit_row["average_layers"] == 3.0
