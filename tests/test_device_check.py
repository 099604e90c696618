"""scripts/device_check.sh runs end to end on the CPU at tiny sizes and writes its JSON
(the GPU run uses the same code at BERT-base sizes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_device_check_runs_end_to_end_on_the_cpu(tmp_path: Path):
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "device_check.sh"),
            "--device",
            "cpu",
            "--tiny",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["device"] == "cpu" and report["tiny"]
    rows = report["distillation"]["rows"]
    assert rows["distilkit"]["tokens_per_s"] > 0 and 0 < rows["distilkit"]["mfu"] < 1
    assert rows["transformers"]["tokens_per_s"] > 0
    assert report["torchrun_1"]["backend"] == "gloo" and report["torchrun_1"]["world_size"] == 1
    assert report["stop_and_resume"]["equal"]
    for row in report["embedding"]["rows"].values():
        assert row["min_cosine"] > 0.999
    assert "distilkit / transformers" in run.stdout
