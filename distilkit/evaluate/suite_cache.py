"""Dev-suite rows kept on disk, keyed by everything that decides them.

A model's suite scores depend only on its weights and config, the suite's settings and
data files, and the scoring code, so a teacher (or an untrained cut of it) scored once is
scored for every later run: the main job then spends its deadline on the student alone.
The key hashes all of these (the scoring code as the bytes of its modules, so any change
to it invalidates every entry); an entry also keeps how long the scoring took and how
fast the machine ran a reference model then, so that time can be scaled to now.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from distilkit.data.teacher_cache import hash_file, model_fingerprint
from distilkit.encoder import Encoder
from distilkit.evaluate import sentence, suite, suite_data
from distilkit.evaluate.sentence import EvaluationDataError
from distilkit.settings import save_json
from distilkit.tasks.spec import data_root

CACHE_ENV_VARIABLE = "DISTILKIT_SUITE_CACHE"


def suite_cache_dir() -> Path:
    """``$DISTILKIT_SUITE_CACHE``, else ``~/.cache/distilkit/suite``."""
    folder = os.environ.get(CACHE_ENV_VARIABLE)
    return Path(folder) if folder else Path.home() / ".cache" / "distilkit" / "suite"


@dataclass
class ScoredRow:
    """One model's suite row and what scoring it cost."""

    row: dict  # suite row (name, scores, quick); retention is filled in by the caller
    seconds: float  # wall seconds the scoring took when it ran
    rate: float | None  # the reference speed (sentences/s) measured when it ran, if given
    cached: bool  # read from the cache, not scored now


def suite_key(encoder: Encoder, quick: bool, root: str | Path | None = None) -> str:
    """sha256 over the model (weights, config, token limit), the suite's settings, its data
    files and the source of the modules that score it."""
    settings = suite.QUICK if quick else suite.FULL
    digest = hashlib.sha256(b"distilkit dev suite\n")
    extra = json.dumps(
        {"max_length": encoder.tokenizer.max_length, "settings": asdict(settings)},
        sort_keys=True,
        default=str,
    )
    digest.update(model_fingerprint(encoder.model, extra).encode())
    folder = data_root(root)
    files = [sentence.STSB_DEV, sentence.SST2_TRAIN_SAMPLE, sentence.SST2_DEV] + [
        folder / name
        for name in (
            suite_data.SICK_TRIAL,
            suite_data.SICK_TRAIN,
            suite_data.TREC_TRAIN,
            suite_data.MRPC_TRAIN,
        )
    ]
    files += [Path(module.__file__) for module in (suite, suite_data, sentence)]
    for path in map(Path, files):
        if not path.is_file():
            raise EvaluationDataError(
                f"dev-suite file not found: {path} (set DISTILKIT_DATA to the folder holding "
                "sick/, trec/ and mrpc/)"
            )
        digest.update(f"\n{path.name}\n".encode())
        hash_file(digest, path)
    return digest.hexdigest()


def _entry_path(encoder: Encoder, quick: bool, root) -> tuple[str, Path]:
    key = suite_key(encoder, quick, root)
    return key, suite_cache_dir() / f"{key}.json"


def _read(path: Path, name: str) -> ScoredRow | None:
    """The entry at ``path`` as ``name``'s row; None when absent, torn or foreign (it is
    scored again and replaced)."""
    try:
        entry = json.loads(path.read_text())
        row = dict(entry["row"], name=name)
        return ScoredRow(row, float(entry["seconds"]), entry.get("rate"), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cached_row(
    name: str,
    encoder: Encoder,
    quick: bool = True,
    root: str | Path | None = None,
    cache: bool = True,
) -> ScoredRow | None:
    """``name``'s suite row from the cache (:func:`suite_cache_dir`) if an entry has this
    model's key; None when there is none (or it cannot be read: it will be scored again
    and replaced) or ``cache`` is False. Raises ``EvaluationDataError`` when the suite's
    files are absent."""
    return _read(_entry_path(encoder, quick, root)[1], name) if cache else None


def score_row(
    name: str,
    encoder: Encoder,
    quick: bool = True,
    root: str | Path | None = None,
    cache: bool = True,
    rate: float | None = None,
) -> ScoredRow:
    """``name``'s suite row, from the cache when an entry has this model's key, else scored
    now (and written there; ``rate``, the reference speed now, is kept with it). ``cache``
    False: always score, keep nothing. Raises ``EvaluationDataError`` when the suite's
    files are absent."""
    key, path = _entry_path(encoder, quick, root) if cache else (None, None)
    cached = _read(path, name) if path is not None else None  # the model hashed once
    if cached is not None:
        return cached
    start = time.perf_counter()
    row = suite.evaluate_suite({name: encoder}, quick=quick, root=root)[0]
    seconds = time.perf_counter() - start
    row = {"name": name, "scores": row["scores"], "quick": row["quick"]}
    if path is not None:
        entry = {"key": key, "row": row, "seconds": seconds, "rate": rate}
        # atomic (never half a file); a read-only cache folder costs a rescoring, no more
        with contextlib.suppress(OSError):
            save_json(entry, path)
    return ScoredRow(row, seconds, rate, cached=False)
