"""The one training loop, shared by every distillation and fine-tuning method.

The loop knows nothing about losses: an :class:`Objective` maps a batch to a dict of
named, unweighted loss tensors and says how to weight them. The loop does the rest:
AdamW (the fused kernel, on the CPU too) with warmup + linear decay, gradient
accumulation, clipping, bf16 autocast, a progress bar with every loss term and tokens/s,
a JSONL log, periodic evaluation, atomic checkpoints with exact resume, a NaN/inf guard,
and DDP when launched by ``torchrun``.

Devices: the objective (student, projections and its frozen teacher), every batch, the
losses and the evaluation run on ``TrainingConfig.device`` (auto: the GPU when there is
one). On CUDA: bf16 autocast (fp16 with a gradient scaler where bf16 is missing), the
teacher cast to bf16, optionally ``torch.compile``, batches collated in
DataLoader workers into pinned memory, and no host-device synchronisation in the step
loop except on the steps that log, checkpoint or check the time budget. On the CPU every
step is checked and logged exactly as before.

DDP: the sampler hands out the *global* batches (the same on every rank); each step's
``grad_accumulation`` batches are shared out among the ranks (:func:`shard_step`), so the
global batch, the learning-rate schedule and the data position do not depend on the
number of processes, and a checkpoint resumes with any number of them.

Data flow: sampler -> indices -> dataset items -> collate -> objective(batch) ->
named losses -> weighted sum -> backward -> optimizer step -> log / eval / checkpoint.

This module is the loop; its parts live beside it: :mod:`~distilkit.train.config`
(``TrainingConfig``), :mod:`~distilkit.train.objective`, :mod:`~distilkit.train.schedule`,
:mod:`~distilkit.train.checkpoints` (folders on disk, random states),
:mod:`~distilkit.train.train_log`, :mod:`~distilkit.train.feed` (sampler to batches on the
device) and :mod:`~distilkit.train.throughput` (tokens/s, the counts MFU is computed from).
Their public names are importable from here too.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from distilkit.model.device import resolve_device, to_device
from distilkit.settings import ConfigError, to_dict
from distilkit.train import distributed
from distilkit.train.checkpoints import (
    STATE_FILE,
    CheckpointDamaged,
    read_state,
    resume_candidates,
    rng_state,
    seed_globals,
    set_rng_state,
    write_checkpoint,
)
from distilkit.train.config import (
    MAX_SEED,
    PRECISIONS,
    TrainingConfig,
    resolve_precision,
    schedule_summary,
)
from distilkit.train.distributed import shard_step
from distilkit.train.feed import BatchFeed, default_num_workers
from distilkit.train.losses import weighted_sum
from distilkit.train.objective import Objective
from distilkit.train.run_folder import (
    RUN_CONFIG_FILE,
    RunLock,
    clean_stale_temporaries,
    resume_changes,
    set_aside_previous_run,
)
from distilkit.train.schedule import (
    REFIT_EVERY,
    linear_schedule,
    make_scheduler,
    refit_scheduler,
    steps_in_budget,
)
from distilkit.train.throughput import ThroughputMeter
from distilkit.train.train_log import append_record, trim_log


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    step: int
    stopped_by: str  # "max_steps" | "time_budget" | "interrupted"
    checkpoint: Path | None
    elapsed: float
    last_losses: dict[str, float]
    throughput: dict[str, float] | None = None  # see Trainer.throughput


class Trainer:
    """Runs an :class:`Objective` over batches from ``dataset`` in the order of ``sampler``.

    ``dataset[i]`` returns one example; ``collate`` turns a list of examples into a
    batch dict of tensors (with ``attention_mask`` so tokens/s can be counted).
    ``sampler`` must offer ``state_dict``/``load_state_dict`` (see
    ``data.batching.LengthGroupedSampler``) so a resumed run sees the same data.
    """

    def __init__(
        self,
        objective: Objective,
        dataset: Any,
        sampler: Any,
        collate: Callable[[list[Any]], dict[str, torch.Tensor]],
        config: TrainingConfig,
        out_dir: str | Path,
        eval_batches: Sequence[dict[str, torch.Tensor]] | None = None,
        run_config: dict[str, Any] | None = None,
    ):
        self.objective = objective
        self.config = config
        self.out_dir = Path(out_dir)
        self.eval_batches = list(eval_batches or [])
        self.run_config = run_config or {}
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        self.device = resolve_device(config.device)
        if distributed.active() and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())  # LOCAL_RANK's
        self.precision = resolve_precision(config.precision, self.device)
        objective.to(self.device)
        for frozen in objective.frozen_models():
            frozen.to(self.device)
            if self.device.type == "cuda" and self.precision != "fp32":
                frozen.to(torch.bfloat16 if self.precision == "bf16" else torch.float16)
        self.model = distributed.wrap(objective, self.device)
        if config.compile:
            self.model = torch.compile(self.model)
        self.trainable = parameters = [p for p in objective.parameters() if p.requires_grad]
        if not parameters:
            raise ConfigError("the objective has no trainable parameters")
        decay = [p for p in parameters if p.dim() >= 2]
        no_decay = [p for p in parameters if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        settings = {"lr": config.learning_rate, "eps": config.adam_epsilon}
        # the fused kernel on CPUs too: the main job's Adam share of a step fell from 4.4%
        # to 1.2% on a 2-core CPU (docs/RESULTS.md); torch < 2.4 has it on CUDA only
        self.fused = config.fused_adamw and self.device.type in ("cpu", "cuda")
        try:
            self.optimizer = torch.optim.AdamW(groups, **settings, fused=self.fused or None)
        except RuntimeError:
            self.fused = False
            self.optimizer = torch.optim.AdamW(groups, **settings)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        # CPU: every step checked and logged; elsewhere only the steps that log wait for the device
        self.eager_checks = self.device.type == "cpu"
        self.meter = ThroughputMeter(self.world_size)
        self.feed = BatchFeed(
            dataset,
            sampler,
            collate,
            config.grad_accumulation,
            self.device,
            default_num_workers(config.num_workers, self.device),
            self.meter,
            self.rank,
            self.world_size,
        )
        self.dataset, self.sampler, self.collate = dataset, sampler, collate
        self.num_workers, self.micro_steps = self.feed.num_workers, self.feed.micro_steps
        self.schedule_steps = config.max_steps
        self.scheduler = self._make_scheduler()
        self._said_max_steps_binds = False  # the budget fit's note, given once
        self.generator = self._new_generator(self.rank)
        self.step = 0
        self.elapsed = 0.0
        self.log_path = self.out_dir / "train_log.jsonl"
        self.resumed_changes: dict[str, list[Any]] = {}

    def _new_generator(self, rank: int) -> torch.Generator:
        """The masking / view generator of ``rank``, on the run's device (CPU or CUDA)."""
        device = self.device if self.device.type == "cuda" else torch.device("cpu")
        return torch.Generator(device=device).manual_seed(self.config.seed * 1000 + rank)

    # ------------------------------------------------------------------ schedule
    def _make_scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        return make_scheduler(self.optimizer, self.config.warmup_fraction, self.schedule_steps)

    def _fit_schedule_to_budget(self, seconds_per_step: float) -> None:
        """With a time budget, fit the schedule length to the steps that remain in it, so
        the LR decays to 0 as the budget runs out. Called again during the run with the
        recent step time, so a run that speeds up (or slows down) is refitted; never
        beyond ``max_steps``."""
        fitted = steps_in_budget(self.step, self.elapsed, self.config.time_budget, seconds_per_step)
        if fitted > self.config.max_steps and not self._said_max_steps_binds:
            self._said_max_steps_binds = True
            if self.is_main:
                print(
                    f"note: max_steps {self.config.max_steps} ends training before the time "
                    f"budget ({fitted} steps fit in {self.config.time_budget:g} s at this speed); "
                    "raise max_steps (--max-steps) to use the whole budget",
                    flush=True,
                )
        fitted = distributed.min_int(max(self.step + 1, min(self.config.max_steps, fitted)))
        if fitted != self.schedule_steps:
            self.schedule_steps = fitted
            self.scheduler = refit_scheduler(
                self.scheduler, self.optimizer, self.config.warmup_fraction, fitted
            )

    # ------------------------------------------------------------------ checkpoints
    def latest_checkpoint(self) -> Path | None:
        candidates = resume_candidates(self.out_dir)
        return candidates[0] if candidates else None

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-N`` atomically (temp folder, then rename) on rank 0."""
        # every rank's random state, so a resumed DDP run draws the same masks and dropout
        rng_states = distributed.gather_objects(rng_state())
        generator_states = distributed.gather_objects(self.generator.get_state())
        final = self.out_dir / "checkpoints" / f"step-{self.step:07d}"
        if self.is_main:
            # plain tensors, numbers, strings and lists only: loaded with weights_only=True
            state = {
                "step": self.step,
                "elapsed": self.elapsed,
                "schedule_steps": self.schedule_steps,
                "max_steps": self.config.max_steps,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "sampler": self.feed.state_dict(),
                "world_size": self.world_size,
                **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
                "rng": rng_states,
                "generator": generator_states,
            }
            settings = {"training": to_dict(self.config), **self.run_config}
            final = write_checkpoint(
                self.out_dir,
                self.step,
                state,
                self.objective.save,
                settings,
                self.config.keep_checkpoints,
            )
        distributed.barrier()
        return final

    def load_checkpoint(self, folder: Path) -> None:
        """Restore weights, optimizer, schedule, data position and every RNG."""
        state = read_state(folder)
        saved_max_steps = state.get("max_steps", self.config.max_steps)  # older checkpoints
        if saved_max_steps != self.config.max_steps:
            raise ConfigError(
                f"{folder} belongs to a run of max_steps={saved_max_steps} (at step "
                f"{state['step']}), but this one asks for max_steps={self.config.max_steps}: "
                "its learning-rate schedule was laid out for the old length, so resume with "
                "the same --max-steps, or start afresh with --no-resume (or another --out)"
            )
        self.resumed_changes = self._check_settings(folder)
        try:
            self.objective.load(folder / "model")
        except (OSError, RuntimeError, EOFError, ValueError, KeyError) as error:
            raise CheckpointDamaged(f"{folder / 'model'} cannot be read ({error})") from None
        self.schedule_steps = state["schedule_steps"]
        self.scheduler = self._make_scheduler()
        self.scheduler.load_state_dict(state["scheduler"])
        # after the scheduler, whose construction rewrites the learning rates
        self.optimizer.load_state_dict(state["optimizer"])
        self.feed.load_state_dict(state["sampler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.elapsed = state["elapsed"]
        if self.rank < len(state["rng"]):
            set_rng_state(state["rng"][self.rank])
            generator = state["generator"][self.rank]
            if generator.numel() == self.generator.get_state().numel():
                self.generator.set_state(generator)  # (a CPU run's state fits a CPU generator)
        else:  # a rank the saving run did not have: fresh streams of its own
            seed_globals(self.config.seed + self.step, self.rank)

    def _check_settings(self, folder: Path) -> dict[str, list[Any]]:
        """This run's settings against the checkpoint's: result-changing differences are
        refused; the resumable ones (time budget, logging, checkpointing) returned."""
        path = folder / RUN_CONFIG_FILE
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # a checkpoint from before run_config.json
        asked = {"training": to_dict(self.config), **self.run_config}
        return resume_changes(saved if isinstance(saved, dict) else {}, asked, self.out_dir)

    def _resume(self) -> Path | None:
        """Load the newest checkpoint that reads back whole; a damaged one is skipped
        (and said so). Returns the checkpoint loaded, or None when there is none."""
        damaged: list[str] = []
        for candidate in resume_candidates(self.out_dir):
            try:
                self.load_checkpoint(candidate)
            except CheckpointDamaged as error:
                damaged.append(candidate.name)
                if self.is_main:
                    print(f"warning: {error}; falling back to an older checkpoint", flush=True)
                continue
            if damaged and self.is_main:
                print(
                    f"resuming from {candidate.name}, the newest intact checkpoint "
                    f"(damaged: {', '.join(damaged)})",
                    flush=True,
                )
            return candidate
        if damaged:
            raise ConfigError(
                f"no checkpoint in {self.out_dir / 'checkpoints'} reads back whole (damaged: "
                f"{', '.join(damaged)}): start afresh with --no-resume or another --out"
            )
        return None

    # ------------------------------------------------------------------ the loop
    def throughput(self) -> dict[str, float]:
        """This rank's measured work after the first steps (:meth:`ThroughputMeter.summary`)."""
        return self.meter.summary()

    def _trim_log(self) -> None:
        if self.is_main:
            trim_log(self.log_path, self.step)

    def _log(self, record: dict[str, Any]) -> None:
        if self.is_main:
            append_record(self.log_path, record)

    def _check_weights_finite(self) -> None:
        """The last step's update is checked by no later loss: check the weights themselves
        before they are saved, so a diverged run never writes a NaN model."""
        bad = [p for p in self.trainable if not torch.isfinite(p.detach()).all()]
        if bad:
            checkpoint = self.latest_checkpoint()
            raise TrainingDiverged(
                f"{len(bad)} weight array(s) became NaN or infinite by step {self.step}; "
                f"stopped without saving them. The last good checkpoint is "
                f"{checkpoint or '(none yet)'}. Lower the learning rate or use --precision fp32."
            )

    def evaluate(self) -> dict[str, float]:
        if not self.eval_batches:
            return {}
        self.objective.eval()
        with torch.inference_mode(), self._autocast(evaluation=True):
            batches = [to_device(batch, self.device) for batch in self.eval_batches]
            metrics = self.objective.evaluate(batches)
        self.objective.train()
        return {f"eval/{k}": float(v) for k, v in metrics.items()}

    def _autocast(self, evaluation: bool = False) -> contextlib.AbstractContextManager:
        """bf16 (or fp16) autocast on the run's device; on the CPU evaluation stays fp32."""
        if self.precision == "fp32" or (evaluation and self.device.type == "cpu"):
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _diverged(self, name: str, value: float, steps: str) -> TrainingDiverged:
        checkpoint = self.latest_checkpoint()
        return TrainingDiverged(
            f"loss '{name}' became {value} at step {steps}; "
            f"stopped. The last good checkpoint is "
            f"{checkpoint or '(none yet)'}. Lower the learning rate, use "
            "--precision fp32, or check the data."
        )

    def _micro_step(
        self, batch: dict[str, torch.Tensor], sync: bool
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Forward and backward of one micro-batch; returns the named losses and their
        weighted total (on the device, not yet read by the host)."""
        with distributed.no_sync(self.model, not sync), self._autocast():
            losses = self.model(batch, self.generator)
            total = weighted_sum(losses, self.objective.weights)
        scaled = total / self.micro_steps
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        return losses, total

    def _optimizer_step(self) -> torch.Tensor:
        """Clip, step, schedule; returns the gradient norm (a device tensor)."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.fused:
            # the fused kernel writes the weights without bumping their version counters;
            # the models' inference caches (stacked Q/K/V, oneDNN-packed weights) key on them
            torch.autograd.graph.increment_version(self.trainable)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def run(self, resume: bool = True, stop_after_steps: int | None = None) -> TrainResult:
        """Train until ``max_steps``, the time budget, or ``stop_after_steps`` (for tests
        of resumption: a run stopped there and resumed must equal an uninterrupted one)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(self.out_dir) if self.is_main else contextlib.nullcontext()
        with lock:
            return self._run(resume, stop_after_steps)

    def _run(self, resume: bool, stop_after_steps: int | None) -> TrainResult:
        config = self.config
        last_checkpoint: Path | None = None
        if self.is_main:
            clean_stale_temporaries(self.out_dir)
        if resume and (checkpoint := self._resume()) is not None:
            last_checkpoint = checkpoint  # a finished run is not saved again
            self._trim_log()
            if self.is_main:
                print(f"resumed from {checkpoint} (step {self.step})")
                if self.resumed_changes:
                    self._log({"step": self.step, "changed": self.resumed_changes})
                    print(
                        "changed on resume at step "
                        f"{self.step}: "
                        + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in self.resumed_changes.items())
                    )
        else:
            seed_globals(config.seed, self.rank)
            if self.is_main:
                # an earlier run's checkpoints would outrank this one's: set them aside
                moved = set_aside_previous_run(self.out_dir, ["checkpoints", "train_log.jsonl"])
                if moved is not None:
                    print(f"starting afresh: the earlier checkpoints were moved to {moved}")
        distributed.barrier()
        self.objective.train()
        batches = self.feed.batches()
        bar = tqdm(
            total=config.max_steps,
            initial=self.step,
            desc="training",
            unit="step",
            disable=not (config.progress and self.is_main),
            dynamic_ncols=True,
        )
        stopped_by = "max_steps"
        last: dict[str, float] = {}
        run_start = time.perf_counter() - self.elapsed
        refit_start, refit_step = time.perf_counter(), self.step
        self.meter.start(self.step)
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        while self.step < min(config.max_steps, self.schedule_steps):
            step_start = time.perf_counter()
            sums: dict[str, Any] = {}
            for micro in range(self.micro_steps):
                batch = next(batches)
                losses, total = self._micro_step(batch, micro == self.micro_steps - 1)
                for name, value in {**losses, "total": total}.items():
                    value = value.detach()
                    if self.eager_checks:  # the CPU: each loss read and checked at once
                        if not torch.isfinite(value).all():
                            raise self._diverged(name, float(value), str(self.step + 1))
                        value = float(value)
                    else:  # queued on the device; read on the steps that log
                        nonfinite |= ~torch.isfinite(value).all()
                        value = value.float()
                    sums[name] = sums.get(name, 0.0) + value / self.micro_steps
            grad_norm = self._optimizer_step()
            self.step += 1
            self.feed.step_done()
            self.elapsed = time.perf_counter() - run_start
            self.meter.step_done(self.step, config.max_steps)  # past the warm-up: measured
            logs = self.step % config.log_every == 0 or self.step == 1
            checkpoints = self.step % config.checkpoint_every == 0
            read = self.eager_checks or logs or checkpoints or self.step >= config.max_steps
            if read:
                if not self.eager_checks:
                    if bool(nonfinite):
                        bad = next(k for k, v in sums.items() if not torch.isfinite(v).all())
                        steps = f"{self.step} (or one of the steps since the last log)"
                        raise self._diverged(bad, float(sums[bad]), steps)
                    sums = {name: float(value) for name, value in sums.items()}
                # the loss of the whole step: every rank trained on its own share of the batch
                last = distributed.mean_over_ranks(sums)
            if config.time_budget is not None and (
                self.step == 10 or (self.step > 10 and self.step % REFIT_EVERY == 0)
            ):
                if self.step == 10:
                    self._fit_schedule_to_budget(time.perf_counter() - step_start)
                else:
                    recent = (time.perf_counter() - refit_start) / max(1, self.step - refit_step)
                    self._fit_schedule_to_budget(recent)
                refit_start, refit_step = time.perf_counter(), self.step
                bar.total = self.schedule_steps
            if logs:
                record = {
                    "step": self.step,
                    **{f"loss/{k}": v for k, v in last.items()},
                    "lr": self.optimizer.param_groups[0]["lr"],  # the next step's LR
                    "grad_norm": float(grad_norm),
                    "tokens_per_s": self.meter.window_rate(),
                    "elapsed": self.elapsed,
                }
                self._log(record)
                bar.set_postfix(
                    {k: f"{v:.3f}" for k, v in last.items()}
                    | {"tok/s": f"{record['tokens_per_s']:.0f}"}
                )
            bar.update(1)
            if self.step % config.eval_every == 0:
                metrics = self.evaluate()
                if metrics:
                    self._log({"step": self.step, **metrics})
            if checkpoints:
                last_checkpoint = self.save_checkpoint()
            if stop_after_steps is not None and self.step >= stop_after_steps:
                stopped_by = "interrupted"
                break
            # decided together: a rank that left the loop alone would hang the others
            # (off the CPU, on the steps that read the device anyway)
            if (
                config.time_budget is not None
                and (read or not distributed.active())
                and distributed.any_rank(self.elapsed >= config.time_budget)
            ):
                stopped_by = "time_budget"
                break
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.meter.stop(self.step)
        if stopped_by != "interrupted":
            self._check_weights_finite()
        if (
            stopped_by == "max_steps"
            and config.time_budget is not None
            and self.schedule_steps < config.max_steps
        ):
            stopped_by = "time_budget"  # the schedule was fitted to the budget and ran out
        if stopped_by != "interrupted" and (
            last_checkpoint is None or not last_checkpoint.name.endswith(f"{self.step:07d}")
        ):
            metrics = self.evaluate()
            if metrics:
                self._log({"step": self.step, **metrics})
            last_checkpoint = self.save_checkpoint()
        return TrainResult(
            self.step, stopped_by, last_checkpoint, self.elapsed, last, self.throughput()
        )


__all__ = [
    "MAX_SEED",
    "PRECISIONS",
    "STATE_FILE",
    "CheckpointDamaged",
    "Objective",
    "TrainResult",
    "Trainer",
    "TrainingConfig",
    "TrainingDiverged",
    "linear_schedule",
    "resolve_precision",
    "schedule_summary",
    "shard_step",
]
