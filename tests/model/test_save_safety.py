"""Saving a model never loses a user's files nor overwrites its source, and what it writes
is readable as a plain write would be (issue 18, defects 1 and 9)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from conftest import randomize_

from distilkit.methods.general.job import init_student
from distilkit.model.checkpoint import CheckpointError, load_model, save_model
from distilkit.model.modeling import TransformerModel


@pytest.fixture
def teacher_folder(tmp_path, tiny_config, tiny_tokenizer) -> Path:
    model = TransformerModel(tiny_config)
    randomize_(model, seed=3)
    return save_model(model, tmp_path / "teacher", tokenizer=tiny_tokenizer)


def add_user_files(folder: Path) -> dict[str, bytes]:
    (folder / "README.md").write_text("# my notes\n")
    (folder / "training_args.json").write_text('{"lr": 1}\n')
    (folder / "eval_results").mkdir()
    (folder / "eval_results" / "dev.txt").write_text("acc 0.9\n")
    return {
        name: (folder / name).read_bytes()
        for name in ("README.md", "training_args.json", "eval_results/dev.txt")
    }


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_model(folder).state_dict()


def test_init_student_into_its_own_teacher_folder_is_refused(teacher_folder):
    """The audit: `init-student own --out own` said "saved" and left only the model files."""
    user = add_user_files(teacher_folder)
    before = weights(teacher_folder)
    with pytest.raises(CheckpointError, match="is the model being read from"):
        init_student(str(teacher_folder), teacher_folder, layers=[0])
    for name, content in user.items():
        assert (teacher_folder / name).read_bytes() == content
    after = weights(teacher_folder)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_saving_over_an_earlier_model_keeps_the_users_files(teacher_folder, tmp_path):
    out = tmp_path / "student"
    init_student(str(teacher_folder), out, layers=[1])
    user = add_user_files(out)
    _, chosen = init_student(str(teacher_folder), out, layers=[0])
    assert chosen == [0]
    for name, content in user.items():
        assert (out / name).read_bytes() == content
    student = weights(out)
    teacher = weights(teacher_folder)
    first_block = [k for k in student if k.startswith("backbone.layers.0.")]
    assert first_block and all(torch.equal(student[k], teacher[k]) for k in first_block)


def test_a_folder_without_a_model_is_never_replaced(teacher_folder, tmp_path, tiny_tokenizer):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="holds no model"):
        save_model(load_model(teacher_folder), notes, tokenizer=tiny_tokenizer)
    assert (notes / "todo.txt").read_text() == "keep me"
    assert sorted(p.name for p in notes.iterdir()) == ["todo.txt"]


def test_saved_files_respect_the_umask(teacher_folder, tmp_path, tiny_tokenizer):
    """The audit found models saved 0600 under umask 022 (mkstemp's mode, renamed into place)."""
    old = os.umask(0o022)
    try:
        folder = save_model(
            load_model(teacher_folder), tmp_path / "shared", tokenizer=tiny_tokenizer
        )
    finally:
        os.umask(old)
    for path in [folder, *folder.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        expected = 0o755 if path.is_dir() else 0o644
        assert mode == expected, f"{path}: {oct(mode)}"


def test_a_save_that_fails_mid_swap_leaves_the_old_folder_and_the_users_files(
    tmp_path, monkeypatch
):
    from distilkit import settings

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("old\n")
    (folder / "notes.txt").write_text("mine\n")
    real_replace = settings.os.replace
    calls = []

    def fail_second(source, target):
        calls.append(source)
        if len(calls) == 2:  # the old folder moved aside, the new one not yet in place
            raise OSError("disk went away")
        return real_replace(source, target)

    monkeypatch.setattr(settings.os, "replace", fail_second)
    with (
        pytest.raises(OSError, match="disk went away"),
        settings.atomic_folder(folder, keep_others=True) as temp,
    ):
        (temp / "config.json").write_text("new\n")
    monkeypatch.undo()
    assert (folder / "config.json").read_text() == "old\n"
    assert (folder / "notes.txt").read_text() == "mine\n"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporaries left


def test_a_save_over_a_folder_keeps_the_users_files_and_links(tmp_path):
    from distilkit import settings

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    (folder / "link").symlink_to(tmp_path)
    with settings.atomic_folder(folder, keep_others=True) as temp:
        (temp / "config.json").write_text("new\n")
    assert (folder / "notes.txt").read_text() == "mine\n"
    assert (folder / "link").is_symlink() and (folder / "config.json").read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
