"""DDP with two CPU processes (gloo), launched by torchrun: ranks agree, and two ranks
train exactly like one process accumulating their two batches.

All runs share one ``torch.distributed.run`` launch (starting two Python processes with
torch costs most of this file's time); the in-process references run afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distill_helpers import RunSettings, make_trainer, max_difference, student_state, tiny_tokenizer

from distilkit.train.trainer import STATE_FILE

WORKER = Path(__file__).resolve().parents[1] / "train_worker.py"

# Dropout and masking on: each rank draws its own masks; the weights must still agree.
NOISY = {"training": {"max_steps": 6, "checkpoint_every": 3}}
# Dropout and masking off, a global batch of 2 x 4 sequences per step: two ranks (one
# batch of 4 each) = one process accumulating both, with the same settings.
# (adam_epsilon 1e-4: see test_trainer's accumulation test for why.)
EXACT = {
    "dropout": 0.0,
    "mask_inputs": False,
    "weights": {"cos": 1.0, "mse": 1.0},
    "training": {
        "max_steps": 4,
        "grad_accumulation": 2,
        "adam_epsilon": 1e-4,
        "max_grad_norm": 1e9,
        "checkpoint_every": 2,
    },
}
# Rank 1's clock starts 1000 s ahead, so only it sees the time budget run out at step 1.
SKEWED = {"training": {"max_steps": 20, "time_budget": 500.0, "checkpoint_every": 100}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    runs = [
        {"out_dir": str(root / "noisy"), "settings": NOISY},
        {"out_dir": str(root / "resumed"), "settings": NOISY, "interrupt_at": 3},
        {"out_dir": str(root / "exact"), "settings": EXACT},
        {"out_dir": str(root / "half"), "settings": EXACT, "stop_at": 2},
        {"out_dir": str(root / "skewed"), "settings": SKEWED, "clock_skew": 1000.0},
    ]
    (root / "runs.json").write_text(json.dumps(runs), encoding="utf-8")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(WORKER),
        str(root / "runs.json"),
    ]
    env = {**os.environ, "DISTILKIT_TEST_THREADS": "1", "OMP_NUM_THREADS": "1"}
    # a session of its own, so a hang can be ended for the launcher and both workers at once
    launcher = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = launcher.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        _, stderr = launcher.communicate()
        pytest.fail(f"the DDP workers hung; the end of their output:\n{stderr[-3000:]}")
    assert launcher.returncode == 0, stderr[-4000:]
    return root


def final(root: Path, run: str, rank: int) -> dict[str, torch.Tensor]:
    return torch.load(root / run / f"final-rank{rank}.pt", weights_only=True)


def assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_both_ranks_end_with_identical_weights(ddp_runs: Path, tmp_path: Path):
    rank0, rank1 = final(ddp_runs, "noisy", 0), final(ddp_runs, "noisy", 1)
    assert_equal(rank0, rank1)
    initial = student_state(make_trainer(tmp_path, tiny_tokenizer(tmp_path), RunSettings(**NOISY)))
    assert max_difference(rank0, initial) > 1e-3  # and they did train
    state = torch.load(
        ddp_runs / "noisy" / "checkpoints" / "step-0000006" / STATE_FILE, weights_only=False
    )
    assert len(state["rng"]) == len(state["generator"]) == 2  # every rank's random streams
    assert not torch.equal(state["generator"][0], state["generator"][1])


def test_a_stopped_and_resumed_ddp_run_equals_an_uninterrupted_one(ddp_runs: Path):
    for rank in (0, 1):
        assert_equal(final(ddp_runs, "resumed", rank), final(ddp_runs, "noisy", rank))
    steps = [json.loads(line)["step"] for line in (ddp_runs / "resumed" / "train_log.jsonl").open()]
    assert steps == list(range(1, 7))


def test_two_ranks_equal_one_process_with_the_same_global_batch(ddp_runs: Path, tmp_path: Path):
    trainer = make_trainer(tmp_path / "single", tiny_tokenizer(tmp_path), RunSettings(**EXACT))
    assert trainer.micro_steps == 2  # one process runs both batches of a step
    trainer.run()
    ddp = final(ddp_runs, "exact", 0)
    assert max_difference(student_state(trainer), ddp) < 1e-6
    # the logged loss is the whole step's (both ranks' batches), not rank 0's share
    single_log = [json.loads(line) for line in (tmp_path / "single" / "train_log.jsonl").open()]
    ddp_log = [json.loads(line) for line in (ddp_runs / "exact" / "train_log.jsonl").open()]
    for ours, theirs in zip(ddp_log, single_log, strict=True):
        assert ours["loss/total"] == pytest.approx(theirs["loss/total"], rel=1e-5)
        assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-5)


def test_one_process_resumes_a_two_process_checkpoint(ddp_runs: Path, tmp_path: Path):
    """Two processes train steps 1-2 and stop; one process resumes from their checkpoint
    and trains steps 3-4: the data position, schedule and weights carry over, and the end
    equals one process training all four steps."""
    half = tmp_path / "half"
    shutil.copytree(ddp_runs / "half", half)
    state = torch.load(half / "checkpoints" / "step-0000002" / STATE_FILE, weights_only=False)
    assert state["world_size"] == 2 and state["step"] == 2
    tokenizer = tiny_tokenizer(tmp_path)
    resumed = make_trainer(half, tokenizer, RunSettings(**EXACT))
    result = resumed.run()
    assert result.step == 4
    single = make_trainer(tmp_path / "single", tokenizer, RunSettings(**EXACT))
    single.run()
    assert max_difference(student_state(resumed), student_state(single)) < 1e-6
    assert max_difference(student_state(resumed), final(ddp_runs, "exact", 0)) < 1e-6
    steps = [json.loads(line)["step"] for line in (half / "train_log.jsonl").open()]
    assert steps == [1, 2, 3, 4]


def test_ranks_stop_together_when_their_clocks_disagree_about_the_budget(ddp_runs: Path):
    results = [
        json.loads((ddp_runs / "skewed" / f"result-rank{rank}.json").read_text()) for rank in (0, 1)
    ]
    assert results[0] == results[1] == {"step": 1, "stopped_by": "time_budget"}
    assert_equal(final(ddp_runs, "skewed", 0), final(ddp_runs, "skewed", 1))
