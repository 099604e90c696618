"""Teacher logits over a transfer set, computed once and cached on disk.

Labelling an augmented transfer set (hundreds of thousands of sentences) is the most
expensive step of distilling into a small student, and every run of an ablation needs
the same labels. So the teacher runs once per (teacher, data) pair: its logits are
written to ``<cache>/<key>.npy`` (float32, ``(examples, num_labels)``) and later runs open
that file memory-mapped instead of calling the teacher.

The key is a hash of the teacher and of the data:

* the teacher: every byte of the files that decide its outputs (``config.json``, the
  weights, the tokenizer files) or, for a model in memory, its tensors and config;
  plus the token limit, since truncation changes logits;
* the data: every text and second text, in order.

A changed weight file or one edited sentence gives a new key, so a stale entry is never
reused. Entries are written to a temporary file and renamed into place, so a run killed
while labelling leaves no half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from distilkit.encoder import load
from distilkit.model.checkpoint import WEIGHT_FILES
from distilkit.model.hub import resolve
from distilkit.settings import give_plain_permissions

# Files of a checkpoint folder that decide what the teacher outputs.
FINGERPRINT_FILES = (
    "config.json",
    *WEIGHT_FILES,
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "sentence_bert_config.json",
)
CHUNK_BYTES = 1 << 20

# predict(texts, second_texts or None) -> (len(texts), num_labels) logits
Predict = Callable[[list[str], list[str] | None], np.ndarray]


class TeacherCacheError(ValueError):
    """A cache entry or a teacher's output does not fit the data being labelled."""


# ----------------------------------------------------------------------------- keys
def hash_file(digest: hashlib._Hash, path: Path) -> None:
    """Feed every byte of ``path`` into ``digest``, in chunks."""
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)


def teacher_fingerprint(folder: str | Path, max_length: int | None = None) -> str:
    """A hex digest of the files of a checkpoint folder that decide its outputs.

    max_length: the token limit used when labelling (None: the folder's own).
    """
    folder = Path(folder)
    files = [folder / name for name in FINGERPRINT_FILES if (folder / name).is_file()]
    if not any(path.name in WEIGHT_FILES for path in files):
        raise TeacherCacheError(
            f"{folder} holds no weights ({' or '.join(WEIGHT_FILES)}): not a teacher checkpoint"
        )
    digest = hashlib.sha256(f"teacher-files max_length={max_length}\n".encode())
    for path in files:
        digest.update(f"{path.name} {path.stat().st_size}\n".encode())
        hash_file(digest, path)
    return digest.hexdigest()


def model_fingerprint(model: nn.Module, extra: str = "") -> str:
    """A hex digest of a model in memory: every tensor of its state dict (name, dtype,
    shape, bytes), its ``config`` if it has one, and ``extra`` (say, the token limit)."""
    digest = hashlib.sha256(f"teacher-model {extra}\n{getattr(model, 'config', '')!r}\n".encode())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def data_fingerprint(texts: Sequence[str], pairs: Sequence[str] | None = None) -> str:
    """A hex digest of the texts (and second texts) in order."""
    _check_data(texts, pairs)
    digest = hashlib.sha256(f"data {len(texts)} paired={pairs is not None}\n".encode())
    for index, text in enumerate(texts):
        digest.update(text.encode("utf-8", "surrogatepass") + b"\x00")
        if pairs is not None:
            digest.update(pairs[index].encode("utf-8", "surrogatepass"))
        digest.update(b"\x1e")
    return digest.hexdigest()


def _check_data(texts: Sequence[str], pairs: Sequence[str] | None) -> None:
    if isinstance(texts, str):
        raise TeacherCacheError("texts must be a list of texts, not a single string")
    if pairs is not None and len(pairs) != len(texts):
        raise TeacherCacheError(
            f"got {len(texts)} texts but {len(pairs)} second texts: give one per text"
        )
    for name, column in (("texts", texts), ("pairs", pairs or [])):
        for index, text in enumerate(column):
            if not isinstance(text, str):
                raise TeacherCacheError(f"{name}[{index}] is a {type(text).__name__}, not a str")


