"""The training loop: schedule, accumulation, exact resume, atomic checkpoints, NaN guard."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from distill_helpers import (
    RunSettings,
    make_trainer,
    max_difference,
    random_sequences,
    student_state,
    tiny_tokenizer,
)

from distilkit.data.batching import collate_sequences
from distilkit.methods.general.objectives import GeneralDistillation
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import ConfigError
from distilkit.train.losses import weighted_sum
from distilkit.train.trainer import (
    STATE_FILE,
    Trainer,
    TrainingConfig,
    TrainingDiverged,
    linear_schedule,
    schedule_summary,
    shard_step,
)

WORKER = Path(__file__).resolve().parents[1] / "train_worker.py"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return tiny_tokenizer(tmp_path_factory.mktemp("vocab"))


def logged(out_dir: Path) -> list[dict]:
    lines = (out_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def train_steps(out_dir: Path) -> list[int]:
    return [r["step"] for r in logged(out_dir) if "loss/total" in r]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


# --------------------------------------------------------------------------- configuration
def test_linear_schedule_warms_up_then_decays_to_zero():
    multiplier = linear_schedule(warmup_steps=4, total_steps=12)
    assert [multiplier(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert [multiplier(s) for s in (4, 8, 12, 13)] == [1.0, 0.5, 0.0, 0.0]
    assert linear_schedule(0, 10)(0) == 1.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_steps", 0, "max_steps must be >= 1"),
        ("grad_accumulation", 0, "must be >= 1"),
        ("precision", "fp8", "precision must be one of"),
        ("warmup_fraction", 1.0, r"warmup_fraction must be in \[0, 1\)"),
        ("learning_rate", 0.0, "learning_rate must be a finite number > 0"),
        ("time_budget", -5.0, r"time_budget \(--time-budget\) must be a finite number"),
        ("time_budget", float("inf"), "must be a finite number of seconds > 0, got inf"),
        ("time_budget", float("nan"), "must be a finite number of seconds > 0, got nan"),
        ("checkpoint_every", 0, "checkpoint_every must be >= 1"),
    ],
)
def test_training_config_errors(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainingConfig(**{field: value})


def test_schedule_summary_names_the_numbers():
    summary = schedule_summary(TrainingConfig(batch_size=8, grad_accumulation=4, max_steps=50))
    assert "32 sequences/step" in summary and "50 steps" in summary


def test_an_objective_without_trainable_parameters_is_refused(tokenizer, tmp_path):
    trainer = make_trainer(tmp_path / "a", tokenizer, RunSettings())
    trainer.objective.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        Trainer(
            trainer.objective,
            trainer.dataset,
            trainer.sampler,
            trainer.collate,
            trainer.config,
            tmp_path / "b",
        )


def test_the_schedule_is_fitted_to_a_time_budget(tokenizer, tmp_path):
    settings = RunSettings(training={"max_steps": 100, "time_budget": 3.0, "warmup_fraction": 0.1})
    trainer = make_trainer(tmp_path, tokenizer, settings)
    for _ in range(10):
        trainer.optimizer.step()
        trainer.scheduler.step()
    trainer.step, trainer.elapsed = 10, 1.0
    trainer._fit_schedule_to_budget(seconds_per_step=0.1)  # 2 s left: 20 more steps
    assert trainer.schedule_steps == 30
    # warmup int(0.1 * 30) = 3 steps, then linear decay to 0 at step 30
    expected = 1e-3 * (30 - 10) / (30 - 3)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    trainer.scheduler.step()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 19 / 27)


def test_a_refit_extends_the_schedule_when_steps_get_faster(tokenizer, tmp_path):
    settings = RunSettings(training={"max_steps": 100, "time_budget": 3.0, "warmup_fraction": 0.1})
    trainer = make_trainer(tmp_path, tokenizer, settings)
    trainer.step, trainer.elapsed = 10, 1.0
    trainer._fit_schedule_to_budget(seconds_per_step=0.1)  # first fit: 30 steps
    for _ in range(20):
        trainer.optimizer.step()
        trainer.scheduler.step()
    trainer.step, trainer.elapsed = 20, 2.0
    trainer._fit_schedule_to_budget(seconds_per_step=0.05)  # 1 s left at 0.05 s: 40 steps
    assert trainer.schedule_steps == 40
    trainer._fit_schedule_to_budget(seconds_per_step=1e-4)  # never beyond max_steps
    assert trainer.schedule_steps == 100


def test_max_steps_binding_before_the_budget_is_reported(tokenizer, tmp_path, capsys):
    settings = RunSettings(training={"max_steps": 100, "time_budget": 60.0})
    trainer = make_trainer(tmp_path, tokenizer, settings)
    trainer.step, trainer.elapsed = 10, 1.0
    trainer._fit_schedule_to_budget(seconds_per_step=0.1)  # 590 more steps would fit
    assert trainer.schedule_steps == 100
    said = capsys.readouterr().out
    assert "max_steps 100 ends training before the time budget (600 steps" in said
    trainer.step = 20
    trainer._fit_schedule_to_budget(seconds_per_step=0.1)  # said once, at the first fit
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------- learning
def test_a_few_steps_of_distillation_reduce_the_loss(tokenizer, tmp_path):
    settings = RunSettings(
        dropout=0.0, training={"max_steps": 30, "learning_rate": 2e-3, "checkpoint_every": 30}
    )
    trainer = make_trainer(tmp_path, tokenizer, settings)
    objective = trainer.objective
    heldout = [collate_sequences(random_sequences(8, seed=s), 0) for s in (101, 102)]

    def heldout_loss() -> float:
        generator = torch.Generator().manual_seed(5)  # the same masks every time
        with torch.no_grad():
            return sum(
                float(weighted_sum(objective(batch, generator), objective.weights))
                for batch in heldout
            )

    before = heldout_loss()
    trainer.run()
    after = heldout_loss()
    assert after < 0.8 * before
    totals = [r["loss/total"] for r in logged(tmp_path) if "loss/total" in r]
    assert len(totals) == 30
    assert sum(totals[-5:]) / 5 < 0.9 * sum(totals[:5]) / 5


def test_gradient_accumulation_equals_one_big_batch(tokenizer, tmp_path):
    """4 micro-batches of 2 and one batch of 8 (same examples, in order; no dropout, no
    masking; equal lengths, so each micro-batch mean has the same weight) give the same
    gradients and weights. adam_epsilon is raised to 1e-4 because the key biases have a
    true gradient of 0 (softmax ignores a per-query shift): Adam would turn their ~1e-9
    rounding noise into lr-sized steps of either sign."""
    runs = {}
    for name, batch_size, accumulation in [("big", 8, 1), ("micro", 2, 4)]:
        settings = RunSettings(
            dropout=0.0,
            mask_inputs=False,
            equal_lengths=True,
            shuffle=False,
            num_sequences=32,
            weights={"cos": 1.0, "mse": 1.0},
            training={
                "max_steps": 4,
                "batch_size": batch_size,
                "grad_accumulation": accumulation,
                "adam_epsilon": 1e-4,
                "max_grad_norm": 1e9,
                "checkpoint_every": 100,
            },
        )
        trainer = make_trainer(tmp_path / name, tokenizer, settings)
        initial = student_state(trainer)
        trainer.run()
        runs[name] = student_state(trainer)
    assert max_difference(runs["big"], initial) > 1e-3  # the weights did move
    assert max_difference(runs["big"], runs["micro"]) < 1e-6
    big, micro = logged(tmp_path / "big"), logged(tmp_path / "micro")
    for record_big, record_micro in zip(big, micro, strict=True):
        assert record_micro["grad_norm"] == pytest.approx(record_big["grad_norm"], rel=1e-5)
        assert record_micro["loss/total"] == pytest.approx(record_big["loss/total"], rel=1e-5)


def test_the_fused_adamw_kernel_equals_the_single_tensor_one(tokenizer, tmp_path):
    """The fused AdamW (the default, CPU included) steps the weights as the single-tensor
    loop does, and the two optimizers' states are interchangeable on resume."""

    def settings(fused: bool) -> RunSettings:
        return RunSettings(
            dropout=0.0,
            mask_inputs=False,
            shuffle=False,
            weights={"cos": 1.0, "mse": 1.0},
            training={"max_steps": 4, "fused_adamw": fused, "checkpoint_every": 2},
        )

    runs = {}
    for fused in (True, False):
        trainer = make_trainer(tmp_path / str(fused), tokenizer, settings(fused))
        assert trainer.optimizer.defaults["fused"] is (True if fused else None)
        initial = student_state(trainer)
        trainer.run()
        runs[fused] = student_state(trainer)
    assert max_difference(runs[True], initial) > 1e-3
    assert max_difference(runs[True], runs[False]) < 1e-5
    # a run stopped at step 2 and continued by the other kernel, both ways
    for first_fused in (True, False):
        parts = tmp_path / f"parts-{first_fused}"
        first = make_trainer(parts, tokenizer, settings(first_fused))
        assert first.run(stop_after_steps=2).step == 2
        second = make_trainer(parts, tokenizer, settings(not first_fused))
        assert second.run().step == 4
        assert [r["step"] for r in logged(parts) if "loss/total" in r] == [1, 2, 3, 4]
        assert max_difference(student_state(second), runs[False]) < 1e-5


