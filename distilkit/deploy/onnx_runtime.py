"""Run exported models: :class:`OnnxEncoder`, an ``onnxruntime`` session behind the same
Python API as :class:`~distilkit.encoder.Encoder` (``embed``, ``logits``, ``tokens``),
opened by :func:`load_onnx` from a ``.onnx`` file that :func:`distilkit.deploy.export.export_onnx`
wrote. The model config, the sentence recipe and the tokenizer travel inside the file as
metadata (keys prefixed ``distilkit.``), so the file is all a deployment needs.

The hot path of :meth:`OnnxEncoder.embed` is the tokenizer (one call for all texts), numpy
padding of length-sorted batches and one session run per batch that returns the graph's
own ``sentence_embedding`` (pooling and normalisation are inside the graph): no PyTorch.
Other poolings than the recipe's are computed in numpy from the token vectors.
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
from distilkit.model.modeling import POOLINGS
from distilkit.model.st_folder import FROM_DISTILKIT, cut_width
from distilkit.model.tokenizer import Batch, Tokenizer
from distilkit.settings import from_dict

if TYPE_CHECKING:
    import onnxruntime

METADATA_PREFIX = "distilkit."
SENTENCE_OUTPUT = "sentence_embedding"
TOKENS_OUTPUT = "last_hidden_state"


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


# ----------------------------------------------------------------------------- numpy pooling
def pool_numpy(hidden: np.ndarray, attention_mask: np.ndarray, mode: str) -> np.ndarray:
    """sentence-transformers' pooling ``mode`` of ``(batch, seq, hidden)`` over the positions
    where ``attention_mask`` is 1 (right padding) -> ``(batch, hidden)`` float32; numpy's
    twin of :func:`distilkit.model.st_folder.pool_mode`."""
    mask = attention_mask.astype(hidden.dtype)[:, :, None]  # (B, T, 1)
    rows = np.arange(hidden.shape[0])
    if mode == "cls":
        return hidden[rows, attention_mask.argmax(axis=1)]
    if mode == "max":
        return np.where(mask > 0, hidden, -np.inf).max(axis=1)
    if mode in ("mean", "mean_sqrt_len_tokens"):
        count = np.maximum(mask.sum(axis=1), 1e-9)  # (B, 1)
        total = np.einsum("bth,bt->bh", hidden, mask[..., 0])
        return total / (count if mode == "mean" else np.sqrt(count))
    if mode == "weightedmean":
        weighted = mask * np.arange(1, hidden.shape[1] + 1, dtype=hidden.dtype)[None, :, None]
        total = np.einsum("bth,bt->bh", hidden, weighted[..., 0])
        return total / np.maximum(weighted.sum(axis=1), 1e-9)
    if mode == "lasttoken":
        lengths = attention_mask.sum(axis=1)
        return hidden[rows, np.maximum(lengths - 1, 0)]
    raise ValueError(f"unknown pooling mode {mode!r}")


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (as ``F.normalize``: eps 1e-12)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


# ----------------------------------------------------------------------------- threads
def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads counted once): the CPUs of
    its affinity mask grouped by ``/sys`` core topology; the logical count elsewhere."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return max(1, len(cores))


def other_threads_running() -> bool:
    """Whether this process already runs threads besides the main one (PyTorch's OpenMP
    pool once it has worked, another onnxruntime session's pool, a server's threads): then
    onnxruntime's spinning workers would steal the cores those threads need."""
    try:
        return len(os.listdir("/proc/self/task")) > 1
    except OSError:
        return False


