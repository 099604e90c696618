"""A run folder's safety: no pickle on resume, damaged checkpoints, --no-resume, the lock,
settings changed on resume (issue 18, defects 2-6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distill_helpers import RunSettings, make_trainer, student_state, tiny_tokenizer

from distilkit.settings import ConfigError
from distilkit.train.run_folder import (
    LOCK_FILE,
    RunLock,
    clean_stale_temporaries,
    resume_changes,
)
from distilkit.train.trainer import STATE_FILE


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("vocab"))


def train_steps(out_dir: Path) -> list[int]:
    lines = (out_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [r["step"] for r in map(json.loads, lines) if "loss/total" in r]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- no pickle
class Payload:
    """Unpickling this runs ``touch`` (what a crafted run folder did to the old loader)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickled_payload_in_trainer_state_is_refused_and_never_runs(tokenizer, tmp_path):
    settings = RunSettings(training={"max_steps": 4, "checkpoint_every": 2})
    make_trainer(tmp_path, tokenizer, settings).run(stop_after_steps=2)
    path = tmp_path / "checkpoints" / "step-0000002" / STATE_FILE
    state = torch.load(path, weights_only=True)
    marker = tmp_path / "payload-ran"
    state["sampler"]["payload"] = Payload(marker)
    torch.save(state, path)
    with pytest.raises(ConfigError, match=r"Python objects besides tensors.*not loaded"):
        make_trainer(tmp_path, tokenizer, settings).run()
    assert not marker.exists()


def test_trainer_state_holds_no_pickled_objects(tokenizer, tmp_path):
    make_trainer(tmp_path, tokenizer, RunSettings(training={"max_steps": 2})).run()
    path = tmp_path / "checkpoints" / "step-0000002" / STATE_FILE
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []


def test_the_package_never_loads_pickles():
    package = Path(__file__).resolve().parents[2] / "distilkit"
    found = subprocess.run(
        ["grep", "-rn", r"weights_only=False\|allow_pickle=True\|pickle.load", str(package)],
        capture_output=True,
        text=True,
    )
    assert found.stdout == ""


