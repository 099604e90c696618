"""User-defined tasks from a JSON task file: reading, label order, errors, and the whole
fine-tune -> eval -> distill-task path through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from task_helpers import FILLER, THINGS, save_tiny_model, write_squad

from distilkit.cli import main as cli
from distilkit.model.checkpoint import load_model
from distilkit.settings import ConfigError
from distilkit.tasks.features import DataSettings, load_examples
from distilkit.tasks.ner import ConllFormatError
from distilkit.tasks.registry import get_task
from distilkit.tasks.spec import TaskDataError

TRAINING = ["--batch-size", "16", "--lr", "3e-3", "--no-progress", "--max-len", "32"]
# the class of a sentence is the colour word it holds
COLOURS = {"red": "warm", "blue": "cold", "big": "size"}


def colour_rows(count: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        word = list(COLOURS)[index % 3]
        words = [str(w) for w in rng.choice(FILLER + THINGS, size=int(rng.integers(3, 8)))]
        words.insert(int(rng.integers(0, len(words) + 1)), word)
        rows.append((" ".join(words), COLOURS[word]))
    return rows


def write_task(folder: Path, suffix: str = ".csv", **task) -> Path:
    """Train and dev files of the colour task, and a task file naming them."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", 150, 0), ("dev", 45, 1)):
        rows = colour_rows(count, seed)
        path = folder / f"{split}{suffix}"
        if suffix == ".jsonl":
            path.write_text(
                "".join(json.dumps({"sentence": t, "class": c}) + "\n" for t, c in rows)
            )
        else:
            separator = "\t" if suffix == ".tsv" else ","
            lines = [f"sentence{separator}class", *(f"{t}{separator}{c}" for t, c in rows)]
            path.write_text("\n".join(lines) + "\n")
    spec = {
        "name": "colours",
        "kind": "classification",
        "train": f"train{suffix}",
        "dev": f"dev{suffix}",
        "text_column": "sentence",
        "label_column": "class",
        **task,
    }
    (folder / "task.json").write_text(json.dumps(spec))
    return folder / "task.json"


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_a_task_file_reads_tables_with_labels_sorted_or_as_given(tmp_path, suffix):
    task = get_task(str(write_task(tmp_path, suffix)))
    assert task.name == "colours" and task.kind == "classification"
    assert task.label_names == ["cold", "size", "warm"]  # sorted: none was given
    assert task.metric == "accuracy"
    examples = load_examples(task, "dev", DataSettings())
    assert len(examples) == 45
    first_text, first_class = colour_rows(45, 1)[0]
    assert examples[0].text == first_text
    assert examples[0].label == task.label_names.index(first_class)

    ordered = get_task(
        str(write_task(tmp_path / "ordered", suffix, label_names=["warm", "cold", "size"]))
    )
    assert load_examples(ordered, "dev", DataSettings())[0].label == ["warm", "cold", "size"].index(
        first_class
    )


def test_integer_labels_sort_numerically_and_regression_reads_numbers(tmp_path):
    (tmp_path / "train.jsonl").write_text(
        "".join(
            json.dumps({"text": f"t{i}", "label": str(v)}) + "\n"
            for i, v in enumerate([10, 2, 1, 2])
        )
    )
    (tmp_path / "dev.jsonl").write_text(json.dumps({"text": "a", "label": 10}) + "\n")
    spec = {"name": "numbers", "kind": "classification", "train": "train.jsonl", "dev": "dev.jsonl"}
    (tmp_path / "task.json").write_text(json.dumps(spec))
    task = get_task(str(tmp_path / "task.json"))
    assert task.label_names == ["1", "2", "10"]
    assert load_examples(task, "dev")[0].label == 2

    (tmp_path / "reg.json").write_text(json.dumps(spec | {"kind": "regression"}))
    task = get_task(str(tmp_path / "reg.json"))
    assert task.label_names is None and task.metric == "spearman"
    assert [e.label for e in load_examples(task, "train")] == [10.0, 2.0, 1.0, 2.0]


def test_a_token_task_file_reads_word_tag_columns(tmp_path):
    (tmp_path / "train.txt").write_text(
        "-DOCSTART- O\n\nthe O\ncat B-PER\ndog I-PER\nsat O\n\nhouse B-LOC\nis O\n"
    )
    (tmp_path / "dev.txt").write_text("cat B-PER\nhouse B-LOC\n")
    spec = {"name": "ner", "kind": "token_classification", "train": "train.txt", "dev": "dev.txt"}
    (tmp_path / "task.json").write_text(json.dumps(spec))
    task = get_task(str(tmp_path / "task.json"))
    assert task.label_names == ["O", "B-LOC", "B-PER", "I-PER"]
    assert task.metric == "entity_f1"
    train = load_examples(task, "train")
    assert [s.words for s in train] == [["the", "cat", "dog", "sat"], ["house", "is"]]
    assert train[0].tags == ["O", "B-PER", "I-PER", "O"]

    (tmp_path / "bad.txt").write_text("cat PERSON\n")
    (tmp_path / "bad.json").write_text(json.dumps(spec | {"dev": "bad.txt"}))
    with pytest.raises(ConllFormatError, match=r"bad.txt:1: NER tag 'PERSON' is not IOB2"):
        load_examples(get_task(str(tmp_path / "bad.json")), "dev")


