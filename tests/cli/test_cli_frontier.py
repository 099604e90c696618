"""distill-static, search --precision and compare --asymmetric from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import distilkit
from distilkit.cli import main as cli
from distilkit.deploy.retrieval import retrieval_table, stsb_retrieval_set


def run(capsys: pytest.CaptureFixture[str], *argv) -> tuple[int, str, str]:
    code = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def static_folder(hf_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("static") / "s"
    assert (
        cli.main(
            [
                "distill-static",
                str(hf_checkpoint("BertModel")),
                "--out",
                str(out),
                "--dims",
                "9",
                "--no-eval",
            ]
        )
        == 0
    )
    return out


def test_distill_static_writes_a_loadable_folder(static_folder, capsys, tmp_path):
    static = distilkit.load(static_folder)
    assert static.embed(["the cat sat"]).shape == (1, 9)
    assert json.loads((static_folder / "static_config.json").read_text())["dims"] == 9
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "distill-static", "--out", tmp_path / "busy", "--dims", "4")
    assert code == 2 and "pick another --out" in err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("precision", ["float32", "int8", "binary"])
def test_search_precisions_find_the_same_best_hit(static_folder, capsys, tmp_path, precision):
    texts = tmp_path / "texts.txt"
    texts.write_text("the cat sat on the mat\nhello world\na big red dog\nbook\n", "utf-8")
    code, out, _ = run(
        capsys,
        "search",
        static_folder,
        "--input",
        texts,
        "--query",
        "hello world",
        "-k",
        "2",
        "--precision",
        precision,
        "--json",
        tmp_path / "hits.json",
    )
    assert code == 0 and f"{precision}," in out
    hits = json.loads((tmp_path / "hits.json").read_text())[0]["hits"]
    assert len(hits) == 2 and hits[0]["text"] == "hello world"
    code, _, err = run(
        capsys, "search", static_folder, "--input", texts, "--query", "x", "--rescore", "-1"
    )
    assert code == 2 and "--rescore" in err


def test_compare_asymmetric_reports_each_student(hf_checkpoint, static_folder, capsys, tmp_path):
    teacher, student = hf_checkpoint("BertModel"), hf_checkpoint("BertForMaskedLM")
    code, out, _ = run(
        capsys,
        "compare",
        teacher,
        student,
        static_folder,
        "--quick",
        "--asymmetric",
        "--json",
        tmp_path / "c.json",
    )
    assert code == 0
    found = json.loads((tmp_path / "c.json").read_text())["asymmetric"]
    assert list(found) == [str(student)]  # the 9-dim static is not in the teacher's space
    assert set(found[str(student)]["asymmetric"]) == {"recall@1", "recall@10", "mrr"}
    assert "asymmetric search" in out and "needs the student in the teacher's space" in out


def test_retrieval_table_rates_each_precision_against_float32(static_folder):
    data = stsb_retrieval_set()
    data.queries, data.targets = data.queries[:40], data.targets[:40]
    rows = retrieval_table(distilkit.load(static_folder), data)
    assert rows[0]["recall@10_of_float32_pct"] == 100.0 and rows[0]["memory_reduction"] == 1.0
    binary = rows[2]
    assert binary["index_bytes"] == len(data.collection) * 2 + 2 * 9 * 4
    assert rows[1]["memory_reduction"] == pytest.approx(
        len(data.collection) * 9 * 4 / (len(data.collection) * 9 + 72)
    )
    assert np.isfinite([r["mrr"] for r in rows]).all()