def test_the_inference_caches_see_every_fused_step(tokenizer, tmp_path):
    """The fused kernel updates weights without bumping their version counters, which the
    models' no-grad caches (stacked Q/K/V, oneDNN weights) key on: the trainer bumps them,
    so an eval-mode forward after training uses the trained weights, not cached old ones."""
    settings = RunSettings(
        dropout=0.0,
        mask_inputs=False,
        weights={"cos": 1.0, "mse": 1.0},
        training={"max_steps": 3, "checkpoint_every": 100},
    )
    trainer = make_trainer(tmp_path, tokenizer, settings)
    assert trainer.fused
    student = trainer.objective.student
    ids = torch.randint(5, tokenizer.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))

    def forward(model) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return model.backbone(ids, torch.ones_like(ids)).last_hidden_state

    before = forward(student)  # fills the caches with the initial weights
    student.train()
    trainer.run()
    after, fresh = forward(student), forward(copy.deepcopy(student))  # a copy: no cache
    assert (after - before).abs().max() > 1e-3
    assert (after - fresh).abs().max() < 1e-6


def test_bf16_autocast_trains(tokenizer, tmp_path):
    settings = RunSettings(training={"max_steps": 2, "precision": "bf16", "checkpoint_every": 2})
    trainer = make_trainer(tmp_path, tokenizer, settings)
    result = trainer.run()
    assert result.step == 2 and all(
        map(torch.isfinite, map(torch.tensor, result.last_losses.values()))
    )
    assert all(p.dtype == torch.float32 for p in trainer.objective.parameters())


