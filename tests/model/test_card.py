"""Model cards of saved students: what the job knew, the quality table with retention, and
a user's own README.md never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from distill_helpers import random_teacher, tiny_tokenizer, write_text_corpus
from suite_helpers import write_data_root

import distilkit
from distilkit.methods.general.config import DistillConfig
from distilkit.methods.general.job import init_student, run_distillation
from distilkit.model.card import MARKER
from distilkit.model.checkpoint import save_model
from distilkit.train.trainer import TrainingConfig


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("teacher")
    folder = root / "teacher"
    save_model(random_teacher(num_layers=4, seed=3), folder, tokenizer=tiny_tokenizer(root))
    return folder


def test_the_main_jobs_student_gets_a_card_with_its_table(
    teacher_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("DISTILKIT_DATA", str(write_data_root(tmp_path / "suite-data")))
    corpus = write_text_corpus(tmp_path / "text.txt", paragraphs=80)
    training = TrainingConfig(
        max_steps=3, batch_size=4, eval_every=3, checkpoint_every=3, progress=False
    )
    config = DistillConfig(
        teacher=str(teacher_folder),
        corpus=[str(corpus)],
        num_layers=2,
        strategy="uniform",
        max_len=24,
        heldout_fraction=0.1,
        training=training,
    )
    run_distillation(config, tmp_path / "run", evaluate=True, quick_eval=True)
    card = (tmp_path / "run" / "student" / "README.md").read_text()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    student_row = metrics["rows"][1]
    assert card.startswith("---\nlibrary_name: sentence-transformers") and MARKER in card
    assert f"| {student_row['name']} | 2 |" in card
    assert f"{student_row['stsb_spearman']:.4f}" in card
    retention = metrics["extra"]["comparison"]["stsb_retention_pct"]
    assert f"keeps {retention:.1f}% of the teacher's STS-B Spearman" in card
    assert "| training steps | 3" in card and str(corpus) in card
    assert "SentenceTransformer(" in card and "AutoModel.from_pretrained(" in card
    # the quick dev suite: teacher, the untrained cut the student started from, student
    suite_rows = metrics["suite"]
    assert [row["name"] for row in suite_rows] == ["teacher", "untrained cut 0,3", "student"]
    assert suite_rows[0]["mean_retention"] == pytest.approx(100.0) and suite_rows[0]["quick"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Dev suite: six sentence tasks" in report and "| untrained cut 0,3 |" in report


def test_init_student_writes_a_card_but_keeps_a_users_readme(teacher_folder: Path, tmp_path):
    out = tmp_path / "student"
    init_student(str(teacher_folder), out, num_layers=2, strategy="uniform")
    card = (out / "README.md").read_text()
    assert MARKER in card and "teacher layers it started from | [0, 3]" in card
    (out / "README.md").write_text("# my student\n")
    init_student(str(teacher_folder), out, num_layers=2, strategy="first")
    assert (out / "README.md").read_text() == "# my student\n"
    assert distilkit.load(out).config.num_layers == 2


def test_the_cards_recipe_is_the_folders(teacher_folder: Path, tmp_path: Path):
    st = pytest.importorskip("sentence_transformers")
    out = tmp_path / "student"
    init_student(str(teacher_folder), out, num_layers=2, strategy="uniform")
    assert (
        "| sentence vector | mean pooling, at most 64 tokens |" in (out / "README.md").read_text()
    )
    texts = ["the cat sat on the mat.", "hello world"]
    theirs = st.SentenceTransformer(str(out), device="cpu").encode(texts)
    assert np.abs(distilkit.load(out).embed(texts) - theirs).max() <= 1e-5
