"""The candidates ``compress`` builds and the deployable forms it loads them in.

Builders reuse the methods, never copy them: static students come from
:mod:`distilkit.methods.static` (the widest one built, the narrower ones its leading
principal components, which equals a rebuild: the PCA's components are ordered and the SIF
weights scale whole rows), layered students from the main job
(:mod:`distilkit.methods.general`), MobileBERT from :mod:`distilkit.methods.mobilebert`.
Every builder writes into its own folder under ``OUT/candidates/`` and resumes there.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from distilkit.deploy.bench_engines import native_bf16
from distilkit.deploy.export import export_onnx, quantize_int8
from distilkit.deploy.onnx_runtime import load_onnx
from distilkit.encoder import load
from distilkit.methods import general, mobilebert, static
from distilkit.methods.compress.config import STATIC_FORM, CompressConfig
from distilkit.model.static import load_static, save_static

STATIC_PREFIX = "static-"
# The order forms are scored in: ONNX int8 first (usually the fastest, and the cheapest to
# score: when time is short it is the one form a candidate gets), then eager fp32 before its
# ONNX twin (which then shares its scores, see scoring.same_function).
SCORING_ORDER = ("onnx-int8", "fp32", "onnx-fp32", "int8", "bf16")


@dataclass(frozen=True)
class CandidateSpec:
    """One model to build: ``kind`` static | layers | mobilebert; ``size`` the static width or
    the number of layers."""

    kind: str
    size: int

    @property
    def name(self) -> str:
        if self.kind == "static":
            return f"{STATIC_PREFIX}{self.size}"
        if self.kind == "layers":
            return f"student-{self.size}L"
        return "mobilebert"

    @property
    def trained(self) -> bool:
        """Whether building it trains against the teacher (and takes a share of the time)."""
        return self.kind != "static"


def candidate_specs(config: CompressConfig) -> list[CandidateSpec]:
    """The candidates in build order: static widths (widest first), layered students in the
    order given, then MobileBERT when asked for."""
    specs = [CandidateSpec("static", dims) for dims in sorted(config.static_dims, reverse=True)]
    specs += [CandidateSpec("layers", layers) for layers in config.student_layers]
    if config.mobilebert:
        specs.append(CandidateSpec("mobilebert", 0))
    return specs


def forms_of(spec: CandidateSpec, config: CompressConfig, bf16: bool | None = None) -> list[str]:
    """The deployable forms a candidate is scored in, in :data:`SCORING_ORDER`: a static
    table has one; a transformer has ``config.forms``, without bf16 unless the CPU runs it
    natively (``bf16``: that check's answer, default
    :func:`distilkit.deploy.bench_engines.native_bf16`)."""
    if spec.kind == "static":
        return [STATIC_FORM]
    native = native_bf16() if bf16 is None else bf16
    return [f for f in SCORING_ORDER if f in config.forms and (f != "bf16" or native)]


# --------------------------------------------------------------------------- building
def build_static(spec: CandidateSpec, widest: Path | None, config: CompressConfig, folder: Path):
    """A static student of width ``spec.size`` in ``folder``: built by the static method
    (``widest`` None), or the first ``spec.size`` columns of the widest one's table."""
    if widest is None:
        static.run(static.Config(teacher=config.teacher, dims=spec.size, evaluate=False), folder)
        return
    source = load_static(widest)
    metadata = {
        **source.metadata,
        "dims": spec.size,
        "derived_from": str(widest),
        "pca_kept_variance": None,  # the narrower PCA's share is not recorded by the wider
    }
    save_static(folder, source.table[:, : spec.size], source.tokenizer, source.normalize, metadata)


def distill_config(
    config: CompressConfig, corpus: Path, layers: int, seconds: float, max_len: int
) -> general.Config:
    """The main job's settings for a ``layers``-layer student trained for ``seconds`` on
    ``corpus`` (the training lines) with sequences of up to ``max_len`` tokens: its
    defaults, with the teacher, seed and device of ``config``; time, not steps, ends
    training."""
    defaults = general.Config()
    training = dataclasses.replace(
        defaults.training,
        time_budget=seconds,
        max_steps=10**9,
        seed=config.seed,
        progress=False,
        device=config.device,
    )
    return general.Config(
        teacher=config.teacher,
        corpus=[str(corpus)],
        num_layers=layers,
        max_len=max_len,
        training=training,
    )


def build_trained(
    spec: CandidateSpec,
    config: CompressConfig,
    corpus: Path,
    seconds: float,
    folder: Path,
    max_len: int,
    teacher_width: int,
) -> Path:
    """Train a layered or MobileBERT student for ``seconds`` in ``folder`` (resuming a run
    stopped there); returns the student's model folder. MobileBERT keeps its default
    shape, with embeddings no wider than the teacher's ``teacher_width``."""
    layers = spec.size if spec.kind == "layers" else 1
    settings = distill_config(config, corpus, layers, seconds, max_len)
    if spec.kind == "layers":
        general.run(settings, folder, resume=True, evaluate=False)
    else:
        options = mobilebert.Config(distill=settings, embedding_size=min(128, teacher_width))
        mobilebert.run(options, folder, resume=True, evaluate=False)
    return folder / "student"


# --------------------------------------------------------------------------- the forms
def onnx_file(model_folder: Path, form: str) -> Path:
    """Where a form's ONNX file lives: beside the model folder it was exported from."""
    return model_folder.parent / f"{model_folder.name}.{form.removeprefix('onnx-')}.onnx"


def _export(model_folder: Path, form: str) -> Path:
    """The form's ONNX file, written (under a temporary name, then renamed) when missing."""
    target = onnx_file(model_folder, form)
    if target.is_file():
        return target
    partial = target.with_name(f".partial-{os.getpid()}-{target.name}")
    if form == "onnx-fp32":
        export_onnx(load(model_folder, head=None), partial, check_limit=0, verbose=False)
    else:
        quantize_int8(_export(model_folder, "onnx-fp32"), partial)
    os.replace(partial, target)
    return target


def load_form(model_folder: Path, form: str):
    """The candidate in ``form``, ready to ``embed``: a static table, an Encoder (fp32, bf16
    or int8 blocks) or an ONNX session (exported on first use; its threads sleep when idle,
    as PyTorch's pool shares the process)."""
    if form == STATIC_FORM:
        return load_static(model_folder)
    if form.startswith("onnx-"):
        return load_onnx(_export(model_folder, form), torch.get_num_threads(), spinning=False)
    dtype = {"fp32": None, "bf16": "bfloat16", "int8": "int8"}[form]
    return load(model_folder, head=None, dtype=dtype, device="cpu")


def form_size_bytes(model_folder: Path, form: str) -> int:
    """Bytes on disk of the weights a form deploys: the ONNX file, else the model folder's
    weight files (eager bf16 and int8 cast or quantize the fp32 weights when they load)."""
    if form.startswith("onnx-"):
        return onnx_file(model_folder, form).stat().st_size
    weights = [p for p in model_folder.rglob("*") if p.suffix in (".safetensors", ".bin")]
    return sum(path.stat().st_size for path in weights)


__all__ = [
    "SCORING_ORDER",
    "CandidateSpec",
    "build_static",
    "build_trained",
    "candidate_specs",
    "distill_config",
    "form_size_bytes",
    "forms_of",
    "load_form",
    "onnx_file",
]