# --------------------------------------------------------------------------- resumption
@pytest.mark.parametrize(
    ("stop_at", "checkpoint_every", "accumulation"),
    [(4, 2, 1), (5, 5, 2), (6, 3, 2)],  # (5, 5, 2) stops exactly at the end of an epoch
)
def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one(
    tokenizer, tmp_path, stop_at, checkpoint_every, accumulation
):
    """Dropout and masking on, so every random stream must be restored exactly."""
    settings = RunSettings(
        dropout=0.1,
        mask_inputs=True,
        training={
            "max_steps": 9,
            "grad_accumulation": accumulation,
            "checkpoint_every": checkpoint_every,
        },
    )
    reference = make_trainer(tmp_path / "whole", tokenizer, settings)
    reference_result = reference.run()

    first = make_trainer(tmp_path / "parts", tokenizer, settings)
    stopped = first.run(stop_after_steps=stop_at)
    assert (stopped.step, stopped.stopped_by) == (stop_at, "interrupted")
    assert stopped.checkpoint.name == f"step-{stop_at:07d}"
    second = make_trainer(tmp_path / "parts", tokenizer, settings)  # a fresh process, as it were
    resumed = second.run()
    assert resumed.step == 9 and resumed.stopped_by == "max_steps"

    assert_same_weights(student_state(second), student_state(reference))
    assert resumed.last_losses == reference_result.last_losses
    whole, parts = logged(tmp_path / "whole"), logged(tmp_path / "parts")
    assert [r["step"] for r in parts] == [r["step"] for r in whole] == list(range(1, 10))
    for a, b in zip(whole, parts, strict=True):
        assert a["loss/total"] == b["loss/total"] and a["lr"] == b["lr"]
    # the optimizer state came back too: moments equal after the same number of steps
    ours, theirs = second.optimizer.state_dict()["state"], reference.optimizer.state_dict()["state"]
    assert all(torch.equal(ours[k]["exp_avg_sq"], theirs[k]["exp_avg_sq"]) for k in theirs)


