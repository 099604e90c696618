"""A run folder written by distilkit before the package layout moved (commit 3abf237: a tiny
teacher, stopped at step 2 of 4) still resumes with today's code and finishes the run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import distilkit
from distilkit.methods.general import Config, run

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pre_layout_run"


def test_a_run_saved_before_the_move_resumes_where_it_stopped(tmp_path, monkeypatch):
    shutil.copytree(FIXTURE, tmp_path / "old")
    monkeypatch.chdir(tmp_path / "old")  # the saved config names teacher and corpus relatively
    assert (Path("run/checkpoints/latest").read_text().strip()) == "step-0000002"
    config = Config.load(Path("run/distill_config.json"))
    metrics = run(config, "run", resume=True, evaluate=False)
    assert metrics["training"]["steps"] == 4
    steps = [
        record["step"]
        for record in map(json.loads, Path("run/train_log.jsonl").read_text().splitlines())
        if "loss/total" in record
    ]
    assert steps == [1, 2, 3, 4]  # steps 1-2 from the old run, 3-4 resumed, none twice
    assert Path("run/checkpoints/latest").read_text().strip() == "step-0000004"
    student = distilkit.load("run/student")
    assert student.config.num_layers == 2
