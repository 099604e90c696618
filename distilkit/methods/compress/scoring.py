"""How ``compress`` scores a candidate form: dev-suite retention of the teacher, agreement
with the teacher on the user's held-out text, and the rule that picks one.

A form is anything with ``embed(texts, batch_size=..., progress=False) -> (n, dim)``: an
:class:`~distilkit.encoder.Encoder` (fp32, bf16, int8 blocks), an ONNX session wrapper or a
static table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from distilkit.evaluate import suite
from distilkit.evaluate.sentence import row_cosines

EmbedFunction = Callable[[list[str]], np.ndarray]
CHUNK = 1024  # sentences embedded between two looks at the clock


class OutOfTime(RuntimeError):
    """A step reached the time it was given and stopped."""


def embed_until(
    embed: EmbedFunction, texts: Sequence[str], stop_at: float | None, chunk: int = CHUNK
) -> np.ndarray:
    """``embed(texts)`` ``(n, dim)``, ``chunk`` texts at a time, raising :class:`OutOfTime`
    when ``time.perf_counter()`` has passed ``stop_at`` before the next chunk."""
    parts = []
    for start in range(0, len(texts), chunk):
        if stop_at is not None and time.perf_counter() > stop_at:
            raise OutOfTime(f"the time ran out after {start:,} of {len(texts):,} sentences")
        parts.append(embed(list(texts[start : start + chunk])))
    return np.concatenate(parts)


def embed_function(model, batch_size: int) -> EmbedFunction:
    """``texts -> (n, dim)`` vectors of ``model`` by its own recipe (pooling, Normalize)."""
    return lambda texts: model.embed(list(texts), batch_size=batch_size, progress=False)


def suite_settings(name: str) -> suite.SuiteSettings:
    """The dev suite's sizes: ``quick`` (the main job's subsets) or ``full``."""
    return suite.QUICK if name == "quick" else suite.FULL


def score_on_suite(
    embed: EmbedFunction,
    data: suite.SuiteData,
    settings: suite.SuiteSettings,
    reference: dict[str, float] | None = None,
    stop_at: float | None = None,
) -> dict:
    """Every dev-suite task's score of one form and, against ``reference`` (the teacher's
    scores), its retention per task and mean retention (%); with the seconds spent
    embedding and fitting the probes. Raises :class:`OutOfTime` when the embedding passes
    ``stop_at`` (a ``time.perf_counter()`` value)."""
    texts = data.texts()
    started = time.perf_counter()
    matrix = embed_until(embed, texts, stop_at)  # (texts, dim)
    embedded = time.perf_counter()
    scores = suite.score_vectors(dict(zip(texts, matrix, strict=True)), data, settings)
    result = {
        "scores": scores,
        "embed_seconds": embedded - started,
        "probe_seconds": time.perf_counter() - embedded,
        "sentences": len(texts),
    }
    if reference is not None:
        result["retention"] = suite.retention(scores, reference)
        result["mean_retention"] = float(np.mean(list(result["retention"].values())))
    return result


def pairwise_cosines(vectors: np.ndarray) -> np.ndarray:
    """Cosines of every pair ``i < j`` of the rows of ``(n, dim)``: ``(n * (n - 1) / 2,)``."""
    unit = vectors.astype(np.float64)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    upper = np.triu_indices(len(unit), k=1)
    return (unit @ unit.T)[upper]


def agreement(student: np.ndarray, teacher: np.ndarray) -> dict[str, float | None]:
    """How closely a form's vectors ``(n, d)`` of the held-out lines follow the teacher's
    ``(n, D)``: ``cosine`` the mean row cosine (None when the widths differ: the vectors
    live in different spaces) and ``similarity_spearman`` the Spearman x100 of the two
    models' cosines over every pair of lines (defined for any widths)."""
    from scipy.stats import spearmanr

    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student vectors but {len(teacher)} teacher vectors")
    cosine = None
    if student.shape[1] == teacher.shape[1]:
        cosine = float(row_cosines(student, teacher).mean())
    correlation = spearmanr(pairwise_cosines(student), pairwise_cosines(teacher)).statistic
    return {"cosine": cosine, "similarity_spearman": 100.0 * float(correlation)}


def same_function(first: np.ndarray, second: np.ndarray, tolerance: float = 1e-5) -> bool:
    """Whether two forms compute the same vectors ``(n, dim)``: every row's cosine is within
    ``tolerance`` of 1 (ONNX fp32 against eager fp32); such forms share their suite scores."""
    return first.shape == second.shape and bool(
        (row_cosines(first, second) >= 1.0 - tolerance).all()
    )


# --------------------------------------------------------------------------- the rule
RULE = (
    "the fastest form (sentences/s at batch {batch}, timed on this machine beside the "
    "teacher) among those whose mean dev-suite retention of the teacher is >= {keep:.1f}%; "
    "if none is, the form with the highest mean retention, and the target is reported as "
    "not kept"
)


def pick(rows: Sequence[dict], keep: float) -> tuple[dict | None, bool]:
    """The row the rule chooses and whether it keeps the target.

    ``rows``: scored and timed candidate forms (``mean_retention`` in %,
    ``sentences_per_s``); ``keep``: the fraction of the teacher to keep. Among rows with
    ``mean_retention >= 100 * keep``, the most sentences/s (ties: higher retention);
    when there is none, the highest mean retention (ties: faster). ``(None, False)`` for
    no rows.
    """
    usable = [r for r in rows if r.get("mean_retention") is not None and r.get("sentences_per_s")]
    if not usable:
        return None, False
    keeping = [r for r in usable if r["mean_retention"] >= 100.0 * keep]
    if keeping:
        return max(keeping, key=lambda r: (r["sentences_per_s"], r["mean_retention"])), True
    return max(usable, key=lambda r: (r["mean_retention"], r["sentences_per_s"])), False


__all__ = [
    "CHUNK",
    "RULE",
    "OutOfTime",
    "agreement",
    "embed_function",
    "embed_until",
    "pairwise_cosines",
    "pick",
    "same_function",
    "score_on_suite",
    "suite_settings",
]