def test_resuming_a_finished_run_changes_nothing(tokenizer, tmp_path):
    settings = RunSettings(training={"max_steps": 4, "checkpoint_every": 4})
    trainer = make_trainer(tmp_path, tokenizer, settings)
    trainer.run()
    finished = student_state(trainer)
    saved_state = (trainer.latest_checkpoint() / STATE_FILE).read_bytes()
    again = make_trainer(tmp_path, tokenizer, settings)
    result = again.run()
    assert result.step == 4
    assert_same_weights(student_state(again), finished)
    assert (again.latest_checkpoint() / STATE_FILE).read_bytes() == saved_state
    assert train_steps(tmp_path) == [1, 2, 3, 4]


def test_resume_false_starts_afresh(tokenizer, tmp_path):
    settings = RunSettings(training={"max_steps": 3, "checkpoint_every": 3})
    make_trainer(tmp_path / "a", tokenizer, settings).run()
    make_trainer(tmp_path / "b", tokenizer, settings).run()
    again = make_trainer(tmp_path / "b", tokenizer, settings)
    result = again.run(resume=False)
    assert result.step == 3 and train_steps(tmp_path / "b") == [1, 2, 3]
    first = make_trainer(tmp_path / "a", tokenizer, settings)
    first.load_checkpoint(first.latest_checkpoint())
    assert_same_weights(student_state(again), student_state(first))


def test_shard_step_shares_a_steps_global_batch_among_the_ranks():
    batches = [[0, 1, 2, 3], [4, 5, 6, 7]]
    # ranks dividing the batch count take whole batches: rank r gets r, r + N, ...
    assert shard_step(batches, 1, 0) == batches
    assert shard_step(batches, 2, 0) == [[0, 1, 2, 3]]
    assert shard_step(batches, 2, 1) == [[4, 5, 6, 7]]
    # otherwise each batch is cut into N parts and rank r takes part r of each
    assert shard_step(batches, 3, 0) == [[0, 1], [4, 5]]
    assert shard_step(batches, 3, 2) == [[3], [7]]
    # every sequence of the step is used exactly once across the ranks
    for world in (1, 2, 3, 4):
        parts = [i for r in range(world) for part in shard_step(batches, world, r) for i in part]
        assert sorted(parts) == list(range(8))
    assert shard_step([[9]], 2, 1) == [[9]]  # a part too small to exist repeats the batch's first


def test_a_checkpoint_of_two_processes_resumes_in_one(tokenizer, tmp_path):
    """The rank count is not part of a checkpoint: a state with two ranks' random streams
    (as a 2-process run writes) resumes in one process, which keeps rank 0's."""
    settings = RunSettings(training={"max_steps": 4, "checkpoint_every": 2})
    trainer = make_trainer(tmp_path, tokenizer, settings)
    trainer.run(stop_after_steps=2)
    path = trainer.latest_checkpoint() / STATE_FILE
    state = torch.load(path, weights_only=True)
    state["rng"] = state["rng"] * 2
    state["generator"] = state["generator"] * 2
    torch.save(state, path)
    resumed = make_trainer(tmp_path, tokenizer, settings)
    assert resumed.run().step == 4