def test_task_file_errors_name_the_problem(tmp_path):
    path = write_task(tmp_path)
    spec = json.loads(path.read_text())

    def task_with(**changes) -> str:
        changed = tmp_path / "changed.json"
        changed.write_text(json.dumps(spec | changes))
        return str(changed)

    with pytest.raises(TaskDataError, match=r"unknown task 'sst3'.*JSON task file"):
        get_task("sst3")
    with pytest.raises(TaskDataError, match=r"task file .*missing.json not found"):
        get_task(str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="lable_names"):
        get_task(task_with(lable_names=["a", "b"]))  # misspelt keys are errors
    with pytest.raises(ConfigError, match="kind must be one of"):
        get_task(task_with(kind="classify"))
    with pytest.raises(TaskDataError, match=r"the dev file .*nothere.csv is missing"):
        get_task(task_with(dev="nothere.csv"))
    with pytest.raises(TaskDataError, match=r"no column\(s\) \['label'\].*\['class', 'sentence'\]"):
        get_task(task_with(label_column="label"))
    with pytest.raises(TaskDataError, match=r"dev.csv:2: label '(warm|cold|size)' is not one of"):
        load_examples(get_task(task_with(label_names=["x", "y"])), "dev")
    (tmp_path / "notes.txt").write_text("sentence,class\n")
    with pytest.raises(TaskDataError, match=r"must be one of \('.tsv', '.csv', '.jsonl'\)"):
        get_task(task_with(train="notes.txt"))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(TaskDataError, match="not valid JSON"):
        get_task(str(tmp_path / "broken.json"))


@pytest.mark.parametrize("key", ["dev", "train", "kind", "name"])
def test_a_task_file_missing_a_required_key_names_it(tmp_path, key):
    import dataclasses

    from distilkit.tasks.custom import REQUIRED_KEYS, TaskFile

    required = {f.name for f in dataclasses.fields(TaskFile) if f.default is dataclasses.MISSING}
    assert set(REQUIRED_KEYS) == required
    path = write_task(tmp_path)
    spec = json.loads(path.read_text())
    del spec[key]
    path.write_text(json.dumps(spec))
    with pytest.raises(
        TaskDataError, match=rf'task file .*task.json has no {key} key: add "{key}"'
    ):
        get_task(str(path))


def run(argv: list, capsys) -> tuple[int, str, str]:
    code = cli.main([str(part) for part in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_finetune_eval_and_distill_task_on_a_task_file(tmp_path, capsys):
    task = write_task(tmp_path / "data")
    base = save_tiny_model(tmp_path / "base", num_layers=2)
    teacher_run = tmp_path / "teacher"
    code, _, err = run(
        ["finetune", base, "--task", task, "--epochs", "12", "--out", teacher_run, *TRAINING],
        capsys,
    )
    assert code == 0, err
    teacher = load_model(teacher_run / "model")
    assert teacher.config.label_names == ["cold", "size", "warm"]
    saved = json.loads((teacher_run / "finetune_config.json").read_text())
    assert saved["task"] == str(task.resolve())  # an absolute path: resumable from anywhere

    code, out, err = run(["eval", teacher_run / "model", "--task", task, "--max-len", "32"], capsys)
    assert code == 0, err
    assert out.startswith("colours dev accuracy: ")
    assert float(out.split()[3]) >= 0.9

    code, _, err = run(
        [
            "distill-task", "--teacher", teacher_run / "model", "--task", task,
            "--method", "logits", "--num-layers", "1", "--epochs", "2",
            "--out", tmp_path / "student", *TRAINING,
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    student = load_model(tmp_path / "student" / "student")
    assert student.config.num_layers == 1 and student.config.label_names == ["cold", "size", "warm"]

    # the teacher gate compares label names with the task file's
    reordered = write_task(tmp_path / "reordered", label_names=["warm", "cold", "size"])
    code, _, err = run(
        ["distill-task", "--teacher", teacher_run / "model", "--task", reordered,
         "--out", tmp_path / "refused", *TRAINING],
        capsys,
    )  # fmt: skip
    assert code == 2 and "do not match" in err

    code, _, err = run(["finetune", base, "--task", tmp_path / "none.json"], capsys)
    assert code == 2 and "task file" in err and "not found" in err


def test_a_question_answering_task_file_uses_its_own_train_file(tmp_path):
    write_squad(tmp_path)
    squad = tmp_path / "squad1.1" / "dev-v1.1.json"
    spec = {"name": "qa", "kind": "question_answering", "train": str(squad), "dev": str(squad)}
    (tmp_path / "task.json").write_text(json.dumps(spec))
    task = get_task(str(tmp_path / "task.json"))
    assert task.label_names is None and task.metric == "squad_f1" and task.num_labels == 2
    train = load_examples(task, "train")
    assert len(train) == 80  # the whole file: no article split when a train file is given
    assert train[0].answers and train[0].context
    with pytest.raises(ConfigError, match="has no label_names"):
        (tmp_path / "bad.json").write_text(json.dumps(spec | {"label_names": ["a", "b"]}))
        get_task(str(tmp_path / "bad.json"))
