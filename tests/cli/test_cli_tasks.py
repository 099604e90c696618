"""The task subcommands through ``distilkit.cli.main``: finetune, eval, distill-task,
classify, ner, answer; their options, config files and error messages."""

from __future__ import annotations

import json

import pytest
from task_helpers import save_tiny_model, write_all_tasks

from distilkit.cli import main as cli
from distilkit.cli.tasks import TASK_COMMANDS, distill_task_config_from_args
from distilkit.methods.task.objectives import TaskDistillWeights
from distilkit.settings import ConfigError

TRAINING = ["--batch-size", "16", "--lr", "3e-3", "--no-progress"]


def test_task_commands_are_registered():
    registered = {c.add_parser for c in cli.COMMANDS}
    assert {add_parser for add_parser, _ in TASK_COMMANDS} <= registered


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-tasks")
    data = write_all_tasks(root / "data")
    return {
        "root": root,
        "data": ["--data-root", str(data), "--max-len", "64"],
        "base": save_tiny_model(root / "base", num_layers=2),
    }


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main([str(part) for part in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def fine_tuned(workspace):
    """sst2, conll2003 and squad models fine-tuned through the command line."""
    folders = {}
    for task in ("sst2", "conll2003", "squad"):
        out = workspace["root"] / f"finetune-{task}"
        extra = ["--doc-stride", "16"] if task == "squad" else []
        code = cli.main(
            ["finetune", str(workspace["base"]), "--task", task, "--epochs", "6", "--out", str(out)]
            + workspace["data"]
            + extra
            + TRAINING
        )
        assert code == 0
        folders[task] = out / "model"
    return folders


def test_finetune_then_eval(workspace, fine_tuned, capsys):
    code, out, _ = run(["eval", fine_tuned["sst2"], "--task", "sst2", *workspace["data"]], capsys)
    assert code == 0 and out.startswith("sst2 dev accuracy: 1.0000")
    code, out, _ = run(
        ["eval", fine_tuned["sst2"], "--task", "sst2", "--json", *workspace["data"]], capsys
    )
    assert json.loads(out)["accuracy"] == 1.0
    saved = json.loads((fine_tuned["sst2"].parent / "finetune_config.json").read_text())
    assert saved["epochs"] == 6 and saved["training"]["learning_rate"] == 3e-3
    code, _, err = run(
        ["eval", fine_tuned["sst2"], "--task", "conll2003", *workspace["data"]], capsys
    )
    assert code == 2 and "needs a 'token_classification' head" in err


def test_distill_task_runs_with_a_dry_run(workspace, fine_tuned, tmp_path, capsys):
    argv = ["distill-task", "--teacher", fine_tuned["sst2"], "--task", "sst2", "--method", "pkd"]
    argv += [
        "--num-layers",
        "2",
        "--epochs",
        "2",
        "--out",
        tmp_path / "run",
        *workspace["data"],
        *TRAINING,
    ]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "dry run ok" in out and "teacher dev accuracy: 1.0000" in out
    assert (tmp_path / "run" / "student" / "config.json").is_file()
    saved = json.loads((tmp_path / "run" / "task_distill_config.json").read_text())
    assert saved["method"] == "pkd" and saved["layer_map"] == "skip" and saved["temperature"] == 5.0


def test_distill_task_errors_are_one_clear_line(workspace, fine_tuned, tmp_path, capsys):
    untrained = save_tiny_model(
        tmp_path / "untrained", head="sequence_classification", label_names=["negative", "positive"]
    )
    base = [
        "distill-task",
        "--task",
        "sst2",
        "--num-layers",
        "1",
        "--out",
        tmp_path / "run",
        *workspace["data"],
        *TRAINING,
    ]
    code, _, err = run([*base, "--teacher", untrained], capsys)
    assert code == 2 and "does not look fine-tuned for sst2" in err and "Traceback" not in err
    teacher = ["--teacher", fine_tuned["sst2"]]
    code, _, err = run(
        [*base, *teacher, "--method", "tinybert", "--layer-pairs", "0:0,5:6"], capsys
    )
    assert code == 2 and "student index 5 is out of range" in err
    code, _, err = run([*base, *teacher, "--epochs", "1", "--max-steps", "3"], capsys)
    assert code == 2 and "not both" in err
    code, _, err = run([*base, *teacher, "--eval-every", "3"], capsys)
    assert code == 2 and "--evals-per-epoch" in err
    code, _, err = run([*base, *teacher, "--layer-pairs", "0-0"], capsys)
    assert code == 2 and "student:teacher pairs" in err
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"temprature": 3.0}))
    code, _, err = run([*base, *teacher, "--config", config], capsys)
    assert code == 2 and "unknown option(s) temprature" in err


def test_distill_task_flags_override_the_config_file(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {"teacher": "t", "method": "tinybert", "temperature": 3.0, "data": {"max_len": 50}}
        )
    )
    parser = cli.build_parser([cli.Command(*pair) for pair in TASK_COMMANDS])
    args = parser.parse_args(
        [
            "distill-task",
            "--config",
            str(config),
            "--temperature",
            "2",
            "--weights",
            "logits=1,hard=0.5",
            "--max-steps",
            "7",
            "--eval-limit",
            "9",
        ]
    )
    built = distill_task_config_from_args(args)
    assert built.temperature == 2.0 and built.method == "custom" and built.epochs is None
    assert built.stages[0].weights == TaskDistillWeights(logits=1, hard=0.5)
    assert built.data.max_len == 50 and built.data.eval_limit == 9 and built.training.max_steps == 7
    with pytest.raises(SystemExit):
        parser.parse_args(["distill-task", "--weights", "logit=1"])


