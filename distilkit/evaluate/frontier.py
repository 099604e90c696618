"""The speed-quality frontier as a picture: one point per (model, form), quality against
sentences per second on a log axis, the Pareto front drawn through the points no other
beats on both, the target as a line and the chosen point marked."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distilkit.evaluate.report import pyplot

# A point's name is "CANDIDATE / FORM": one colour per candidate, one marker per form.
MARKERS = {"fp32": "o", "int8": "s", "bf16": "v", "onnx-fp32": "^", "onnx-int8": "D", "numpy": "P"}


def _candidate_and_form(name: str) -> tuple[str, str]:
    candidate, _, form = name.partition(" / ")
    return candidate, form


def frontier_points(rows: Sequence[dict]) -> list[dict]:
    """The rows no other row beats on both ``sentences_per_s`` and ``quality`` (at least
    as good on both, better on one), fastest first."""

    def beats(other: dict, row: dict) -> bool:
        at_least = (
            other["sentences_per_s"] >= row["sentences_per_s"]
            and other["quality"] >= row["quality"]
        )
        better = (
            other["sentences_per_s"] > row["sentences_per_s"] or other["quality"] > row["quality"]
        )
        return at_least and better

    front = [row for row in rows if not any(beats(other, row) for other in rows)]
    return sorted(front, key=lambda row: -row["sentences_per_s"])


def plot_frontier(
    rows: Sequence[dict],
    path: str | os.PathLike,
    picked: str | None = None,
    target: float | None = None,
    xlabel: str = "sentences per second (log scale)",
    ylabel: str = "quality",
    title: str = "Quality against speed",
) -> Path:
    """Write the frontier PNG: ``rows`` hold ``name`` (``CANDIDATE / FORM``: a colour per
    candidate, a :data:`MARKERS` shape per form), ``kind`` (``teacher`` is drawn as a
    black star), ``sentences_per_s`` (> 0) and ``quality``; ``picked`` names the row ringed in red;
    ``target`` draws a dashed horizontal line at that quality. Every point is in the legend;
    the points on the front (and the picked one) are also labelled beside them."""
    if not rows:
        raise ValueError("no points to plot")
    if any(not row["sentences_per_s"] or row["sentences_per_s"] <= 0 for row in rows):
        raise ValueError("every point needs a positive sentences_per_s for the log axis")
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(11, 6))
    axis.set_xscale("log")
    front = frontier_points(rows)
    labelled = {row["name"] for row in front} | {picked}
    candidates = list(dict.fromkeys(_candidate_and_form(row["name"])[0] for row in rows))
    for row in rows:
        is_teacher = row.get("kind") == "teacher"
        candidate, form = _candidate_and_form(row["name"])
        axis.scatter(
            row["sentences_per_s"],
            row["quality"],
            marker="*" if is_teacher else MARKERS.get(form, "X"),
            s=220 if is_teacher else 70,
            color="black" if is_teacher else f"C{candidates.index(candidate) % 10}",
            zorder=3,
            label=row["name"],
        )
        if row["name"] in labelled:
            axis.annotate(
                row["name"],
                (row["sentences_per_s"], row["quality"]),
                xytext=(6, 4),
                textcoords="offset points",
                fontsize=7,
            )
    axis.plot(
        [row["sentences_per_s"] for row in front],
        [row["quality"] for row in front],
        color="grey",
        linestyle="-",
        linewidth=1,
        zorder=2,
        label="Pareto front",
    )
    if target is not None:
        axis.axhline(target, color="red", linestyle="--", linewidth=1, label=f"target {target:g}")
    chosen = [row for row in rows if row["name"] == picked]
    if chosen:
        axis.scatter(
            chosen[0]["sentences_per_s"],
            chosen[0]["quality"],
            s=420,
            facecolors="none",
            edgecolors="red",
            linewidths=2,
            zorder=4,
            label=f"picked: {picked}",
        )
    qualities = np.array([row["quality"] for row in rows], dtype=np.float64)
    low = min(qualities.min(), target if target is not None else qualities.min())
    high = max(qualities.max(), target if target is not None else qualities.max())
    margin = max(1.0, 0.08 * (high - low))
    axis.set_ylim(low - margin, high + margin)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


__all__ = ["MARKERS", "frontier_points", "plot_frontier"]
