"""The run report: teacher and students side by side as a table, JSON and plots.

Input is a list of rows from :mod:`distilkit.evaluate.sentence` (one flat dict per model,
the reference model, normally the teacher, first) and, optionally, the trainer's JSONL
log. :func:`write_report` writes into a run folder:

- ``metrics.json``: the rows, each student's :func:`~distilkit.evaluate.sentence.compare`
  against the reference, the command, date and machine;
- ``report.md``: the same as readable tables, with the plots linked;
- ``loss_curves.png``: every ``loss/*`` term against the optimizer step (log scale),
  with the learning rate and any ``eval/*`` values in panels below;
- ``quality_vs_speed.png``: STS-B Spearman against sentences per second, one point
  per model.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from distilkit.evaluate.sentence import PROBE_C, compare
from distilkit.evaluate.suite import format_suite_markdown, suite_protocol_line

REPORT_FILE = "report.md"
METRICS_FILE = "metrics.json"
LOSS_PLOT_FILE = "loss_curves.png"
QUALITY_PLOT_FILE = "quality_vs_speed.png"

# A student whose sentence vectors agree this much less with the teacher's on the
# evaluation sentences than on held-out text of its own corpus learnt from text far from
# them (measured: 0.938 on held-out books against 0.849 on STS-B, docs/RESULTS.md).
DOMAIN_GAP = 0.05


@dataclass(frozen=True)
class TeacherAgreement:
    """How closely the student's mean-pooled sentence vectors follow the teacher's.

    heldout_sentence_cosine: mean cosine between the two models' vectors of held-out text
    of the training corpus (None when nothing was held out); stsb_sentence_cosine: the
    same on STS-B dev's sentences; stsb_similarity_spearman: Spearman x100 between the two
    models' cosines of the STS-B pairs (100: the teacher's ranking of the pairs is kept).
    """

    heldout_sentence_cosine: float | None
    stsb_sentence_cosine: float
    stsb_similarity_spearman: float

    @property
    def domain_gap(self) -> float | None:
        """Held-out cosine minus STS-B cosine (None without a held-out figure)."""
        if self.heldout_sentence_cosine is None:
            return None
        return self.heldout_sentence_cosine - self.stsb_sentence_cosine

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self) | {"domain_gap": self.domain_gap}

    def advice(self) -> str | None:
        """What to do when the transfer text is far from STS-B's (None otherwise)."""
        gap = self.domain_gap
        if gap is None or gap <= DOMAIN_GAP:
            return None
        return (
            f"The student follows the teacher {gap:.3f} less closely on STS-B's sentences "
            "than on its own corpus's: the transfer text is far from the text it is scored "
            "on. To keep more of the teacher on your own text, distill on text like it "
            "(--corpus)."
        )

    def lines(self) -> list[str]:
        """One line of figures, and the advice when there is one."""
        heldout = self.heldout_sentence_cosine
        figures = (
            "student vs teacher sentence vectors: cosine "
            + (f"{heldout:.3f} on held-out corpus text, " if heldout is not None else "")
            + f"{self.stsb_sentence_cosine:.3f} on STS-B dev sentences; the teacher's "
            f"ranking of the STS-B pairs kept at Spearman {self.stsb_similarity_spearman:.1f}"
        )
        advice = self.advice()
        return [figures] if advice is None else [figures, advice]


class ReportError(ValueError):
    """The rows or the training log cannot be turned into a report."""


