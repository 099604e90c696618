"""Figures for the command line: sentence-embedding maps, token heat maps, attention maps,
confusion matrices (the model summary is :mod:`distilkit.evaluate.model_figure`).

matplotlib is imported inside the functions (and drawn through its Agg canvas, never
``pyplot``), so importing this module costs nothing and no display is needed. Also here:
:func:`project_2d`, the 2-D projection (PCA by SVD, or scikit-learn's t-SNE) the
embedding map is drawn from, and :func:`parameter_groups`, which sums a
:func:`distilkit.model.summary.model_info` dict per block.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PROJECTIONS = ("pca", "tsne")
_LAYER_INDEX = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


class PlotError(ValueError):
    """The data cannot be drawn as asked (too few points, mismatched lengths, bad file type)."""


# ----------------------------------------------------------------------------- numbers
def parameter_groups(info: dict) -> dict[str, int]:
    """Parameter count per block, in model order: embeddings, layer 0..n-1, pooler, head, other.

    ``info`` is a :func:`distilkit.model.summary.model_info` dict; arrays are grouped by name
    (``...layers.3.attention.query.weight`` -> ``layer 3``). The counts add up to the
    sum over ``info["arrays"]``.
    """
    embeddings = pooler = head = 0
    layers: dict[int, int] = {}
    other: dict[str, int] = {}
    for name, array in info["arrays"].items():
        count = int(array["count"])
        match = _LAYER_INDEX.search(name)
        if match:
            index = int(match.group(1))
            layers[index] = layers.get(index, 0) + count
        elif "embeddings" in name:
            embeddings += count
        elif "pooler" in name:
            pooler += count
        elif name.startswith("head.") or ".head." in name:
            head += count
        else:
            group = name.split(".")[0]
            other[group] = other.get(group, 0) + count
    groups: dict[str, int] = {}
    if embeddings:
        groups["embeddings"] = embeddings
    groups.update({f"layer {index}": layers[index] for index in sorted(layers)})
    if pooler:
        groups["pooler"] = pooler
    if head:
        groups["head"] = head
    groups.update(other)
    return groups


def human_count(count: float) -> str:
    """``22713216`` -> ``"22.7M"``; ``1536`` -> ``"1.5k"``; ``37`` -> ``"37"``."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= limit:
            return f"{count / limit:.1f}{suffix}"
    return f"{count:g}"


@dataclass
class Projection:
    """2-D coordinates ``(n, 2)`` of ``n`` vectors and what the two axes mean."""

    points: np.ndarray
    axis_labels: tuple[str, str]
    method: str


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project ``(n, dim)`` vectors on their first two principal components.

    Returns the coordinates ``(n, 2)`` and the fraction of the total variance each
    component explains ``(2,)``. Signs are fixed so that each component's largest
    loading is positive, which makes the picture reproducible.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] < 2 or vectors.shape[1] < 2:
        raise PlotError(
            f"PCA needs at least 2 vectors of at least 2 dimensions, got shape {vectors.shape}"
        )
    centered = vectors - vectors.mean(axis=0)
    left, singular, right = np.linalg.svd(centered, full_matrices=False)  # right: (k, dim)
    left, singular, right = left[:, :2], singular[:2], right[:2]
    signs = np.sign(right[np.arange(2), np.abs(right).argmax(axis=1)])
    signs[signs == 0] = 1.0
    points = left * singular * signs  # (n, 2)
    total = float((centered**2).sum())
    explained = singular**2 / total if total > 0 else np.zeros(2)
    return points, explained


