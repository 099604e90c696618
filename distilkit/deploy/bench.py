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
machine's measured fp32 (or bf16, for bf16) matmul ceiling (:func:`matmul_gflops`).

Devices (``BenchSettings.device``, default ``auto``: the GPU when there is one): the
:data:`DEVICE_MODES` (eager fp32, bf16) and the peer run on that device, their ceiling the
device's own dense matmul rate measured in the run
(:func:`distilkit.evaluate.mfu.peak_matmul_flops`); int8, ONNX and early exit are CPU
modes and stay on the CPU, against the CPU's ceiling. Rows say where they ran.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from distilkit.data.batching import sorted_batches
from distilkit.deploy.export import export_onnx, quantize_int8
from distilkit.deploy.onnx_runtime import load_onnx
from distilkit.encoder import load
from distilkit.evaluate.mfu import peak_matmul_flops
from distilkit.evaluate.report import Column, format_markdown_table, format_table, machine_info
from distilkit.evaluate.sentence import read_sst2
from distilkit.evaluate.timing import time_embedders
from distilkit.methods.early_exit.model import EarlyExitModel, has_branches
from distilkit.model.bilstm import is_bilstm_folder, load_bilstm
from distilkit.model.config import ModelConfig
from distilkit.model.device import AUTO, resolve_device, to_device
from distilkit.model.hub import resolve
from distilkit.model.int8 import quantize_model
from distilkit.model.tokenizer import Batch, Tokenizer

MODES = (
    "eager fp32",
    "bf16",
    "eager int8",
    "onnx fp32",
    "onnx int8",
    "early exit",
    "early exit int8",
)
DEVICE_MODES = ("eager fp32", "bf16")  # the modes that run on --device; the rest on the CPU
PEER_MODE = "transformers fp32"
CPU = torch.device("cpu")
Step = Callable[[Batch], np.ndarray]  # one tokenized batch -> (batch, num_labels) logits


class BenchError(ValueError):
    """Bad bench input: unknown mode, a model that is not a classifier, missing branches."""


@dataclass
class BenchSettings:
    """How the bench measures. ``threshold``: early-exit threshold, for every model or per
    model name (default: the one saved with the branches); ``num_threads``: torch and
    onnxruntime intra-op threads."""

    batch_size: int = 32
    repeats: int = 3
    latency_texts: int = 100
    num_threads: int | None = None
    threshold: float | dict[str, float] | None = None
    max_length: int = 128
    peer: bool = True
    ceiling_seconds: float = 1.0  # per dtype; 0 skips the matmul ceiling
    device: str = AUTO  # where the DEVICE_MODES and the peer run

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.repeats < 1 or self.latency_texts < 0:
            raise BenchError("batch_size and repeats must be >= 1 and latency_texts >= 0")
        if self.max_length < 3:
            raise BenchError(f"max_length must be >= 3 tokens, got {self.max_length}")
        if self.num_threads is not None and self.num_threads < 1:
            raise BenchError(f"num_threads must be at least 1, got {self.num_threads}")
        resolve_device(self.device)  # a device that is not there: before any model loads
        thresholds = (
            self.threshold.values() if isinstance(self.threshold, dict) else [self.threshold]
        )
        for threshold in thresholds:
            if threshold is not None and not 0.0 <= threshold <= 1.0:  # also rejects NaN
                raise BenchError(
                    "the early-exit threshold is a normalised prediction entropy from 0 to 1 "
                    f"(0: never exit early, 1: always after the first block), got {threshold}"
                )


# ----------------------------------------------------------------------------- FLOPs
def matmul_gflops(
    dtype: torch.dtype = torch.float32, size: int = 1024, seconds: float = 1.0
) -> float:
    """This machine's matmul ceiling: the best GFLOP/s of ``(size x size) @ (size x size)``
    in ``dtype`` over about ``seconds`` of repeats, at torch's current thread count."""
    return peak_matmul_flops("cpu", dtype, size, seconds) / 1e9


def roof_key(device: str, dtype: str) -> str:
    """The key of a ceiling in ``ceilings_gflops``: ``"fp32"`` (the CPU's), ``"cuda:0 bf16"``."""
    return dtype if device == "cpu" else f"{device} {dtype}"


def matmul_roofs(
    seconds: float, say: Callable[[str], None], device: torch.device = CPU
) -> dict[str, float]:
    """``{"fp32": GFLOP/s, "bf16": GFLOP/s}``: :func:`matmul_gflops` for about ``seconds``
    each (none when ``seconds`` is 0); with another ``device``, its dense matmul rate too
    (:func:`peak_matmul_flops` at its default size), under :func:`roof_key`."""
    if seconds <= 0:
        return {}
    dtypes = (("fp32", torch.float32), ("bf16", torch.bfloat16))
    say("measuring the matmul ceiling (fp32, bf16)")
    roofs = {name: matmul_gflops(dtype, seconds=seconds) for name, dtype in dtypes}
    if device.type != "cpu":
        say(f"measuring the matmul ceiling on {device} (fp32, bf16)")
        for name, dtype in dtypes:
            roofs[roof_key(str(device), name)] = (
                peak_matmul_flops(device, dtype, seconds=seconds) / 1e9
            )
    return roofs