# --------------------------------------------------------------------------- table
def _number(value: float | None, pattern: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return pattern.format(value)


def _parameters(count: int | None) -> str:
    if count is None:
        return "-"
    return f"{count / 1e6:.1f}M" if count >= 1e5 else f"{count:,}"


# (header, cell text from (row, comparison with the reference), right-aligned?)
Column = tuple[str, Callable[[dict, dict], str], bool]
COLUMNS: list[Column] = [
    ("model", lambda row, _: str(row.get("name", "?")), False),
    ("layers", lambda row, _: _number(row.get("layers"), "{:d}"), True),
    ("parameters", lambda row, _: _parameters(row.get("parameters")), True),
    (
        "size on disk (MB)",
        lambda row, _: _number(
            None if row.get("size_on_disk_bytes") is None else row["size_on_disk_bytes"] / 1e6,
            "{:.1f}",
        ),
        True,
    ),
    ("sentences/s", lambda row, _: _number(row.get("sentences_per_s"), "{:,.0f}"), True),
    ("speed-up", lambda _, vs: _number(vs.get("speedup"), "{:.2f}x"), True),
    ("STS-B Spearman", lambda row, _: _number(row.get("stsb_spearman"), "{:.2f}"), True),
    ("retention %", lambda _, vs: _number(vs.get("stsb_retention_pct"), "{:.1f}"), True),
    ("SST-2 probe acc. %", lambda row, _: _number(row.get("sst2_probe_accuracy"), "{:.2f}"), True),
    ("retention %", lambda _, vs: _number(vs.get("sst2_retention_pct"), "{:.1f}"), True),
]
LATENCY_COLUMNS: list[Column] = [
    ("model", lambda row, _: str(row.get("name", "?")), False),
    ("ms per batch", lambda row, _: _number(row.get("ms_per_batch"), "{:.1f}"), True),
    ("batch-1 p50 ms", lambda row, _: _number(row.get("latency_ms_p50"), "{:.2f}"), True),
    ("batch-1 p95 ms", lambda row, _: _number(row.get("latency_ms_p95"), "{:.2f}"), True),
    ("latency speed-up", lambda _, vs: _number(vs.get("latency_speedup"), "{:.2f}x"), True),
]


def _check_rows(rows: Sequence[dict]) -> None:
    if not rows:
        raise ReportError("no rows to report: pass at least the teacher's evaluation row")
    names = [row.get("name") for row in rows]
    if any(not isinstance(name, str) or not name for name in names):
        raise ReportError(f"every row needs a non-empty 'name', got names {names}")
    if len(set(names)) != len(names):
        raise ReportError(f"row names must be unique, got {names}")


def _cells(rows: Sequence[dict], columns: list[Column]) -> list[list[str]]:
    """Cell texts, with each row compared against the first (the reference)."""
    _check_rows(rows)
    return [[cell(row, compare(rows[0], row)) for _, cell, _ in columns] for row in rows]


def format_table(rows: Sequence[dict], columns: list[Column] | None = None) -> str:
    """The comparison table as aligned plain text for a terminal; the first row is the reference."""
    columns = columns or COLUMNS
    lines = [[header for header, _, _ in columns], *_cells(rows, columns)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]

    def render(line: list[str]) -> str:
        return "  ".join(
            text.rjust(width) if right else text.ljust(width)
            for text, width, (_, _, right) in zip(line, widths, columns, strict=True)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(lines[0]), rule, *(render(line) for line in lines[1:])])


def format_markdown_table(rows: Sequence[dict], columns: list[Column] | None = None) -> str:
    """The comparison table in Markdown; the first row is the reference."""
    columns = columns or COLUMNS
    header = "| " + " | ".join(name for name, _, _ in columns) + " |"
    rule = "|" + "|".join("---:" if right else ":---" for _, _, right in columns) + "|"
    body = [
        "| " + " | ".join(text.replace("|", "\\|") for text in line) + " |"
        for line in _cells(rows, columns)
    ]
    return "\n".join([header, rule, *body])


