"""``distilkit distill-bilstm`` and ``distill-multi`` end to end on tiny GLUE-format files.

Tiny random teachers (odd sizes, the 99-entry vocabulary) stand in for fine-tuned ones:
these tests check the plumbing — transfer set, cached teacher labels (a second run must
not call the teacher), training, the saved students, and the reported dev numbers, which
are recomputed here independently from the teachers and the saved students.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WORDS
from scipy.special import softmax
from scipy.stats import spearmanr

from distilkit.cli import main as cli
from distilkit.cli.bilstm import BILSTM_COMMANDS
from distilkit.encoder import Encoder, load
from distilkit.model.bilstm import load_bilstm
from distilkit.model.checkpoint import save_model
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel
from distilkit.settings import ConfigError

COMMANDS = [cli.Command(*pair) for pair in BILSTM_COMMANDS]
SMALL = ["--hidden-size", "5", "--mlp-size", "7", "--max-length", "20", "--batch-size", "8"]
QUICK = ["--max-steps", "6", "--no-progress", "--checkpoint-every", "100", "--eval-every", "3"]


def sentence(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, int(rng.integers(2, 7)))) + "."


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sst2/{train,dev}.tsv and stsb/{train,dev}.tsv in the GLUE layouts."""
    root = tmp_path_factory.mktemp("glue")
    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("dev", 16)):
        (root / "sst2").mkdir(exist_ok=True)
        rows = [f"{sentence(rng)} \t{int(rng.integers(0, 2))}" for _ in range(count)]
        (root / "sst2" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
        (root / "stsb").mkdir(exist_ok=True)
        header = (
            "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
        )
        rows = [
            f"{i}\tmain\tf\t2012\t{i:04d}\tnone\tnone\t{sentence(rng)}\t{sentence(rng)}\t"
            f"{rng.uniform(0, 5):.3f}"
            for i in range(count - 10)
        ]
        (root / "stsb" / f"{split}.tsv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return root


def teacher(folder: Path, tokenizer, seed: int, num_labels: int) -> Path:
    """A random classifier whose bias is centred on sample sentences, so its predicted
    classes vary from sentence to sentence (a random one predicts one class for all)."""
    config = ModelConfig(
        vocab_size=99,
        hidden_size=32,
        num_heads=4,
        intermediate_size=37,
        num_layers=2,
        max_position_embeddings=64,
        head="sequence_classification",
        num_labels=num_labels,
        label_names=["negative", "positive"] if num_labels == 2 else None,
    )
    torch.manual_seed(seed)
    model = TransformerModel(config).eval()
    rng = np.random.default_rng(seed)
    sample = tokenizer([sentence(rng) for _ in range(64)])
    with torch.no_grad():
        model.head.classifier.weight.mul_(100.0)
        logits = model(**sample.model_inputs()).logits
        model.head.classifier.bias.sub_(logits.median(dim=0).values)
    return save_model(model, folder, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, tiny_tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teachers")
    return {
        "sst2-a": teacher(root / "sst2-a", tiny_tokenizer, 1, 2),
        "sst2-b": teacher(root / "sst2-b", tiny_tokenizer, 2, 2),
        "stsb": teacher(root / "stsb", tiny_tokenizer, 3, 1),
    }


def run(argv: list[str]) -> int:
    args = cli.build_parser(COMMANDS).parse_args(argv)
    return args.run(args)


def dev_set(data_root: Path, task: str):
    from distilkit.tasks.registry import get_task

    examples = get_task(task).load("dev", data_root)
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples] if examples[0].text_pair is not None else None
    return texts, pairs, np.array([e.label for e in examples])


def test_distill_bilstm_on_augmented_logits_and_reuse_of_the_cache(
    data_root, teachers, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    argv = ["distill-bilstm", "--teacher", str(teachers["sst2-a"]), "--task", "sst2",
            "--augment", "--n-iter", "3", "--subsample", "30", "--data-root", str(data_root),
            "--cache-dir", str(cache), *SMALL, *QUICK]  # fmt: skip
    assert run([*argv, "--out", str(tmp_path / "first")]) == 0
    metrics = json.loads((tmp_path / "first" / "metrics.json").read_text())
    assert metrics["train_examples"] == 30
    assert 30 < metrics["transfer_set"] <= 30 * 4
    assert metrics["augmentation"]["n_iter"] == 3 and metrics["augmentation"]["p_ng"] == 0.25
    assert len(list(cache.glob("*.npy"))) == 2  # dev set and transfer set

    texts, _, labels = dev_set(data_root, "sst2")
    teacher_logits = load(teachers["sst2-a"]).logits(texts)
    teacher_accuracy = float((teacher_logits.argmax(-1) == labels).mean())
    assert metrics["teacher"]["dev"]["accuracy"] == pytest.approx(teacher_accuracy)
    student = load_bilstm(tmp_path / "first" / "student")
    student_logits = student.predict_logits(texts)
    assert metrics["student"]["dev"]["accuracy"] == pytest.approx(
        float((student_logits.argmax(-1) == labels).mean())
    )
    assert metrics["student"]["dev"]["mse_to_teacher"] == pytest.approx(
        float(np.mean((student_logits - teacher_logits) ** 2)), rel=1e-4
    )
    assert metrics["student"]["parameters"]["embedding"] == 99 * 32
    log = [json.loads(line) for line in (tmp_path / "first" / "train_log.jsonl").open()]
    assert "loss/mse" in log[0] and "loss/hard" not in log[0]
    assert any("eval/accuracy" in record for record in log)

    def refuse(*args, **kwargs):
        raise AssertionError("the teacher was called although its logits are cached")

    monkeypatch.setattr(Encoder, "logits", refuse)
    assert run([*argv, "--out", str(tmp_path / "second")]) == 0
    second = json.loads((tmp_path / "second" / "metrics.json").read_text())
    assert second["transfer_set"] == metrics["transfer_set"]  # the augmentation is seeded
    assert second["student"]["dev"] == metrics["student"]["dev"]  # and so is training


def test_distill_bilstm_on_labels_only(data_root, teachers, tmp_path):
    out = tmp_path / "labels"
    argv = ["distill-bilstm", "--teacher", str(teachers["sst2-a"]), "--targets", "labels",
            "--data-root", str(data_root), "--cache-dir", str(tmp_path / "cache"),
            *SMALL, *QUICK, "--out", str(out)]  # fmt: skip
    assert run(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["augment"] is False and metrics["augmentation"] is None
    assert metrics["transfer_set"] == metrics["train_examples"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").open()]
    assert "loss/hard" in log[0] and "loss/mse" not in log[0]


def test_distill_bilstm_siamese_regression_on_stsb(data_root, teachers, tmp_path):
    out = tmp_path / "stsb"
    argv = ["distill-bilstm", "--teacher", str(teachers["stsb"]), "--task", "stsb",
            "--no-augment", "--hard-label-weight", "0.3", "--data-root", str(data_root),
            "--cache-dir", str(tmp_path / "cache"), *SMALL, *QUICK, "--out", str(out)]  # fmt: skip
    assert run(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    student = load_bilstm(out / "student")
    assert student.config.pair and student.config.num_labels == 1
    texts, pairs, scores = dev_set(data_root, "stsb")
    predictions = student.predict_logits(texts, pairs)[:, 0]
    assert metrics["student"]["dev"]["spearman"] == pytest.approx(spearmanr(predictions, scores)[0])
    log = [json.loads(line) for line in (out / "train_log.jsonl").open()]
    assert {"loss/mse", "loss/hard"} <= set(log[0])


def test_distill_multi_two_tasks_three_teachers(data_root, teachers, tmp_path):
    out = tmp_path / "multi"
    argv = ["distill-multi", "--teacher", f"sst2={teachers['sst2-a']}",
            "--teacher", f"sst2={teachers['sst2-b']}", "--teacher", f"stsb={teachers['stsb']}",
            "--temperature", "2", "--data-root", str(data_root),
            "--cache-dir", str(tmp_path / "cache"), *SMALL, *QUICK, "--out", str(out)]  # fmt: skip
    assert run(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    sst2 = metrics["tasks"]["sst2"]
    assert len(sst2["teachers"]) == 2 and len(metrics["tasks"]["stsb"]["teachers"]) == 1
    texts, _, labels = dev_set(data_root, "sst2")
    probabilities = [softmax(load(teachers[n]).logits(texts) / 2, -1) for n in ("sst2-a", "sst2-b")]
    predicted = np.mean(probabilities, 0).argmax(-1)
    assert len(set(predicted)) == 2  # the check below is not trivial
    ensemble = float((predicted == labels).mean())
    assert sst2["ensemble"]["dev"]["accuracy"] == pytest.approx(ensemble)
    assert sst2["ensemble"]["combine"] == "probs"
    assert metrics["tasks"]["stsb"]["ensemble"]["combine"] == "logits"  # regression
    student = load_bilstm(out / "students" / "sst2")
    assert sst2["student"]["dev"]["accuracy"] == pytest.approx(
        float((student.predict_logits(texts).argmax(-1) == labels).mean())
    )
    assert load_bilstm(out / "students" / "stsb").config.pair
    log = [json.loads(line) for line in (out / "train_log.jsonl").open()]
    assert any("eval/sst2/accuracy" in r and "eval/stsb/spearman" in r for r in log)


def test_user_errors_exit_with_one_line(data_root, teachers, tmp_path, capsys):
    assert {c.add_parser for c in COMMANDS} <= {c.add_parser for c in cli.COMMANDS}
    code = cli.main(["distill-bilstm", "--teacher", str(teachers["sst2-a"]), "--targets",
                     "labels", "--augment", "--data-root", str(data_root)])  # fmt: skip
    assert code == 2 and "no gold labels" in capsys.readouterr().err
    assert cli.main(["distill-bilstm", "--task", "sst2"]) == 2
    assert "teacher is required" in capsys.readouterr().err
    assert cli.main(["distill-multi", "--teacher", "mnli=x"]) == 2
    assert "unknown task 'mnli'" in capsys.readouterr().err
    code = cli.main(["distill-bilstm", "--teacher", str(teachers["stsb"]), "--task", "sst2",
                     "--no-augment", "--data-root", str(data_root), "--cache-dir",
                     str(tmp_path / "cache"), *QUICK, "--out", str(tmp_path / "x")])  # fmt: skip
    assert code == 2 and "fine-tuned on sst2" in capsys.readouterr().err


def test_config_file_then_flags(tmp_path):
    from distilkit.cli.bilstm import bilstm_config_from_args

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"teacher": "t", "task": "stsb", "student": {"hidden_size": 9}}))
    args = cli.build_parser(COMMANDS).parse_args(
        ["distill-bilstm", "--config", str(path), "--mlp-size", "13", "--n-iter", "4"]
    )
    config = bilstm_config_from_args(args)
    assert (config.task, config.student.hidden_size, config.student.mlp_size) == ("stsb", 9, 13)
    assert config.augmentation.n_iter == 4 and config.augment
    path.write_text(json.dumps({"teacher": "t", "stray": 1}))
    with pytest.raises(ConfigError, match="stray"):
        bilstm_config_from_args(
            cli.build_parser(COMMANDS).parse_args(["distill-bilstm", "--config", str(path)])
        )


def test_task_files_for_bilstm_and_multi_teacher_students(data_root, teachers, tmp_path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "mine"
    folder.mkdir()
    for split, count in (("train", 30), ("dev", 12)):
        rows = [f"{sentence(rng)},{('negative', 'positive')[int(rng.integers(0, 2))]}"
                for _ in range(count)]  # fmt: skip
        (folder / f"{split}.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    task_file = folder / "reviews.json"
    task_file.write_text(json.dumps({"name": "reviews", "kind": "classification",
                                     "train": "train.csv", "dev": "dev.csv"}))  # fmt: skip
    common = ["--cache-dir", str(tmp_path / "cache"), *SMALL, *QUICK]
    out = tmp_path / "bilstm"
    argv = ["distill-bilstm", "--teacher", str(teachers["sst2-a"]), "--task", str(task_file),
            "--no-augment", *common, "--out", str(out)]  # fmt: skip
    assert run(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_examples"] == 30 and metrics["task"] == str(task_file.resolve())
    from distilkit.tasks.registry import get_task

    examples = get_task(str(task_file)).load("dev")
    texts, labels = [e.text for e in examples], np.array([e.label for e in examples])
    student = load_bilstm(out / "student")
    assert metrics["student"]["dev"]["accuracy"] == pytest.approx(
        float((student.predict_logits(texts).argmax(-1) == labels).mean())
    )
    out = tmp_path / "multi"
    argv = ["distill-multi", "--teacher", f"{task_file}={teachers['sst2-a']}",
            "--teacher", f"{task_file}={teachers['sst2-b']}", "--teacher",
            f"sst2={teachers['sst2-a']}", "--data-root", str(data_root), *common,
            "--out", str(out)]  # fmt: skip
    assert run(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"reviews", "sst2"}  # the task file's name keys it
    assert len(metrics["tasks"]["reviews"]["teachers"]) == 2
    student = load_bilstm(out / "students" / "reviews")
    assert metrics["tasks"]["reviews"]["student"]["dev"]["accuracy"] == pytest.approx(
        float((student.predict_logits(texts).argmax(-1) == labels).mean())
    )


def test_task_files_that_cannot_be_sentence_tasks_are_refused(teachers, tmp_path, capsys):
    (tmp_path / "tags.txt").write_text("the B-X\ncat O\n\n")
    ner = tmp_path / "ner.json"
    ner.write_text(json.dumps({"name": "ner", "kind": "token_classification",
                               "train": "tags.txt", "dev": "tags.txt"}))  # fmt: skip
    code = cli.main(["distill-bilstm", "--teacher", str(teachers["sst2-a"]), "--task", str(ner),
                     "--out", str(tmp_path / "x")])  # fmt: skip
    assert code == 2 and "is a token_classification task" in capsys.readouterr().err
    (tmp_path / "rows.csv").write_text("text,label\nthe cat .,a\none two .,b\n")
    bad_name = tmp_path / "bad.json"
    bad_name.write_text(json.dumps({"name": "my task", "kind": "classification",
                                    "train": "rows.csv", "dev": "rows.csv"}))  # fmt: skip
    code = cli.main(["distill-multi", "--teacher", f"{bad_name}={teachers['sst2-a']}",
                     "--out", str(tmp_path / "y")])  # fmt: skip
    assert code == 2 and "may hold only letters, digits" in capsys.readouterr().err