def test_classify_ner_answer(fine_tuned, tmp_path, capsys):
    code, out, _ = run(["classify", fine_tuned["sst2"], "the red cat", "blue is it"], capsys)
    assert code == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == ["positive", "negative"]
    texts = tmp_path / "texts.txt"
    texts.write_text("a red dog\nthe blue mat\n")
    code, out, _ = run(["classify", fine_tuned["sst2"], "--input", texts, "--json"], capsys)
    assert [json.loads(line)["label"] for line in out.splitlines()] == ["positive", "negative"]
    code, out, _ = run(["ner", fine_tuned["conll2003"], "the cat sat in the house"], capsys)
    rows = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and [(r[0], r[1], r[3]) for r in rows] == [
        ("PER", "4-7", "cat"),
        ("LOC", "19-24", "house"),
    ]
    code, out, _ = run(
        [
            "answer",
            fine_tuned["squad"],
            "--question",
            "what is big?",
            "--context",
            "it was the big dog on the mat.",
            "--json",
        ],
        capsys,
    )
    assert code == 0 and json.loads(out)["answer"] == "dog"
    code, _, err = run(["answer", fine_tuned["squad"], "--question", "what?"], capsys)
    assert code == 2 and "exactly one of --context and --context-file" in err
    code, _, err = run(["classify", fine_tuned["sst2"]], capsys)
    assert code == 2 and "give texts" in err
    code, out, _ = run(
        ["classify", fine_tuned["sst2"], "the red cat", "blue is it", "--dtype", "int8"], capsys
    )
    assert code == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == ["positive", "negative"]
    code, _, err = run(["classify", "model.onnx", "a text", "--dtype", "int8"], capsys)
    assert code == 2 and "applies to transformer checkpoints" in err


def test_classify_and_answer_read_files_like_the_other_commands(hf_checkpoint, tmp_path, capsys):
    """--input goes through cli.read_texts (file named in errors, tables with a header and
    --column); --context-file errors name the file."""
    model = hf_checkpoint("BertForSequenceClassification")
    binary = tmp_path / "bad.txt"
    binary.write_bytes(b"the cat\n\xd0\x00\xff\xfe binary\n")
    code, _, err = run(["classify", model, "--input", binary], capsys)
    assert code == 2 and "bad.txt is not UTF-8 text" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run(["classify", model, "--input", empty], capsys)
    assert code == 2 and "empty.txt holds no texts" in err and "give texts" not in err
    table = tmp_path / "good.tsv"
    table.write_text("text\tlabel\nhello world\tpos\nbad day\tneg\n")
    code, _, err = run(["classify", model, "--input", table], capsys)
    assert code == 2 and "--column NAME" in err
    code, out, _ = run(["classify", model, "--input", table, "--column", "text"], capsys)
    assert code == 0 and [line.split("\t")[-1] for line in out.splitlines()] == [
        "hello world",
        "bad day",
    ]
    lines = tmp_path / "texts.txt"
    lines.write_text("text\nthe red cat\n")  # a plain file has no header
    code, out, _ = run(["classify", model, "--input", lines], capsys)
    assert code == 0 and [line.split("\t")[-1] for line in out.splitlines()] == [
        "text",
        "the red cat",
    ]
    code, _, err = run(["classify", model, "a text", "--column", "text"], capsys)
    assert code == 2 and "give --input" in err
    code, _, err = run(["answer", "unused", "--question", "q?", "--context-file", binary], capsys)
    assert code == 2 and "--context-file" in err and "bad.txt is not UTF-8 text" in err
    missing = tmp_path / "nope.txt"
    code, _, err = run(["answer", "unused", "--question", "q?", "--context-file", missing], capsys)
    assert code == 2 and "nope.txt not found" in err


def test_a_negative_seed_is_an_error_naming_the_option(workspace, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["finetune", workspace["base"], "--task", "sst2", "--out", out]
    code, _, err = run([*base, "--seed", "-1"], capsys)
    assert code == 2 and "--seed must be an integer from 0 to 4294967295, got -1" in err
    config = tmp_path / "finetune_config.json"
    config.write_text(json.dumps({"training": {"seed": -3}}))
    code, _, err = run([*base, "--config", config], capsys)
    assert code == 2 and f"training.seed in {config} must be an integer" in err
    code, _, err = run(
        ["distill-task", "--teacher", "t", "--task", "sst2", "--seed", str(2**32), "--out", out],
        capsys,
    )
    assert code == 2 and "--seed must be an integer from 0 to" in err
    assert not out.exists()


def test_distill_task_augment_flags(tmp_path):
    parser = cli.build_parser([cli.Command(*pair) for pair in TASK_COMMANDS])
    base = ["distill-task", "--teacher", "t", "--task", "stsb"]
    assert not distill_task_config_from_args(parser.parse_args(base)).augment
    built = distill_task_config_from_args(parser.parse_args([*base, "--augment"]))
    assert built.augment and built.augmentation is None
    assert built.resolved().augmentation.n_iter == 10
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"augment": True, "augmentation": {"n_iter": 7, "p_ng": 0.5}}))
    built = distill_task_config_from_args(
        parser.parse_args([*base, "--config", str(config), "--augment-copies", "3"])
    )
    assert built.augment and (built.augmentation.n_iter, built.augmentation.p_ng) == (3, 0.5)
    with pytest.raises(ConfigError, match="only with --augment"):
        distill_task_config_from_args(parser.parse_args([*base, "--augment-copies", "3"]))
    with pytest.raises(ConfigError, match="hard_weight=0"):
        distill_task_config_from_args(parser.parse_args([*base, "--augment", "--method", "pkd"]))
