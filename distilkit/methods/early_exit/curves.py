"""Early-exit curves: what each threshold costs and keeps, from every classifier's logits.

An example's branch predictions do not depend on the other examples of its batch, so the
outcome of any threshold follows exactly from the predictions of every classifier on every
example (:func:`collect_layer_logits`, :func:`simulate_exits`): the accuracy against
average-layers curve (:func:`accuracy_vs_layers`) and the threshold for a target layer
speed-up (:func:`pick_threshold`) need no re-run of the model. :func:`add_wall_clock`
then times each threshold for real, and :func:`plot_curve` draws the curve.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from distilkit.data.batching import sorted_batches
from distilkit.methods.early_exit.model import (
    EarlyExitError,
    EarlyExitModel,
    _check_threshold,
    normalized_entropy,
)
from distilkit.model.tokenizer import Batch, Tokenizer


def collect_layer_logits(
    model: EarlyExitModel, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 64
) -> np.ndarray:
    """:meth:`EarlyExitModel.layer_logits` over ``texts``: ``(num_layers, n, num_labels)``
    float32, in the order of ``texts``."""

    out = np.zeros((model.num_layers, len(texts), model.model.config.num_labels), np.float32)
    with torch.inference_mode():
        for indices, batch in sorted_batches(tokenizer, texts, batch_size):
            out[:, indices] = model.layer_logits(**batch.model_inputs()).float().numpy()
    return out


def simulate_exits(layer_logits: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """What :meth:`EarlyExitModel.forward` returns at ``threshold``, from every classifier's
    logits ``(num_layers, n, num_labels)``: (logits ``(n, num_labels)``, exit layers ``(n,)``)."""
    threshold = _check_threshold(threshold)
    layer_logits = np.asarray(layer_logits)
    if layer_logits.ndim != 3:
        raise EarlyExitError(
            f"layer_logits must be (num_layers, n, num_labels), got shape {layer_logits.shape}"
        )
    entropy = normalized_entropy(torch.from_numpy(layer_logits)).numpy()  # (L, n)
    exits = np.zeros_like(entropy, dtype=bool)
    if threshold >= 1:
        exits[:] = True
    elif threshold > 0:
        exits = entropy < threshold
    exits[-1] = True
    first = exits.argmax(0)  # (n,) index of the first classifier that lets go
    return layer_logits[first, np.arange(layer_logits.shape[1])], first + 1


@dataclass
class CurvePoint:
    """One threshold on the speed/accuracy curve.

    average_layers: mean blocks run per example; layer_speedup: num_layers divided by it
    (the FLOP speed-up of the blocks, branches not counted); accuracy: against labels;
    agreement: with the full-depth classifier; exits_per_layer: how many examples left
    after each block; seconds / wall_clock_speedup: measured (see :func:`time_thresholds`).
    """

    threshold: float
    average_layers: float
    layer_speedup: float
    agreement: float
    accuracy: float | None = None
    exits_per_layer: list[int] = field(default_factory=list)
    seconds: float | None = None
    wall_clock_speedup: float | None = None


def accuracy_vs_layers(
    layer_logits: np.ndarray, labels: Sequence[int] | np.ndarray | None, thresholds: Sequence[float]
) -> list[CurvePoint]:
    """The accuracy against average-layers curve, one :class:`CurvePoint` per threshold."""
    layer_logits = np.asarray(layer_logits)
    num_layers, count = layer_logits.shape[:2]
    if labels is not None and len(labels) != count:
        raise EarlyExitError(f"got {len(labels)} labels for {count} examples")
    final = layer_logits[-1].argmax(-1)
    points = []
    for threshold in thresholds:
        logits, layers = simulate_exits(layer_logits, threshold)
        predictions = logits.argmax(-1)
        points.append(
            CurvePoint(
                threshold=float(threshold),
                average_layers=float(layers.mean()),
                layer_speedup=num_layers / float(layers.mean()),
                agreement=float((predictions == final).mean()),
                accuracy=None
                if labels is None
                else float((predictions == np.asarray(labels)).mean()),
                exits_per_layer=np.bincount(layers - 1, minlength=num_layers).tolist(),
            )
        )
    return points


def pick_threshold(layer_logits: np.ndarray, target_speedup: float) -> float:
    """The threshold with the fewest early exits whose layer speed-up reaches
    ``target_speedup`` on these examples.

    The exits only change where the threshold passes a branch entropy, and the speed-up
    never falls as the threshold rises, so the candidates are 0, the midpoints between
    consecutive distinct branch entropies and 1, searched by bisection. A midpoint rather
    than the entropy itself keeps new examples near the boundary on the same side.
    """
    layer_logits = np.asarray(layer_logits)
    num_layers = layer_logits.shape[0]
    if not 1.0 <= target_speedup <= num_layers:
        raise EarlyExitError(
            f"the target speed-up must be between 1 and {num_layers} (the number of layers: "
            f"exiting everything after the first block), got {target_speedup}"
        )
    entropies = np.unique(normalized_entropy(torch.from_numpy(layer_logits[:-1])).numpy())
    entropies = entropies.astype(np.float64)
    candidates = [0.0, *((entropies[:-1] + entropies[1:]) / 2), 1.0]

    def speedup(threshold: float) -> float:
        return num_layers / float(simulate_exits(layer_logits, threshold)[1].mean())

    low, high = 0, len(candidates) - 1  # speedup(candidates[high]) == num_layers >= target
    while low < high:
        middle = (low + high) // 2
        if speedup(candidates[middle]) >= target_speedup:
            high = middle
        else:
            low = middle + 1
    return float(candidates[low])


def time_thresholds(
    model: EarlyExitModel,
    batches: Sequence[Batch],
    thresholds: Sequence[float],
    repeats: int = 3,
) -> tuple[float, list[float]]:
    """Median seconds of one pass over ``batches``: (plain model forward, adaptive inference
    at each threshold). Passes are timed in turns so background load hits all alike."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    runs = [lambda batch: model.model(**batch.model_inputs())]
    runs += [
        lambda batch, t=threshold: model(**batch.model_inputs(), threshold=t)
        for threshold in thresholds
    ]
    seconds: list[list[float]] = [[] for _ in runs]
    with torch.inference_mode():
        for run in runs:  # warm-up
            run(batches[0])
        for _ in range(repeats):
            for index, run in enumerate(runs):
                start = time.perf_counter()
                for batch in batches:
                    run(batch)
                seconds[index].append(time.perf_counter() - start)
    medians = [statistics.median(values) for values in seconds]
    return medians[0], medians[1:]