def encoder_flops(
    config: ModelConfig,
    tokens: int,
    layers: int | None = None,
    branch_width: int = 0,
    head: bool = True,
) -> float:
    """Matmul FLOPs of one text of ``tokens`` real tokens through ``layers`` blocks (default
    all) and (``head``) the classifier head; with ``branch_width``, early-exit branches after
    ``min(layers, num_layers - 1)`` of them. Embedding look-ups, norms and softmax omitted."""
    hidden, inner, labels = config.hidden_size, config.intermediate_size, config.num_labels
    layers = config.num_layers if layers is None else layers
    per_layer = 2 * tokens * (4 * hidden * hidden + 2 * hidden * inner)  # Q, K, V, O, FFN
    per_layer += 2 * 2 * tokens * tokens * hidden  # QK^T and attention x V
    head_flops = 2 * hidden * hidden + 2 * hidden * labels if head else 0  # pooler, classifier
    flops = layers * per_layer + head_flops
    if branch_width:
        width = branch_width
        branch = 2 * tokens * (hidden * width + 2 * width * width)  # project, key, value
        branch += 2 * width * width + 4 * tokens * width + 2 * width * width + 2 * width * labels
        flops += min(layers, config.num_layers - 1) * branch
    return float(flops)


def bilstm_flops(config, tokens: int) -> float:
    """Matmul FLOPs of one text of ``tokens`` tokens through a BiLSTM student: the
    recurrent half of the gates in both directions (``W_hh h``; the input half is a table
    look-up) and the MLP head."""
    hidden = config.hidden_size
    recurrent = 2 * 2 * hidden * 4 * hidden  # two directions, (H) x (H, 4H) per token
    head = 2 * (config.sentence_size * config.mlp_size + config.mlp_size * config.num_labels)
    return float(tokens * recurrent + head)


# ----------------------------------------------------------------------------- engines
@dataclass
class Engine:
    """One (model, mode) to measure: ``step`` maps a tokenized batch to logits, or
    ``classify_texts`` (an engine's own serving path) maps texts to logits."""

    model: str
    mode: str
    step: Step | None
    tokenizer: Tokenizer
    config: ModelConfig  # a BiLSTMConfig for a BiLSTM student
    dtype: str = "fp32"
    device: str = "cpu"  # where the model's weights are
    branch_width: int = 0
    exit_layers: Callable[[Batch], np.ndarray] | None = None  # early exit: blocks run
    flops: Callable[[int], float] | None = None  # tokens -> FLOPs; None: encoder_flops
    # (texts, batch size, max length) -> logits: an engine's own serving path, used
    # instead of the shared tokenize-and-``step`` loop when the model has one (BiLSTM)
    classify_texts: Callable[[Sequence[str], int, int], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.step is None and self.classify_texts is None:
            raise BenchError(f"engine {self.name}: needs a step or a classify_texts path")

    @property
    def name(self) -> str:
        return f"{self.model} / {self.mode}"


def _classifier_or_error(encoder, name: str) -> None:
    if encoder.config.head != "sequence_classification":
        raise BenchError(
            f"{name} has head {encoder.config.head!r}: the bench compares sequence "
            "classifiers (fine-tune one with `distilkit finetune`)"
        )


def _torch_step(model: torch.nn.Module, device: torch.device = CPU) -> Step:
    """Inputs to ``device`` (the model's), logits back to the host."""

    @torch.inference_mode()
    def step(batch: Batch) -> np.ndarray:
        return model(**to_device(batch.model_inputs(), device)).logits.float().cpu().numpy()

    return step


def _peer_engine(
    name: str, folder: Path, tokenizer: Tokenizer, config: ModelConfig, device: torch.device
) -> Engine:
    """``transformers``' own eager model on the same checkpoint and device, fed the same ids."""
    try:
        import transformers
    except ImportError:
        raise BenchError(
            "the reference peer needs transformers (pip install distilkit[interop]); "
            "or turn the peer off"
        ) from None
    transformers.logging.set_verbosity_error()
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(folder), dtype=torch.float32
    ).eval()
    model.to(device)
    with_types = config.type_vocab_size > 0

    @torch.inference_mode()
    def step(batch: Batch) -> np.ndarray:
        inputs = to_device(batch.model_inputs(), device)
        if not with_types:
            del inputs["token_type_ids"]
        return model(**inputs).logits.float().cpu().numpy()

    return Engine(name, PEER_MODE, step, tokenizer, config, device=str(model.device))