# --------------------------------------------------------------------------- training log
def read_training_log(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Numeric series of a trainer's JSONL log: key -> (steps, values), sorted by step.

    One JSON object per line with an integer ``step``; every other numeric key is a
    series. When a step appears twice (a resumed run), the later line wins. A last line
    cut short (a run killed mid-write) is skipped; any other unreadable line is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"training log not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    by_key: dict[str, dict[int, float]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                continue
            raise ReportError(f"{path} line {number} is not JSON: {error}") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ReportError(f"{path} line {number}: expected an object with an integer 'step'")
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                by_key.setdefault(key, {})[record["step"]] = float(value)
    series = {}
    for key, values in by_key.items():
        steps = np.array(sorted(values), dtype=np.int64)
        series[key] = (steps, np.array([values[int(step)] for step in steps], dtype=np.float64))
    return series


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (fewer at the start), NaN-free input."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only; imported when first drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_losses(
    axis, losses: dict[str, tuple[np.ndarray, np.ndarray]], held_out: dict, colors: list[str]
) -> None:
    """Training losses (faint raw, bold moving average) and held-out losses (markers), log y.

    The y range follows the averaged curves, so single noisy steps do not squash them.
    """
    shown: list[np.ndarray] = []
    ordered = sorted(losses, key=lambda key: (key == "loss/total", key))  # total drawn last
    for index, key in enumerate(ordered):
        steps, values = losses[key]
        keep = np.isfinite(values) & (values > 0)
        if not keep.any():
            continue
        steps, values = steps[keep], values[keep]
        is_total = key == "loss/total"
        color = "black" if is_total else colors[index % len(colors)]
        label = key.removeprefix("loss/")
        window = max(1, len(values) // 40)
        if window > 1:
            axis.plot(steps, values, color=color, alpha=0.2, linewidth=0.8)
            label += f" ({window}-step mean)"
        smooth = _smooth(values, window)
        shown.append(smooth)
        axis.plot(steps, smooth, color=color, linewidth=2.2 if is_total else 1.5, label=label)
    for index, (key, (steps, values)) in enumerate(sorted(held_out.items())):
        keep = np.isfinite(values) & (values > 0)
        if keep.any():
            shown.append(values[keep])
            axis.plot(
                steps[keep],
                values[keep],
                linestyle="--",
                marker="o",
                markersize=4,
                color=colors[(index + len(ordered)) % len(colors)],
                label=f"held-out {key.removeprefix('eval/')}",
            )
    axis.set_yscale("log")
    if shown:
        low = min(float(values.min()) for values in shown)
        high = max(float(values.max()) for values in shown)
        axis.set_ylim(low / 1.6, high * 1.6)
    axis.set_ylabel("loss (log scale)")
    axis.set_title("Training losses")
    axis.legend(loc="upper right", fontsize="small", framealpha=0.9)


def plot_loss_curves(log_path: str | Path, output_path: str | Path) -> Path:
    """``loss_curves.png``: each ``loss/*`` series against step, log y; metrics and lr below.

    Noisy per-step losses are drawn faint with a moving average on top; values that are
    not positive (log scale) or not finite are left out. ``eval/*`` keys with "loss" in
    their name join the loss panel as held-out points; other ``eval/*`` metrics (cosines,
    accuracies) get a panel of their own, and ``lr`` one below.
    """
    series = read_training_log(log_path)
    losses = {key: value for key, value in series.items() if key.startswith("loss/")}
    if not losses:
        raise ReportError(
            f"{log_path} has no 'loss/...' keys to plot (keys found: {sorted(series)})"
        )
    evals = {key: value for key, value in series.items() if key.startswith("eval/")}
    held_out = {key: value for key, value in evals.items() if "loss" in key}
    metrics = {key: value for key, value in evals.items() if key not in held_out}
    panels = ["loss"] + (["eval"] if metrics else []) + (["lr"] if "lr" in series else [])
    ratios = {"loss": 3.0, "eval": 1.4, "lr": 1.0}
    plt = pyplot()
    figure, axes = plt.subplots(
        len(panels),
        1,
        sharex=True,
        figsize=(9, 2.2 + 1.6 * sum(ratios[p] for p in panels)),
        gridspec_kw={"height_ratios": [ratios[p] for p in panels]},
        squeeze=False,
    )
    axes = dict(zip(panels, axes[:, 0], strict=True))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    _draw_losses(axes["loss"], losses, held_out, colors)
    if metrics:
        for index, (key, (steps, values)) in enumerate(sorted(metrics.items())):
            axes["eval"].plot(
                steps,
                values,
                marker="o",
                markersize=4,
                color=colors[(index + 5) % len(colors)],
                label=key.removeprefix("eval/"),
            )
        axes["eval"].set_ylabel("held-out metrics")
        axes["eval"].legend(loc="best", fontsize="small", framealpha=0.9)
    if "lr" in series:
        steps, values = series["lr"]
        axes["lr"].plot(steps, values, color="tab:gray", linewidth=1.5)
        axes["lr"].set_ylabel("learning rate")
        axes["lr"].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for axis in axes.values():
        axis.grid(True, which="major", alpha=0.3)
    axes[panels[-1]].set_xlabel("optimizer step")
    figure.tight_layout()
    output_path = Path(output_path)
    figure.savefig(output_path, dpi=120)
    plt.close(figure)
    return output_path


def plot_quality_vs_speed(rows: Sequence[dict], output_path: str | Path) -> Path:
    """``quality_vs_speed.png``: STS-B Spearman (y) against sentences per second (x)."""
    _check_rows(rows)
    points = [
        row
        for row in rows
        if row.get("sentences_per_s") is not None and row.get("stsb_spearman") is not None
    ]
    if not points:
        raise ReportError("no row has both 'sentences_per_s' and 'stsb_spearman' to plot")
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8, 5.5))
    speeds = np.array([row["sentences_per_s"] for row in points], dtype=np.float64)
    scores = np.array([row["stsb_spearman"] for row in points], dtype=np.float64)
    if speeds.min() > 0 and speeds.max() / speeds.min() > 20:
        axis.set_xscale("log")
    markers = {"transformer": "o", "static": "s"}
    for index, row in enumerate(points):
        is_reference = row is rows[0]
        axis.scatter(
            row["sentences_per_s"],
            row["stsb_spearman"],
            s=160 if is_reference else 110,
            marker=markers.get(row.get("kind", ""), "D"),
            color="black" if is_reference else f"C{index % 10}",
            zorder=3,
        )
    low, high = scores.min(), scores.max()
    margin = max(2.0, 0.15 * (high - low))
    axis.set_ylim(low - margin, high + margin)
    axis.margins(x=0.25)
    axis.autoscale_view()
    to_axes = axis.transData + axis.transAxes.inverted()  # data -> 0..1 axes fraction
    for row in points:
        details = [_parameters(row.get("parameters")) + " params"]
        if row.get("layers") is not None:
            details.insert(0, f"{row['layers']} layers")
        text = f"{row['name']}\n{', '.join(details)}"
        versus = compare(rows[0], row)
        if row is not rows[0] and versus["speedup"] and versus["stsb_retention_pct"]:
            text += (
                f"\n{versus['speedup']:.1f}x speed, {versus['stsb_retention_pct']:.0f}% of STS-B"
            )
        # labels of points in the right half go to their left, so they stay inside the axes;
        # the reference's label sits above its point and the others' below (students close
        # to the teacher would otherwise print over its label), unless near the bottom
        x_fraction, y_fraction = to_axes.transform((row["sentences_per_s"], row["stsb_spearman"]))
        on_right = x_fraction > 0.5
        above = row is rows[0] or y_fraction < 0.3
        axis.annotate(
            text,
            (row["sentences_per_s"], row["stsb_spearman"]),
            xytext=(-10 if on_right else 10, 8 if above else -10),
            textcoords="offset points",
            horizontalalignment="right" if on_right else "left",
            verticalalignment="bottom" if above else "top",
            fontsize=9,
        )
    axis.set_xlabel(f"sentences per second (CPU, {_thread_note(points)})")
    axis.set_ylabel("STS-B dev Spearman x100")
    axis.set_title("Quality against speed (up and to the right is better)")
    axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    output_path = Path(output_path)
    figure.savefig(output_path, dpi=120)
    plt.close(figure)
    return output_path