# --------------------------------------------------------------------------- damaged checkpoints
@pytest.mark.parametrize("damage", ["truncated state", "truncated weights", "missing model"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact(
    tokenizer, tmp_path, capsys, damage
):
    settings = RunSettings(training={"max_steps": 6, "checkpoint_every": 2, "keep_checkpoints": 3})
    reference = make_trainer(tmp_path / "whole", tokenizer, settings)
    reference.run()
    out = tmp_path / "run"
    make_trainer(out, tokenizer, settings).run(stop_after_steps=4)
    latest = out / "checkpoints" / "step-0000004"
    if damage == "truncated state":
        data = (latest / STATE_FILE).read_bytes()
        (latest / STATE_FILE).write_bytes(data[: len(data) // 2])
    elif damage == "truncated weights":
        weights = next((latest / "model").rglob("*.safetensors"))
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        for item in (latest / "model").iterdir():
            item.unlink() if item.is_file() else None
    capsys.readouterr()
    resumed = make_trainer(out, tokenizer, settings)
    result = resumed.run()
    said = capsys.readouterr().out
    assert "resuming from step-0000002, the newest intact checkpoint" in said
    assert result.step == 6
    assert same_weights(student_state(resumed), student_state(reference))
    assert train_steps(out) == [1, 2, 3, 4, 5, 6]


def test_no_intact_checkpoint_is_one_clear_error(tokenizer, tmp_path):
    settings = RunSettings(training={"max_steps": 4, "checkpoint_every": 2})
    make_trainer(tmp_path, tokenizer, settings).run(stop_after_steps=2)
    (tmp_path / "checkpoints" / "step-0000002" / STATE_FILE).write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ConfigError, match=r"no checkpoint .* reads back whole.*--no-resume"):
        make_trainer(tmp_path, tokenizer, settings).run()


# --------------------------------------------------------------------------- --no-resume
def test_a_fresh_run_over_a_longer_old_one_keeps_its_own_checkpoints(tokenizer, tmp_path):
    """The old code pruned each new checkpoint (it sorted before the old run's) and the next
    plain restart resumed the OLD run."""
    long = RunSettings(seed=1, training={"max_steps": 8, "checkpoint_every": 2})
    make_trainer(tmp_path, tokenizer, long).run()
    short = RunSettings(seed=2, training={"max_steps": 8, "checkpoint_every": 2})
    stopped = make_trainer(tmp_path, tokenizer, short)
    stopped.run(resume=False, stop_after_steps=4)
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert checkpoints == ["step-0000002", "step-0000004"]
    previous = list(tmp_path.glob("previous-*"))
    assert len(previous) == 1  # the old run, moved aside whole
    assert sorted(p.name for p in (previous[0] / "checkpoints").glob("step-*")) == [
        "step-0000006",
        "step-0000008",
    ]
    again = make_trainer(tmp_path, tokenizer, short)
    again.run()  # resumes the NEW run
    reference = make_trainer(tmp_path / "whole", tokenizer, short)
    reference.run()
    assert same_weights(student_state(again), student_state(reference))
    assert train_steps(tmp_path) == list(range(1, 9))


def test_pruning_never_deletes_the_checkpoint_just_written(tokenizer, tmp_path):
    settings = RunSettings(training={"max_steps": 4, "checkpoint_every": 2, "keep_checkpoints": 1})
    (tmp_path / "checkpoints" / "step-0000099").mkdir(parents=True)  # a later step's folder
    make_trainer(tmp_path, tokenizer, settings).run(resume=False)
    root = tmp_path / "checkpoints"
    assert (root / "latest").read_text().strip() == "step-0000004"
    assert (root / "step-0000004" / STATE_FILE).is_file()


# --------------------------------------------------------------------------- the lock
def test_a_second_run_in_the_same_folder_is_refused(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from distilkit.train.run_folder import RunLock\n"
            "with RunLock(sys.argv[1]):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(60)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=rf"in use by another run \(process {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # the killed holder's lock is stale: taken over
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()  # released


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    with pytest.raises(RuntimeError), RunLock(tmp_path):
        raise RuntimeError("boom")
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_trainer_refuses_a_folder_locked_by_a_live_process(tokenizer, tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": os.uname().nodename}))
    with pytest.raises(ConfigError, match="in use by another run"):
        make_trainer(tmp_path, tokenizer, RunSettings()).run()
    assert not (tmp_path / "train_log.jsonl").exists()


# --------------------------------------------------------------------------- changed settings
def test_a_changed_learning_rate_on_resume_is_refused(tokenizer, tmp_path):
    settings = RunSettings(training={"max_steps": 4, "checkpoint_every": 2})
    make_trainer(tmp_path, tokenizer, settings).run(stop_after_steps=2)
    changed = RunSettings(training={"max_steps": 4, "checkpoint_every": 2, "learning_rate": 0.5})
    with pytest.raises(
        ConfigError,
        match=r"training.learning_rate=0.001, but this one asks for 0.5 \(--lr\).*--no-resume",
    ):
        make_trainer(tmp_path, tokenizer, changed).run()


def test_a_resumable_change_is_recorded_at_its_step(tokenizer, tmp_path):
    settings = RunSettings(training={"max_steps": 4, "checkpoint_every": 2})
    make_trainer(tmp_path, tokenizer, settings).run(stop_after_steps=2)
    more_time = RunSettings(training={"max_steps": 4, "checkpoint_every": 2, "time_budget": 900})
    make_trainer(tmp_path, tokenizer, more_time).run()
    records = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert {"step": 2, "changed": {"training.time_budget": [None, 900]}} in records


def test_resume_changes_compares_nested_settings():
    saved = {"m": {"corpus": ["a.txt"], "training": {"seed": 1, "log_every": 5}}}
    assert resume_changes(saved, saved, "out") == {}
    with pytest.raises(ConfigError, match=r'm.corpus=\["a.txt"\].*\["b.txt"\] \(--corpus\)'):
        resume_changes(saved, {"m": {**saved["m"], "corpus": ["b.txt"]}}, "out")
    asked = {"m": {"corpus": ["a.txt"], "training": {"seed": 1, "log_every": 1}}}
    assert resume_changes(saved, asked, "out") == {"m.training.log_every": [5, 1]}


def test_stale_temporaries_of_a_killed_run_are_cleaned(tmp_path):
    root = tmp_path / "checkpoints"
    (root / ".tmp-step-0000004" / "model").mkdir(parents=True)
    (root / ".trash-step-0000002").mkdir()
    (root / ".latest.tmp").write_text("x")
    (root / "step-0000006").mkdir()
    clean_stale_temporaries(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["step-0000006"]
