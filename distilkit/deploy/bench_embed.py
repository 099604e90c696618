"""``distilkit bench`` for sentence encoders: embeddings per second in every mode.

For each encoder (a checkpoint folder or the embedded all-MiniLM-L6-v2; normally a teacher
and its distilled students) and each mode

* ``eager fp32`` / ``bf16`` / ``eager int8`` - :class:`distilkit.encoder.Encoder` (int8:
  :mod:`distilkit.model.int8` blocks);
* ``onnx fp32`` / ``onnx int8`` - the exported file (pooling and normalisation inside the
  graph) run by :class:`distilkit.deploy.onnx_runtime.OnnxEncoder`, as ``distilkit.load``
  opens it;

plus, when ``sentence-transformers`` is installed, its own ``SentenceTransformer.encode`` on
the first model's folder as the reference, the bench measures on the same sentences, in
one process and with the same thread count: throughput (embeddings/s over the whole text
list, tokenization included, each engine batching its own way) and batch-1 latency (p50,
p95), timed in turns (:func:`distilkit.evaluate.timing.time_embedders`). Each engine's
vectors are compared with its own model's eager fp32 vectors (cosine, mean and minimum),
and its useful matmul FLOPs per second are shown as a fraction of the matmul roof of this
machine measured in the same run (:func:`distilkit.deploy.flops.matmul_gflops`).

Devices (``BenchSettings.device``, default ``auto``: the GPU when there is one): eager fp32,
bf16 and the sentence-transformers reference run on that device, against its own measured
dense matmul rate; int8 and ONNX are CPU modes and stay on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from distilkit.deploy.bench import (
    BENCH_COLUMNS,
    BenchResult,
    bench_context,
    device_notes,
    engines_device,
    number_cell,
    run_bench,
    scatter_plot,
    with_device_column,
)
from distilkit.deploy.bench_engines import CPU, DEVICE_MODES, MODES, BenchError, BenchSettings
from distilkit.deploy.export import export_onnx, quantize_int8
from distilkit.deploy.flops import encoder_flops, matmul_roofs, roof_key
from distilkit.deploy.onnx_runtime import load_onnx
from distilkit.encoder import load
from distilkit.evaluate.report import Column, format_markdown_table, format_table, machine_info
from distilkit.evaluate.sentence import read_sst2
from distilkit.evaluate.timing import time_embedders
from distilkit.model.bilstm import is_bilstm_folder
from distilkit.model.config import ModelConfig
from distilkit.model.device import resolve_device
from distilkit.model.hub import resolve
from distilkit.model.tokenizer import Tokenizer

ENCODER_MODES = ("eager fp32", "bf16", "eager int8", "onnx fp32", "onnx int8")
REFERENCE_MODE = "sentence-transformers fp32"
ALL_MODES = tuple(dict.fromkeys([*ENCODER_MODES, *MODES]))  # encoder and classifier modes
EmbedFunction = Callable[[Sequence[str]], np.ndarray]  # texts -> (n, dim) vectors

RATIO_NOTES = [
    "x ref: embeddings/s relative to the first row (sentence-transformers' encode on the "
    "first model when it is installed, else the first model's eager fp32)",
    "x fp32: embeddings/s relative to the same model's eager fp32 row",
    "p50 x ref: batch-1 p50 latency of the first row divided by this row's (above 1: faster)",
    "cos mean / cos min: cosine of each text's vector to the same model's eager fp32 vector "
    "(the reference row: to the first model's eager fp32)",
    "GFLOP/s: matmul FLOPs over real tokens per second; % roof (the MFU): of the matmul "
    "roof measured in this run (bf16 rows against the bf16 roof, all others against the "
    "fp32 roof); tokens/s: real tokens per second",
]


@dataclass
class EmbedEngine:
    """One (model, mode) to measure: ``embed`` maps texts to sentence vectors, tokenizing
    and batching as that engine does in use."""

    model: str
    mode: str
    embed: EmbedFunction
    tokenizer: Tokenizer
    config: ModelConfig
    dtype: str = "fp32"
    device: str = "cpu"  # where the model's weights are

    @property
    def name(self) -> str:
        return f"{self.model} / {self.mode}"


def is_classifier(source: str | os.PathLike) -> bool:
    """Whether the checkpoint (folder, name or ``.onnx``) has a sequence-classification head."""
    if str(source).endswith(".onnx"):
        return load_onnx(source, num_threads=1).config.head == "sequence_classification"
    return load(resolve(source)).config.head == "sequence_classification"


def _reference_engine(
    name: str,
    folder: Path,
    encoder,
    settings: BenchSettings,
    say: Callable[[str], None],
    device: torch.device = CPU,
) -> EmbedEngine | None:
    """sentence-transformers' own ``encode`` on the folder and ``device``, or None when it
    is not installed."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        say("sentence-transformers is not installed: no reference row")
        return None
    model = SentenceTransformer(str(folder), device=str(device))

    def embed(texts: Sequence[str]) -> np.ndarray:
        return model.encode(
            list(texts),
            batch_size=settings.batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    return EmbedEngine(
        name, REFERENCE_MODE, embed, encoder.tokenizer, encoder.config, device=str(model.device)
    )


def _encoder_function(encoder, batch_size: int) -> EmbedFunction:
    def embed(texts: Sequence[str]) -> np.ndarray:
        return encoder.embed(list(texts), batch_size=batch_size, progress=False)

    return embed


def build_embed_engines(
    models: dict[str, str | os.PathLike],
    modes: Sequence[str],
    settings: BenchSettings,
    work_dir: Path,
    say: Callable[[str], None] = print,
) -> list[EmbedEngine]:
    """Load every (model, mode); the sentence-transformers reference (on the first model)
    first. Eager fp32, bf16 and the reference on ``settings.device``, int8 and ONNX on the
    CPU. ONNX files are exported to ``work_dir``."""
    unknown = [mode for mode in modes if mode not in ENCODER_MODES]
    if unknown or not modes:
        raise BenchError(f"unknown encoder mode(s) {unknown}: choose from {list(ENCODER_MODES)}")
    if not models:
        raise BenchError("no models to bench: give at least one")
    engines: list[EmbedEngine] = []
    threads = torch.get_num_threads()
    device = resolve_device(settings.device)
    for index, (name, source) in enumerate(models.items()):
        folder = resolve(source)
        encoder = load(folder, device=CPU)  # the CPU modes' (and ONNX export's) model
        if encoder.config.head == "sequence_classification":
            raise BenchError(
                f"{name} is a sequence classifier and the first model an encoder: bench "
                "encoders and classifiers in separate runs"
            )
        tokenizer, config = encoder.tokenizer, encoder.config
        if index == 0 and settings.peer:
            say(f"loading the sentence-transformers reference on {folder}")
            reference = _reference_engine(name, folder, encoder, settings, say, device)
            engines.extend([reference] if reference is not None else [])
        for mode in modes:
            dtype = "bf16" if mode == "bf16" else "fp32"
            placed = device if mode in DEVICE_MODES else CPU
            if mode == "eager fp32":
                model = encoder if placed.type == "cpu" else load(folder, device=placed)
            elif mode == "bf16":
                model = load(folder, dtype="bfloat16", device=placed)
            elif mode == "eager int8":
                model = load(folder, dtype="int8")
            else:
                fp32_path = work_dir / f"{name}.fp32.onnx"
                if not fp32_path.is_file():
                    say(f"exporting {name} to ONNX")
                    export_onnx(encoder, fp32_path, check_limit=0, verbose=False)
                path = fp32_path
                if mode == "onnx int8":
                    path = quantize_int8(fp32_path, work_dir / f"{name}.int8.onnx")
                # torch's pool shares the process: onnxruntime's workers must not spin
                model = load_onnx(path, num_threads=threads, spinning=False)
            engine = EmbedEngine(
                name,
                mode,
                _encoder_function(model, settings.batch_size),
                tokenizer,
                config,
                dtype,
                str(getattr(model, "device", CPU)),  # (an ONNX session: the CPU)
            )
            engines.append(engine)
    return engines


# ----------------------------------------------------------------------------- the result
_SHARED = {column[0]: column for column in BENCH_COLUMNS}  # the classifier bench's
EMBED_COLUMNS: list[Column] = [
    _SHARED["engine"],
    ("emb/s", lambda row, _: number_cell(row.get("embeddings_per_s"), "{:,.1f}"), True),
    _SHARED["x ref"],
    ("x fp32", lambda row, _: number_cell(row.get("speedup_vs_fp32"), "{:.2f}x"), True),
    *(_SHARED[name] for name in ("p50 ms", "p95 ms", "p50 x ref")),
    ("cos mean", lambda row, _: number_cell(row.get("cosine_mean"), "{:.5f}"), True),
    ("cos min", lambda row, _: number_cell(row.get("cosine_min"), "{:.5f}"), True),
    _SHARED["tokens/s"],
    _SHARED["GFLOP/s"],
    ("% roof", lambda row, _: number_cell(row.get("roof_fraction"), "{:.0%}"), True),
]


@dataclass
class EmbedBenchResult(BenchResult):
    """The encoder bench's rows (the reference first when present) and the run's context."""

    kind: str = "encoder"

    def table(self, markdown: bool = False) -> str:
        """The rows as an aligned text (or Markdown) table; ratios as :data:`RATIO_NOTES`."""
        render = format_markdown_table if markdown else format_table
        return render(self.rows, with_device_column(self.rows, EMBED_COLUMNS))

    def plot(self, path: str | os.PathLike) -> Path:
        """Cosine to fp32 against embeddings per second, one point per engine."""
        return scatter_plot(
            [(row["name"], row["embeddings_per_s"], row["cosine_mean"]) for row in self.rows],
            f"embeddings per second (batch {self.settings['batch_size']}, "
            f"{self.settings['num_threads']} threads, tokenization included)",
            "mean cosine to the model's eager fp32 vectors",
            "Encoder speed and fidelity, every model and mode (up and right is better)",
            path,
        )


def _cosines(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two ``(n, dim)`` arrays, in float64."""
    a, b = vectors.astype(np.float64), reference.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, 1e-12)


def run_embed_bench(
    models: dict[str, str | os.PathLike],
    modes: Sequence[str] = ENCODER_MODES,
    texts: Sequence[str] | None = None,
    settings: BenchSettings | None = None,
    work_dir: str | os.PathLike | None = None,
    say: Callable[[str], None] = print,
    progress: bool = False,
) -> EmbedBenchResult:
    """Measure every encoder (name -> folder or name) in every mode on ``texts`` (default:
    the shipped SST-2 dev sentences). ONNX files go to ``work_dir`` (default: temporary).
    ``progress``: bars of the vector pass and the timing on stderr."""
    settings = settings or BenchSettings()
    texts = list(read_sst2()[0] if texts is None else texts)
    if not texts:
        raise BenchError("no texts to bench on")
    with bench_context(settings, work_dir) as folder:
        engines = build_embed_engines(models, modes, settings, folder, say)
        return _measure(engines, texts, settings, say, progress)


def _measure(
    engines: list[EmbedEngine],
    texts: list[str],
    settings: BenchSettings,
    say,
    progress: bool = False,
) -> EmbedBenchResult:
    """Vectors (untimed; also the warm-up), interleaved timing, cosines and FLOPs."""
    threads = torch.get_num_threads()
    device = engines_device(engines)
    roofs = matmul_roofs(settings.ceiling_seconds, say, device)
    say(f"vectors of {len(texts)} texts from {len(engines)} engines")
    vectors = {}
    with torch.inference_mode():
        for engine in tqdm(engines, desc="vectors", unit="engine", disable=not progress):
            vectors[engine.name] = engine.embed(texts)
            for text in texts[:3]:
                engine.embed([text])  # warm the batch-1 shapes too
    say(f"timing: {settings.repeats} interleaved passes, then {settings.latency_texts} singles")
    timings = time_embedders(
        {engine.name: engine.embed for engine in engines},
        texts,
        batch_size=settings.batch_size,
        repeats=settings.repeats,
        warmup=0,
        latency_texts=min(settings.latency_texts, len(texts)),
        progress=progress,
    )
    first_fp32 = next((f"{e.model} / eager fp32" for e in engines if e.mode == "eager fp32"), None)
    rows = []
    for engine in engines:
        timing = timings[engine.name]
        own = f"{engine.model} / eager fp32"
        reference = vectors.get(own if engine.mode != REFERENCE_MODE else first_fp32)
        cosines = None if reference is None else _cosines(vectors[engine.name], reference)
        tokens = [
            min(len(ids) + 2, engine.tokenizer.max_length)
            for ids in engine.tokenizer.encode_ids(texts)
        ]
        flops = sum(encoder_flops(engine.config, n, head=False) for n in tokens)
        speed = timing["sentences_per_s"]
        gflops = flops * speed / len(texts) / 1e9
        roof = roofs.get(roof_key(engine.device, engine.dtype))
        own_speed = timings.get(own, {}).get("sentences_per_s")
        rows.append(
            {
                "name": engine.name,
                "model": engine.model,
                "mode": engine.mode,
                "device": engine.device,
                "embeddings_per_s": speed,
                "sentences_per_s": speed,  # the shared column name of report tables
                "speedup_vs_fp32": speed / own_speed if own_speed else None,
                "latency_ms_p50": timing["latency_ms_p50"],
                "latency_ms_p95": timing["latency_ms_p95"],
                "num_threads": timing["num_threads"],
                "batch_size": settings.batch_size,
                "dim": int(vectors[engine.name].shape[1]),
                "cosine_mean": None if cosines is None else float(cosines.mean()),
                "cosine_min": None if cosines is None else float(cosines.min()),
                "tokens_per_s": sum(tokens) * speed / len(texts),
                "gflops_per_s": gflops,
                "roof_fraction": gflops / roof if roof else None,
            }
        )
    notes = [*RATIO_NOTES, *device_notes(device, engines, threads)]
    return EmbedBenchResult(
        rows=rows,
        settings=asdict(settings)
        | {
            "device": str(device),
            "num_threads": threads,
            "max_length": "each model's own",
            "onnxruntime_spinning": False,
        },
        machine=machine_info(),
        ceilings_gflops=roofs,
        texts=len(texts),
        notes=notes,
    )


def bench_models(
    models: dict[str, str | os.PathLike],
    modes: Sequence[str] | None = None,
    texts: Sequence[str] | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
    settings: BenchSettings | None = None,
    work_dir: str | os.PathLike | None = None,
    say: Callable[[str], None] = print,
    progress: bool = False,
) -> BenchResult:
    """``distilkit bench``: the encoder bench when the first model has no classification
    head, else the classifier bench (:func:`distilkit.deploy.bench.run_bench`); modes None
    means every mode of that kind; ``progress``: bars on stderr."""
    if not models:
        raise BenchError("no models to bench: give at least one")
    first = next(iter(models.values()))
    if is_bilstm_folder(first) or is_classifier(first):
        return run_bench(models, modes or MODES, texts, labels, settings, work_dir, say, progress)
    wrong = [mode for mode in modes or () if mode not in ENCODER_MODES]
    if wrong:
        raise BenchError(
            f"mode(s) {wrong} apply to classifiers; a sentence encoder runs in "
            f"{', '.join(repr(m) for m in ENCODER_MODES)}"
        )
    return run_embed_bench(models, modes or ENCODER_MODES, texts, settings, work_dir, say, progress)


__all__ = [
    "ALL_MODES",
    "EMBED_COLUMNS",
    "ENCODER_MODES",
    "RATIO_NOTES",
    "REFERENCE_MODE",
    "EmbedBenchResult",
    "EmbedEngine",
    "bench_models",
    "build_embed_engines",
    "is_classifier",
    "run_embed_bench",
]
