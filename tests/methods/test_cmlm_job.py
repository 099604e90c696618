"""C-MLM end to end on a toy copy task, the data readers, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from cmlm_helpers import tiny_mlm_teacher, toy_pairs

from distilkit.cli.main import main
from distilkit.methods.cmlm.data import (
    answer_sentence,
    load_generation_task_file,
    squad_question_generation,
)
from distilkit.methods.cmlm.job import CMLMConfig, generate, run
from distilkit.methods.cmlm.seq2seq import beam_search, greedy_decode, load_seq2seq
from distilkit.settings import ConfigError


def _task_file(folder, train=600, dev=40, task="copy"):
    folder.mkdir(parents=True, exist_ok=True)
    for name, count, seed in (("train", train, 0), ("dev", dev, 1)):
        rows = "".join(f"{s}\t{t}\n" for s, t in toy_pairs(count, seed, task))
        (folder / f"{name}.tsv").write_text("source\ttarget\n" + rows, encoding="utf-8")
    task = {"name": "reverse", "kind": "generation", "train": "train.tsv", "dev": "dev.tsv"}
    (folder / "task.json").write_text(json.dumps(task), encoding="utf-8")
    return folder / "task.json"


def _config(teacher, task, tmp_path, alpha: float) -> CMLMConfig:
    return CMLMConfig(
        teacher=str(teacher), task=str(task), alpha=alpha, top_k=4,
        max_train_pairs=None, max_eval_pairs=None, teacher_dir=str(tmp_path / "teacher"),
        teacher_train_layers=3, teacher_train_embeddings=True,
        teacher_training={"max_steps": 150, "batch_size": 32, "learning_rate": 3e-3,
                          "progress": False, "eval_every": 100, "checkpoint_every": 100},
        student={"encoder_layers": 2, "decoder_layers": 2, "decoder_heads": 4,
                 "decoder_intermediate_size": 64, "dropout": 0.0, "copy_source": False},
        training={"max_steps": 400, "batch_size": 32, "learning_rate": 3e-3, "seed": 3,
                  "progress": False, "eval_every": 1000, "checkpoint_every": 1000},
        beam_size=2, max_decode_length=8,
    )  # fmt: skip


def test_toy_copy_is_learned_end_to_end(tmp_path, tiny_tokenizer):
    teacher = tiny_mlm_teacher(tmp_path / "mlm", tiny_tokenizer)
    task = _task_file(tmp_path / "data")
    metrics = run(_config(teacher, task, tmp_path, alpha=0.3), tmp_path / "run")
    assert metrics["exact_match"] >= 90.0, metrics
    assert metrics["bleu"] >= 90.0 and metrics["rouge_l"] >= 95.0
    assert 0 < metrics["teacher"]["after"]["cmlm_accuracy"] <= 1
    student = load_seq2seq(tmp_path / "run" / "student")
    sources = [s for s, _ in toy_pairs(5, 1)]
    outputs = generate(tmp_path / "run" / "student", sources, beam_size=2, max_length=8)
    assert sum(o.split() == s.split() for o, s in zip(outputs, sources, strict=True)) >= 4
    # a trained model ends its outputs at varied lengths: greedy equals beam of one
    rows = [[2, *ids, 3] for ids in tiny_tokenizer.encode_ids(sources)]
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
    mask = (ids != 0).long()
    lengths = {len(tokens) for tokens in greedy_decode(student, ids, mask, 8)}
    assert len(lengths) > 1 and max(lengths) < 8  # ended by end-of-sequence, at varied lengths
    assert greedy_decode(student, ids, mask, 8) == beam_search(student, ids, mask, 8, 1, 1.0)
    # the CLI generates from a file, one output per line
    (tmp_path / "in.txt").write_text("\n".join(sources) + "\n", encoding="utf-8")
    assert main(["generate", str(tmp_path / "run" / "student"), "--input",
                 str(tmp_path / "in.txt"), "--beam-size", "2"]) == 0  # fmt: skip


def test_a_copying_student_learns_the_toy_copy(tmp_path, tiny_tokenizer):
    """The pointer-generator student (alpha 0: no teacher needed) learns the task too, and
    its saved folder decodes with copying switched on."""
    task = _task_file(tmp_path / "data")
    teacher = tiny_mlm_teacher(tmp_path / "mlm", tiny_tokenizer)  # its encoder starts the student
    config = _config(teacher, task, tmp_path, alpha=0.0)
    config.student.copy_source = True
    metrics = run(config, tmp_path / "run")
    assert metrics["exact_match"] >= 90.0, metrics
    student = load_seq2seq(tmp_path / "run" / "student")
    assert student.copy_head is not None and student.config.copy_source
    sources = [s for s, _ in toy_pairs(5, 1, "copy")]
    outputs = generate(tmp_path / "run" / "student", sources, beam_size=2, max_length=8)
    assert sum(o.split() == s.split() for o, s in zip(outputs, sources, strict=True)) >= 4


def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path, tiny_tokenizer):
    teacher = tiny_mlm_teacher(tmp_path / "mlm", tiny_tokenizer)
    config = _config(teacher, _task_file(tmp_path / "data", train=40, dev=4), tmp_path, 0.0)
    config.training.max_steps, config.training.checkpoint_every = 4, 2
    run(config, tmp_path / "run")
    before = (tmp_path / "run" / "run_config.json").read_text()
    config.student.copy_source = True
    with pytest.raises(ConfigError, match=r"copy_source=false.*--no-copy-source"):
        run(config, tmp_path / "run")
    assert (tmp_path / "run" / "run_config.json").read_text() == before
    assert (tmp_path / "run" / "checkpoints" / "latest").exists()


def test_cli_copy_source_flag_reaches_the_student_config():
    from distilkit.cli.main import build_parser
    from distilkit.cli.tasks import distill_cmlm_config_from_args

    parser = build_parser()
    on = distill_cmlm_config_from_args(parser.parse_args(["distill-cmlm"]))
    off = distill_cmlm_config_from_args(parser.parse_args(["distill-cmlm", "--no-copy-source"]))
    assert on.student.copy_source and not off.student.copy_source


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["distill-cmlm", "--task", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown generation task 'nope'" in capsys.readouterr().err
    assert main(["distill-cmlm", "--alpha", "1.5", "--out", str(tmp_path / "y")]) == 2
    assert "alpha" in capsys.readouterr().err
    assert main(["generate", str(tmp_path), "hello"]) == 2
    assert "not a seq2seq student" in capsys.readouterr().err


def test_task_file_rejects_unknown_keys_and_missing_columns(tmp_path):
    task = _task_file(tmp_path / "data", train=3, dev=2)
    data = load_generation_task_file(task)
    assert len(data.train_sources) == 3 and len(data.eval_targets) == 2
    raw = json.loads(task.read_text())
    (tmp_path / "data" / "bad.json").write_text(json.dumps({**raw, "text_column": "x"}))
    with pytest.raises(ValueError, match="unknown option"):
        load_generation_task_file(tmp_path / "data" / "bad.json")
    (tmp_path / "data" / "cols.json").write_text(json.dumps({**raw, "target_column": "q"}))
    with pytest.raises(ValueError, match="no column 'q'"):
        load_generation_task_file(tmp_path / "data" / "cols.json")


def test_answer_sentence_marks_the_answer_in_its_sentence():
    context = "First one here. The cat sat on the mat. Last one."
    start = context.index("the mat")
    assert answer_sentence(context, start, "the mat") == "The cat sat on « the mat »."


def test_squad_split_is_by_article():
    try:
        data = squad_question_generation(heldout_articles=8, seed=0)
    except ValueError:
        pytest.skip("SQuAD v1.1 dev is not in the shared data folder")
    assert len(data.train_sources) + len(data.eval_sources) == 10_570
    assert not set(data.train_sources) & set(data.eval_sources)
    assert all("«" in s and "»" in s for s in data.eval_sources[:100])
