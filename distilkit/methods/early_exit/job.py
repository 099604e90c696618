"""FastBERT early exit end to end (``distilkit train-early-exit``): train the branches of a
fine-tuned classifier by self-distillation, measure the accuracy / layers curve on dev, pick
a threshold and save the model with its branches."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from distilkit.data.batching import sorted_batches
from distilkit.data.tables import read_labelled
from distilkit.encoder import load
from distilkit.evaluate.sentence import SST2_DEV
from distilkit.methods.early_exit.curves import (
    accuracy_vs_layers,
    add_wall_clock,
    collect_layer_logits,
    pick_threshold,
    plot_curve,
)
from distilkit.methods.early_exit.model import BranchConfig, EarlyExitModel
from distilkit.methods.early_exit.objectives import train_branches
from distilkit.tasks.registry import get_task
from distilkit.train.distributed import say
from distilkit.train.run_folder import guarded_run
from distilkit.train.trainer import TrainingConfig

DEFAULT_THRESHOLDS = [round(0.05 * step, 2) for step in range(21)]  # 0, 0.05, ..., 1
CURVE_FILE = "early_exit_curve.json"


def default_training() -> TrainingConfig:
    return TrainingConfig(max_steps=2000, batch_size=32, learning_rate=1e-3, eval_every=500)


@dataclass
class EarlyExitConfig:
    """What ``train-early-exit`` does. ``data``: unlabeled training text (a text file or a
    table with a ``sentence``/``text`` column; None: SST-2 train from the data root);
    ``dev``: a labelled table (None: the shipped SST-2 dev)."""

    model: str
    data: str | None = None
    limit: int | None = None
    dev: str | None = None
    target_speedup: float | None = None
    thresholds: list[float] | None = None
    timed: bool = False
    temperature: float = 1.0
    width: int = 128  # FastBERT's branch width
    max_length: int = 128
    training: TrainingConfig = field(default_factory=default_training)


@guarded_run
def run_early_exit(config: EarlyExitConfig, out_dir: str | Path, resume: bool = True) -> dict:
    """Train, measure and save; returns (and writes to ``early_exit_curve.json``) the chosen
    threshold and the curve. The model with its branches is ``out_dir/model``."""
    out_dir = Path(out_dir)
    encoder = load(config.model)
    model = EarlyExitModel(encoder.model, BranchConfig(width=config.width))
    data = Path(config.data) if config.data is not None else get_task("sst2").path("train")
    texts, _ = read_labelled(data, config.limit)
    dev_texts, dev_labels = read_labelled(Path(config.dev) if config.dev else SST2_DEV, None)
    start = time.perf_counter()
    train_branches(
        model,
        encoder.tokenizer,
        texts,
        out_dir,
        config.training,
        temperature=config.temperature,
        max_length=config.max_length,
        eval_texts=dev_texts[:256],
        resume=resume,
    )
    say(f"trained the branches in {time.perf_counter() - start:.0f} s")
    model.eval()
    layer_logits = collect_layer_logits(model, encoder.tokenizer, dev_texts)
    thresholds = sorted(set(config.thresholds or DEFAULT_THRESHOLDS))
    if config.target_speedup is not None:
        model.threshold = pick_threshold(layer_logits, config.target_speedup)
        thresholds = sorted(set(thresholds) | {model.threshold})
    points = accuracy_vs_layers(layer_logits, dev_labels, thresholds)
    if config.timed:
        batches = [batch for _, batch in sorted_batches(encoder.tokenizer, dev_texts, 32)]
        add_wall_clock(points, model, batches, repeats=1)
    model.save(out_dir / "model", tokenizer=encoder.tokenizer)
    summary = {
        "model": str(config.model),
        "threshold": model.threshold,
        "target_speedup": config.target_speedup,
        "dev_texts": len(dev_texts),
        "curve": [asdict(point) for point in points],
    }
    (out_dir / CURVE_FILE).write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    plot_curve(points, out_dir / "early_exit_curve.png")
    return summary
