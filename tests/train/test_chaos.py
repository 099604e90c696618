"""Chaos: a tiny distillation run killed with SIGKILL at random moments (a checkpoint and a
pruning every step, so many kills land inside them), then finished. The student must equal
an uninterrupted run's bit for bit, and train_log.jsonl hold every step exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from distill_helpers import RunSettings, make_trainer, student_state, tiny_tokenizer

WORKER = Path(__file__).resolve().parents[1] / "train_worker.py"
SETTINGS = {"training": {"max_steps": 30, "checkpoint_every": 1, "keep_checkpoints": 2}}
KILLS = 8


def logged_steps(out_dir: Path) -> list[int]:
    path = out_dir / "train_log.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the kill (the resume drops it)
        if "loss/total" in record:
            steps.append(record["step"])
    return steps


@pytest.mark.slow
def test_random_kills_leave_a_run_that_finishes_bitwise_equal(tmp_path):
    seed = int(os.environ.get("DISTILKIT_CHAOS_SEED", time.time_ns() % 10_000))
    chance = random.Random(seed)
    out_dir = tmp_path / "chaos"
    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps([{"out_dir": str(out_dir), "settings": SETTINGS}]))
    env = {**os.environ, "DISTILKIT_TEST_THREADS": str(torch.get_num_threads())}
    kills = 0
    for _ in range(KILLS):
        done = max(logged_steps(out_dir), default=0)
        process = subprocess.Popen(
            [sys.executable, str(WORKER), str(runs)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # wait for progress past what was there (the resumed run trains again), then a
        # random moment: mid-step, mid-checkpoint, mid-pruning or mid-log line
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if max(logged_steps(out_dir), default=0) > done + chance.randint(0, 2):
                break
            time.sleep(0.001)
        time.sleep(chance.uniform(0, 0.05))
        if process.poll() is not None:
            _, stderr = process.communicate()
            assert process.returncode == 0, f"seed {seed}: {stderr.decode()[-2000:]}"
            break  # finished before the kill
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        kills += 1
    assert kills >= 3, f"seed {seed}: the run outpaced the kills"

    tokenizer = tiny_tokenizer(out_dir.parent / "vocab-here")
    finished = make_trainer(out_dir, tokenizer, RunSettings(**SETTINGS))
    result = finished.run()
    assert result.step == 30
    reference = make_trainer(tmp_path / "whole", tokenizer, RunSettings(**SETTINGS))
    reference.run()
    ours, theirs = student_state(finished), student_state(reference)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs), f"seed {seed}"
    assert logged_steps(out_dir) == list(range(1, 31)), f"seed {seed}"
    leftovers = [p.name for p in (out_dir / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"seed {seed}"
    assert not (out_dir / ".distilkit-lock").exists()
