"""Run exported models: :class:`OnnxEncoder`, an ``onnxruntime`` session behind the same
Python API as :class:`~distilkit.encoder.Encoder` (``embed``, ``logits``, ``tokens``),
opened by :func:`load_onnx` from a ``.onnx`` file that :func:`distilkit.deploy.export.export_onnx`
wrote. The model config and the tokenizer travel inside the file as metadata (keys
prefixed ``distilkit.``), so the file is all a deployment needs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from distilkit.data.batching import sorted_batches
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import POOLINGS, pool
from distilkit.model.tokenizer import Batch, Tokenizer
from distilkit.settings import from_dict

if TYPE_CHECKING:
    import onnxruntime

METADATA_PREFIX = "distilkit."


class ExportError(ValueError):
    """A model cannot be exported or an ONNX file cannot be used as a distilkit model."""


def read_metadata(proto_or_map) -> dict[str, str]:
    """distilkit's metadata entries (prefix removed) of an ONNX model proto or of
    onnxruntime's custom metadata map."""
    items = (
        proto_or_map.items()
        if isinstance(proto_or_map, dict)
        else ((p.key, p.value) for p in proto_or_map.metadata_props)
    )
    return {k[len(METADATA_PREFIX) :]: v for k, v in items if k.startswith(METADATA_PREFIX)}


class OnnxEncoder:
    """An exported model run by ``onnxruntime``, with the everyday methods of
    :class:`~distilkit.encoder.Encoder` (``embed``, ``embed_batch``, ``logits``,
    ``tokens``). Build with :func:`load_onnx`."""

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        config: ModelConfig,
        tokenizer: Tokenizer,
        path: Path,
        precision: str,
        name: str | None = None,
    ):
        self.session = session
        self.config = config
        self.tokenizer = tokenizer
        self.path = path
        self.precision = precision
        self.name = name or str(path)
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the outputs (int8 models compute in int8 but return float32)."""
        return torch.float32

    def run(self, batch: Batch) -> dict[str, np.ndarray]:
        """Every graph output for one tokenized batch: ``last_hidden_state`` ``(batch, seq,
        hidden)`` and, with a head, ``logits``."""
        feeds = {name: getattr(batch, name).numpy() for name in self.input_names}
        return dict(zip(self.output_names, self.session.run(None, feeds), strict=True))

    def embed_batch(
        self, batch: Batch, pooling: str = "mean", normalize: bool = False
    ) -> torch.Tensor:
        """Sentence embeddings of one tokenized batch, ``(batch, hidden)`` float32 tensor."""
        feeds = {name: getattr(batch, name).numpy() for name in self.input_names}
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        vectors = pool(torch.from_numpy(hidden), batch.attention_mask, pooling)
        return torch.nn.functional.normalize(vectors, dim=-1) if normalize else vectors

    def embed(
        self,
        texts: str | Sequence[str],
        pooling: str | None = "mean",
        normalize: bool | None = False,
        batch_size: int = 64,
        max_length: int | None = None,
        progress: bool | None = None,
    ) -> np.ndarray:
        """Sentence embeddings, ``(n, hidden)`` float32; as :meth:`Encoder.embed`, except that
        an ONNX file keeps no sentence-transformers recipe: None means mean, unnormalised."""
        pooling, normalize = pooling or "mean", bool(normalize)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.zeros((len(texts), self.config.hidden_size), dtype=np.float32)
        batches = sorted_batches(self.tokenizer, texts, batch_size, max_length=max_length)
        show = progress if progress is not None else len(texts) > 20 * batch_size
        total = -(-len(texts) // batch_size)
        for indices, batch in tqdm(batches, total=total, desc="encoding", disable=not show):
            out[indices] = self.embed_batch(batch, pooling, normalize).numpy()
        return out

    def logits_batch(self, batch: Batch) -> np.ndarray:
        """Head outputs of one tokenized batch, ``(batch, num_labels)`` float32."""
        if "logits" not in self.output_names:
            raise ValueError(f"{self.name} was exported without a classification head")
        feeds = {name: getattr(batch, name).numpy() for name in self.input_names}
        return self.session.run(["logits"], feeds)[0]

    def logits(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, batch_size: int = 64
    ) -> np.ndarray:
        """Head outputs for a sequence-classification model, ``(n, num_labels)``."""
        if self.config.head != "sequence_classification":
            raise ValueError(f"{self.name} has no sequence-classification head")
        texts = list(texts)
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"got {len(pairs)} pairs for {len(texts)} texts")
        out = np.zeros((len(texts), self.config.num_labels), dtype=np.float32)
        for indices, batch in sorted_batches(self.tokenizer, texts, batch_size, pairs):
            out[indices] = self.logits_batch(batch)
        return out

    def tokens(self, text: str) -> list[str]:
        """The word pieces the model sees for ``text``, with [CLS] and [SEP]."""
        return self.tokenizer.convert_ids_to_tokens(self.tokenizer([text]).input_ids[0].tolist())

    def __repr__(self) -> str:
        c = self.config
        return (
            f"OnnxEncoder({self.name!r}, layout={c.layout}, layers={c.num_layers}, "
            f"hidden={c.hidden_size}, head={c.head}, precision={self.precision})"
        )


def load_onnx(
    path: str | os.PathLike,
    num_threads: int | None = None,
    tokenizer: Tokenizer | None = None,
    spinning: bool | None = None,
) -> OnnxEncoder:
    """Open a ``.onnx`` file written by :func:`export_onnx` in an ``onnxruntime`` session.

    num_threads: intra-op threads (default: torch's thread count, so eager and ONNX
    models compare on equal terms). tokenizer: overrides the one stored in the file.
    spinning: whether idle worker threads spin (onnxruntime's default) or sleep; the
    counterpart of ``OMP_WAIT_POLICY`` for PyTorch's threads. Sleeping costs a little
    latency but leaves the cores to others on a shared machine.
    """
    import onnxruntime
    from tokenizers import Tokenizer as BackendTokenizer

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file not found: {path}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
    try:
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises its own untyped errors
        raise ExportError(f"onnxruntime cannot open {path}: {error}") from None
    metadata = read_metadata(session.get_modelmeta().custom_metadata_map)
    if "config" not in metadata:
        raise ExportError(
            f"{path} was not written by distilkit (no model config in its metadata): "
            "export it with `distilkit export MODEL --onnx OUT.onnx`"
        )
    config = from_dict(ModelConfig, json.loads(metadata["config"]), where=f"{path} config")
    if tokenizer is None:
        if "tokenizer" not in metadata:
            raise ExportError(
                f"{path} carries no tokenizer (it was exported from a bare model): pass "
                "tokenizer=... to load_onnx"
            )
        settings = json.loads(metadata.get("tokenizer_settings", "{}"))
        tokenizer = Tokenizer(
            BackendTokenizer.from_str(metadata["tokenizer"]),
            max_length=settings.get("max_length", config.max_tokens),
            lowercase=settings.get("lowercase", True),
        )
    return OnnxEncoder(
        session, config, tokenizer, path, metadata.get("precision", "fp32"), name=path.name
    )


__all__ = ["METADATA_PREFIX", "ExportError", "OnnxEncoder", "load_onnx", "read_metadata"]
