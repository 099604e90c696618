"""ONNX export (fp32 or dynamic int8) with a parity check. The files are run by
:class:`~distilkit.deploy.onnx_runtime.OnnxEncoder` (an ``onnxruntime`` model behind the same
Python API as :class:`~distilkit.encoder.Encoder`), opened by ``load_onnx``.

``export_onnx(model, "model.onnx")`` writes the encoder with its task head as one ONNX
graph (opset 18 to 25) whose batch and sequence axes are dynamic. The graph takes
``input_ids``, ``attention_mask`` (and ``token_type_ids`` in the BERT layout), all
``(batch, seq)`` int64, and returns ``last_hidden_state`` ``(batch, seq, hidden)`` (the
token vectors), ``sentence_embedding`` ``(batch, dim)`` (the model's sentence-transformers
recipe run inside the graph: its pooling over real tokens, Dense layers and Normalize, so
the file alone is a complete sentence encoder) and, for a classification or QA head,
``logits``. The model config, the recipe and the tokenizer travel inside the file as ONNX
metadata, so :func:`load_onnx` needs nothing but the ``.onnx``.

With ``int8=True`` the fp32 graph is quantized by ``onnxruntime``'s dynamic
quantization: the weights of every weight-times-activation MatMul become int8 (one scale
per output channel); activations are quantized on the fly, per tensor; embeddings,
LayerNorms, softmax and the activation-by-activation attention products stay in fp32.

Every export ends with a parity check against the eager PyTorch model on a sample of
texts (by default the shipped SST-2 dev sentences): the largest absolute difference of
each output over real tokens and, for classifiers, how often the predictions agree and
(with labels) the accuracy before and after.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from distilkit.data.batching import sorted_batches
from distilkit.deploy.onnx_runtime import (
    METADATA_PREFIX,
    ExportError,
    OnnxEncoder,
    load_onnx,
    read_metadata,
)
from distilkit.encoder import load
from distilkit.evaluate.sentence import read_sst2
from distilkit.model.config import ModelConfig
from distilkit.model.mobilebert import MobileBertBlock, TracedFoldedBlock
from distilkit.model.modeling import EncoderOutput, TransformerModel, pool
from distilkit.model.st_folder import DenseLayer, SentenceModules
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import to_dict

if TYPE_CHECKING:
    from distilkit.encoder import Encoder

DEFAULT_OPSET = 18
# The opsets the installed exporter writes and onnxruntime runs (checked with torch 2.13,
# onnxruntime 1.32): below 18 the exporter still emits opset-18 ops (Split with
# num_outputs), which onnxruntime rejects; above 25 its version converter fails and it
# would keep the opset-18 header over newer ops.
MIN_OPSET = 18
MAX_OPSET = 25
FORMAT_VERSION = "1"
HEADS_WITH_LOGITS = ("sequence_classification", "token_classification", "question_answering")


# ----------------------------------------------------------------------------- the graph
class _ExportGraph(nn.Module):
    """The model as one traceable function: token vectors, the sentence vector of the
    model's recipe (``sentence``: pooling, Dense, Normalize) and the head's logits.

    The fast path of ``Backbone.forward`` branches on the data (it drops padding rows
    only when there are any), which a traced graph cannot do; this forward always applies
    the key mask, through the explicit attention path, and so holds for every batch.
    """

    def __init__(self, model: TransformerModel, sentence: SentenceModules):
        super().__init__()
        self.model = model
        self.sentence = sentence
        self.with_logits = model.config.head in HEADS_WITH_LOGITS
        # MobileBERT blocks with NoNorm: the norms folded into the matmuls, as in eager
        # CPU inference (fewer, larger MatMuls; no element-wise scale after each); an int8
        # block is not one and refuses, as ever
        self.blocks = nn.ModuleList(
            TracedFoldedBlock(block) if type(block) is MobileBertBlock and block.foldable else block
            for block in model.backbone.layers
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        backbone = self.model.backbone
        hidden = backbone.embeddings(input_ids, token_type_ids)  # (B, T, H)
        key_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        for block in self.blocks:
            if isinstance(block, TracedFoldedBlock):
                hidden = block(hidden, key_mask)
            else:
                hidden, _, _ = block.forward_explicit(hidden, key_mask)
        vectors = self.sentence.encode(hidden, attention_mask)  # (B, dim)
        if not self.with_logits:
            return hidden, vectors
        pooled = backbone.pooler(hidden) if backbone.pooler is not None else None
        logits = self.model.head(EncoderOutput(last_hidden_state=hidden, pooled_output=pooled))
        return hidden, vectors, logits


def _input_names(config: ModelConfig) -> list[str]:
    names = ["input_ids", "attention_mask"]
    return [*names, "token_type_ids"] if config.type_vocab_size > 0 else names


def _output_names(config: ModelConfig) -> list[str]:
    names = ["last_hidden_state", "sentence_embedding"]
    return [*names, "logits"] if config.head in HEADS_WITH_LOGITS else names


def _example_inputs(config: ModelConfig) -> tuple[torch.Tensor, ...]:
    """A padded batch of 2 x 7 ids (sizes that no other dimension shares, so the tracer
    cannot tie batch or sequence to a constant)."""
    seq = min(7, config.max_position_embeddings)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, config.vocab_size, (2, seq), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, seq // 2 :] = 0
    inputs = (input_ids, attention_mask)
    if config.type_vocab_size > 0:
        inputs += (torch.zeros_like(input_ids),)
    return inputs


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's progress prints, warnings and log lines."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _export_fp32(
    model: TransformerModel, sentence: SentenceModules, path: Path, opset: int
) -> None:
    """Trace ``model`` (float32, eval mode) and its sentence recipe into an ONNX file with
    dynamic batch and seq."""
    config = model.config
    names = _input_names(config)
    batch = torch.export.Dim("batch", min=1)
    seq = torch.export.Dim("seq", min=1, max=config.max_tokens)
    dynamic_shapes = {name: {0: batch, 1: seq} for name in names}
    with _quiet():
        torch.onnx.export(
            _ExportGraph(model, sentence).eval(),
            _example_inputs(config),
            str(path),
            input_names=names,
            output_names=_output_names(config),
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            verbose=False,
        )
    _fold_weights(path)
    written = written_opset(path)
    if written != opset:
        path.unlink()
        raise ExportError(
            f"the exporter could not write opset {opset} (it wrote {written}): use an opset "
            f"from {MIN_OPSET} to {MAX_OPSET}"
        )


def written_opset(path: str | os.PathLike) -> int | None:
    """The default-domain ONNX opset an ONNX file declares (None if it declares none)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    versions = [entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")]
    return versions[0] if versions else None


def _fold_weights(path: Path) -> None:
    """Fold constant subgraphs of any size into initializers.

    The exporter's own pass folds only small tensors, so a weight computed from
    parameters (the Q, K and V matrices stacked into one) would stay a ``Concat`` ->
    ``Transpose`` at run time, and int8 quantization, which needs the weight of a MatMul
    as an initializer, would skip that MatMul. The intermediate shape annotations are
    dropped: onnxruntime's quantizer re-infers them and trips over stale ones.
    """
    import onnx
    import onnxscript.optimizer

    with _quiet():
        proto = onnxscript.optimizer.optimize(
            onnx.load(str(path)), input_size_limit=1 << 30, output_size_limit=1 << 30
        )
    del proto.graph.value_info[:]
    onnx.save(proto, str(path))


def quantize_int8(fp32_path: str | os.PathLike, int8_path: str | os.PathLike) -> Path:
    """Dynamic int8 quantization of an fp32 ONNX file (weights int8 per output channel,
    activations quantized per tensor at run time). Metadata is carried over."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" notice
        quantize_dynamic(
            Path(fp32_path),
            Path(int8_path),
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=QuantType.QInt8,
        )
    metadata = read_metadata(onnx.load(str(fp32_path), load_external_data=False))
    _write_metadata(int8_path, metadata | {"precision": "int8"})
    return Path(int8_path)


# ----------------------------------------------------------------------------- metadata
def _write_metadata(path: str | os.PathLike, values: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, value
    onnx.save(proto, str(path))


def _recipe_metadata(sentence: SentenceModules, hidden_size: int) -> dict:
    """What the graph's ``sentence_embedding`` is, for the runtime wrapper: pooling modes,
    how many Dense layers, Normalize, the output width, the default cut (``truncate_dim``),
    prompts and similarity function."""
    return {
        "pooling": list(sentence.pooling),
        "dense_layers": sum(isinstance(s, DenseLayer) for s in sentence.stages),
        "normalize": sentence.normalize,
        "dim": sentence.output_dim(hidden_size),
        "truncate_dim": sentence.truncate_dim,
        "include_prompt": sentence.include_prompt,
        "prompts": sentence.prompts,
        "default_prompt_name": sentence.default_prompt_name,
        "similarity_fn_name": sentence.similarity_fn_name,
    }


def _metadata_for(
    config: ModelConfig, tokenizer: Tokenizer | None, precision: str, sentence: SentenceModules
) -> dict:
    values = {
        "format": FORMAT_VERSION,
        "config": json.dumps(to_dict(config)),
        "precision": precision,
        "sentence": json.dumps(_recipe_metadata(sentence, config.hidden_size)),
    }
    if tokenizer is not None:
        values["tokenizer"] = tokenizer.backend.to_str()
        values["tokenizer_settings"] = json.dumps(
            {"max_length": tokenizer.max_length, "lowercase": tokenizer.lowercase}
        )
    return values


# ----------------------------------------------------------------------------- the check
@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how closely it follows the eager model.

    max_abs_diff: output name -> largest ``|onnx - eager|`` (real tokens only);
    agreement: fraction of texts whose predicted class equals eager fp32's (classifiers);
    eager_accuracy / onnx_accuracy: with labels; min_cosine / mean_cosine: of the
    mean-pooled embeddings, ONNX vs eager.
    """

    path: Path
    precision: str
    opset: int
    size_bytes: int
    export_seconds: float
    texts_checked: int = 0
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    agreement: float | None = None
    eager_accuracy: float | None = None
    onnx_accuracy: float | None = None
    min_cosine: float | None = None
    mean_cosine: float | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few human-readable lines, printed at the end of an export."""
        lines = [
            f"wrote {self.path} ({self.precision}, opset {self.opset}, "
            f"{self.size_bytes / 1e6:.1f} MB) in {self.export_seconds:.1f} s"
        ]
        if self.texts_checked:
            diffs = ", ".join(f"{name} {value:.2e}" for name, value in self.max_abs_diff.items())
            lines.append(f"parity on {self.texts_checked} texts: max |onnx - eager| {diffs}")
        if self.agreement is not None:
            lines.append(f"predictions agree with eager fp32 on {100 * self.agreement:.2f}%")
        if self.eager_accuracy is not None and self.onnx_accuracy is not None:
            change = 100 * (self.onnx_accuracy - self.eager_accuracy)
            lines.append(
                f"accuracy: eager fp32 {100 * self.eager_accuracy:.2f}%, "
                f"onnx {self.precision} {100 * self.onnx_accuracy:.2f}% ({change:+.2f} points)"
            )
        if self.min_cosine is not None:
            lines.append(
                f"mean-pooled embeddings vs eager: cosine min {self.min_cosine:.5f}, "
                f"mean {self.mean_cosine:.5f}"
            )
        return "\n".join(lines + self.notes)


def _default_check_data(config: ModelConfig, limit: int) -> tuple[list[str], np.ndarray | None]:
    """The first ``limit`` shipped SST-2 dev sentences; labels for 2-class classifiers."""

    texts, labels = read_sst2()
    binary = config.head == "sequence_classification" and config.num_labels == 2
    return texts[:limit], labels[:limit] if binary else None


def _check(
    model: TransformerModel,
    tokenizer: Tokenizer,
    onnx_encoder: OnnxEncoder,
    texts: Sequence[str],
    labels: np.ndarray | None,
    report: ExportReport,
    sentence: SentenceModules,
) -> None:
    """Fill the parity fields of ``report``: eager fp32 against the ONNX session."""
    diffs: dict[str, float] = {}
    eager_logits, onnx_logits, eager_pooled, onnx_pooled = [], [], [], []
    with torch.inference_mode():
        for _, batch in sorted_batches(tokenizer, texts, 32):
            eager = model(**batch.model_inputs())
            outputs = onnx_encoder.run(batch)
            mask = batch.attention_mask.bool()
            hidden = torch.from_numpy(outputs["last_hidden_state"])
            eager_hidden = eager.last_hidden_state.float()
            diff = float((hidden[mask] - eager_hidden[mask]).abs().max())
            diffs["last_hidden_state"] = max(diffs.get("last_hidden_state", 0.0), diff)
            eager_pooled.append(pool(eager_hidden, batch.attention_mask))
            onnx_pooled.append(pool(hidden, batch.attention_mask))
            vectors = sentence.encode(eager_hidden, batch.attention_mask)
            diff = float((torch.from_numpy(outputs["sentence_embedding"]) - vectors).abs().max())
            diffs["sentence_embedding"] = max(diffs.get("sentence_embedding", 0.0), diff)
            if "logits" in outputs:
                logits, reference = torch.from_numpy(outputs["logits"]), eager.logits.float()
                if logits.dim() == 3:  # per-token heads: real tokens only
                    logits, reference = logits[mask], reference[mask]
                diff = float((logits - reference).abs().max())
                diffs["logits"] = max(diffs.get("logits", 0.0), diff)
                eager_logits.append(reference)
                onnx_logits.append(logits)
    report.texts_checked = len(texts)
    report.max_abs_diff = diffs
    if eager_logits and model.config.num_labels > 1:
        eager_predictions = torch.cat(eager_logits).argmax(-1)
        onnx_predictions = torch.cat(onnx_logits).argmax(-1)
        report.agreement = float((eager_predictions == onnx_predictions).float().mean())
        if labels is not None and eager_predictions.dim() == 1:
            order = np.concatenate([i for i, _ in sorted_batches(tokenizer, texts, 32)])
            sorted_labels = torch.as_tensor(np.asarray(labels)[order])
            report.eager_accuracy = float((eager_predictions == sorted_labels).float().mean())
            report.onnx_accuracy = float((onnx_predictions == sorted_labels).float().mean())
    cosines = torch.nn.functional.cosine_similarity(
        torch.cat(onnx_pooled).double(), torch.cat(eager_pooled).double(), dim=-1
    )
    report.min_cosine, report.mean_cosine = float(cosines.min()), float(cosines.mean())


# ----------------------------------------------------------------------------- export
def _resolve_model(
    model: TransformerModel | Encoder | str | os.PathLike, tokenizer: Tokenizer | None
) -> tuple[TransformerModel, Tokenizer | None, SentenceModules]:
    """The network, its tokenizer and its sentence recipe (the folder's, or mean pooling)."""
    if isinstance(model, TransformerModel):
        return model, tokenizer, getattr(model, "sentence_modules", None) or SentenceModules()
    if isinstance(model, str | os.PathLike):
        model = load(model)
    if hasattr(model, "model") and hasattr(model, "tokenizer"):
        return model.model, tokenizer or model.tokenizer, model.sentence
    raise ExportError(
        f"export_onnx takes a TransformerModel, an Encoder or a checkpoint folder, "
        f"got {type(model).__name__}"
    )


def export_onnx(
    model: TransformerModel | Encoder | str | os.PathLike,
    path: str | os.PathLike,
    int8: bool = False,
    tokenizer: Tokenizer | None = None,
    opset: int = DEFAULT_OPSET,
    check_texts: Sequence[str] | None = None,
    check_labels: Sequence[int] | np.ndarray | None = None,
    check_limit: int = 256,
    verbose: bool = True,
    progress: bool = False,
) -> ExportReport:
    """Export ``model`` (a model, an :class:`Encoder` or a checkpoint folder) to ``path``.

    int8: write the dynamically quantized model instead of the fp32 one. tokenizer: stored
    in the file so :func:`load_onnx` can tokenize (taken from an Encoder or folder when not
    given). check_texts / check_labels: the parity sample (default: the first
    ``check_limit`` shipped SST-2 dev sentences, with labels for a 2-class classifier);
    ``check_limit=0`` skips the check. Prints :meth:`ExportReport.summary` if ``verbose``.
    ``progress``: a bar of the steps (export, int8, parity check) on stderr.
    """
    torch_model, tokenizer, sentence = _resolve_model(model, tokenizer)
    config = torch_model.config
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"opset must be from {MIN_OPSET} to {MAX_OPSET} (what the installed exporter and "
            f"onnxruntime support), got {opset}"
        )
    path = Path(path)
    if path.suffix != ".onnx":
        raise ExportError(f"the output path must end in .onnx, got {path}")
    if path.is_dir():
        raise ExportError(f"{path} is a folder: give a file name such as {path / 'model.onnx'}")
    labelled = check_texts is not None and check_labels is not None
    if labelled and len(check_labels) != len(check_texts):
        raise ExportError(
            f"check_labels has {len(check_labels)} labels for {len(check_texts)} check_texts"
        )
    if (check_limit > 0 or check_texts is not None) and tokenizer is None:
        raise ExportError(
            "the parity check needs a tokenizer: pass tokenizer=..., or check_limit=0 to skip it"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    notes = []
    if config.head == "masked_lm":
        notes.append("note: the masked-LM head is not exported (the graph returns hidden states)")
    eager = torch_model
    if next(torch_model.parameters()).dtype != torch.float32 or torch_model.training:
        eager = copy.deepcopy(torch_model).float().eval()  # export and check in fp32
    checked = check_limit > 0 or check_texts is not None
    steps = tqdm(total=1 + int8 + checked, unit="step", disable=not progress)
    steps.set_description("exporting to ONNX")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="distilkit-export-") as temp:
        fp32_path = Path(temp) / "model.onnx" if int8 else path
        _export_fp32(eager, sentence, fp32_path, opset)
        _write_metadata(fp32_path, _metadata_for(config, tokenizer, "fp32", sentence))
        steps.update()
        if int8:
            steps.set_description("quantizing to int8")
            quantize_int8(fp32_path, path)
            steps.update()
    report = ExportReport(
        path=path,
        precision="int8" if int8 else "fp32",
        opset=written_opset(path) or opset,  # as saved, so the summary reports the file
        size_bytes=path.stat().st_size,
        export_seconds=time.perf_counter() - start,
        notes=notes,
    )
    if checked:
        steps.set_description("parity check")
        if check_texts is None:
            texts, labels = _default_check_data(config, check_limit)
        else:
            texts = list(check_texts)
            labels = None if check_labels is None else np.asarray(check_labels)
        onnx_encoder = load_onnx(path, tokenizer=tokenizer)
        _check(eager, tokenizer, onnx_encoder, texts, labels, report, sentence)
        steps.update()
    steps.close()
    if verbose:
        print(report.summary())
    return report


# OnnxEncoder and load_onnx live in distilkit.deploy.onnx_runtime; they are named here too, beside
# the exporter that writes their files.
__all__ = [
    "ExportError",
    "ExportReport",
    "OnnxEncoder",
    "export_onnx",
    "load_onnx",
    "quantize_int8",
]
