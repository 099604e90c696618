"""The dev suite in the main job: the suite-row cache and the deadline's plan of the suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from distill_helpers import random_teacher, tiny_tokenizer
from suite_helpers import write_data_root

import distilkit
from distilkit.evaluate import suite_cache
from distilkit.evaluate.sentence import EvaluationDataError
from distilkit.methods.general import dev_suite as plan_module
from distilkit.methods.general.dev_suite import dev_suite, plan_suite
from distilkit.model.checkpoint import save_model


@pytest.fixture
def teacher(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("suite_teacher")
    save_model(random_teacher(num_layers=3, seed=1), root / "t", tokenizer=tiny_tokenizer(root))
    return distilkit.load(root / "t", head=None)


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny SICK / TREC / MRPC root and an empty suite cache of this test's own."""
    monkeypatch.setenv("DISTILKIT_SUITE_CACHE", str(tmp_path / "cache"))
    root = write_data_root(tmp_path / "data")
    monkeypatch.setenv("DISTILKIT_DATA", str(root))
    return root


def test_a_cached_row_is_the_scored_row_and_any_change_of_model_misses(teacher, data):
    scored = suite_cache.score_row("teacher", teacher, rate=123.0)
    assert not scored.cached and scored.seconds > 0 and scored.rate == 123.0
    again = suite_cache.score_row("renamed", teacher)
    assert again.cached and again.row["name"] == "renamed"
    assert again.row["scores"] == scored.row["scores"] and again.rate == 123.0
    (entry,) = list(Path(suite_cache.suite_cache_dir()).glob("*.json"))
    assert json.loads(entry.read_text())["key"] == suite_cache.suite_key(teacher, quick=True)
    # one weight changed: another key, scored again
    with torch.no_grad():
        next(teacher.model.parameters()).view(-1)[0] += 1.0
    assert suite_cache.cached_row("teacher", teacher) is None
    assert not suite_cache.score_row("teacher", teacher).cached
    # a torn entry is scored again and replaced, never an error
    entry.write_text("{not json")
    with torch.no_grad():
        next(teacher.model.parameters()).view(-1)[0] -= 1.0
    assert suite_cache.cached_row("teacher", teacher) is None
    assert suite_cache.score_row("teacher", teacher).row["scores"] == scored.row["scores"]
    assert suite_cache.cached_row("teacher", teacher).cached
    # cache off: scored, nothing written
    before = sorted(p.name for p in Path(suite_cache.suite_cache_dir()).iterdir())
    assert not suite_cache.score_row("teacher", teacher, cache=False).cached
    assert sorted(p.name for p in Path(suite_cache.suite_cache_dir()).iterdir()) == before


def test_the_key_covers_the_data_files(teacher, data):
    key = suite_cache.suite_key(teacher, quick=True)
    trec = data / "trec" / "train_5500.label"
    trec.write_bytes(trec.read_bytes() + b"NUM:count How many legs has a spider ?\n")
    assert suite_cache.suite_key(teacher, quick=True) != key
    assert suite_cache.suite_key(teacher, quick=False) != suite_cache.suite_key(teacher, True)


def test_rows_scored_before_training_equal_rows_scored_after(teacher, data):
    student = distilkit.load(teacher.folder, head=None)
    with torch.no_grad():  # a "trained" student: not the cut
        for parameter in student.model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    encoders = {"teacher": teacher, "student": student}
    plan = plan_suite(teacher, [0, 2], rate=100.0, student_share=0.75, seconds_left=1e9)
    assert plan.note is None and plan.references.cached == []
    names = [row["name"] for row in plan.references.rows]
    assert names == ["teacher", "untrained cut 0,2"]
    assert plan.references.student_seconds > 0  # measured on the cut, just now
    ahead = dev_suite(encoders, [0, 2], plan.references)
    after = dev_suite(encoders, [0, 2], cache=False)  # everything scored at the end
    assert [row["name"] for row in ahead] == ["teacher", "untrained cut 0,2", "student"]
    for early, late in zip(ahead, after, strict=True):
        assert early["scores"] == pytest.approx(late["scores"], abs=1e-9)
        assert early["mean_retention"] == pytest.approx(late["mean_retention"], abs=1e-9)
    assert ahead[2]["scores"] != ahead[1]["scores"]  # the student is scored, not copied
    # the next job reads both rows from the cache and scales the cut's time to the speed now
    again = plan_suite(teacher, [0, 2], rate=50.0, student_share=0.75, seconds_left=1e9)
    assert again.references.cached == ["teacher", "untrained cut 0,2"]
    assert again.references.rows == plan.references.rows
    assert again.references.student_seconds == pytest.approx(
        plan.references.student_seconds * 100.0 / 50.0
    )


def test_a_suite_that_cannot_fit_is_left_out_with_a_note(teacher, data, monkeypatch):
    sentences = plan_module.suite.suite_sentences(quick=True)
    # uncached: teacher + cut now, student later, each SUITE_PROBE_FACTOR x its embedding
    need = plan_module.SUITE_PROBE_FACTOR * sentences * (1 + 0.5 + 0.5) / 100.0
    tight = plan_suite(teacher, [0, 2], rate=100.0, student_share=0.5, seconds_left=need * 0.99)
    assert tight.references is None
    assert "dev suite left out to keep the job's deadline" in tight.note
    assert "`distilkit compare TEACHER STUDENT --cut 0,2`" in tight.note
    named = plan_suite(
        teacher, [0, 2], 100.0, 0.5, seconds_left=0.0, models_named="all-MiniLM-L6-v2 run/student"
    )
    assert "`distilkit compare all-MiniLM-L6-v2 run/student --cut 0,2`" in named.note
    assert list(Path(suite_cache.suite_cache_dir()).glob("*.json")) == []  # nothing scored
    roomy = plan_suite(teacher, [0, 2], rate=100.0, student_share=0.5, seconds_left=need * 1.01)
    assert roomy.references is not None
    # no suite files: a note, no rows, no error
    monkeypatch.setenv("DISTILKIT_DATA", str(data.parent / "nowhere"))
    absent = plan_suite(teacher, [0, 2], rate=100.0, student_share=0.5, seconds_left=1e9)
    assert absent.references is None and absent.note.startswith("no dev suite")
    with pytest.raises(EvaluationDataError):
        suite_cache.score_row("teacher", teacher)
    assert dev_suite({"teacher": teacher, "student": teacher}, [0, 2]) is None