def project_2d(vectors: np.ndarray, method: str = "pca", seed: int = 0) -> Projection:
    """2-D map of ``(n, dim)`` vectors by ``"pca"`` (numpy SVD) or ``"tsne"`` (scikit-learn).

    ``seed`` fixes t-SNE's random state (PCA is deterministic).
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if method == "pca":
        points, explained = pca_2d(vectors)
        labels = (f"PC1 ({explained[0]:.1%} of variance)", f"PC2 ({explained[1]:.1%} of variance)")
        return Projection(points, labels, "pca")
    if method == "tsne":
        if vectors.ndim != 2 or vectors.shape[0] < 5:
            raise PlotError(
                f"t-SNE needs at least 5 vectors, got shape {vectors.shape}: "
                "use --method pca for fewer"
            )
        try:
            from sklearn.manifold import TSNE
            from threadpoolctl import threadpool_limits  # a scikit-learn dependency
        except ImportError:
            raise PlotError(
                "t-SNE needs scikit-learn (pip install scikit-learn); --method pca works without it"
            ) from None
        perplexity = max(1.0, min(30.0, (vectors.shape[0] - 1) / 3))
        tsne = TSNE(
            n_components=2,
            perplexity=perplexity,
            init="pca",
            learning_rate="auto",
            random_state=seed,
        )
        # Up to a few thousand points one thread is faster: OpenMP's spinning threads
        # cost more than they save, 5x more on a busy 2-core machine (measured).
        with threadpool_limits(limits=1 if vectors.shape[0] <= 5000 else None):
            points = tsne.fit_transform(vectors)
        return Projection(points, ("t-SNE 1", "t-SNE 2"), "tsne")
    raise PlotError(f"projection method must be one of {PROJECTIONS}, got {method!r}")


# ----------------------------------------------------------------------------- figures
def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(figure: Figure, path: str | os.PathLike, dpi: int = 150) -> Path:
    path = Path(path)
    supported = figure.canvas.get_supported_filetypes()
    if path.suffix.lower().lstrip(".") not in supported:
        raise PlotError(
            f"cannot write a figure to {path}: the name must end in one of "
            f"{', '.join('.' + kind for kind in sorted(supported))}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


def _shorten(text: str, width: int = 32) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def spread_out(points_2d: np.ndarray, count: int) -> np.ndarray:
    """Indices of ``count`` of the ``(n, 2)`` points that lie far apart (farthest-point order).

    Used to pick which points get a text label, so that labels do not pile up in the
    dense middle of a map. Deterministic: starts at the point farthest from the centroid.
    """
    span = np.ptp(points_2d, axis=0)
    scaled = (points_2d - points_2d.min(axis=0)) / np.where(span > 0, span, 1.0)
    first = int(np.linalg.norm(scaled - scaled.mean(axis=0), axis=1).argmax())
    chosen = [first]
    distance = np.linalg.norm(scaled - scaled[first], axis=1)
    for _ in range(min(count, len(points_2d)) - 1):
        index = int(distance.argmax())
        chosen.append(index)
        distance = np.minimum(distance, np.linalg.norm(scaled - scaled[index], axis=1))
    return np.array(chosen)


def _label_order(labels: Sequence[str]) -> list[str]:
    """Distinct labels, numerically sorted when they are all numbers."""
    distinct = sorted(set(labels))
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return distinct


def _draw_embeddings(
    axes: Axes,
    points_2d: np.ndarray,
    labels: Sequence[str] | None,
    texts: Sequence[str] | None,
    title: str | None,
    axis_labels: tuple[str, str],
    max_annotations: int,
    label_name: str,
) -> None:
    import matplotlib

    points_2d = np.asarray(points_2d, dtype=np.float64)
    if points_2d.ndim != 2 or points_2d.shape[1] != 2:
        raise PlotError(f"points_2d must have shape (n, 2), got {points_2d.shape}")
    count = points_2d.shape[0]
    for what, values in (("labels", labels), ("texts", texts)):
        if values is not None and len(values) != count:
            raise PlotError(f"got {count} points but {len(values)} {what}: they must align")
    size = 36 if count <= 200 else 14
    if labels is None:
        axes.scatter(points_2d[:, 0], points_2d[:, 1], s=size, color="#4c72b0", alpha=0.8)
    else:
        order = _label_order([str(label) for label in labels])
        palette = matplotlib.colormaps["tab10" if len(order) <= 10 else "tab20"]
        label_array = np.array([str(label) for label in labels])
        for index, label in enumerate(order):
            chosen = label_array == label
            axes.scatter(
                points_2d[chosen, 0],
                points_2d[chosen, 1],
                s=size,
                alpha=0.75,
                color=palette(index % palette.N),
                label=f"{label} ({chosen.sum()})",
            )
        if len(order) <= 20:
            axes.legend(title=f"{label_name} (count)", fontsize=8, title_fontsize=8, loc="best")
    if texts is not None and max_annotations > 0:
        shown = range(count) if count <= max_annotations else spread_out(points_2d, max_annotations)
        for index in shown:
            axes.annotate(
                _shorten(texts[index]),
                points_2d[index],
                xytext=(4, 3),
                textcoords="offset points",
                fontsize=7,
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.7, "lw": 0},
            )
    axes.set_xlabel(axis_labels[0])
    axes.set_ylabel(axis_labels[1])
    shown_note = (
        ""
        if texts is None or count <= max_annotations
        else f"; {min(max_annotations, count)} of {count} points labelled"
    )
    axes.set_title(f"{title or 'Sentence embeddings'} ({count} texts{shown_note})")
    axes.grid(alpha=0.3)


def plot_embeddings(
    points_2d: np.ndarray,
    labels: Sequence[str] | None,
    texts: Sequence[str] | None,
    path: str | os.PathLike,
    title: str | None = None,
    axis_labels: tuple[str, str] = ("component 1", "component 2"),
    max_annotations: int = 20,
    label_name: str = "label",
) -> Path:
    """Scatter plot of ``(n, 2)`` points, coloured by ``labels``, annotated with short ``texts``.

    With more than ``max_annotations`` points, a spread-out subset is annotated
    (:func:`spread_out`). ``label_name`` titles the legend.
    """
    figure = _new_figure(9, 7)
    _draw_embeddings(
        figure.subplots(), points_2d, labels, texts, title, axis_labels, max_annotations, label_name
    )
    return _save(figure, path)


def _draw_token_heatmap(
    figure: Figure, axes: Axes, features: np.ndarray, tokens: Sequence[str], title: str | None
) -> None:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise PlotError(f"features must have shape (tokens, hidden), got {features.shape}")
    if features.shape[0] != len(tokens):
        raise PlotError(f"got {features.shape[0]} feature rows but {len(tokens)} tokens")
    # Clip at the 99th percentile of |x|: BERT-class models have a few outlier
    # dimensions that would otherwise wash every other value out to white.
    limit = float(np.percentile(np.abs(features), 99)) or 1.0
    image = axes.imshow(
        features, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest"
    )
    step = max(1, math.ceil(len(tokens) / 48))
    rows = np.arange(0, len(tokens), step)
    axes.set_yticks(rows, [tokens[row] for row in rows], fontsize=9 if len(rows) <= 30 else 7)
    axes.set_xlabel(f"feature (hidden dimension, {features.shape[1]} in all)")
    axes.set_ylabel("token")
    axes.set_title(title or "Token features")
    colourbar = figure.colorbar(image, ax=axes, shrink=0.9, extend="both")
    colourbar.set_label(f"activation (clipped at ±{limit:.2g})")


def plot_token_heatmap(
    features: np.ndarray, tokens: Sequence[str], path: str | os.PathLike, title: str | None = None
) -> Path:
    """Heat map of one text's token vectors ``(tokens, hidden)``, a row per word piece."""
    figure = _new_figure(11, max(3.0, 1.5 + 0.22 * min(len(tokens), 48)))
    _draw_token_heatmap(figure, figure.subplots(), features, tokens, title)
    return _save(figure, path)