def test_resume_refuses_another_max_steps(tokenizer, tmp_path):
    """A finished 2-step run asked for 5 steps must not end at 2 saying 'time_budget'."""
    trainer = make_trainer(tmp_path, tokenizer, RunSettings(training={"max_steps": 2}))
    assert trainer.run().stopped_by == "max_steps"
    longer = make_trainer(tmp_path, tokenizer, RunSettings(training={"max_steps": 5}))
    with pytest.raises(ConfigError, match=r"max_steps=2 \(at step 2\).*max_steps=5.*--no-resume"):
        longer.run()
    assert longer.run(resume=False).step == 5  # afresh, as the message says


def test_old_checkpoints_are_pruned_and_the_pointer_falls_back(tokenizer, tmp_path):
    settings = RunSettings(training={"max_steps": 8, "checkpoint_every": 2, "keep_checkpoints": 2})
    trainer = make_trainer(tmp_path, tokenizer, settings)
    trainer.run()
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-0000006", "step-0000008"]
    assert (root / "latest").read_text().strip() == "step-0000008"
    (root / "latest").unlink()
    assert trainer.latest_checkpoint() == root / "step-0000008"
    (root / "latest").write_text("step-0000099\n")  # points at nothing complete
    (root / "step-0000008" / STATE_FILE).unlink()  # and the newest folder is incomplete
    assert trainer.latest_checkpoint() == root / "step-0000006"


# --------------------------------------------------------------------------- failures
class FailingReplace:
    """``os.replace`` that raises once, on the call chosen by ``which``."""

    def __init__(self, which: str, step: int):
        self.which, self.step, self.fired = which, step, False
        self.real = os.replace

    def __call__(self, source, target) -> None:
        source, target = Path(source), Path(target)
        tag = f"step-{self.step:07d}"
        match = {
            # the model folder written inside the checkpoint's temporary folder
            "model": f".tmp-{tag}" in str(target) and target.name == "model",
            # the rename that commits the checkpoint folder
            "folder": target.name == tag,
            # the rename that moves the `latest` pointer to it
            "pointer": target.name == "latest" and source.read_text().strip() == tag,
        }[self.which]
        if match and not self.fired:
            self.fired = True
            raise OSError(28, "No space left on device (simulated)")
        self.real(source, target)


@pytest.mark.parametrize("which", ["model", "folder", "pointer"])
def test_a_crash_while_saving_keeps_the_previous_checkpoint(
    tokenizer, tmp_path, monkeypatch, which
):
    settings = RunSettings(training={"max_steps": 6, "checkpoint_every": 2})
    reference = make_trainer(tmp_path / "whole", tokenizer, settings)
    reference.run()

    out_dir = tmp_path / "crashed"
    trainer = make_trainer(out_dir, tokenizer, settings)
    failing = FailingReplace(which, step=4)
    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="simulated"):
        trainer.run()
    monkeypatch.undo()
    assert failing.fired

    survivor = make_trainer(out_dir, tokenizer, settings)
    latest = survivor.latest_checkpoint()
    assert latest == out_dir / "checkpoints" / "step-0000002"
    survivor.load_checkpoint(latest)  # intact and loadable
    assert survivor.step == 2
    result = survivor.run()
    assert result.step == 6
    assert_same_weights(student_state(survivor), student_state(reference))
    assert train_steps(out_dir) == [1, 2, 3, 4, 5, 6]  # no step logged twice
    assert not list((out_dir / "checkpoints").glob(".tmp-*"))


class NanAtThirdCall(GeneralDistillation):
    """Distillation whose cosine loss turns NaN from the third batch on."""

    calls = 0

    def forward(self, batch, generator):
        losses = super().forward(batch, generator)
        self.calls += 1
        if self.calls >= 3:
            losses["cos"] = losses["cos"] * float("nan")
        return losses