def _thread_note(rows: Sequence[dict]) -> str:
    threads = sorted({row.get("num_threads") for row in rows if row.get("num_threads")})
    batch = sorted({row.get("batch_size") for row in rows if row.get("batch_size")})
    parts = []
    if threads:
        parts.append(f"{'/'.join(map(str, threads))} thread{'s' if threads != [1] else ''}")
    if batch:
        parts.append(f"batch {'/'.join(map(str, batch))}")
    return ", ".join(parts) or "settings unknown"


# --------------------------------------------------------------------------- files
def machine_info() -> dict:
    """Where the numbers were measured: CPU, core count, OS, Python and torch versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _jsonable(value: object) -> object:
    """``value`` with numpy scalars and arrays, paths and non-finite floats made JSON-safe."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _notes(rows: Sequence[dict], machine: dict) -> list[str]:
    notes = []
    if any(row.get("quick") for row in rows):
        notes.append(
            "**Quick protocol**: fewer STS-B pairs, probe sentences and timing passes. "
            "These are smoke-test numbers; do not cite them."
        )
    loads = [row["load_average_1min"] for row in rows if row.get("load_average_1min")]
    if loads and machine["cpu_count"] and max(loads) > machine["cpu_count"]:
        notes.append(
            f"The machine was busy while timing (1-minute load {max(loads):.1f} on "
            f"{machine['cpu_count']} cores): absolute speeds are low and noisy. The models were "
            "timed in turns, so the speed-up ratios are fairer than the absolute numbers."
        )
    return notes


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _protocol_lines(rows: Sequence[dict]) -> list[str]:
    row = rows[0]
    lines = [
        f"- **STS-B**: Spearman x100 between the cosine similarity of the two sentences' "
        f"{row.get('pooling', 'mean')}-pooled embeddings and the gold score, "
        f"{_count(row.get('stsb_pairs'))} GLUE dev pairs.",
        f"- **SST-2 probe**: logistic regression (C={PROBE_C}, standardised features) on frozen "
        f"embeddings of {_count(row.get('sst2_train_examples'))} SST-2 train sentences "
        f"(seeded sample, >= 5 words), accuracy on the {_count(row.get('sst2_dev_examples'))} "
        "dev sentences.",
    ]
    if any(other.get("kind") == "static" for other in rows):
        lines.append(
            "- **Static baseline**: the same two tasks on the average of the input word "
            "embeddings (context-free: no positions, no LayerNorm, [CLS]/[SEP] left out)."
        )
    lines += [
        f"- **Speed**: `embed()` including tokenization, inference mode, "
        f"{_count(row.get('throughput_texts'))} STS-B sentences, {_thread_note(rows)}; median "
        f"of {_count(row.get('throughput_repeats'))} passes after a warm-up, the models timed in "
        "turns in one process. Batch-1 latency over single sentences.",
        f"- Speed-up and retention are relative to the first row, {row['name']}.",
    ]
    return lines