def plot_embedding_report(
    projection: Projection,
    labels: Sequence[str] | None,
    texts: Sequence[str] | None,
    features: np.ndarray,
    tokens: Sequence[str],
    path: str | os.PathLike,
    title: str | None = None,
    heatmap_title: str | None = None,
    max_annotations: int = 20,
    label_name: str = "label",
) -> Path:
    """Two panels: the 2-D embedding map and the token-by-feature heat map of one text."""
    figure = _new_figure(18, 7.5)
    map_axes, heatmap_axes = figure.subplots(1, 2, width_ratios=[1, 1.1])
    axis_labels = projection.axis_labels
    _draw_embeddings(
        map_axes, projection.points, labels, texts, title, axis_labels, max_annotations, label_name
    )
    _draw_token_heatmap(figure, heatmap_axes, features, tokens, heatmap_title)
    return _save(figure, path)


def plot_attention(
    maps: np.ndarray,
    tokens: Sequence[str],
    path: str | os.PathLike,
    layer: int,
    heads: Sequence[int],
    title: str | None = None,
) -> Path:
    """Token-by-token attention maps of one layer, one panel per head in ``heads``.

    ``maps``: ``(len(heads), tokens, tokens)``, row i how token i (the query) spreads its
    attention over the tokens (the keys). ``layer`` (counted from 0) labels the panels.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or maps.shape[1:] != (len(tokens), len(tokens)):
        raise PlotError(
            f"maps must have shape (heads, {len(tokens)}, {len(tokens)}), got {maps.shape}"
        )
    if maps.shape[0] != len(heads):
        raise PlotError(f"got {maps.shape[0]} maps but {len(heads)} head numbers")
    columns = min(4, len(heads))
    grid_rows = math.ceil(len(heads) / columns)
    side = max(3.2, min(7.0, 1.2 + 0.26 * len(tokens)))
    figure = _new_figure(side * columns + 1.2, side * grid_rows + 0.8)
    axes_grid = np.atleast_1d(figure.subplots(grid_rows, columns, squeeze=False)).ravel()
    font = 9 if len(tokens) <= 24 else 7 if len(tokens) <= 40 else 5
    positions = np.arange(len(tokens))
    image = None
    for axes, head, attention in zip(axes_grid, heads, maps, strict=False):
        image = axes.imshow(attention, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        axes.set_xticks(positions, tokens, rotation=90, fontsize=font)
        axes.set_yticks(positions, tokens, fontsize=font)
        axes.set_xlabel("attended token (key)", fontsize=8)
        axes.set_ylabel("attending token (query)", fontsize=8)
        axes.set_title(f"layer {layer}, head {head}", fontsize=10)
    for axes in axes_grid[len(heads) :]:
        axes.axis("off")
    colourbar = figure.colorbar(image, ax=list(axes_grid[: len(heads)]), shrink=0.8)
    colourbar.set_label("attention weight (each row sums to 1)")
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_confusion_matrices(
    matrices: Sequence[np.ndarray],
    titles: Sequence[str],
    label_names: Sequence[str],
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """One confusion matrix ``(classes, classes)`` per classifier, side by side: rows are
    the true labels, columns the predictions, each cell its count."""
    if len(matrices) != len(titles):
        raise PlotError(f"got {len(matrices)} matrices but {len(titles)} titles")
    classes = len(label_names)
    side = max(3.8, min(8.0, 2.2 + 0.45 * classes))
    figure = _new_figure(side * len(matrices) + 0.5, side + 1.6)
    axes_row = np.atleast_1d(figure.subplots(1, len(matrices), squeeze=False)).ravel()
    names = [_shorten(str(name), 18) for name in label_names]
    for axes, matrix, heading in zip(axes_row, matrices, titles, strict=True):
        matrix = np.asarray(matrix)
        if matrix.shape != (classes, classes):
            raise PlotError(
                f"a confusion matrix has shape {matrix.shape}, expected {(classes,) * 2}"
            )
        axes.imshow(matrix, cmap="Blues", vmin=0, interpolation="nearest")
        ticks = np.arange(classes)
        axes.set_xticks(
            ticks, names, rotation=45 if classes > 3 else 0, ha="right" if classes > 3 else "center"
        )
        axes.set_yticks(ticks, names)
        axes.set_xlabel("predicted label")
        axes.set_ylabel("true label")
        axes.set_title("\n".join(_wrap(heading, 44)), fontsize=9)
        high = matrix.max() if matrix.size else 0
        for (row, column), count in np.ndenumerate(matrix):
            axes.text(
                column,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize=9 if classes <= 10 else 6,
                color="white" if high and count > high / 2 else "black",
            )
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines
