"""``distilkit bench``: serving speed of a teacher and its students in every inference mode.

For each model (normally a fine-tuned teacher and its distilled students, all sequence
classifiers) and each mode

* ``eager fp32`` - distilkit's PyTorch model;
* ``bf16`` - the same in bfloat16 (fast where the CPU has AVX512-BF16 or AMX);
* ``eager int8`` - the same with int8 transformer blocks (:mod:`distilkit.int8`);
* ``onnx fp32`` / ``onnx int8`` - :func:`distilkit.deploy.export.export_onnx` run by onnxruntime;
* ``early exit`` / ``early exit int8`` - :class:`distilkit.methods.early_exit.model.EarlyExitModel`
  (needs trained branches), on the fp32 or the int8 blocks

A BiLSTM student (:mod:`distilkit.model.bilstm`, single sentences) runs in ``eager fp32`` only.

Plus the reference peer, ``transformers`` eager fp32 on the teacher's checkpoint, the
bench measures on the same texts (SST-2 dev sentences by default), in one process, with
the same thread count: throughput (sentences/s over length-sorted batches, tokenization
included) and batch-1 latency (p50, p95), with every engine timed in turns
(:func:`distilkit.evaluate.sentence.time_embedders`) so background load hits all alike; and,
untimed, each engine's accuracy (with labels) and agreement with its own model's eager
fp32 predictions. Every engine gets the same tokenizer output (the peer is fed our
tokenizer's ids, which equal ``transformers``' own).

The FLOP view: the useful work of a pass (matmul FLOPs over real tokens only, branches
included for early exit) divided by its time gives GFLOP/s, shown as a fraction of this
machine's measured fp32 (or bf16, for bf16) matmul ceiling
(:func:`distilkit.deploy.flops.matmul_gflops`).

Devices (``BenchSettings.device``, default ``auto``: the GPU when there is one): the
:data:`DEVICE_MODES` (eager fp32, bf16) and the peer run on that device, their ceiling the
device's own dense matmul rate measured in the run
(:func:`distilkit.evaluate.mfu.peak_matmul_flops`); int8, ONNX and early exit are CPU
modes and stay on the CPU, against the CPU's ceiling. Rows say where they ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from distilkit.data.batching import sorted_batches
from distilkit.deploy.bench_engines import (
    CPU,
    MODES,
    PEER_MODE,
    BenchError,
    BenchSettings,
    Engine,
    build_engines,
    classify,
    native_bf16,
    onnx_threads_spin,
)
from distilkit.deploy.flops import encoder_flops, matmul_roofs, roof_key
from distilkit.evaluate.report import Column, format_markdown_table, format_table, machine_info
from distilkit.evaluate.sentence import read_sst2
from distilkit.evaluate.timing import time_embedders
from distilkit.model.tokenizer import Tokenizer


# ----------------------------------------------------------------------------- the run
@dataclass
class BenchResult:
    """Rows (one per engine; the peer first when present) and the run's context."""

    rows: list[dict]
    settings: dict
    machine: dict
    ceilings_gflops: dict[str, float] = field(default_factory=dict)
    texts: int = 0
    notes: list[str] = field(default_factory=list)
    kind: str = "classifier"  # or "encoder" (:mod:`distilkit.deploy.bench_embed`)

    def to_dict(self) -> dict:
        return asdict(self)

    def save_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def table(self, markdown: bool = False) -> str:
        """The rows as an aligned text (or Markdown) table; ratios are against the first row."""
        render = format_markdown_table if markdown else format_table
        return render(self.rows, with_device_column(self.rows, BENCH_COLUMNS))

    def plot(self, path: str | os.PathLike) -> Path:
        """Accuracy (or agreement) against sentences per second, one point per engine."""
        labelled = all(row.get("accuracy") is not None for row in self.rows)
        key = "accuracy" if labelled else "agreement"
        return scatter_plot(
            [(row["name"], row["sentences_per_s"], 100 * row[key]) for row in self.rows],
            f"sentences per second (batch {self.settings['batch_size']}, "
            f"{self.settings['num_threads']} threads)",
            "accuracy %" if labelled else "agreement with own fp32 %",
            "Serving speed and quality, every model and mode (up and right is better)",
            path,
        )