def write_report(
    run_dir: str | Path,
    rows: Sequence[dict],
    losses_jsonl_path: str | Path | None = None,
    extra: dict | None = None,
    command: str | None = None,
    title: str = "Distillation report",
    agreement: TeacherAgreement | None = None,
    suite_rows: Sequence[dict] | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md`` and the plots into ``run_dir``; return their paths.

    rows: evaluation rows, the reference (teacher) first. losses_jsonl_path: the
    trainer's log (no loss plot without it; a missing or unreadable log gives a warning
    and a note in the report instead of an error, so a finished run always gets one).
    extra: anything else worth keeping (run settings, training time); it goes into the
    JSON and a list in the report. command: the command line that made the run
    (default: this process's). agreement: how closely the student follows the teacher
    (a section of the report and ``agreement`` in the JSON). suite_rows: the dev suite's
    rows (:mod:`distilkit.evaluate.suite`; a section and ``suite`` in the JSON).
    """
    _check_rows(rows)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    command = command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    created = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    machine = machine_info()
    paths = {"report": run_dir / REPORT_FILE, "metrics": run_dir / METRICS_FILE}

    paths["quality_vs_speed"] = plot_quality_vs_speed(rows, run_dir / QUALITY_PLOT_FILE)
    loss_plot_problem = None
    if losses_jsonl_path is not None:
        # The report comes at the end of a long run: a bad log costs the plot, not the report.
        try:
            paths["loss_curves"] = plot_loss_curves(losses_jsonl_path, run_dir / LOSS_PLOT_FILE)
        except ReportError as error:
            loss_plot_problem = f"no loss plot: {error}"
            warnings.warn(loss_plot_problem, stacklevel=2)

    metrics = {
        "created": created,
        "command": command,
        "machine": machine,
        "reference": rows[0]["name"],
        "rows": list(rows),
        "comparisons": [compare(rows[0], row) for row in rows[1:]],
        "probe_C": PROBE_C,
        "files": {key: path.name for key, path in paths.items()},
        "agreement": agreement.to_dict() if agreement is not None else None,
        "suite": list(suite_rows) if suite_rows else None,
        "extra": extra or {},
    }
    paths["metrics"].write_text(
        json.dumps(_jsonable(metrics), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )

    lines = [
        f"# {title}",
        "",
        f"Created {created} on {machine['cpu']} ({machine['cpu_count']} cores), "
        f"torch {machine['torch']}, Python {machine['python']}.",
        "",
        "```",
        command,
        "```",
        "",
        "## Teacher and student",
        "",
        format_markdown_table(rows),
        "",
        format_markdown_table(rows, LATENCY_COLUMNS),
        "",
        *[f"> {note}\n" for note in _notes(rows, machine)],
        *_agreement_section(agreement),
        *_suite_section(suite_rows),
        "## How it was measured",
        "",
        *_protocol_lines(rows),
        "",
        "## Plots",
        "",
        f"![quality against speed]({QUALITY_PLOT_FILE})",
    ]
    if "loss_curves" in paths:
        lines += ["", f"![training losses]({LOSS_PLOT_FILE})"]
    elif loss_plot_problem:
        lines += ["", f"({loss_plot_problem})"]
    if extra:
        lines += ["", "## Run details", "", *_detail_lines(extra)]
    paths["report"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def _suite_section(rows: Sequence[dict] | None) -> list[str]:
    if not rows:
        return []
    return [
        "## Dev suite: six sentence tasks",
        "",
        format_suite_markdown(rows),
        "",
        suite_protocol_line(bool(rows[0].get("quick"))),
        "",
    ]


def _agreement_section(agreement: TeacherAgreement | None) -> list[str]:
    if agreement is None:
        return []
    heldout = agreement.heldout_sentence_cosine
    lines = [
        "## How closely the student follows the teacher",
        "",
        "Mean cosine between the student's and the teacher's mean-pooled sentence vectors:",
        "",
        "| text | sentence cosine |",
        "|---|---:|",
    ]
    if heldout is not None:
        lines.append(f"| held-out text of the training corpus | {heldout:.4f} |")
    lines += [
        f"| STS-B dev sentences | {agreement.stsb_sentence_cosine:.4f} |",
        "",
        "The teacher's ranking of the STS-B pairs by cosine is kept at Spearman "
        f"{agreement.stsb_similarity_spearman:.2f} (100 = the same order).",
        "",
    ]
    advice = agreement.advice()
    if advice is not None:
        lines += [f"> {advice}", ""]
    return lines


def _detail_lines(values: dict, depth: int = 0) -> list[str]:
    """A nested Markdown list of ``values``; below the second level, compact JSON."""
    lines = []
    for key, value in values.items():
        indent = "  " * depth
        if isinstance(value, dict) and value and depth < 2:
            lines.append(f"{indent}- **{key}**:")
            lines += _detail_lines(value, depth + 1)
        elif isinstance(value, dict | list | tuple):
            lines.append(f"{indent}- **{key}**: `{json.dumps(_jsonable(value))}`")
        elif isinstance(value, float):
            lines.append(f"{indent}- **{key}**: {value:.6g}")
        else:
            lines.append(f"{indent}- **{key}**: {value}")
    return lines