def _bilstm_engines(
    name: str, folder: Path, modes: Sequence[str], say: Callable[[str], None]
) -> list[Engine]:
    """A BiLSTM student in ``eager fp32`` (its only mode: the other modes are skipped)."""

    model = load_bilstm(folder).eval()
    config = model.config
    if config.pair:
        raise BenchError(
            f"{name} is a sentence-pair BiLSTM: the bench times single-sentence classifiers"
        )
    if config.num_labels < 2:
        raise BenchError(f"{name} is a regression BiLSTM: the bench compares classifiers")
    for mode in modes:
        if mode != "eager fp32":
            say(f"skipping {name} / {mode}: a BiLSTM student runs in eager fp32 only")
    if "eager fp32" not in modes:
        return []

    def classify_texts(texts: Sequence[str], batch_size: int, max_length: int) -> np.ndarray:
        # the `classify` pipeline's path: its own unpadded tokenization, batched by length
        return model.predict_logits(texts, batch_size=batch_size, max_length=max_length)

    flops = functools.partial(bilstm_flops, config)
    return [
        Engine(
            name,
            "eager fp32",
            None,
            model.tokenizer,
            config,
            flops=flops,
            classify_texts=classify_texts,
        )
    ]


def native_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AVX512-BF16 or AMX), as oneDNN says."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check and check())


def _threads_spin() -> bool:
    """onnxruntime's threads follow PyTorch's OpenMP wait policy, so that neither engine
    spins on cores the other needs: sleep under ``OMP_WAIT_POLICY=passive``."""
    return os.environ.get("OMP_WAIT_POLICY", "").lower() != "passive"


