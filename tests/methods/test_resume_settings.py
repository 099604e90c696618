"""The main job resumed with other settings (issue 18, defect 4): a result-changing one is
refused before distill_config.json is rewritten; --no-resume moves the old run aside."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from distilkit.methods.general import Config, run
from distilkit.settings import ConfigError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pre_layout_run"


@pytest.fixture
def old_run(tmp_path, monkeypatch) -> Config:
    shutil.copytree(FIXTURE, tmp_path / "old")
    monkeypatch.chdir(tmp_path / "old")
    return Config.load(Path("run/distill_config.json"))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda c: dataclasses.replace(c, corpus=["other.txt"]), r"distill.corpus=.*--corpus"),
        (
            lambda c: dataclasses.replace(
                c, training=dataclasses.replace(c.training, learning_rate=0.5)
            ),
            r"learning_rate=0.001, but this one asks for 0.5 \(--lr\)",
        ),
        (
            lambda c: dataclasses.replace(
                c,
                objective=dataclasses.replace(
                    c.objective, weights=dataclasses.replace(c.objective.weights, cos=9.0)
                ),
            ),
            r"weights.cos=.*9.0 \(--weights\)",
        ),
    ],
    ids=["corpus", "lr", "weights"],
)
def test_a_changed_setting_is_refused_and_the_config_file_kept(old_run, change, says):
    Path("other.txt").write_text(Path("corpus.txt").read_text())
    saved = Path("run/distill_config.json").read_text()
    with pytest.raises(ConfigError, match=says + ".*--no-resume"):
        run(change(old_run), "run", resume=True, evaluate=False)
    assert Path("run/distill_config.json").read_text() == saved
    assert Path("run/checkpoints/latest").read_text().strip() == "step-0000002"


def test_no_resume_moves_the_old_run_aside(old_run):
    changed = dataclasses.replace(
        old_run, training=dataclasses.replace(old_run.training, learning_rate=0.002)
    )
    run(changed, "run", resume=False, evaluate=False)
    previous = list(Path("run").glob("previous-*"))
    assert len(previous) == 1
    assert (previous[0] / "checkpoints" / "step-0000002").is_dir()
    assert (
        json.loads((previous[0] / "distill_config.json").read_text())["training"]["learning_rate"]
        == 0.001
    )
    assert Config.load(Path("run/distill_config.json")).training.learning_rate == 0.002
    assert Path("run/checkpoints/latest").read_text().strip() == "step-0000004"
