"""The teacher's last hidden states over a packed corpus, computed once and kept on disk.

General distillation on unmasked text runs the teacher on the same sequences every epoch,
every run of an ablation and every student depth of ``distilkit compress``, and its output
for a sequence is a pure function of the teacher and the token ids. The losses that
compare with the teacher's last hidden state (``cos``, ``mse``, ``sentence``,
``similarity``, ``matryoshka``) can then read it from here instead. One folder per key:

* ``hidden.npy``: ``(corpus tokens, hidden)`` float32 (or float16), token-major and
  indexed by the corpus's own offsets: sequence ``i`` owns rows ``offsets[i]:offsets[i+1]``.
  It is a sparse file: rows not computed yet take no disk.
* ``done.npy``: ``(sequences,)`` uint8, 1 where a sequence's rows are written and flushed.
* ``checksums.npy``: ``(sequences,)`` uint32, the CRC-32 of each written sequence's rows.
* ``meta.json``: the key and the shape it describes.

The key hashes the teacher's tensors, the corpus's token ids and offsets, max_len, the
precision the teacher runs in and the stored dtype, so a changed teacher or corpus gets
another folder and is never served stale targets. Rows are written, flushed to disk, and
only then marked done, so a run killed at any point leaves no sequence marked done that it
did not write; a resumed run computes only the sequences not marked done. Every read is
checked against its checksum (a row that fails is computed again), and a folder whose files
do not fit its metadata (torn, truncated, from another version) is rebuilt, not trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from distilkit.data.batching import collate_indexed, collate_sequences
from distilkit.data.corpus import PackedCorpus
from distilkit.data.teacher_cache import hash_file

FORMAT_VERSION = 1
DTYPES = ("float32", "float16")
FLUSH_EVERY = 16  # writes (batches) between flushes: a kill loses at most this much work
FOLDER_PREFIX = "targets-"
_sync = getattr(os, "fdatasync", os.fsync)

# teacher_last(input_ids, attention_mask) -> (batch, seq, hidden) last hidden states
TeacherLast = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TargetCacheError(ValueError):
    """The target cache cannot be used as asked (no corpus on disk, bad dtype, bad rows)."""


# ----------------------------------------------------------------------------- keys
def corpus_fingerprint(corpus: PackedCorpus) -> str:
    """A hex digest of the corpus's token ids and offsets (the files of its cache folder)."""
    if corpus.folder is None:
        raise TargetCacheError(
            "the teacher-target cache needs a corpus built on disk by build_corpus"
        )
    digest = hashlib.sha256(b"corpus token ids\n")
    for name in ("offsets.npy", "tokens.npy"):
        hash_file(digest, Path(corpus.folder) / name)
    return digest.hexdigest()


def target_cache_key(
    teacher_key: str, corpus_key: str, max_len: int, precision: str, dtype: str = "float32"
) -> str:
    """The key of the targets of one teacher (``model_fingerprint``) over one corpus
    (:func:`corpus_fingerprint`) at one max_len, teacher precision and stored dtype."""
    content = {
        "format_version": FORMAT_VERSION,
        "teacher": teacher_key,
        "corpus": corpus_key,
        "max_len": max_len,
        "precision": precision,
        "dtype": dtype,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- the cache
def _problem(folder: Path, expected: dict[str, Any]) -> str | None:
    """Why the files of ``folder`` cannot be trusted for ``expected`` metadata (None: they can)."""
    try:
        meta = json.loads((folder / "meta.json").read_text("utf-8"))
    except (OSError, ValueError):
        return "meta.json is missing or unreadable"
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expected.items()):
        return "meta.json describes another entry"
    sequences, tokens = expected["num_sequences"], expected["num_tokens"]
    files = {
        "hidden.npy": ((tokens, expected["hidden_size"]), np.dtype(expected["dtype"])),
        "done.npy": ((sequences,), np.dtype(np.uint8)),
        "checksums.npy": ((sequences,), np.dtype("<u4")),
    }
    for name, (shape, dtype) in files.items():
        path = folder / name
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            return f"{name} is unreadable ({error})"
        if array.shape != shape or array.dtype != dtype:
            return f"{name} holds {array.dtype} {array.shape}, not {dtype} {shape}"
        if path.stat().st_size != array.offset + array.nbytes:
            return f"{name} is {path.stat().st_size} bytes, not {array.offset + array.nbytes}"
    if np.any(np.load(folder / "done.npy", mmap_mode="r") > 1):
        return "done.npy holds values other than 0 and 1"
    return None