# ----------------------------------------------------------------------------- the wrapper
class OnnxEncoder:
    """An exported model run by ``onnxruntime``, with the everyday methods of
    :class:`~distilkit.encoder.Encoder` (``embed``, ``embed_batch``, ``logits``,
    ``tokens``). Build with :func:`load_onnx`.

    recipe: the metadata of the graph's ``sentence_embedding`` (pooling modes, Dense
    count, normalize, dim, prompts); empty for files from older exports, which have no
    such output (mean pooling in numpy then).
    """

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        config: ModelConfig,
        tokenizer: Tokenizer,
        path: Path,
        precision: str,
        name: str | None = None,
        recipe: dict | None = None,
    ):
        self.session = session
        self.config = config
        self.tokenizer = tokenizer
        self.path = path
        self.precision = precision
        self.name = name or str(path)
        self.recipe = recipe or {}
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.threads = session.get_session_options().intra_op_num_threads
        self.spinning: bool | None = None

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the outputs (int8 models compute in int8 but return float32)."""
        return torch.float32

    @property
    def dim(self) -> int:
        """Length of the recipe's sentence vector (before any cut)."""
        return int(self.recipe.get("dim", self.config.hidden_size))

    @property
    def truncate_dim(self) -> int | None:
        """The exported folder's default cut of the recipe's vector (None: the whole)."""
        value = self.recipe.get("truncate_dim")
        return None if value is None else int(value)

    # ------------------------------------------------------------------ numpy core
    def _feeds(self, ids: Sequence[np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Right-padded ``(rows, longest)`` int64 inputs of unpadded id rows, and the mask."""
        input_ids, attention_mask = self.tokenizer.pad(ids)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        return feeds, attention_mask

    def _vectors(
        self,
        feeds: dict[str, np.ndarray],
        attention_mask: np.ndarray,
        pooling: str | None,
        normalize: bool | None,
        prompt_length: int | None = None,
    ) -> np.ndarray:
        """Sentence vectors ``(rows, dim)`` float32 of one fed batch.

        pooling None: the graph's recipe (``sentence_embedding``); a distilkit pooling
        name: numpy pooling of the token vectors. normalize None follows the recipe.
        """
        recipe_normalizes = bool(self.recipe.get("normalize", False))
        skip_prompt = prompt_length and not self.recipe.get("include_prompt", True)
        if pooling is None and SENTENCE_OUTPUT in self.output_names and not skip_prompt:
            if normalize is False and recipe_normalizes:
                if self.recipe.get("dense_layers"):
                    raise ValueError(
                        f"{self.name}: normalize=False cannot undo the recipe's Normalize after "
                        "its Dense layers inside the graph; embed the checkpoint folder instead"
                    )
            else:
                (vectors,) = self.session.run([SENTENCE_OUTPUT], feeds)
                return normalize_rows(vectors) if normalize and not recipe_normalizes else vectors
        if self.recipe.get("dense_layers"):
            what = f"pooling={pooling!r}" if pooling else "a prompt the recipe pools without"
            raise ValueError(
                f"{self.name}: {what} leaves the graph's Dense layers out of reach (they "
                "follow the recipe's own pooling inside the graph); embed the checkpoint "
                "folder instead"
            )
        (hidden,) = self.session.run([TOKENS_OUTPUT], feeds)
        mask = attention_mask
        if skip_prompt:
            mask = mask.copy()
            mask[:, :prompt_length] = 0
        modes = (
            self.recipe.get("pooling", ["mean"]) if pooling is None else [FROM_DISTILKIT[pooling]]
        )
        vectors = np.concatenate([pool_numpy(hidden, mask, mode) for mode in modes], axis=-1)
        if normalize or (normalize is None and recipe_normalizes):
            vectors = normalize_rows(vectors)
        return vectors.astype(np.float32, copy=False)

    # ------------------------------------------------------------------ the Encoder API
    def run(self, batch: Batch) -> dict[str, np.ndarray]:
        """Every graph output for one tokenized batch: ``last_hidden_state`` ``(batch, seq,
        hidden)``, ``sentence_embedding`` ``(batch, dim)`` and, with a head, ``logits``."""
        feeds = {name: getattr(batch, name).numpy() for name in self.input_names}
        return dict(zip(self.output_names, self.session.run(None, feeds), strict=True))

    def embed_batch(
        self, batch: Batch, pooling: str | None = None, normalize: bool | None = None
    ) -> torch.Tensor:
        """Sentence embeddings of one tokenized batch, ``(batch, dim)`` float32 tensor (a
        view of the numpy result, for callers that hold torch batches)."""
        feeds = {name: getattr(batch, name).numpy() for name in self.input_names}
        mask = batch.attention_mask.numpy()
        return torch.from_numpy(self._vectors(feeds, mask, pooling, normalize))

    def embed(
        self,
        texts: str | Sequence[str],
        pooling: str | None = None,
        normalize: bool | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        progress: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        dimensions: int | None = None,
    ) -> np.ndarray:
        """Sentence embeddings, ``(n, dim)`` float32; as :meth:`Encoder.embed`: pooling None
        runs the recipe exported into the graph, mean | cls | max | last pools the token
        vectors that way (in numpy); normalize None follows the recipe. dimensions: keep
        the first ``dimensions`` values, renormalised when the vectors are normalised;
        None: the exported folder's ``truncate_dim``, else all.

        The texts are tokenized in one call, sorted by token count and cut into batches
        of ``batch_size``, so a batch pads only to its own longest text.
        """
        if pooling is not None and pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        prefix = _prompt(self.recipe, prompt_name, prompt)
        prompt_length = None
        if prefix:
            texts = [prefix + text for text in texts]
            prompt_length = len(self.tokenizer.encode_unpadded([prefix])[0]) - 1
        full = self.dim if pooling is None else self.config.hidden_size
        dim = cut_width(full, dimensions, self.truncate_dim)
        normalized = normalize or (normalize is None and bool(self.recipe.get("normalize")))
        out = np.zeros((len(texts), dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer.encode_unpadded(texts, max_length)
        order = np.argsort([-len(row) for row in ids], kind="stable")
        starts = range(0, len(texts), batch_size)
        show = progress if progress is not None else len(texts) > 20 * batch_size
        for start in tqdm(starts, desc="encoding", unit="batch", disable=not show):
            indices = order[start : start + batch_size]
            feeds, mask = self._feeds([ids[i] for i in indices])
            vectors = self._vectors(feeds, mask, pooling, normalize, prompt_length)[:, :dim]
            out[indices] = normalize_rows(vectors) if normalized and dim < full else vectors
        return out

    def similarity(self, a: str | Sequence[str], b: str | Sequence[str]) -> np.ndarray:
        """Cosine (or the recipe's function) of every ``a`` to every ``b``, ``(len(a), len(b))``."""
        left, right = self.embed(a), self.embed(b)
        kind = self.recipe.get("similarity_fn_name") or "cosine"
        if kind == "cosine":
            return normalize_rows(left) @ normalize_rows(right).T
        if kind == "dot":
            return left @ right.T
        if kind == "euclidean":
            return -np.linalg.norm(left[:, None] - right[None], axis=-1)
        return -np.abs(left[:, None] - right[None]).sum(-1)

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


def _prompt(recipe: dict, prompt_name: str | None, prompt: str | None) -> str | None:
    """The prompt to put before each text, as sentence-transformers picks it."""
    if prompt is not None:
        return prompt
    prompts = recipe.get("prompts") or {}
    if prompt_name is not None:
        if prompt_name not in prompts:
            raise ValueError(
                f"prompt_name {prompt_name!r} is not one of the model's prompts {sorted(prompts)}"
            )
        return prompts[prompt_name]
    default = recipe.get("default_prompt_name")
    return prompts.get(default) if default else None


def load_onnx(
    path: str | os.PathLike,
    num_threads: int | None = None,
    tokenizer: Tokenizer | None = None,
    spinning: bool | None = None,
) -> OnnxEncoder:
    """Open a ``.onnx`` file written by :func:`export_onnx` in an ``onnxruntime`` session.

    num_threads: intra-op threads (default: the physical cores this process may use,
    :func:`physical_cores`). tokenizer: overrides the one stored in the file. spinning:
    whether idle worker threads spin (onnxruntime's default) or sleep (the session config
    ``session.intra_op.allow_spinning``, the counterpart of ``OMP_WAIT_POLICY`` for
    PyTorch's threads); default: spin only when no other thread runs in this process
    (:func:`other_threads_running`: PyTorch's pool, another session's, a server's), since
    spinning workers take the cores that other pool needs.
    """
    import onnxruntime
    from tokenizers import Tokenizer as BackendTokenizer

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file not found: {path}")
    options = onnxruntime.SessionOptions()
    if num_threads is not None and num_threads < 1:
        raise ExportError(f"num_threads must be at least 1, got {num_threads}")
    if spinning is None:
        spinning = not other_threads_running()
    options.intra_op_num_threads = num_threads or physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
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
    recipe = json.loads(metadata.get("sentence", "{}"))
    precision = metadata.get("precision", "fp32")
    encoder = OnnxEncoder(session, config, tokenizer, path, precision, path.name, recipe)
    encoder.threads = options.intra_op_num_threads
    encoder.spinning = spinning
    return encoder


__all__ = [
    "METADATA_PREFIX",
    "ExportError",
    "OnnxEncoder",
    "load_onnx",
    "normalize_rows",
    "other_threads_running",
    "physical_cores",
    "pool_numpy",
    "read_metadata",
]
