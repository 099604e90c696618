"""What ``compress`` shows: the table of every candidate form (printed and in
``report.md``), the frontier plot and the machine-readable ``results.json``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from distilkit.evaluate.frontier import plot_frontier
from distilkit.evaluate.report import Column, format_markdown_table, format_table, machine_info
from distilkit.evaluate.suite import TASKS, suite_protocol_line
from distilkit.methods.compress.scoring import RULE
from distilkit.settings import save_json


def _number(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _retention(task: str) -> Column:
    return (task, lambda row, _: _number(row.get("retention", {}).get(task), "{:.1f}"), True)


COLUMNS: list[Column] = [
    ("candidate", lambda row, _: row["candidate"], False),
    ("form", lambda row, _: row["form"] + (" *" if row.get("picked") else ""), False),
    *(_retention(task) for task in TASKS),
    ("mean %", lambda row, _: _number(row.get("mean_retention"), "{:.2f}"), True),
    ("agree cos", lambda row, _: _number(row.get("agreement_cosine"), "{:.3f}"), True),
    ("agree sim", lambda row, _: _number(row.get("agreement_similarity"), "{:.1f}"), True),
    ("sent/s", lambda row, _: _number(row.get("sentences_per_s"), "{:,.0f}"), True),
    ("x teacher", lambda row, _: _number(row.get("x_teacher"), "{:.2f}x"), True),
    ("size MB", lambda row, _: _number(row["size_bytes"] / 1e6, "{:.1f}"), True),
]

LEGEND = [
    "Cells under the tasks: retention % of the teacher's score on that dev-suite task; "
    "mean %: their mean (the quantity --keep is checked against).",
    "agree cos: mean cosine of the form's and the teacher's sentence vectors of the held-out "
    "corpus lines ('-' where the widths differ); agree sim: Spearman x100 of the two models' "
    "cosines over every pair of those lines.",
    "sent/s: sentences per second at the batch size shown, tokenization included, every form "
    "and the teacher timed in turns in one process on the same held-out lines; x teacher: "
    "over the teacher's.",
    "size MB: the weights a form deploys (10^6 bytes): the ONNX file, else the model "
    "folder's weight files (eager bf16 and int8 convert the fp32 weights when loaded).",
    "* marks the picked form.",
]


def table(rows: Sequence[dict], markdown: bool = False) -> str:
    """The candidates table (the teacher first)."""
    return (format_markdown_table if markdown else format_table)(rows, COLUMNS)


def summary(result: dict) -> str:
    """One sentence on what was picked, against the target."""
    picked, keep = result["picked"], 100 * result["config"]["keep"]
    if picked is None:
        return "no candidate was scored and timed within the time budget: nothing was picked"
    what = (
        f"{picked['name']}: mean retention {picked['mean_retention']:.2f}% at "
        f"{picked['x_teacher']:.2f}x the teacher's throughput"
    )
    if result["kept"]:
        return f"picked {what} (the fastest form keeping >= {keep:.1f}%)"
    return (
        f"no form keeps {keep:.1f}% of the teacher's mean dev-suite score; saved the one "
        f"closest to it, {what}"
    )


def plot(rows: Sequence[dict], result: dict, path: Path) -> Path:
    """The frontier PNG: mean retention against sentences/s, the picked form ringed."""
    points = [
        {
            "name": row["name"],
            "kind": row["kind"],
            "sentences_per_s": row["sentences_per_s"],
            "quality": row["mean_retention"],
        }
        for row in rows
        if row.get("sentences_per_s") and row.get("mean_retention") is not None
    ]
    picked = result["picked"]["name"] if result["picked"] else None
    batch = result["config"]["batch_size"]
    return plot_frontier(
        points,
        path,
        picked=picked,
        target=100 * result["config"]["keep"],
        xlabel=f"sentences per second (batch {batch}, this machine, log scale)",
        ylabel="mean dev-suite retention of the teacher (%)",
        title=f"compress: candidates of {result['config']['teacher']}",
    )


def write_report(out_dir: Path, rows: Sequence[dict], result: dict) -> Path:
    """``report.md``, ``frontier.png`` and ``results.json`` in ``out_dir``."""
    config = result["config"]
    save_json({**result, "rows": list(rows), "machine": machine_info()}, out_dir / "results.json")
    plotted = plot(rows, result, out_dir / "frontier.png")
    lines = [
        f"# compress: {config['teacher']}, keep {config['keep']:g}",
        "",
        f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}. Machine: {machine_info()['cpu']}, "
        f"{machine_info()['cpu_count']} CPUs, {machine_info()['torch_threads']} torch threads.",
        "",
        f"**{summary(result)}.**",
        "",
        "Rule: " + RULE.format(batch=config["batch_size"], keep=100 * config["keep"]) + ".",
        "",
    ]
    if result["picked"]:
        lines += [f"Saved: `{result['saved']}` (load: `{result['load']}`).", ""]
    lines += [
        table(rows, markdown=True),
        "",
        *(f"- {line}" for line in LEGEND),
        f"- {suite_protocol_line(config['suite'] == 'quick').split(' Cells:')[0]}",
        f"- Time budget {config['time_budget']:.0f} s; this run took {result['seconds']:.0f} s.",
        "",
        f"![frontier]({plotted.name})",
        "",
    ]
    if result["notes"]:
        lines += ["## Notes", "", *(f"- {note}" for note in result["notes"]), ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


__all__ = ["COLUMNS", "LEGEND", "plot", "summary", "table", "write_report"]
