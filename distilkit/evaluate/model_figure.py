"""The net's summary figure (`distilkit info --plot`): a diagram of the network, stage by
stage (input ids -> embeddings -> blocks -> pooler / head -> sentence pooling), with each
stage's output shape and parameter count, beside bar charts of the parameters per block
and of the layer types.

The numbers come from :func:`distilkit.model.summary.model_info` (``info``); the diagram
reads the array names and shapes there, so it needs no model object.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distilkit.evaluate.plotting import _new_figure, _save, human_count, parameter_groups

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_BLOCKS_DRAWN = 6  # deeper nets show the first and last blocks and a "..." between
HEAD_OUTPUTS = {
    "masked_lm": "(batch, tokens, {vocab})  token scores",
    "sequence_classification": "(batch, {labels})  class scores",
    "token_classification": "(batch, tokens, {labels})  tag scores",
    "question_answering": "(batch, tokens, 2)  start, end",
}
_COLOURS = {"input": "#e8e8e8", "embeddings": "#f6d5b8", "block": "#c9d7ee", "out": "#cfe8cf"}


@dataclass
class Stage:
    """One box of the diagram."""

    title: str
    detail: str
    shape: str  # the stage's output
    count: int  # parameters
    kind: str  # a key of _COLOURS


def _shape_of(info: dict, suffix: str) -> list[int] | None:
    return next((a["shape"] for name, a in info["arrays"].items() if name.endswith(suffix)), None)


def model_stages(
    info: dict, recipe: str | None = None, output_dim: int | None = None
) -> list[Stage]:
    """The diagram's boxes, in order. ``recipe``: how the token vectors become a sentence
    vector (``"mean pooling, normalized"``), drawn last with ``output_dim``; none for a
    model without one."""
    groups = parameter_groups(info)
    config = info.get("config")
    if config is None:  # not a transformer encoder (a BiLSTM): one box per group
        stages = [Stage("input ids", "", "(batch, tokens)", 0, "input")]
        stages += [Stage(name, "", "", count, "block") for name, count in groups.items()]
        return stages
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    stages = [Stage("input ids", f"vocabulary {vocab:,}", "(batch, tokens)", 0, "input")]
    tables = []
    for label, suffix in (
        ("word", "word_embeddings.weight"),
        ("position", "position_embeddings.weight"),
        ("type", "token_type_embeddings.weight"),
    ):
        shape = _shape_of(info, suffix)
        if shape:
            tables.append(f"{label} {shape[0]:,}x{shape[1]}")
    stages.append(
        Stage(
            "embeddings",
            " + ".join(tables) + ", LayerNorm",
            f"(batch, tokens, {hidden})",
            groups.get("embeddings", 0),
            "embeddings",
        )
    )
    block_detail = (
        f"self-attention {config['num_heads']} heads x {hidden // config['num_heads']}, "
        f"FFN {hidden}->{config['intermediate_size']}->{hidden}"
    )
    layers = [name for name in groups if name.startswith("layer ")]
    for name in layers:
        stages.append(
            Stage(
                f"block {name.split()[1]}",
                block_detail,
                f"(batch, tokens, {hidden})",
                groups[name],
                "block",
            )
        )
    if "pooler" in groups:
        detail = "[CLS] -> dense, tanh" + (" (the sentence vector skips it)" if recipe else "")
        stages.append(Stage("pooler", detail, f"(batch, {hidden})", groups["pooler"], "out"))
    head = config.get("head")
    if head:
        labels = (_shape_of(info, "classifier.weight") or [0])[0]
        shape = HEAD_OUTPUTS.get(head, "").format(vocab=f"{vocab:,}", labels=labels)
        stages.append(Stage(f"head: {head}", "", shape, groups.get("head", 0), "out"))
    if recipe:
        dim = output_dim or hidden
        last = f"block {len(layers) - 1}" if layers else "embeddings"
        detail = f"{recipe} (of {last}'s token vectors)"
        stages.append(Stage("sentence vector", detail, f"(batch, {dim})", 0, "out"))
    return stages


def _drawn(stages: list[Stage]) -> list[Stage | None]:
    """The stages to draw; ``None`` marks the blocks left out of a deep net."""
    blocks = [i for i, s in enumerate(stages) if s.title.startswith("block ")]
    if len(blocks) <= MAX_BLOCKS_DRAWN:
        return list(stages)
    keep = set(blocks[:2] + blocks[-2:])
    out: list[Stage | None] = []
    for index, stage in enumerate(stages):
        if index in blocks and index not in keep:
            if out and out[-1] is not None:
                out.append(None)
            continue
        out.append(stage)
    return out


def _draw_diagram(axes: Axes, stages: list[Stage]) -> None:
    from matplotlib.patches import FancyBboxPatch

    drawn = _drawn(stages)
    hidden_blocks = sum(1 for s in stages if s.title.startswith("block ")) - sum(
        1 for s in drawn if s is not None and s.title.startswith("block ")
    )
    rows = len(drawn)
    axes.set_xlim(0, 1)
    axes.set_ylim(rows, 0)
    axes.axis("off")
    axes.set_title("The network, stage by stage (output shape, parameters)")
    for row, stage in enumerate(drawn):
        centre = row + 0.5
        if stage is None:
            axes.text(
                0.36,
                centre,
                f"... {hidden_blocks} more blocks like these ...",
                ha="center",
                va="center",
                fontsize=9,
                style="italic",
            )
            continue
        box = FancyBboxPatch(
            (0.02, row + 0.12),
            0.68,
            0.76,
            boxstyle="round,pad=0.01",
            facecolor=_COLOURS[stage.kind],
            edgecolor="#555555",
        )
        axes.add_patch(box)
        axes.text(0.05, centre - 0.14, stage.title, va="center", fontsize=10, weight="bold")
        if stage.detail:
            axes.text(0.05, centre + 0.17, stage.detail, va="center", fontsize=8)
        axes.text(0.68, centre - 0.14, stage.shape, va="center", ha="right", fontsize=8.5)
        if stage.count:
            axes.text(
                0.74,
                centre,
                f"{human_count(stage.count)} params",
                va="center",
                fontsize=9,
                color="#333333",
            )
        if row + 1 < rows:
            axes.annotate(
                "",
                xy=(0.36, row + 1.12),
                xytext=(0.36, row + 0.88),
                arrowprops={"arrowstyle": "->", "color": "#555555"},
            )


def _draw_bars(figure: Figure, bars_axes: Axes, types_axes: Axes, info: dict) -> None:
    groups = parameter_groups(info)
    layer_types = info.get("layer_types", {})
    names = list(groups)
    counts = np.array([groups[name] for name in names], dtype=np.float64)
    total = counts.sum()
    colours = ["#4c72b0" if name.startswith("layer") else "#dd8452" for name in names]
    positions = np.arange(len(names))
    bars_axes.barh(positions, counts, color=colours)
    bars_axes.set_yticks(positions, names)
    bars_axes.invert_yaxis()  # model order, top to bottom
    bars_axes.set_xlabel("parameters")
    bars_axes.set_title("Parameters per block")
    bars_axes.set_xlim(0, counts.max() * 1.45 if len(counts) else 1)
    bars_axes.xaxis.set_major_formatter(lambda value, _: human_count(value))
    for position, count in zip(positions, counts, strict=True):
        share = count / total if total else 0.0
        bars_axes.annotate(
            f" {human_count(count)} ({share:.0%})", (count, position), va="center", fontsize=8
        )
    type_names = list(layer_types)
    type_counts = [layer_types[name] for name in type_names]
    type_positions = np.arange(len(type_names))
    types_axes.barh(type_positions, type_counts, color="#55a868")
    types_axes.set_yticks(type_positions, type_names)
    types_axes.invert_yaxis()
    types_axes.set_xlabel("number of modules")
    types_axes.set_title("Layer types (leaf modules)")
    types_axes.set_xlim(0, max(type_counts, default=1) * 1.25)
    for position, count in zip(type_positions, type_counts, strict=True):
        types_axes.annotate(f" {count}", (count, position), va="center", fontsize=8)


def plot_model_summary(
    info: dict,
    path: str | os.PathLike,
    title: str | None = None,
    recipe: str | None = None,
    output_dim: int | None = None,
) -> Path:
    """The network diagram (:func:`model_stages`) beside bar charts of parameters per
    block and of layer types, from :func:`~distilkit.model.summary.model_info`."""
    stages = model_stages(info, recipe, output_dim)
    rows = len(_drawn(stages))
    figure = _new_figure(17, max(4.5, 0.75 * rows + 1.0))
    diagram, bars, types = figure.subplots(1, 3, width_ratios=[1.35, 1.1, 0.7])
    _draw_diagram(diagram, stages)
    _draw_bars(figure, bars, types, info)
    summary = [
        f"{human_count(info['total_params'])} parameters ({info['total_params']:,})",
        info.get("dtype", "float32"),
        f"{info['bytes_in_memory'] / 1e6:.1f} MB in memory",
    ]
    if "size_on_disk_bytes" in info:
        summary.append(f"{info['size_on_disk_bytes'] / 1e6:.1f} MB on disk")
    heading = f"{title}: " if title else ""
    figure.suptitle(heading + ", ".join(summary))
    return _save(figure, path)