def add_wall_clock(
    points: list[CurvePoint],
    model: EarlyExitModel,
    batches: Sequence[Batch],
    repeats: int = 3,
) -> float:
    """Fill ``seconds`` and ``wall_clock_speedup`` (over the plain model) of each point;
    returns the plain model's seconds per pass."""
    reference, seconds = time_thresholds(model, batches, [p.threshold for p in points], repeats)
    for point, value in zip(points, seconds, strict=True):
        point.seconds = value
        point.wall_clock_speedup = reference / value
    return reference


def plot_curve(points: Sequence[CurvePoint], path: str | os.PathLike, title: str = "") -> Path:
    """Accuracy (or agreement with the full model) against average layers and, when
    timed, against wall-clock speed-up; one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not points:
        raise EarlyExitError("no curve points to plot")
    timed = all(p.wall_clock_speedup is not None for p in points)
    labelled = all(p.accuracy is not None for p in points)
    quality = [100 * (p.accuracy if labelled else p.agreement) for p in points]
    figure, axes = plt.subplots(1, 2 if timed else 1, figsize=(11 if timed else 6, 4.5))
    axes = list(np.atleast_1d(axes))
    panels = [("average layers run", [p.average_layers for p in points])]
    if timed:
        panels.append(
            ("wall-clock speed-up over the plain model", [p.wall_clock_speedup for p in points])
        )
    for axis, (label, xs) in zip(axes, panels, strict=True):
        axis.plot(xs, quality, marker="o")
        for x, y, point in zip(xs, quality, points, strict=True):
            axis.annotate(
                f"{point.threshold:.2g}",
                (x, y),
                xytext=(4, 4),
                fontsize=7,
                textcoords="offset points",
            )
        axis.set_xlabel(label)
        axis.set_ylabel("accuracy %" if labelled else "agreement with the full model %")
        axis.grid(True, alpha=0.3)
    figure.suptitle(title or "Early exit: quality against speed (labels: thresholds)")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


__all__ = [
    "CurvePoint",
    "accuracy_vs_layers",
    "add_wall_clock",
    "collect_layer_logits",
    "pick_threshold",
    "plot_curve",
    "simulate_exits",
    "time_thresholds",
]
