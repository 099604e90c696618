"""The trainer's throughput accounting: tokens, padded positions and attention pairs
counted from the masks by hand, the warm-up steps left out of a long run's figure, and
the batches counted equal to the batches the objective trained on."""

from __future__ import annotations

import pytest
import torch
from distill_helpers import RunSettings, make_trainer, tiny_tokenizer

from distilkit.train.throughput import MIN_MEASURED_STEPS, WARMUP_STEPS, ThroughputMeter


def test_counts_follow_the_masks_by_hand():
    meter = ThroughputMeter(world_size=2)
    meter.start(0)
    masks = [
        torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]),  # 9 real of 3 x 4
        torch.tensor([[1, 1, 1, 1, 1, 0, 0]]),  # 5 real of 1 x 7
    ]
    for mask in masks:
        meter.count(mask)
    assert meter.counts["tokens"] == 14
    assert meter.counts["padded"] == 12 + 7
    assert meter.counts["pairs"] == 3 * 4**2 + 1 * 7**2  # batch x length^2, for attention
    assert meter.window_tokens == 2 * 14  # every rank's, in a log window
    assert meter.window_rate() > 0 and meter.window_tokens == 0
    meter.stop(3)
    summary = meter.summary()
    assert summary["steps"] == 3
    assert summary["tokens_per_s"] == pytest.approx(2 * 14 / summary["seconds"])


@pytest.mark.parametrize("max_steps", [8, WARMUP_STEPS + MIN_MEASURED_STEPS + 3])
def test_a_run_counts_the_batches_it_trained_after_the_warm_up(tmp_path, max_steps):
    settings = RunSettings(training={"max_steps": max_steps, "grad_accumulation": 2})
    trainer = make_trainer(tmp_path, tiny_tokenizer(tmp_path), settings)
    masks: list[torch.Tensor] = []
    forward = trainer.objective.forward

    def recording(batch, *args, **kwargs):
        masks.append(batch["attention_mask"].clone())
        return forward(batch, *args, **kwargs)

    trainer.objective.forward = recording
    result = trainer.run(resume=False)
    assert len(masks) == 2 * max_steps
    warm = max_steps - WARMUP_STEPS > MIN_MEASURED_STEPS  # long enough to leave it out
    measured = masks[2 * WARMUP_STEPS :] if warm else masks
    counts = result.throughput
    assert counts["steps"] == len(measured) // 2
    assert counts["tokens"] == sum(int(mask.sum()) for mask in measured)
    assert counts["padded"] == sum(mask.numel() for mask in measured)
    assert counts["pairs"] == sum(mask.numel() * mask.shape[1] for mask in measured)
    assert counts["seconds"] > 0
    assert counts["tokens_per_s"] == pytest.approx(counts["tokens"] / counts["seconds"])
