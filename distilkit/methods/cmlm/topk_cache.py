"""The C-MLM teacher's top-k soft targets, computed once, kept on disk memory-mapped.

For every target position of every training pair (the closing [SEP] included, which is
the student's end-of-sequence), the teacher's ``k`` most likely tokens and their
probabilities with that position masked (a sweep, :func:`teacher.sweep_logits`).
Stored flat over all target positions:

* ``probs.npy`` float32 ``(positions, k)`` and ``ids.npy`` int32 ``(positions, k)``;
* ``offsets.npy`` int64 ``(pairs + 1,)``: pair ``i`` owns rows ``offsets[i]:offsets[i+1]``;
* ``progress.json``: how many batches are done, rewritten atomically after each batch.

The folder is named by a fingerprint of the teacher (its tensors) and of the data (the
token ids, k, the sweep and the temperature), so a changed teacher or pair never reuses
a stale entry. A run killed while labelling resumes at the first batch not recorded as
done; a batch whose rows were written but not recorded is simply computed again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from distilkit.data.teacher_cache import model_fingerprint
from distilkit.methods.cmlm.teacher import build_cmlm_inputs, sweep_logits
from distilkit.model.modeling import TransformerModel
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import save_json

PROGRESS_FILE = "progress.json"


@dataclass
class TopKTargets:
    """Read-only view of a finished cache (memory-mapped arrays)."""

    probs: np.ndarray  # (positions, k) float32
    ids: np.ndarray  # (positions, k) int32
    offsets: np.ndarray  # (pairs + 1,) int64
    folder: Path

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(probs, ids)`` of pair ``index``, each (target length + 1, k)."""
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return self.probs[start:end], self.ids[start:end]


def data_key(
    sources: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    top_k: int,
    passes: int,
    temperature: float,
) -> str:
    """Hex digest of the pairs' token ids and the labelling settings."""
    digest = hashlib.sha256(f"cmlm-topk k={top_k} passes={passes} T={temperature!r}\n".encode())
    for source, target in zip(sources, targets, strict=True):
        digest.update(np.asarray(source, dtype=np.int64).tobytes() + b"|")
        digest.update(np.asarray(target, dtype=np.int64).tobytes() + b"\n")
    return digest.hexdigest()


def _read_progress(folder: Path, batch_size: int) -> int:
    """Batches recorded as done by an earlier run with the same batch size (else 0)."""
    try:
        record = json.loads((folder / PROGRESS_FILE).read_text("utf-8"))
        return int(record["batches_done"]) if record["batch_size"] == batch_size else 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def cached_topk_targets(
    model: TransformerModel,
    tokenizer: Tokenizer,
    sources: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    cache_dir: str | Path,
    top_k: int = 8,
    passes: int = 2,
    temperature: float = 1.0,
    batch_size: int = 64,
    progress: bool = True,
    teacher_key: str | None = None,
    after_batch: Callable[[int], None] | None = None,
) -> TopKTargets:
    """The teacher's top-k soft targets of every target position, from the cache or
    computed now (and resumed where a killed run stopped).

    ``sources``/``targets``: token ids without special tokens. ``teacher_key``: a
    fingerprint of the teacher (default: computed from its tensors). ``after_batch(b)``
    is called after batch ``b``'s rows are written and before they are recorded (tests
    kill the process there).
    """
    if top_k < 1 or passes < 1 or not temperature > 0:
        raise ValueError("top_k and passes must be >= 1 and temperature > 0")
    if len(sources) != len(targets) or not sources:
        raise ValueError("give one target per source, and at least one pair")
    teacher_key = teacher_key or model_fingerprint(model, "cmlm-teacher")
    folder = Path(cache_dir) / (
        f"{teacher_key[:16]}-{data_key(sources, targets, top_k, passes, temperature)[:16]}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(t) + 1 for t in targets], dtype=np.int64)  # + closing [SEP]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    order = np.argsort(
        [len(s) + len(t) for s, t in zip(sources, targets, strict=True)], kind="stable"
    )
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    shape = (int(offsets[-1]), top_k)
    done = _read_progress(folder, batch_size)
    if done == 0 or not (folder / "probs.npy").is_file() or not (folder / "ids.npy").is_file():
        done = 0
        np.save(folder / "offsets.npy", offsets)
        probs = np.lib.format.open_memmap(folder / "probs.npy", "w+", np.float32, shape)
        ids = np.lib.format.open_memmap(folder / "ids.npy", "w+", np.int32, shape)
    else:
        probs = np.load(folder / "probs.npy", mmap_mode="r+")
        ids = np.load(folder / "ids.npy", mmap_mode="r+")
    if done < len(batches):
        was_training = model.training
        model.eval()
        for number in tqdm(
            range(done, len(batches)),
            desc="teacher top-k",
            initial=done,
            total=len(batches),
            disable=not progress,
        ):
            indices = batches[number]
            inputs = build_cmlm_inputs(
                [sources[i] for i in indices],
                [targets[i] for i in indices],
                tokenizer.cls_id,
                tokenizer.sep_id,
                tokenizer.pad_id,
            )
            logits = sweep_logits(model, inputs, tokenizer.mask_id, passes)  # (n, V)
            top_probs, top_ids = (logits.float() / temperature).softmax(-1).topk(top_k, dim=-1)
            rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in indices])
            probs[rows] = top_probs.numpy()
            ids[rows] = top_ids.numpy().astype(np.int32)
            if after_batch is not None:
                after_batch(number)
            probs.flush()
            ids.flush()
            save_json(
                {"batches_done": number + 1, "batches": len(batches), "batch_size": batch_size},
                folder / PROGRESS_FILE,
            )
        model.train(was_training)
    del probs, ids
    save_json(
        {
            "teacher_key": teacher_key,
            "pairs": len(sources),
            "positions": shape[0],
            "top_k": top_k,
            "passes": passes,
            "temperature": temperature,
        },
        folder / "meta.json",
    )
    return TopKTargets(
        np.load(folder / "probs.npy", mmap_mode="r"),
        np.load(folder / "ids.npy", mmap_mode="r"),
        np.load(folder / "offsets.npy"),
        folder,
    )


__all__ = ["TopKTargets", "cached_topk_targets", "data_key"]
