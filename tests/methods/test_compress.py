"""``distilkit compress`` on a tiny random teacher (4 layers, hidden 32, vocab 99): the rule,
the budget, the report, resumption and bad input."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_png
from distill_helpers import random_teacher, tiny_tokenizer, write_text_corpus
from suite_helpers import write_data_root

import distilkit
from distilkit.cli.main import main
from distilkit.evaluate.frontier import frontier_points
from distilkit.methods import compress, static
from distilkit.methods.compress import candidates, job, timing
from distilkit.methods.compress.budget import CostModel, training_share
from distilkit.methods.compress.scoring import (
    OutOfTime,
    agreement,
    embed_until,
    pick,
    same_function,
)
from distilkit.model.checkpoint import save_model
from distilkit.settings import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore:.*were longer than")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compress")
    teacher = root / "teacher"
    save_model(
        random_teacher(num_layers=4, seed=0, head=None), teacher, tokenizer=tiny_tokenizer(root)
    )
    return {
        "teacher": teacher,
        "corpus": write_text_corpus(root / "corpus.txt", paragraphs=700),
        "data": write_data_root(root / "data"),
    }


def tiny_config(setup: dict[str, Path], **overrides) -> compress.Config:
    settings = {
        "teacher": str(setup["teacher"]),
        "corpus": [str(setup["corpus"])],
        "data_root": str(setup["data"]),
        "time_budget": 60.0,
        "static_dims": [16, 7],
        "student_layers": [1],
        "forms": ["fp32", "int8"],  # ONNX export takes tens of seconds: the slow test has it
        "heldout_lines": 40,
        "timing_lines": 32,
        "timing_repeats": 2,
        "max_training_seconds": 3.0,
        "min_training_seconds": 1.0,
        **overrides,
    }
    return compress.Config(**settings)


@pytest.fixture(scope="module")
def finished(setup, tmp_path_factory) -> tuple[dict, float, Path]:
    """One whole search: its results, wall-clock seconds and folder."""
    out = tmp_path_factory.mktemp("run") / "out"
    started = time.perf_counter()
    # a budget that fits everything even on a busy machine (the tight test binds it)
    result = compress.run(tiny_config(setup, time_budget=300.0), out)
    return result, time.perf_counter() - started, out


# --------------------------------------------------------------------------- the rule
def row(name: str, retention: float, speed: float) -> dict:
    return {"name": name, "mean_retention": retention, "sentences_per_s": speed}


def test_the_rule_picks_the_fastest_form_that_keeps_the_target():
    rows = [
        row("slow and good", 99.0, 100.0),
        row("fast and good enough", 97.0, 900.0),  # exactly the target keeps it
        row("fastest but poor", 96.99, 5000.0),
        row("good enough but slower", 98.0, 800.0),
    ]
    picked, kept = pick(rows, keep=0.97)
    assert picked["name"] == "fast and good enough" and kept
    tie = [row("a", 97.5, 900.0), row("b", 98.5, 900.0)]
    assert pick(tie, keep=0.97)[0]["name"] == "b"  # equal speed: the better one


def test_when_no_form_keeps_the_target_the_best_quality_one_is_picked():
    rows = [row("fast", 80.0, 5000.0), row("best", 95.0, 100.0), row("same best", 95.0, 300.0)]
    picked, kept = pick(rows, keep=0.97)
    assert picked["name"] == "same best" and not kept  # equal quality: the faster one
    assert pick([], keep=0.97) == (None, False)
    assert pick([row("untimed", 99.0, None)], keep=0.5) == (None, False)


def test_keep_of_one_needs_the_whole_teacher_score():
    rows = [row("99.99", 99.99, 1000.0), row("100", 100.0, 10.0)]
    assert pick(rows, keep=1.0)[0]["name"] == "100"


def test_the_pareto_front_holds_the_points_nothing_beats_on_both():
    points = [
        {"name": "a", "sentences_per_s": 10.0, "quality": 100.0},
        {"name": "b", "sentences_per_s": 50.0, "quality": 90.0},
        {"name": "dominated", "sentences_per_s": 40.0, "quality": 85.0},
        {"name": "c", "sentences_per_s": 500.0, "quality": 70.0},
        {"name": "equal to b", "sentences_per_s": 50.0, "quality": 90.0},
    ]
    names = [p["name"] for p in frontier_points(points)]
    assert names == ["c", "b", "equal to b", "a"]


# --------------------------------------------------------------------------- scoring pieces
def test_agreement_against_its_formula():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(9, 5))
    student = teacher + 0.3 * rng.normal(size=(9, 5))
    found = agreement(student, teacher)
    by_hand = np.mean(
        [
            a @ b / np.linalg.norm(a) / np.linalg.norm(b)
            for a, b in zip(student, teacher, strict=True)
        ]
    )
    assert found["cosine"] == pytest.approx(by_hand, abs=1e-9)

    def pair_cosines(vectors):
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return [unit[i] @ unit[j] for i in range(9) for j in range(i + 1, 9)]

    stats = pytest.importorskip("scipy.stats")
    expected = 100 * stats.spearmanr(pair_cosines(student), pair_cosines(teacher)).statistic
    assert found["similarity_spearman"] == pytest.approx(expected, abs=1e-9)
    narrower = agreement(student[:, :3], teacher)  # other width: no cosine, still a ranking
    assert narrower["cosine"] is None and -100 <= narrower["similarity_spearman"] <= 100
    assert same_function(teacher, teacher * 2.0) and not same_function(student, teacher)


def test_embedding_stops_at_its_time_limit():
    def embed(texts):
        return np.array([[len(text), 1.0] for text in texts])

    texts = [f"text {'x' * i}" for i in range(2500)]
    np.testing.assert_array_equal(embed_until(embed, texts, None, chunk=1000), embed(texts))
    with pytest.raises(OutOfTime, match="after 0 of 2,500"):
        embed_until(embed, texts, time.perf_counter() - 1.0, chunk=1000)
    calls = []

    def slow(texts):
        calls.append(len(texts))
        time.sleep(0.2)
        return embed(texts)

    with pytest.raises(OutOfTime, match="after 1,000 of 2,500"):
        embed_until(slow, texts, time.perf_counter() + 0.1, chunk=1000)
    assert calls == [1000]  # the chunk under way finishes; no other starts


def test_a_training_share_is_what_is_left_shared_and_capped():
    assert training_share(100.0, 40.0, 3, None, 1.0) == pytest.approx(20.0)
    assert training_share(100.0, 40.0, 3, 5.0, 1.0) == 5.0
    assert training_share(100.0, 98.0, 3, None, 1.0) is None  # under the floor
    costs = CostModel(0.01, 6, 1000, 100, 50, 3)
    assert costs.scale == 1.0
    costs.record(10.0, 20.0)
    costs.record(30.0, 40.0)
    assert costs.scale == pytest.approx(1.5) and costs.scaled(2.0) == pytest.approx(3.0)
    assert costs.relative("layers", 3, "fp32") == pytest.approx(4 / 7)


def test_a_narrower_static_student_equals_one_built_at_that_width(setup, tmp_path):
    config = tiny_config(setup)
    wide, narrow = candidates.CandidateSpec("static", 16), candidates.CandidateSpec("static", 7)
    candidates.build_static(wide, None, config, tmp_path / "wide")
    candidates.build_static(narrow, tmp_path / "wide", config, tmp_path / "derived")
    static.run(static.Config(teacher=config.teacher, dims=7, evaluate=False), tmp_path / "built")
    texts = ["the cat sat on the mat.", "hello world", "a big red dog ran"]
    derived = distilkit.load(tmp_path / "derived").embed(texts)
    built = distilkit.load(tmp_path / "built").embed(texts)
    np.testing.assert_allclose(derived, built, atol=1e-5)


# --------------------------------------------------------------------------- a whole search
def test_a_search_ends_within_its_budget_and_picks_by_the_rule(finished):
    result, seconds, _ = finished
    assert seconds <= 300.0
    rows = result["rows"]
    assert rows[0]["name"] == "teacher / fp32" and rows[0]["x_teacher"] == 1.0
    names = {r["name"] for r in rows}
    assert {"static-16 / numpy", "static-7 / numpy", "student-1L / fp32"} <= names
    assert "student-1L / int8" in names
    # nothing skipped; the only note allowed is an int8 form that reused its fp32 scores
    # because their vectors agree (the 1-layer student trains for seconds, so whether
    # int8 moves its vectors past the reuse threshold varies from run to run)
    assert all("so it was not rescored" in note for note in result["notes"]), result["notes"]
    students = rows[1:]
    for r in students:
        expected = np.mean([r["retention"][task] for task in r["retention"]])
        assert r["mean_retention"] == pytest.approx(expected)
        assert r["retention"]["STS-B"] == pytest.approx(
            100 * r["scores"]["STS-B"] / rows[0]["scores"]["STS-B"]
        )
    keeping = [r for r in students if r["mean_retention"] >= 97.0]
    expected = (  # the rule with its tie-breaks: an int8 form that reused its fp32 scores
        max(keeping, key=lambda r: (r["sentences_per_s"], r["mean_retention"]))
        if keeping  # ties the fp32 form on retention, and the faster of the two is picked
        else max(students, key=lambda r: (r["mean_retention"], r["sentences_per_s"]))
    )
    assert result["picked"]["name"] == expected["name"] and result["kept"] == bool(keeping)
    static_row = next(r for r in rows if r["name"] == "static-7 / numpy")
    assert static_row["agreement_cosine"] is None  # 7 dims against the teacher's 32
    picked = distilkit.load(result["saved"])  # a static or transformer folder here
    dims = {"static-16": 16, "static-7": 7, "student-1L": 32}[result["picked"]["candidate"]]
    assert picked.embed(["the cat"]).shape == (1, dims)


def test_the_report_and_plot_are_well_formed(finished):
    result, _, out = finished
    report = (out / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| candidate | form | STS-B |")
    assert len(table) == 1 + len(result["rows"])  # header and one line per row
    for r in result["rows"]:
        assert f"| {r['candidate']} | {r['form']}" in report
        assert f"{r['mean_retention']:.2f}" in report
    assert sum(" * |" in line for line in table) == 1  # the picked form is marked once
    assert "Rule: the fastest form" in report and "![frontier](frontier.png)" in report
    image = read_png(out / "frontier.png")
    assert image.shape[0] > 400 and image.shape[1] > 600
    saved = json.loads((out / "results.json").read_text())
    assert saved["picked"]["name"] == result["picked"]["name"]
    assert json.loads((out / "compress_config.json").read_text())["keep"] == 0.97


def test_a_finished_search_run_again_redoes_nothing(finished, setup, monkeypatch):
    result, _, out = finished

    def refuse(*args, **kwargs):
        raise AssertionError("redone")

    for name in ("build_static", "build_trained"):
        monkeypatch.setattr(candidates, name, refuse)
    monkeypatch.setattr(job, "score_on_suite", refuse)
    monkeypatch.setattr(job, "time_forms", refuse)
    again = compress.run(tiny_config(setup, time_budget=30.0), out)  # the budget may change
    assert [r["mean_retention"] for r in again["rows"]] == [
        r["mean_retention"] for r in result["rows"]
    ]
    assert again["picked"]["name"] == result["picked"]["name"]


def test_retime_times_every_form_again_and_picks_again_rebuilding_nothing(
    finished, setup, tmp_path, monkeypatch
):
    result, _, original = finished
    out = tmp_path / "copy"
    shutil.copytree(original, out)
    before = json.loads((out / "state.json").read_text())["timing"]

    def refuse(*args, **kwargs):
        raise AssertionError("redone")

    for name in ("build_static", "build_trained"):
        monkeypatch.setattr(candidates, name, refuse)
    monkeypatch.setattr(job, "score_on_suite", refuse)
    timed = []

    def reversed_speeds(request, request_path, timeout):  # the slowest before is fastest now
        embedders = ["teacher", *(name for name, _, _ in request["forms"])]
        timed.append(embedders)
        order = sorted(embedders, key=lambda n: before["sentences_per_s"][n])
        speeds = {
            n: {"sentences_per_s": 10.0 * (len(order) - i), "load_average_1min": 0.5}
            for i, n in enumerate(order)
        }
        return speeds, None

    monkeypatch.setattr(job, "time_forms", reversed_speeds)
    again = compress.run(tiny_config(setup), out, retime=True)
    assert len(timed) == 1 and set(timed[0]) == set(before["sentences_per_s"])
    rows = [r for r in again["rows"] if r["kind"] != "teacher"]
    assert [r["mean_retention"] for r in again["rows"]] == [
        r["mean_retention"] for r in result["rows"]
    ]
    expected, kept = pick(rows, 0.97)
    assert again["picked"]["name"] == expected["name"] and again["kept"] == kept
    teacher_speed = again["rows"][0]["sentences_per_s"]
    for r in rows:
        assert r["x_teacher"] == pytest.approx(r["sentences_per_s"] / teacher_speed)
    log = [json.loads(line) for line in (out / "compress_log.jsonl").read_text().splitlines()]
    replaced = [e for e in log if e["event"] == "timing replaced"]
    assert len(replaced) == 1 and replaced[0]["timing"] == before
    assert any("--retime" in note for note in again["notes"])
    assert (out / "picked").is_dir()


def test_the_forms_are_timed_in_a_fresh_process_and_here_when_it_fails(
    finished, tmp_path, monkeypatch
):
    result, _, out = finished
    state = json.loads((out / "state.json").read_text())
    assert state["timing"]["fresh_process"] is True  # the whole search above timed there
    rows = [r for r in result["rows"] if r["kind"] != "teacher"]
    request = {
        "teacher": result["config"]["teacher"],
        "forms": [[r["name"], r["model_folder"], r["form"]] for r in rows],
        "lines": ["the book was read", "a", "this is that; it was read."] * 4,
        "batch_size": 4,
        "repeats": 1,
    }
    names = {"teacher", *(r["name"] for r in rows)}
    here = timing.time_here

    def not_here(request):
        raise AssertionError("timed in the calling process")

    monkeypatch.setattr(timing, "time_here", not_here)
    results, fallback = timing.time_forms(request, tmp_path / "request.json", timeout=300)
    assert fallback is None and set(results) == names
    assert all(row["sentences_per_s"] > 0 for row in results.values())

    monkeypatch.setattr(timing, "time_here", here)
    monkeypatch.setattr(timing.sys, "executable", "/bin/false")  # a worker that fails
    results, fallback = timing.time_forms(request, tmp_path / "request.json", timeout=300)
    assert fallback.startswith("the timing process failed") and set(results) == names

    monkeypatch.setattr(timing.sys, "executable", "/bin/true")  # exits 0, prints nothing
    results, fallback = timing.time_forms(request, tmp_path / "request.json", timeout=300)
    assert fallback == "the timing process printed no results" and set(results) == names


def test_retime_needs_an_earlier_search(setup, tmp_path, capsys):
    code = main(["compress", str(setup["teacher"]), "--out", str(tmp_path / "o"), "--retime"])
    assert code == 2
    assert "holds none" in one_error_line(capsys)
    assert not (tmp_path / "o").exists()
    code = main(
        ["compress", str(setup["teacher"]), "--out", str(tmp_path), "--retime", "--no-resume"]
    )
    assert code == 2
    assert "drop --no-resume" in one_error_line(capsys)


def test_a_killed_search_continues_without_redoing_finished_candidates(
    setup, tmp_path, monkeypatch
):
    out = tmp_path / "out"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(candidates, "build_trained", killed)
        with pytest.raises(KeyboardInterrupt):
            compress.run(tiny_config(setup, forms=["fp32"], time_budget=300.0), out)
    state = json.loads((out / "state.json").read_text())
    assert set(state["rows"]) == {"static-16 / numpy", "static-7 / numpy"}

    scored, built = [], []
    score, build_static = job.score_on_suite, candidates.build_static

    def counting_score(embed, data, settings, reference=None, stop_at=None):
        scored.append(reference is None)
        return score(embed, data, settings, reference, stop_at)

    def counting_build(*args, **kwargs):
        built.append(args[0].name)
        return build_static(*args, **kwargs)

    monkeypatch.setattr(job, "score_on_suite", counting_score)
    monkeypatch.setattr(candidates, "build_static", counting_build)
    result = compress.run(tiny_config(setup, forms=["fp32"], time_budget=300.0), out)
    assert built == [] and scored == [False]  # only student-1L: no static, not the teacher
    for name in ("static-16 / numpy", "static-7 / numpy"):
        found = next(r for r in result["rows"] if r["name"] == name)
        assert found["scores"] == state["rows"][name]["scores"]


def test_a_tight_budget_skips_what_does_not_fit_and_still_picks(setup, tmp_path):
    started = time.perf_counter()
    # a student needs more training time than the whole budget: it cannot fit, however
    # fast or busy the machine is
    result = compress.run(
        tiny_config(setup, time_budget=200.0, min_training_seconds=1000.0, forms=["fp32"]),
        tmp_path / "out",
    )
    assert time.perf_counter() - started <= 200.0
    assert any("student-1L not trained" in note for note in result["notes"])
    assert result["picked"]["candidate"].startswith("static-")


@pytest.mark.slow
def test_every_form_with_onnx_is_scored_and_the_onnx_fp32_twin_shares_its_scores(setup, tmp_path):
    forms = ["fp32", "int8", "onnx-fp32", "onnx-int8"]
    started = time.perf_counter()
    result = compress.run(tiny_config(setup, forms=forms, time_budget=240.0), tmp_path / "out")
    assert time.perf_counter() - started <= 240.0
    rows = {r["name"]: r for r in result["rows"]}
    assert {f"student-1L / {form}" for form in forms} <= set(rows)
    twin = rows["student-1L / onnx-fp32"]
    assert twin["scores_from"] == "student-1L / fp32"  # the same function, not rescored
    assert twin["scores"] == rows["student-1L / fp32"]["scores"]
    assert rows["student-1L / onnx-int8"]["scores_from"] is None  # int8 differs: scored
    assert any("not rescored" in note for note in result["notes"])
    if result["picked"]["form"].startswith("onnx-"):
        assert distilkit.load(result["saved"]).embed(["the cat"]).shape == (1, 32)


# --------------------------------------------------------------------------- bad input
def test_bad_settings_are_config_errors():
    for bad in ({"keep": 0.0}, {"keep": 1.5}, {"keep": float("nan")}, {"time_budget": -1.0}):
        with pytest.raises(ConfigError, match=r"keep|time_budget"):
            compress.Config(**bad)
    with pytest.raises(ConfigError, match="forms"):
        compress.Config(forms=["fp16"])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--keep", "1.5"], "keep"),
        (["--keep", "0"], "keep"),
        (["--keep", "nan"], "finite"),
        (["--time-budget", "0"], "minutes"),
        (["--student-layers", "1,x"], "numbers"),
    ],
)
def test_bad_flags_are_one_line_errors_with_exit_2(setup, tmp_path, capsys, flags, message):
    code = main(["compress", str(setup["teacher"]), "--out", str(tmp_path / "o"), *flags])
    assert code == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_a_missing_teacher_is_a_one_line_error_with_exit_2(tmp_path, capsys):
    code = main(["compress", str(tmp_path / "no-such-teacher"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "no-such-teacher" in one_error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_a_folder_of_the_users_is_never_written(setup, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code = main(["compress", str(setup["teacher"]), "--out", str(out)])
    assert code == 2
    assert re.search("holds other files", one_error_line(capsys))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_resume_with_other_settings_is_refused(finished, setup):
    _, _, out = finished
    with pytest.raises(ConfigError, match=r"keep=0\.97"):
        compress.run(tiny_config(setup, keep=0.9), out)
    with pytest.raises(ConfigError, match="without --no-resume"):
        compress.run(tiny_config(setup), out, resume=False)


# --------------------------------------------------------------------------- --device
def test_device_reaches_the_students_training(setup, tmp_path, monkeypatch):
    """--device -> the search's config -> the main job's TrainingConfig of every trained
    student (layers and MobileBERT)."""
    searched: list[compress.Config] = []

    def search(config: compress.Config, out: Path, resume: bool, retime: bool) -> dict:
        searched.append(config)
        return {"picked": None}

    monkeypatch.setattr(compress, "run", search)
    code = main(["compress", str(setup["teacher"]), "--out", str(tmp_path / "o"),
                 "--device", "meta"])  # fmt: skip
    assert code == 1 and searched[0].device == "meta"  # (nothing picked: the search was faked)
    trained: list[str] = []
    monkeypatch.setattr(
        candidates.general, "run", lambda settings, *_, **__: trained.append(settings)
    )
    monkeypatch.setattr(
        candidates.mobilebert, "run", lambda options, *_, **__: trained.append(options.distill)
    )
    for spec in (candidates.CandidateSpec("layers", 2), candidates.CandidateSpec("mobilebert", 1)):
        candidates.build_trained(spec, searched[0], setup["corpus"], 5.0, tmp_path, 32, 32)
    assert [settings.training.device for settings in trained] == ["meta", "meta"]
    assert [settings.training.time_budget for settings in trained] == [5.0, 5.0]
    assert compress.Config().device == "auto"


def test_a_missing_device_is_a_one_line_error_before_any_work(setup, tmp_path, capsys):
    bad = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 7}"
    code = main(["compress", str(setup["teacher"]), "--out", str(tmp_path / "o"),
                 "--device", bad])  # fmt: skip
    assert code == 2
    assert f"device {bad!r} asked for" in one_error_line(capsys)
    assert not (tmp_path / "o").exists()