def file_stem(index: int, name: str) -> str:
    """A file name for model ``name`` (the ``index``-th) that stays in its folder: a name
    given on the command line (``../../x``, ``a/b``) is never used as a path."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:60] or "model"
    return f"{index}-{safe}"


def build_engines(
    models: dict[str, str | os.PathLike],
    modes: Sequence[str],
    settings: BenchSettings,
    work_dir: Path,
    say: Callable[[str], None] = print,
) -> list[Engine]:
    """Load every (model, mode); the peer (on the first model) first. The
    :data:`DEVICE_MODES` and the peer on ``settings.device``, the others on the CPU. ONNX
    files go to ``work_dir``."""

    unknown = [mode for mode in modes if mode not in MODES]
    if unknown or not modes:
        raise BenchError(f"unknown mode(s) {unknown}: choose from {list(MODES)}")
    if not models:
        raise BenchError("no models to bench: give at least the teacher")
    device = resolve_device(settings.device)
    engines: list[Engine] = []
    no_branches: list[str] = []  # models skipped in the early-exit modes
    for index, (name, source) in enumerate(models.items()):
        if is_bilstm_folder(source):
            if index == 0:
                raise BenchError(
                    f"{name} is a BiLSTM student: the first model is the teacher, a "
                    "transformer checkpoint (the peer runs on it); list the BiLSTM after it"
                )
            engines.extend(_bilstm_engines(name, Path(source), modes, say))
            continue
        folder = resolve(source)
        encoder = load(folder, device=CPU)  # the CPU modes' (and ONNX export's) model
        _classifier_or_error(encoder, name)
        tokenizer, config = encoder.tokenizer, encoder.config
        if index == 0 and settings.peer:
            say(f"loading the transformers peer on {folder}")
            engines.append(_peer_engine(name, folder, tokenizer, config, device))
        for mode in modes:
            if mode in DEVICE_MODES:
                dtype = "bf16" if mode == "bf16" else "fp32"
                if dtype == "bf16":
                    model = load(folder, dtype="bfloat16", device=device).model
                elif device.type == "cpu":
                    model = encoder.model
                else:
                    model = load(folder, device=device).model
                engines.append(
                    Engine(
                        name,
                        mode,
                        _torch_step(model, device),
                        tokenizer,
                        config,
                        dtype=dtype,
                        device=str(next(model.parameters()).device),
                    )
                )
            elif mode == "eager int8":
                model = quantize_model(encoder.model)
                engines.append(Engine(name, mode, _torch_step(model), tokenizer, config))
            elif mode in ("onnx fp32", "onnx int8"):
                stem = file_stem(index, name)
                fp32_path = work_dir / f"{stem}.fp32.onnx"
                if not fp32_path.is_file():
                    say(f"exporting {name} to ONNX")
                    export_onnx(encoder, fp32_path, check_limit=0, verbose=False)
                path = fp32_path
                if mode == "onnx int8":
                    path = quantize_int8(fp32_path, work_dir / f"{stem}.int8.onnx")
                session = load_onnx(
                    path, num_threads=torch.get_num_threads(), spinning=_threads_spin()
                )
                engines.append(Engine(name, mode, session.logits_batch, tokenizer, config))
            elif mode in ("early exit", "early exit int8"):
                if not has_branches(folder):
                    say(f"skipping {name} / {mode}: {folder} has no trained branches")
                    no_branches.append(f"{name} ({folder})")
                    continue
                early = EarlyExitModel.from_folder(folder)
                if mode == "early exit int8":
                    early.model = quantize_model(early.model)
                chosen = settings.threshold
                if isinstance(chosen, dict):
                    chosen = chosen.get(name)
                threshold = early.threshold if chosen is None else chosen

                @torch.inference_mode()
                def step(batch: Batch, model=early, t=threshold) -> np.ndarray:
                    return model(**batch.model_inputs(), threshold=t).logits.numpy()

                @torch.inference_mode()
                def layers(batch: Batch, model=early, t=threshold) -> np.ndarray:
                    return model(**batch.model_inputs(), threshold=t).exit_layers.numpy()

                width = early.branch_config.width if threshold > 0 else 0
                engines.append(
                    Engine(
                        name,
                        f"{mode} ({threshold:.3g})",
                        step,
                        tokenizer,
                        config,
                        branch_width=width,
                        exit_layers=layers,
                    )
                )
    if not engines:
        reason = f"the mode(s) {list(modes)} leave nothing to time"
        if no_branches:
            reason = (
                f"nothing to time: {', '.join(dict.fromkeys(no_branches))} "
                f"{'has' if len(set(no_branches)) == 1 else 'have'} no trained early-exit "
                "branches; train them with `distilkit train-early-exit MODEL`, or add other "
                "--modes"
            )
        raise BenchError(reason)
    return engines


def classify(engine: Engine, texts: Sequence[str], batch_size: int, max_length: int) -> np.ndarray:
    """Logits ``(n, num_labels)`` of ``texts`` in order, over length-sorted batches (or
    the engine's own serving path when it has one; it batches by length itself)."""
    if engine.classify_texts is not None:
        return engine.classify_texts(texts, batch_size, max_length)
    out = np.zeros((len(texts), engine.config.num_labels), np.float32)
    for indices, batch in sorted_batches(engine.tokenizer, texts, batch_size, None, max_length):
        out[indices] = engine.step(batch)
    return out


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


def _number(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


BENCH_COLUMNS: list[Column] = [
    ("engine", lambda row, _: row["name"], False),
    ("sent/s", lambda row, _: _number(row.get("sentences_per_s"), "{:,.1f}"), True),
    ("x ref", lambda _, vs: _number(vs.get("speedup"), "{:.2f}x"), True),
    ("p50 ms", lambda row, _: _number(row.get("latency_ms_p50"), "{:.2f}"), True),
    ("p95 ms", lambda row, _: _number(row.get("latency_ms_p95"), "{:.2f}"), True),
    ("p50 x ref", lambda _, vs: _number(vs.get("latency_speedup"), "{:.2f}x"), True),
    (
        "accuracy %",
        lambda row, _: _number(row.get("accuracy") and 100 * row["accuracy"], "{:.2f}"),
        True,
    ),
    ("% of teacher", lambda row, _: _number(row.get("accuracy_retention_pct"), "{:.1f}"), True),
    (
        "agree %",
        lambda row, _: _number(row.get("agreement") and 100 * row["agreement"], "{:.1f}"),
        True,
    ),
    ("layers", lambda row, _: _number(row.get("average_layers"), "{:.2f}"), True),
    ("tokens/s", lambda row, _: _number(row.get("tokens_per_s"), "{:.0f}"), True),
    ("GFLOP/s", lambda row, _: _number(row.get("gflops_per_s"), "{:.1f}"), True),
    (
        "% ceiling",
        lambda row, _: _number(
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
            "onnxruntime_spinning": _threads_spin(),
        },
        machine=machine_info(),
        ceilings_gflops=ceilings,
        texts=len(texts),
        notes=notes,
    )


__all__ = [
    "BENCH_COLUMNS",
    "DEVICE_MODES",
    "MODES",
    "PEER_MODE",
    "BenchError",
    "BenchResult",
    "BenchSettings",
    "Engine",
    "bench_context",
    "bilstm_flops",
    "build_engines",
    "classify",
    "device_notes",
    "encoder_flops",
    "engines_device",
    "matmul_gflops",
    "matmul_roofs",
    "native_bf16",
    "roof_key",
    "run_bench",
    "scatter_plot",
    "with_device_column",
]