def test_a_nan_loss_stops_training_and_names_the_last_good_checkpoint(tokenizer, tmp_path):
    settings = RunSettings(training={"max_steps": 6, "checkpoint_every": 2})
    trainer = make_trainer(tmp_path, tokenizer, settings, objective_class=NanAtThirdCall)
    with pytest.raises(TrainingDiverged) as caught:
        trainer.run()
    message = str(caught.value)
    checkpoint = tmp_path / "checkpoints" / "step-0000002"
    assert "loss 'cos' became nan at step 3" in message
    assert str(checkpoint) in message
    assert "Lower the learning rate" in message
    assert trainer.step == 2  # the bad step was never applied
    weights_at_step_2 = student_state(trainer)
    fresh = make_trainer(tmp_path, tokenizer, settings)
    assert fresh.latest_checkpoint() == checkpoint
    fresh.load_checkpoint(checkpoint)
    assert_same_weights(student_state(fresh), weights_at_step_2)
    assert all(torch.isfinite(v).all() for v in weights_at_step_2.values())


def test_a_nan_before_any_checkpoint_says_so(tokenizer, tmp_path):
    settings = RunSettings(training={"max_steps": 6, "checkpoint_every": 5})
    trainer = make_trainer(tmp_path, tokenizer, settings, objective_class=NanAtThirdCall)
    with pytest.raises(TrainingDiverged, match=r"The last good checkpoint is \(none yet\)"):
        trainer.run()


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_weights_broken_by_the_last_step_are_never_saved(tokenizer, tmp_path):
    """No loss follows the last update, so the weights themselves are checked."""
    settings = RunSettings(training={"max_steps": 3, "checkpoint_every": 2})
    trainer = make_trainer(tmp_path, tokenizer, settings)
    update = trainer.optimizer.step

    def last_update_breaks_a_weight(*args, **kwargs):
        update(*args, **kwargs)
        if trainer.step == 2:  # the third and last step (the counter moves after it)
            with torch.no_grad():
                trainer.trainable[0][0] = float("nan")

    trainer.optimizer.step = last_update_breaks_a_weight
    with pytest.raises(TrainingDiverged, match=r"weight array.*NaN or infinite"):
        trainer.run()
    assert not (tmp_path / "checkpoints" / "step-0000003").exists()


def test_a_negative_seed_is_refused():
    with pytest.raises(ConfigError, match=r"seed \(--seed\) must be from 0"):
        TrainingConfig(seed=-1)


def test_an_infinite_learning_rate_is_refused():
    with pytest.raises(ConfigError, match="learning_rate must be a finite number > 0, got inf"):
        TrainingConfig(learning_rate=float("inf"))


# --------------------------------------------------------------------------- a real kill
# About 10 s, most of it the subprocess importing torch: under the 20 s that calls for
# @pytest.mark.slow.
def test_a_killed_training_process_resumes_to_the_same_weights(tokenizer, tmp_path):
    """SIGKILL a subprocess right after its first checkpoint appears, resume here.

    The kill comes once a step past the checkpoint is logged, so the resumed run must also
    drop those records from the log (they are trained again)."""
    settings = {"training": {"max_steps": 60, "checkpoint_every": 3}}
    out_dir = tmp_path / "killed"
    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps([{"out_dir": str(out_dir), "settings": settings}]))
    env = {**os.environ, "DISTILKIT_TEST_THREADS": str(torch.get_num_threads())}
    process = subprocess.Popen(
        [sys.executable, str(WORKER), str(runs)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pointer = out_dir / "checkpoints" / "latest"

    def steps_past_checkpoint() -> bool:
        """The first checkpoint (step 3) exists and step 4 has been logged after it."""
        if not pointer.exists():
            return False
        text = (out_dir / "train_log.jsonl").read_text(encoding="utf-8")
        return '"step": 4,' in text

    deadline = time.monotonic() + 120
    while not steps_past_checkpoint() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    assert not (out_dir / "final-rank0.pt").exists()

    resumed = make_trainer(out_dir, tokenizer, RunSettings(**settings))
    checkpoint = resumed.latest_checkpoint()
    assert checkpoint is not None and int(checkpoint.name.split("-")[1]) < 60
    resumed.run()
    reference = make_trainer(tmp_path / "whole", tokenizer, RunSettings(**settings))
    reference.run()
    assert_same_weights(student_state(resumed), student_state(reference))
    assert train_steps(out_dir) == list(range(1, 61))
