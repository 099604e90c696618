"""`distill --matryoshka`: the flag, a tiny run that saves the widths, and truncated vectors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from distill_helpers import random_teacher, tiny_tokenizer, write_text_corpus

import distilkit
from distilkit.cli.distill import add_distill_parser, distill_config_from_args
from distilkit.methods.general.config import DistillConfig
from distilkit.methods.general.job import run_distillation
from distilkit.model.checkpoint import save_model
from distilkit.model.st_folder import SentenceModules
from distilkit.settings import ConfigError

TEXTS = ["the cat sat on the mat.", "hello world", "a dog and a cat", "the mat"]


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer random BERT teacher whose recipe is mean pooling then Normalize."""
    root = tmp_path_factory.mktemp("teacher")
    teacher = random_teacher(num_layers=4, seed=0, head=None)
    teacher.sentence_modules = SentenceModules(stages=["normalize"])
    save_model(teacher, root / "teacher", tokenizer=tiny_tokenizer(root))
    return root / "teacher"


def config_of(*flags: str) -> DistillConfig:
    parser = argparse.ArgumentParser()
    add_distill_parser(parser.add_subparsers())
    return distill_config_from_args(parser.parse_args(["distill", *flags]))


def test_the_flag_sets_the_widths_and_a_weight_unless_one_is_given():
    config = config_of("--matryoshka", "384,256,128,64")
    assert config.objective.matryoshka_dims == [384, 256, 128, 64]
    assert config.objective.weights.matryoshka == 1.0
    assert config.objective.weights.cos == 1.0  # the other losses stay as they were
    weighted = config_of("--matryoshka", "64", "--weights", "cos=1,matryoshka=3")
    assert weighted.objective.weights.matryoshka == 3.0 and weighted.objective.weights.ce == 0
    assert config_of("--matryoshka", "32", "--weights", "cos=1").objective.weights.matryoshka == 1
    assert config_of().objective.matryoshka_dims is None
    with pytest.raises(ConfigError, match="needs both its widths and a weight"):
        config_of("--matryoshka", "64", "--weights", "cos=1,matryoshka=0")
    with pytest.raises(ConfigError, match="distinct widths"):
        config_of("--matryoshka", "64,64")
    for bad in ("64,,32", "0,32", "x"):
        with pytest.raises(SystemExit):
            config_of("--matryoshka", bad)


def test_a_tiny_matryoshka_run_saves_its_widths_and_truncates_renormalised(
    teacher_folder, tmp_path
):
    corpus = write_text_corpus(tmp_path / "text.txt", paragraphs=60)
    config = config_of(
        "--teacher", str(teacher_folder), "--corpus", str(corpus), "--layers", "0,3",
        "--max-len", "24", "--max-steps", "5", "--batch-size", "4", "--matryoshka", "32,16,5",
        "--checkpoint-every", "5", "--eval-every", "5",
    )  # fmt: skip
    metrics = run_distillation(config, tmp_path / "run", evaluate=False)
    assert metrics["training"]["steps"] == 5
    assert set(metrics["training"]["final_losses"]) == {"cos", "matryoshka", "total"}
    records = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").open()]
    assert all(r["loss/matryoshka"] > 0 for r in records if "loss/total" in r)

    student_dir = tmp_path / "run" / "student"
    saved = json.loads((student_dir / "config_sentence_transformers.json").read_text())
    assert saved["matryoshka_dims"] == [32, 16, 5]
    assert "truncate_dim" not in saved  # the whole vector stays the default
    student = distilkit.load(student_dir)
    assert student.sentence.matryoshka_dims == (32, 16, 5)
    full = student.embed(TEXTS, normalize=False)  # (4, 32) raw mean-pooled vectors
    for width in (16, 5):
        cut = student.embed(TEXTS, dimensions=width)
        prefix = full[:, :width] / np.linalg.norm(full[:, :width], axis=1, keepdims=True)
        assert cut.shape == (len(TEXTS), width)
        assert np.abs(cut - prefix).max() <= 1e-6
        assert np.allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-6)
    assert np.abs(student.embed(TEXTS, dimensions=5, normalize=False) - full[:, :5]).max() <= 1e-6
    with pytest.raises(ValueError, match=r"between 1 and 32,.*trained to keep 32, 16, 5"):
        student.embed(TEXTS, dimensions=33)


def test_widths_wider_than_the_student_are_a_clear_error(teacher_folder, tmp_path):
    corpus = write_text_corpus(tmp_path / "text.txt", paragraphs=60)
    config = config_of(
        "--teacher", str(teacher_folder), "--corpus", str(corpus), "--layers", "0,3",
        "--max-len", "24", "--max-steps", "1", "--matryoshka", "48,16",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"matryoshka_dims \[48, 16\] must not exceed"):
        run_distillation(config, tmp_path / "run", evaluate=False)
