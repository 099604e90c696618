"""The model side of ``distilkit serve``: :class:`ModelRunner` loads anything
:func:`distilkit.load` reads (a checkpoint folder, the embedded all-MiniLM-L6-v2, an
exported ``.onnx`` file) plus early-exit branches when the folder has them, and runs
the batcher's forward batches: pooled sentence vectors, or classifier logits.

It is called from the batcher's worker threads: ``tokenize`` under the batcher's lock
(the tokenizer's truncation setting is state), ``run`` from several threads at once when
the server runs more than one model instance (inference on shared weights keeps no
state). :meth:`ModelRunner.plan` decides how many instances run and how many intra-op
threads each uses.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import torch

from distilkit.deploy.batcher import Encoded, Runner
from distilkit.deploy.onnx_runtime import physical_cores
from distilkit.encoder import load
from distilkit.methods.early_exit.model import (
    BranchConfig,
    EarlyExitModel,
    has_branches,
    read_settings,
)
from distilkit.model.device import AUTO
from distilkit.model.modeling import POOLINGS
from distilkit.model.tokenizer import Batch
from distilkit.settings import from_dict

EMBED = "embed"
CLASSIFY = "classify"


class ModelRunner(Runner):
    """Tokenize and run forward batches of one model.

    model: an :class:`~distilkit.encoder.Encoder` or
    :class:`~distilkit.onnx_runtime.OnnxEncoder`; early_exit: an
    :class:`~distilkit.early_exit.EarlyExitModel` sharing the encoder's weights, or None;
    pooling: None runs the model's own recipe (its folder's sentence-transformers pooling
    and Dense layers, as ``Encoder.embed`` does); mean | cls | max | last replaces only the
    pooling step. Normalisation is left to each request.
    """

    def __init__(self, model, early_exit=None, pooling: str | None = None, device: str = "cpu"):
        self.model = model
        self.early_exit = early_exit
        self.pooling = pooling
        self.device = torch.device(device)
        self.tokenizer = model.tokenizer
        self.name = model.name

    @classmethod
    def load(
        cls,
        name: str | os.PathLike,
        dtype: str = "fp32",
        device: str = AUTO,
        pooling: str | None = None,
    ) -> ModelRunner:
        """Load ``name`` as :func:`distilkit.load` does, cast to ``dtype`` (fp32 | bf16 |
        int8) and moved to ``device``; with the folder's early-exit branches if any."""

        if pooling is not None and pooling not in POOLINGS:
            raise ValueError(f"--pooling must be one of {POOLINGS}, got {pooling!r}")
        if dtype not in ("fp32", "bf16", "int8"):
            raise ValueError(f"--dtype must be fp32, bf16 or int8, got {dtype!r}")
        if str(name).endswith(".onnx"):
            if dtype != "fp32" or device not in ("cpu", AUTO):
                raise ValueError(
                    f"{name} is an ONNX file, run by onnxruntime on the CPU with the precision "
                    "fixed at export (`distilkit export --int8`): drop --dtype and --device"
                )
            return cls(load(name), pooling=pooling)
        if dtype == "int8":
            if device not in ("cpu", AUTO):
                raise ValueError("--dtype int8 runs on the CPU only: use bf16 on an accelerator")
            device = "cpu"
        encoder = load(name, dtype=None if dtype == "fp32" else dtype, device=device)
        return cls(encoder, _early_exit(encoder), pooling=pooling, device=str(encoder.device))

    # ------------------------------------------------------------------ facts
    @property
    def hidden_size(self) -> int:
        """Width of the vectors the runner returns (the recipe's Dense layers included)."""
        if self.pooling is None and hasattr(self.model, "dim"):  # an ONNX file's recipe
            return self.model.dim
        sentence = getattr(self.model, "sentence", None)
        if sentence is None:
            return self.model.config.hidden_size
        return sentence.with_pooling(self.pooling, self.model.config.hidden_size).output_dim(
            self.model.config.hidden_size
        )

    @property
    def default_dimensions(self) -> int | None:
        """The folder's ``truncate_dim`` (the width ``Encoder.embed`` and
        sentence-transformers' ``encode`` return by default), or None: the whole vector."""
        sentence = getattr(self.model, "sentence", None)  # an Encoder's recipe
        return getattr(sentence if sentence is not None else self.model, "truncate_dim", None)

    @property
    def max_tokens(self) -> int:
        """The most tokens per text the model reads ([CLS] and [SEP] included)."""
        return self.tokenizer.max_length

    @property
    def is_classifier(self) -> bool:
        return self.model.config.head == "sequence_classification"

    @property
    def label_names(self) -> list[str]:
        config = self.model.config
        return config.label_names or [f"LABEL_{i}" for i in range(config.num_labels)]

    @property
    def default_threshold(self) -> float | None:
        return None if self.early_exit is None else float(self.early_exit.threshold)

    # ------------------------------------------------------------------ threads
    def plan(
        self, instances: int | None, threads: int | None, processes: int = 1
    ) -> tuple[int, int]:
        """``(instances, threads)``: forward batches in flight at once in this process and
        PyTorch intra-op threads per instance, when ``processes`` server processes share
        the machine. Defaults on the CPU: two instances sharing the physical cores when
        each process has at least two (while one batch runs, the event loop answers the
        other's requests, and no instance's thread team waits on a thread the event loop
        took); one instance on an accelerator and for an ONNX file (its session's threads
        are fixed when it is opened)."""
        cores = max(1, physical_cores() // processes)
        if instances is None:
            single = self.device.type != "cpu" or not hasattr(self.model, "model")
            instances = 1 if single or cores < 2 else 2
        if threads is None:
            threads = max(1, cores // instances)
        return instances, threads

    @staticmethod
    def start_instance(threads: int) -> None:
        """Called by each batcher worker thread before its first batch: its PyTorch
        intra-op thread count (OpenMP's setting is per thread)."""
        torch.set_num_threads(threads)

    # ------------------------------------------------------------------ the batcher's calls
    def tokenize(self, texts: list[str], limit: int) -> list[Encoded]:
        """Token ids of each text cut to ``limit`` tokens, and whether each was cut."""
        backend = self.tokenizer.backend
        backend.enable_truncation(min(limit, self.max_tokens), strategy="longest_first", stride=0)
        try:
            encodings = backend.encode_batch_fast(texts)
        finally:
            backend.no_truncation()
        return [Encoded(np.asarray(e.ids, dtype=np.int64), bool(e.overflowing)) for e in encodings]

    def _batch(self, ids: list[np.ndarray]) -> Batch:
        """Right-padded ``(rows, longest)`` tensors, as the tokenizer pads."""
        input_ids, attention_mask = self.tokenizer.pad(ids)
        return Batch(
            torch.from_numpy(input_ids).to(self.device),
            torch.from_numpy(attention_mask).to(self.device),
            torch.zeros(input_ids.shape, dtype=torch.int64, device=self.device),
        )

    @torch.inference_mode()
    def run(self, key: Hashable, ids: list[np.ndarray]) -> dict[str, np.ndarray]:
        """key ``"embed"``: ``{"vectors": (rows, hidden)}`` pooled, not normalized;
        ``("classify", threshold)``: ``{"logits": (rows, labels)}`` and with early exit
        ``{"exit_layers": (rows,)}``."""
        batch = self._batch(ids)
        if key == EMBED:
            vectors = self.model.embed_batch(batch, self.pooling, normalize=False)
            return {"vectors": vectors.float().cpu().numpy()}
        _, threshold = key
        if self.early_exit is not None:
            output = self.early_exit(**batch.model_inputs(), threshold=threshold)
            return {
                "logits": output.logits.float().cpu().numpy(),
                "exit_layers": output.exit_layers.cpu().numpy(),
            }
        if hasattr(self.model, "logits_batch"):  # an ONNX session
            return {"logits": self.model.logits_batch(batch)}
        return {"logits": self.model.model(**batch.model_inputs()).logits.float().cpu().numpy()}


def _early_exit(encoder):
    """The encoder's early-exit model when its folder holds trained branches, else None."""

    folder = encoder.folder
    if folder is None or not has_branches(Path(folder)):
        return None
    settings = read_settings(Path(folder))
    early = EarlyExitModel(encoder.model, from_dict(BranchConfig, settings["branch"]))
    early.load_branches(folder)
    early.branches.to(device=next(encoder.model.parameters()).device, dtype=encoder.dtype)
    return early.eval()