def scatter_plot(
    points: Sequence[tuple[str, float, float]],
    xlabel: str,
    ylabel: str,
    title: str,
    path: str | os.PathLike,
) -> Path:
    """One labelled point per (name, speed, quality); a log speed axis when speeds span
    more than 20x. Written as a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8.5, 5.5))
    for index, (name, x, y) in enumerate(points):
        axis.scatter(x, y, color=f"C{index % 10}", s=70)
        axis.annotate(name, (x, y), xytext=(5, 5), textcoords="offset points", fontsize=8)
    speeds = [x for _, x, _ in points]
    if min(speeds) > 0 and max(speeds) / min(speeds) > 20:
        axis.set_xscale("log")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def number_cell(value: float | None, pattern: str) -> str:
    """A table cell: ``value`` formatted by ``pattern``, or ``-`` when there is none."""
    return "-" if value is None else pattern.format(value)


BENCH_COLUMNS: list[Column] = [
    ("engine", lambda row, _: row["name"], False),
    ("sent/s", lambda row, _: number_cell(row.get("sentences_per_s"), "{:,.1f}"), True),
    ("x ref", lambda _, vs: number_cell(vs.get("speedup"), "{:.2f}x"), True),
    ("p50 ms", lambda row, _: number_cell(row.get("latency_ms_p50"), "{:.2f}"), True),
    ("p95 ms", lambda row, _: number_cell(row.get("latency_ms_p95"), "{:.2f}"), True),
    ("p50 x ref", lambda _, vs: number_cell(vs.get("latency_speedup"), "{:.2f}x"), True),
    (
        "accuracy %",
        lambda row, _: number_cell(row.get("accuracy") and 100 * row["accuracy"], "{:.2f}"),
        True,
    ),
    ("% of teacher", lambda row, _: number_cell(row.get("accuracy_retention_pct"), "{:.1f}"), True),
    (
        "agree %",
        lambda row, _: number_cell(row.get("agreement") and 100 * row["agreement"], "{:.1f}"),
        True,
    ),
    ("layers", lambda row, _: number_cell(row.get("average_layers"), "{:.2f}"), True),
    ("tokens/s", lambda row, _: number_cell(row.get("tokens_per_s"), "{:.0f}"), True),
    ("GFLOP/s", lambda row, _: number_cell(row.get("gflops_per_s"), "{:.1f}"), True),
    (
        "% ceiling",
        lambda row, _: number_cell(
            row.get("ceiling_fraction") and 100 * row["ceiling_fraction"], "{:.0f}"
        ),
        True,
    ),
]


def with_device_column(rows: list[dict], columns: list[Column]) -> list[Column]:
    """``columns`` with a ``device`` column after the engine's name when some row ran off
    the CPU (a CPU run's table is as it always was)."""
    if all(row.get("device", "cpu") == "cpu" for row in rows):
        return columns
    return [columns[0], ("device", lambda row, _: row.get("device", "cpu"), False), *columns[1:]]


def engines_device(engines: Sequence[Any]) -> torch.device:
    """The device the engines (:class:`Engine` or ``EmbedEngine``) other than the CPU ones
    run on (the CPU when none)."""
    return next((torch.device(e.device) for e in engines if e.device != "cpu"), CPU)


def device_notes(device: torch.device, engines: Sequence[Any], threads: int) -> list[str]:
    """Where the engines ran, when some ran off the CPU; bf16 emulation on this CPU."""
    notes = []
    if device.type != "cpu":
        on_device = sorted({e.mode.split(" (")[0] for e in engines if e.device != "cpu"})
        on_cpu = sorted({e.mode.split(" (")[0] for e in engines if e.device == "cpu"})
        notes.append(
            f"device: {', '.join(on_device)} ran on {device}, against its dense matmul rate "
            "measured in this run"
            + (
                f"; {', '.join(on_cpu)} are CPU modes, run on the CPU ({threads} threads) "
                "against the CPU's"
                if on_cpu
                else ""
            )
        )
    cpu_bf16 = any(e.dtype == "bf16" and e.device == "cpu" for e in engines)
    if cpu_bf16 and not native_bf16():
        notes.append("this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 is emulated")
    return notes


def _token_counts(tokenizer: Tokenizer, texts: Sequence[str], max_length: int) -> np.ndarray:
    return np.asarray([min(len(ids) + 2, max_length) for ids in tokenizer.encode_ids(texts)])


def run_bench(
    models: dict[str, str | os.PathLike],
    modes: Sequence[str] = MODES,
    texts: Sequence[str] | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
    settings: BenchSettings | None = None,
    work_dir: str | os.PathLike | None = None,
    say: Callable[[str], None] = print,
    progress: bool = False,
) -> BenchResult:
    """Measure every model (name -> checkpoint folder; the first is the teacher, on which
    the peer runs) in every mode on ``texts`` (default: the shipped SST-2 dev sentences
    and labels). ONNX files are written to ``work_dir`` (default: a temporary folder).
    ``progress``: bars of the quality pass and the timing on stderr."""
    settings = settings or BenchSettings()
    if texts is None:
        texts, labels = read_sst2()
    texts = list(texts)
    if not texts:
        raise BenchError("no texts to bench on")
    if labels is not None and len(labels) != len(texts):
        raise BenchError(f"got {len(labels)} labels for {len(texts)} texts")
    with bench_context(settings, work_dir) as folder:
        engines = build_engines(models, modes, settings, folder, say)
        return _measure(engines, texts, labels, settings, say, progress)


@contextlib.contextmanager
def bench_context(settings: BenchSettings, work_dir: str | os.PathLike | None) -> Iterator[Path]:
    """torch's thread count set from ``settings`` (restored after), and the folder for
    exported files: ``work_dir``, or a temporary one removed after."""
    previous_threads = torch.get_num_threads()
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    try:
        with tempfile.TemporaryDirectory(prefix="distilkit-bench-") as temp:
            folder = Path(work_dir) if work_dir is not None else Path(temp)
            folder.mkdir(parents=True, exist_ok=True)
            yield folder
    finally:
        torch.set_num_threads(previous_threads)


def _measure(
    engines: list[Engine],
    texts: list[str],
    labels: Sequence[int] | np.ndarray | None,
    settings: BenchSettings,
    say: Callable[[str], None],
    progress: bool = False,
) -> BenchResult:
    """Quality pass, interleaved timing and FLOP accounting of ``engines``."""
    threads = torch.get_num_threads()
    device = engines_device(engines)
    ceilings = matmul_roofs(settings.ceiling_seconds, say, device)
    functions = {
        engine.name: (
            lambda batch_texts, e=engine: classify(
                e, batch_texts, settings.batch_size, settings.max_length
            )
        )
        for engine in engines
    }
    say(f"quality pass over {len(texts)} texts ({len(engines)} engines)")
    logits, layers = {}, {}
    with torch.inference_mode():
        for engine in tqdm(engines, desc="quality pass", unit="engine", disable=not progress):
            logits[engine.name] = functions[engine.name](texts)  # also the warm-up
            for text in texts[:3]:
                functions[engine.name]([text])  # warm the batch-1 shapes too
            if engine.exit_layers is not None:  # exits do not depend on the batching
                exits = np.zeros(len(texts), np.int64)
                for indices, batch in sorted_batches(
                    engine.tokenizer, texts, settings.batch_size, None, settings.max_length
                ):
                    exits[indices] = engine.exit_layers(batch)
                layers[engine.name] = exits
    say(f"timing: {settings.repeats} interleaved passes, then {settings.latency_texts} singles")
    timings = time_embedders(
        functions,
        texts,
        batch_size=settings.batch_size,
        repeats=settings.repeats,
        warmup=0,
        latency_texts=min(settings.latency_texts, len(texts)),
        progress=progress,
    )
    rows = []
    teacher_accuracy = None
    for engine in engines:
        timing = timings[engine.name]
        predictions = logits[engine.name].argmax(-1)
        own_fp32 = logits.get(f"{engine.model} / eager fp32")
        row = {
            "name": engine.name,
            "model": engine.model,
            "mode": engine.mode,
            "device": engine.device,
            **{
                key: timing[key]
                for key in ("sentences_per_s", "latency_ms_p50", "latency_ms_p95", "num_threads")
            },
            "batch_size": settings.batch_size,
            "accuracy": None
            if labels is None
            else float((predictions == np.asarray(labels)).mean()),
            "agreement": None
            if own_fp32 is None
            else float((predictions == own_fp32.argmax(-1)).mean()),
            "average_layers": None,
        }
        tokens = _token_counts(engine.tokenizer, texts, settings.max_length)
        exits = layers.get(engine.name)
        if exits is not None:
            row["average_layers"] = float(exits.mean())
        flops = sum(
            encoder_flops(
                engine.config,
                int(n),
                None if exits is None else int(exits[i]),
                engine.branch_width,
            )
            if engine.flops is None
            else engine.flops(int(n))
            for i, n in enumerate(tokens)
        )
        row["gflops_per_s"] = flops * row["sentences_per_s"] / len(texts) / 1e9
        row["tokens_per_s"] = float(sum(tokens)) * row["sentences_per_s"] / len(texts)
        ceiling = ceilings.get(roof_key(engine.device, engine.dtype))
        row["ceiling_fraction"] = row["gflops_per_s"] / ceiling if ceiling else None
        if engine.mode in (PEER_MODE, "eager fp32") and teacher_accuracy is None:
            teacher_accuracy = row["accuracy"]
        rows.append(row)
    for row in rows:
        row["accuracy_retention_pct"] = (
            None
            if row["accuracy"] is None or not teacher_accuracy
            else 100 * row["accuracy"] / teacher_accuracy
        )
    notes = [
        "x ref: throughput (and batch-1 p50 latency) relative to the first row"
        + (" (transformers eager fp32 on the teacher)" if rows[0]["mode"] == PEER_MODE else ""),
        "% of teacher: accuracy relative to the teacher's eager fp32 accuracy",
        "agree %: share of texts where an engine predicts what the same model predicts in "
        "eager fp32 (so eager fp32 rows are 100 by definition)",
        "GFLOP/s: matmul FLOPs over real tokens per second; % ceiling (the MFU): of the "
        "matmul ceiling measured in this run (bf16 for bf16, else fp32; int8 is compared "
        "with fp32); tokens/s: real tokens per second",
        *device_notes(device, engines, threads),
    ]
    return BenchResult(
        rows=rows,
        settings=asdict(settings)
        | {
            "device": str(device),
            "num_threads": threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "onnxruntime_spinning": onnx_threads_spin(),
        },
        machine=machine_info(),
        ceilings_gflops=ceilings,
        texts=len(texts),
        notes=notes,
    )


__all__ = [
    "BENCH_COLUMNS",
    "BenchResult",
    "bench_context",
    "device_notes",
    "engines_device",
    "number_cell",
    "run_bench",
    "scatter_plot",
    "with_device_column",
]
