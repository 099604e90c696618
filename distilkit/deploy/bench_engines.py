"""What ``distilkit bench`` measures: its modes and settings, and one :class:`Engine` per
(model, mode), loaded the way that mode serves (distilkit's eager model in fp32, bf16 or
with int8 blocks, an ONNX session, early exit, a BiLSTM student's own path, and the
``transformers`` peer on the teacher's checkpoint). :mod:`distilkit.deploy.bench` times
them.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distilkit.data.batching import sorted_batches
from distilkit.deploy.export import export_onnx, quantize_int8
from distilkit.deploy.flops import bilstm_flops
from distilkit.deploy.onnx_runtime import load_onnx
from distilkit.encoder import load
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


def onnx_threads_spin() -> bool:
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
                    path, num_threads=torch.get_num_threads(), spinning=onnx_threads_spin()
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


__all__ = [
    "CPU",
    "DEVICE_MODES",
    "MODES",
    "PEER_MODE",
    "BenchError",
    "BenchSettings",
    "Engine",
    "build_engines",
    "classify",
    "file_stem",
    "native_bf16",
]
