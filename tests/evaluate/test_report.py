"""The run report: tables, the training-log reader, plots and the files in the run folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from distilkit.evaluate.report import (
    LATENCY_COLUMNS,
    ReportError,
    TeacherAgreement,
    _smooth,
    format_markdown_table,
    format_table,
    plot_loss_curves,
    plot_quality_vs_speed,
    read_training_log,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(name: str, **values) -> dict:
    row = {
        "name": name,
        "kind": "transformer",
        "layers": 6,
        "parameters": 22_713_216,
        "size_on_disk_bytes": 90_868_376,
        "sentences_per_s": 400.0,
        "ms_per_batch": 160.0,
        "latency_ms_p50": 10.0,
        "latency_ms_p95": 15.0,
        "num_threads": 2,
        "batch_size": 64,
        "throughput_texts": 1024,
        "throughput_repeats": 5,
        "stsb_spearman": 82.0,
        "stsb_pairs": 1500,
        "sst2_probe_accuracy": 80.0,
        "sst2_train_examples": 4000,
        "sst2_dev_examples": 872,
        "pooling": "mean",
        "quick": False,
    }
    return row | values


@pytest.fixture
def rows() -> list[dict]:
    return [
        _row("teacher"),
        _row(
            "student",
            layers=3,
            parameters=17_390_208,
            size_on_disk_bytes=69_582_000,
            sentences_per_s=1000.0,
            latency_ms_p50=4.0,
            stsb_spearman=73.8,
            sst2_probe_accuracy=76.0,
        ),
        _row(
            "static embeddings of teacher",
            kind="static",
            layers=0,
            parameters=11_720_448,
            size_on_disk_bytes=46_881_792,
            sentences_per_s=20000.0,
            latency_ms_p50=0.1,
            stsb_spearman=61.5,
            sst2_probe_accuracy=float("nan"),
        ),
    ]


def _write_log(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _training_log(path: Path, steps: int = 200) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for step in range(1, steps + 1):
        ce = 3.0 * math.exp(-step / 80) + 0.5 + 0.2 * rng.random()
        cos = 0.4 * math.exp(-step / 50) + 0.05 * rng.random()
        record = {"step": step, "loss/ce": ce, "loss/cos": cos, "loss/total": ce + cos,
                  "lr": 5e-4 * min(1.0, step / 20), "grad_norm": 1.0}  # fmt: skip
        lines.append(json.dumps(record))
        if step % 50 == 0:
            lines.append(
                json.dumps({"step": step, "eval/loss": ce * 1.1, "eval/spearman": step / 4})
            )
    return _write_log(path, lines)


# --------------------------------------------------------------------------- tables
def test_format_table_is_aligned_and_compares_with_the_first_row(rows: list[dict]) -> None:
    text = format_table(rows)
    lines = text.splitlines()
    assert len(lines) == 2 + len(rows)  # header, rule, one line per model
    assert lines[0].startswith("model") and "STS-B Spearman" in lines[0]
    assert set(lines[1]) <= {"-", " "}
    # every column ends at the same place on every line: right-aligned numbers line up
    header_end = lines[0].index("sentences/s") + len("sentences/s")
    for line in lines[2:]:
        assert line[header_end - 1] != " "
    student = lines[3]
    assert student.startswith("student")
    # 1000 / 400 sentences/s = 2.50x; 73.8 / 82 = 90.0 %; 76 / 80 = 95.0 %; 17.4M; 69.6 MB
    for expected in ("2.50x", "90.0", "95.0", "17.4M", "69.6", "1,000"):
        assert expected in student.split(), expected
    teacher = lines[2].split()
    assert "1.00x" in teacher and "100.0" in teacher
    assert lines[4].split()[-2:] == ["-", "-"]  # NaN accuracy: no value, no retention


def test_markdown_table_has_a_row_per_model(rows: list[dict]) -> None:
    table = format_markdown_table(rows).splitlines()
    assert table[0].startswith("| model | layers | parameters | size on disk (MB) |")
    assert table[1].startswith("|:---|---:|")
    assert len(table) == 2 + len(rows)
    assert {line.count("|") for line in table} == {table[0].count("|")}
    assert [line.split("|")[1].strip() for line in table[2:]] == [r["name"] for r in rows]
    latency = format_markdown_table(rows, LATENCY_COLUMNS).splitlines()
    assert "2.50x" in latency[3]  # teacher p50 10 ms / student 4 ms


def test_tables_reject_bad_rows(rows: list[dict]) -> None:
    with pytest.raises(ReportError, match="no rows"):
        format_table([])
    with pytest.raises(ReportError, match="unique"):
        format_table([rows[0], rows[0]])
    with pytest.raises(ReportError, match="name"):
        format_markdown_table([{"stsb_spearman": 1.0}])


# --------------------------------------------------------------------------- training log
def test_read_training_log_merges_steps_and_survives_a_cut_last_line(tmp_path: Path) -> None:
    path = _write_log(
        tmp_path / "log.jsonl",
        [
            '{"step": 1, "loss/ce": 4.0, "lr": 0.1}',
            '{"step": 2, "loss/ce": 3.0, "lr": 0.2, "note": "text", "flag": true}',
            '{"step": 2, "eval/acc": 0.5}',
            "",
            '{"step": 3, "loss/ce": 2.5, "lr": 0.3}',
            '{"step": 2, "loss/ce": 2.9, "lr": 0.2}',  # resumed from step 1: the later line wins
            '{"step": 4, "loss/c',
        ],
    )
    series = read_training_log(path)
    assert set(series) == {"loss/ce", "lr", "eval/acc"}
    steps, values = series["loss/ce"]
    assert steps.tolist() == [1, 2, 3] and values.tolist() == [4.0, 2.9, 2.5]
    assert series["eval/acc"][0].tolist() == [2]


def test_read_training_log_errors(tmp_path: Path) -> None:
    broken = _write_log(tmp_path / "a.jsonl", ['{"step": 1}', "not json", '{"step": 2}'])
    with pytest.raises(ReportError, match="line 2 is not JSON"):
        read_training_log(broken)
    no_step = _write_log(tmp_path / "b.jsonl", ['{"loss/ce": 1.0}', '{"step": 2}'])
    with pytest.raises(ReportError, match="integer 'step'"):
        read_training_log(no_step)
    with pytest.raises(ReportError, match="not found"):
        read_training_log(tmp_path / "missing.jsonl")
    no_losses = _write_log(tmp_path / "c.jsonl", ['{"step": 1, "lr": 0.1}'])
    with pytest.raises(ReportError, match=r"no 'loss/\.\.\.' keys"):
        plot_loss_curves(no_losses, tmp_path / "out.png")


def test_smooth_is_a_trailing_mean() -> None:
    values = np.array([1.0, 5.0, 3.0, 7.0, 2.0])
    expected = [np.mean(values[max(0, i - 2) : i + 1]) for i in range(len(values))]
    np.testing.assert_allclose(_smooth(values, 3), expected)
    np.testing.assert_allclose(_smooth(values, 1), values)


# --------------------------------------------------------------------------- plots and files
def _assert_png(path: Path, min_width: int = 600) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = imread(path).shape
    assert width >= min_width and height >= 400


def test_plots_are_valid_pngs(tmp_path: Path, rows: list[dict]) -> None:
    log = _training_log(tmp_path / "log.jsonl")
    _assert_png(plot_loss_curves(log, tmp_path / "loss.png"))
    _assert_png(plot_quality_vs_speed(rows, tmp_path / "quality.png"))
    zero_loss = ['{"step": 1, "loss/mse": 0.0}', '{"step": 2, "loss/mse": 0.5}']
    only_losses = _write_log(tmp_path / "short.jsonl", zero_loss)
    _assert_png(plot_loss_curves(only_losses, tmp_path / "short.png"))  # a zero on a log axis


def test_write_report_files(tmp_path: Path, rows: list[dict]) -> None:
    log = _training_log(tmp_path / "train_log.jsonl")
    extra = {"config": {"student_layers": 3, "nested": {"deep": {"deeper": 1}}}, "hours": 0.25}
    paths = write_report(tmp_path / "run", rows, log, extra=extra, command="distilkit distill x")
    run = tmp_path / "run"
    assert {path.name for path in run.iterdir()} == {
        "metrics.json", "report.md", "loss_curves.png", "quality_vs_speed.png",
    }  # fmt: skip
    assert paths["report"] == run / "report.md"
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["command"] == "distilkit distill x"
    assert metrics["reference"] == "teacher"
    assert [row["name"] for row in metrics["rows"]] == [row["name"] for row in rows]
    assert metrics["rows"][2]["sst2_probe_accuracy"] is None  # NaN is not valid JSON
    student = metrics["comparisons"][0]
    assert student["student"] == "student"
    assert student["speedup"] == pytest.approx(2.5)
    assert student["stsb_retention_pct"] == pytest.approx(90.0)
    assert metrics["extra"] == extra
    assert metrics["machine"]["cpu_count"] >= 1
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "distilkit distill x" in report
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| model | layers |")
    for row in rows:
        assert any(line.startswith(f"| {row['name']} |") for line in table)
    assert "![training losses](loss_curves.png)" in report
    assert "![quality against speed](quality_vs_speed.png)" in report
    assert "- **config**:\n  - **student_layers**: 3" in report
    assert "Quick protocol" not in report
    for name in ("loss_curves.png", "quality_vs_speed.png"):
        _assert_png(run / name)


def test_write_report_without_a_log_flags_quick_numbers(tmp_path: Path, rows: list[dict]) -> None:
    quick_rows = [row | {"quick": True} for row in rows[:2]]
    paths = write_report(tmp_path, quick_rows)
    assert "loss_curves" not in paths and not (tmp_path / "loss_curves.png").exists()
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Quick protocol" in report and "Static baseline" not in report
    with pytest.raises(ReportError, match="no rows"):
        write_report(tmp_path, [])


def test_write_report_survives_a_missing_log(tmp_path: Path, rows: list[dict]) -> None:
    with pytest.warns(UserWarning, match="no loss plot: training log not found"):
        paths = write_report(tmp_path / "run", rows, tmp_path / "missing.jsonl")
    assert "loss_curves" not in paths
    report = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "(no loss plot: training log not found" in report


def test_teacher_agreement_advises_on_the_corpus_only_when_it_is_far_from_the_evaluation_text(
    tmp_path: Path, rows: list[dict]
) -> None:
    far = TeacherAgreement(0.938, 0.849, 94.7)
    assert far.domain_gap == pytest.approx(0.089)
    assert len(far.lines()) == 2 and "--corpus" in far.lines()[1]
    write_report(tmp_path / "far", rows, agreement=far)
    metrics = json.loads((tmp_path / "far" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["agreement"] == {
        "heldout_sentence_cosine": 0.938,
        "stsb_sentence_cosine": 0.849,
        "stsb_similarity_spearman": 94.7,
        "domain_gap": pytest.approx(0.089),
    }
    report = (tmp_path / "far" / "report.md").read_text(encoding="utf-8")
    assert "| held-out text of the training corpus | 0.9380 |" in report
    assert "| STS-B dev sentences | 0.8490 |" in report
    assert "> The student follows the teacher 0.089 less closely" in report

    near = TeacherAgreement(0.90, 0.88, 96.0)
    assert len(near.lines()) == 1
    write_report(tmp_path / "near", rows, agreement=near)
    assert "less closely" not in (tmp_path / "near" / "report.md").read_text(encoding="utf-8")

    unknown = TeacherAgreement(None, 0.80, 90.0)
    assert unknown.domain_gap is None and len(unknown.lines()) == 1
    write_report(tmp_path / "unknown", rows, agreement=unknown)
    report = (tmp_path / "unknown" / "report.md").read_text(encoding="utf-8")
    assert "held-out text" not in report and "| STS-B dev sentences | 0.8000 |" in report

    write_report(tmp_path / "none", rows)
    assert json.loads((tmp_path / "none" / "metrics.json").read_text())["agreement"] is None
    assert "follows the teacher" not in (tmp_path / "none" / "report.md").read_text()