# ----------------------------------------------------------------------------- the cache
class TeacherLogitCache:
    """A folder of cached teacher logits: ``<key>.npy`` plus ``<key>.json`` metadata."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, teacher_key: str, data_key: str) -> Path:
        """Where the logits of this teacher over this data live."""
        return self.folder / f"{teacher_key[:20]}-{data_key[:20]}.npy"

    def lookup(
        self, teacher_key: str, texts: Sequence[str], pairs: Sequence[str] | None = None
    ) -> np.ndarray | None:
        """The cached ``(len(texts), num_labels)`` logits, memory-mapped, or None."""
        path = self.path(teacher_key, data_fingerprint(texts, pairs))
        if not path.is_file():
            return None
        try:
            logits = np.load(path, mmap_mode="r")
        except (ValueError, OSError):
            return None  # unreadable: labelled afresh and replaced
        if logits.ndim != 2 or logits.shape[0] != len(texts):
            return None
        return logits

    def get_or_compute(
        self,
        teacher_key: str,
        texts: Sequence[str],
        pairs: Sequence[str] | None,
        predict: Predict,
        batch_size: int = 128,
        description: str = "teacher",
        progress: bool = True,
    ) -> np.ndarray:
        """Cached logits, or label the data with ``predict`` in batches and cache them.

        ``predict(texts, second_texts or None)`` returns ``(batch, num_labels)`` logits;
        it is called once per batch of ``batch_size`` texts of similar length (less
        padding), and never when the entry exists. Returns a read-only memory map.
        """
        if batch_size < 1:
            raise TeacherCacheError(f"batch_size must be >= 1, got {batch_size}")
        cached = self.lookup(teacher_key, texts, pairs)
        if cached is not None:
            return cached
        data_key = data_fingerprint(texts, pairs)
        path = self.path(teacher_key, data_key)
        self.folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        lengths = [
            len(t) + (len(pairs[i]) if pairs is not None else 0) for i, t in enumerate(texts)
        ]
        order = np.argsort(lengths, kind="stable")
        handle, temp_name = tempfile.mkstemp(
            dir=self.folder, prefix=f".{path.stem}.", suffix=".npy"
        )
        os.close(handle)
        temp = Path(temp_name)
        try:
            logits: np.ndarray | None = None
            starts = range(0, len(texts), batch_size)
            for start in tqdm(starts, desc=f"labelling with {description}", disable=not progress):
                indices = order[start : start + batch_size]
                batch_texts = [texts[i] for i in indices]
                batch_pairs = None if pairs is None else [pairs[i] for i in indices]
                batch_logits = np.asarray(predict(batch_texts, batch_pairs), dtype=np.float32)
                if batch_logits.ndim != 2 or batch_logits.shape[0] != len(indices):
                    raise TeacherCacheError(
                        f"the teacher returned logits of shape {batch_logits.shape} for "
                        f"{len(indices)} texts: expected (texts, num_labels)"
                    )
                if logits is None:
                    shape = (len(texts), batch_logits.shape[1])
                    logits = np.lib.format.open_memmap(temp, "w+", np.float32, shape)
                elif batch_logits.shape[1] != logits.shape[1]:
                    raise TeacherCacheError(
                        f"the teacher returned {batch_logits.shape[1]} logits per text after "
                        f"{logits.shape[1]} earlier: its output size must not change"
                    )
                logits[indices] = batch_logits
            if logits is None:
                raise TeacherCacheError("there are no texts to label")
            logits.flush()
            del logits
            give_plain_permissions(temp)  # mkstemp made it owner-only
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        metadata = {
            "teacher": description,
            "teacher_key": teacher_key,
            "data_key": data_key,
            "examples": len(texts),
            "paired": pairs is not None,
            "seconds": round(time.perf_counter() - started, 3),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        path.with_suffix(".json").write_text(json.dumps(metadata, indent=2) + "\n", "utf-8")
        return np.load(path, mmap_mode="r")


def cached_teacher_logits(
    teacher: str | Path,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    cache_dir: str | Path,
    batch_size: int = 128,
    max_length: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Logits ``(len(texts), num_labels)`` of a sequence-classification checkpoint folder.

    The teacher is loaded (and run) only when the cache has no entry for it and this data.
    max_length: token limit when labelling (None: the checkpoint's own).
    """

    folder = resolve(teacher)
    cache = TeacherLogitCache(cache_dir)
    key = teacher_fingerprint(folder, max_length)
    loaded: list = []

    def predict(batch_texts: list[str], batch_pairs: list[str] | None) -> np.ndarray:
        if not loaded:
            encoder = load(folder)
            if encoder.config.head != "sequence_classification":
                raise TeacherCacheError(
                    f"{folder} has no sequence-classification head (head: "
                    f"{encoder.config.head}): fine-tune it on the task first"
                )
            if max_length is not None:
                encoder.tokenizer.max_length = min(max_length, encoder.tokenizer.max_length)
            loaded.append(encoder)
        return loaded[0].logits(batch_texts, batch_pairs, batch_size=len(batch_texts))

    return cache.get_or_compute(
        key, texts, pairs, predict, batch_size, description=str(teacher), progress=progress
    )


__all__ = [
    "TeacherCacheError",
    "TeacherLogitCache",
    "cached_teacher_logits",
    "data_fingerprint",
    "hash_file",
    "model_fingerprint",
    "teacher_fingerprint",
]