class TargetCache:
    """One cache folder: read rows of sequences, write the rows of new ones, flush.

    Open it with :meth:`open`. ``writable=False`` (DataLoader workers, DDP ranks other than
    the first) reads only. ``rebuilt`` says why a damaged folder was rebuilt (else None).
    """

    def __init__(self, folder: Path, offsets: np.ndarray, writable: bool = True):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text("utf-8"))
        self.offsets = np.asarray(offsets, dtype=np.int64)  # (sequences + 1,)
        self.dtype = np.dtype(self.meta["dtype"])
        self.hidden_size = int(self.meta["hidden_size"])
        self.writable = writable
        self.rebuilt: str | None = None
        self._pending: set[int] = set()  # written, not yet flushed and marked done
        self._writes = 0
        self._open()

    def _open(self) -> None:
        self._hidden = np.load(self.folder / "hidden.npy", mmap_mode="r")
        self._done = np.load(self.folder / "done.npy", mmap_mode="r")
        self._checksums = np.load(self.folder / "checksums.npy", mmap_mode="r")
        self._fds: dict[str, int] = {}
        if self.writable:
            for name in ("hidden", "done", "checksums"):
                self._fds[name] = os.open(self.folder / f"{name}.npy", os.O_RDWR)

    @classmethod
    def open(
        cls,
        root: str | Path,
        key: str,
        offsets: np.ndarray,
        hidden_size: int,
        dtype: str = "float32",
        writable: bool = True,
    ) -> TargetCache:
        """The cache folder ``<root>/targets-<key>``: opened when it exists and its files fit,
        else (writable) created empty, or rebuilt when damaged."""
        if dtype not in DTYPES:
            raise TargetCacheError(f"the target cache dtype must be one of {DTYPES}, got {dtype!r}")
        offsets = np.asarray(offsets, dtype=np.int64)
        expected = {
            "format_version": FORMAT_VERSION,
            "key": key,
            "num_sequences": len(offsets) - 1,
            "num_tokens": int(offsets[-1]),
            "hidden_size": int(hidden_size),
            "dtype": dtype,
        }
        folder = Path(root) / f"{FOLDER_PREFIX}{key[:24]}"
        problem = _problem(folder, expected) if folder.exists() else None
        if folder.exists() and problem is None:
            return cls(folder, offsets, writable)
        if not writable:
            raise TargetCacheError(f"the target cache {folder} is {problem or 'missing'}")
        if problem is not None:
            shutil.rmtree(folder)  # our own folder, named by its key; its files are not trusted
        _create(folder, expected)
        cache = cls(folder, offsets, writable)
        cache.rebuilt = problem
        return cache

    # ------------------------------------------------------------------ reading
    @property
    def num_sequences(self) -> int:
        return len(self.offsets) - 1

    @property
    def full_bytes(self) -> int:
        """Disk the rows take once every sequence is cached."""
        return int(self.offsets[-1]) * self.hidden_size * self.dtype.itemsize

    def has(self, row: int) -> bool:
        """Whether sequence ``row``'s rows are written (marked done, or pending here)."""
        return bool(self._done[row]) or row in self._pending

    @property
    def num_done(self) -> int:
        return int(np.count_nonzero(self._done)) + len(self._pending)

    def lookup(self, rows: Sequence[int]) -> list[np.ndarray | None]:
        """The ``(length, hidden)`` rows of each sequence in ``rows`` (a copy, in the stored
        dtype), or None where it is not cached or fails its checksum."""
        found: list[np.ndarray | None] = []
        for row in rows:
            values = None
            if self.has(row):
                values = np.array(self._hidden[self.offsets[row] : self.offsets[row + 1]])
                if zlib.crc32(values) != int(self._checksums[row]):
                    values = None  # torn or altered: computed again and rewritten
            found.append(values)
        return found

    def batch_targets(self, rows: Sequence[int], length: int) -> dict[str, Any]:
        """``teacher_hidden``: ``(len(rows), length, hidden)`` float32, the cached rows
        right-padded with zeros (zeros too for sequences not cached); ``teacher_missing``:
        the batch positions (a list) whose targets must be computed live."""
        hidden = np.zeros((len(rows), length, self.hidden_size), dtype=np.float32)
        missing = []
        for position, values in enumerate(self.lookup(rows)):
            if values is None:
                missing.append(position)
            else:
                hidden[position, : len(values)] = values
        return {"teacher_hidden": torch.from_numpy(hidden), "teacher_missing": missing}

    # ------------------------------------------------------------------ writing
    def write(self, rows: Sequence[int], values: Sequence[np.ndarray]) -> None:
        """Write the ``(length, hidden)`` rows of sequences ``rows``; they are marked done at
        the next :meth:`flush` (every ``FLUSH_EVERY`` writes, and when asked)."""
        if not self.writable:
            return
        row_bytes = self.hidden_size * self.dtype.itemsize
        for row, array in zip(rows, values, strict=True):
            row = int(row)
            start, end = int(self.offsets[row]), int(self.offsets[row + 1])
            array = np.ascontiguousarray(array, dtype=self.dtype)
            if array.shape != (end - start, self.hidden_size):
                raise TargetCacheError(
                    f"sequence {row} has {end - start} tokens of width {self.hidden_size}, "
                    f"but the targets given have shape {array.shape}"
                )
            os.pwrite(self._fds["hidden"], array, self._hidden.offset + start * row_bytes)
            checksum = np.array([zlib.crc32(array)], dtype="<u4")
            os.pwrite(self._fds["checksums"], checksum, self._checksums.offset + 4 * row)
            self._pending.add(row)
        self._writes += 1
        if self._writes % FLUSH_EVERY == 0:
            self.flush()

    def flush(self) -> None:
        """Rows and checksums to disk first, then their done marks (never the other way)."""
        if not self._pending or not self.writable:
            return
        _sync(self._fds["hidden"])
        _sync(self._fds["checksums"])
        for row in sorted(self._pending):
            os.pwrite(self._fds["done"], b"\x01", self._done.offset + row)
        _sync(self._fds["done"])
        self._pending.clear()

    def close(self) -> None:
        """Flush and release the files (the cache then only reads)."""
        self.flush()
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        self.writable = False

    def __getstate__(self) -> dict[str, Any]:
        # a DataLoader worker gets a read-only cache that reopens the memory maps
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        return state | {"writable": False, "_pending": set(), "_writes": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()


def _create(folder: Path, meta: dict[str, Any]) -> None:
    """An empty entry: sparse zero rows, nothing done; written aside and renamed into place."""
    temporary = folder.with_name(f".{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    temporary.mkdir(parents=True)
    try:
        shape = (meta["num_tokens"], meta["hidden_size"])
        np.lib.format.open_memmap(temporary / "hidden.npy", "w+", meta["dtype"], shape).flush()
        sequences = (meta["num_sequences"],)
        np.save(temporary / "done.npy", np.zeros(sequences, dtype=np.uint8))
        np.save(temporary / "checksums.npy", np.zeros(sequences, dtype="<u4"))
        (temporary / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", "utf-8")
        try:
            os.replace(temporary, folder)
        except OSError:
            if _problem(folder, meta) is not None:  # not just another run being faster
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


# ----------------------------------------------------------------------------- use
@dataclass
class TargetCollate:
    """Collates ``(row, token ids)`` items (``batching.IndexedSequences``) into a batch
    with ``sequence_index`` and, with a cache, ``teacher_hidden`` and ``teacher_missing``
    (see :meth:`TargetCache.batch_targets`)."""

    pad_id: int
    cache: TargetCache | None = None

    def __call__(self, items: Sequence[tuple[int, np.ndarray]]) -> dict[str, Any]:
        batch: dict[str, Any] = collate_indexed(items, self.pad_id)
        if self.cache is not None:
            rows = batch["sequence_index"].tolist()
            batch |= self.cache.batch_targets(rows, batch["input_ids"].shape[1])
        return batch


def complete_targets(
    cache: TargetCache, batch: dict[str, Any], teacher_last: TeacherLast
) -> torch.Tensor:
    """The teacher's last hidden states ``(batch, seq, hidden)`` of a batch from
    :class:`TargetCollate`: the cached ones, with the sequences not cached computed by
    ``teacher_last`` and written into the cache. A batch with nothing cached runs the
    teacher on the whole batch, exactly as without a cache."""
    hidden, missing = batch["teacher_hidden"], batch["teacher_missing"]
    if not missing:
        return hidden
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    if len(missing) == len(hidden):
        computed = targets = teacher_last(input_ids, attention_mask)
    else:
        index = torch.tensor(missing, device=hidden.device)
        computed = teacher_last(input_ids[index], attention_mask[index])
        targets = hidden.index_copy(0, index, computed.to(hidden.dtype))
    rows = batch["sequence_index"][missing].tolist()
    lengths = attention_mask[missing].sum(1).tolist()
    values = computed.float().cpu().numpy()
    cache.write(rows, [values[i, :n] for i, n in enumerate(lengths)])
    return targets


def fill_target_cache(
    cache: TargetCache,
    corpus: PackedCorpus,
    teacher_last: TeacherLast,
    pad_id: int,
    batch_size: int = 64,
    progress: bool = True,
) -> int:
    """Compute every sequence of ``corpus`` (a corpus or view) the cache does not hold, in
    batches of similar length (longest first), and flush; returns how many were computed.
    Resumable: after a kill, a second call computes only what was not marked done."""
    if batch_size < 1:
        raise TargetCacheError(f"batch_size must be >= 1, got {batch_size}")
    rows = corpus.rows
    todo = [i for i, row in enumerate(rows) if not cache.has(int(row))]
    todo.sort(key=lambda i: -int(corpus.lengths[i]))
    starts = range(0, len(todo), batch_size)
    for start in tqdm(starts, desc="caching teacher targets", disable=not progress):
        chunk = todo[start : start + batch_size]
        batch = collate_sequences([corpus[i] for i in chunk], pad_id)
        values = teacher_last(batch["input_ids"], batch["attention_mask"]).float().cpu().numpy()
        lengths = batch["attention_mask"].sum(1).tolist()
        cache.write([int(rows[i]) for i in chunk], [values[j, :n] for j, n in enumerate(lengths)])
    cache.flush()
    return len(todo)


__all__ = [
    "DTYPES",
    "TargetCache",
    "TargetCacheError",
    "TargetCollate",
    "complete_targets",
    "corpus_fingerprint",
    "fill_target_cache",
    "target_cache_key",
]
