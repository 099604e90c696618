"""A training run's checkpoints on disk: ``OUT/checkpoints/step-N`` folders holding the
objective's files, ``trainer_state.pt`` (optimizer, schedule, data position, every random
state: tensors and numbers only, read back without running code) and the run's settings;
written atomically, found newest first, old ones discarded.

Also the process-wide random states a checkpoint records and restores, and the seeding
of a fresh run.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distilkit.settings import ConfigError, save_json
from distilkit.train.run_folder import CHECKPOINTS, LATEST_FILE, RUN_CONFIG_FILE

STATE_FILE = "trainer_state.pt"
# what a checkpoint written before trainer_state.pt held only tensors and numbers needs:
# numpy's RNG state as an array (rebuilt by numpy's own constructors, no other code runs)
_LEGACY_NUMPY_GLOBALS = [
    (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct,
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
]


class CheckpointDamaged(RuntimeError):
    """A checkpoint folder cannot be read back (half-written, truncated, edited)."""


def checkpoint_dirs(out_dir: Path) -> list[Path]:
    """The ``step-N`` folders of a run folder, oldest first (complete or not)."""
    root = out_dir / CHECKPOINTS
    return sorted(root.glob("step-*"), key=_step_of) if root.is_dir() else []


def resume_candidates(out_dir: Path) -> list[Path]:
    """Complete checkpoints, newest first: the ``latest`` pointer's, then by step."""
    root = out_dir / CHECKPOINTS
    complete = [d for d in reversed(checkpoint_dirs(out_dir)) if (d / STATE_FILE).is_file()]
    pointer = root / LATEST_FILE
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if candidate in complete:
            complete.remove(candidate)
            complete.insert(0, candidate)
    return complete


def write_checkpoint(
    out_dir: Path,
    step: int,
    state: dict[str, Any],
    save_model: Callable[[Path], None],
    settings: dict[str, Any],
    keep: int,
) -> Path:
    """Write ``checkpoints/step-N`` atomically (temp folder, then rename): the model by
    ``save_model(folder)``, ``state`` and the run's ``settings``; point ``latest`` at it
    and discard older checkpoints beyond the newest ``keep``. Returns the folder."""
    root = out_dir / CHECKPOINTS
    final = root / f"step-{step:07d}"
    root.mkdir(parents=True, exist_ok=True)
    temp = root / f".tmp-step-{step:07d}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    save_model(temp / "model")
    torch.save(state, temp / STATE_FILE)
    save_json(settings, temp / RUN_CONFIG_FILE)
    if final.exists():  # this step saved before a kill: the same state again
        _discard(final)
    os.replace(temp, final)
    pointer_temp = root / f".{LATEST_FILE}.tmp"
    pointer_temp.write_text(final.name + "\n")
    os.replace(pointer_temp, root / LATEST_FILE)
    # older checkpoints of this run beyond the newest keep; never the one just written,
    # nor any of a later step (never a newer one)
    older = [d for d in checkpoint_dirs(out_dir) if _step_of(d) < step]
    for old in older[: max(0, len(older) - (keep - 1))]:
        _discard(old)
    return final


def read_state(folder: Path) -> dict[str, Any]:
    """The state saved in ``folder``, read without running any code.

    Raises :class:`CheckpointDamaged` for a file that cannot be read back, and
    :class:`ConfigError` for one holding Python objects besides tensors and numbers
    (which could run code when unpickled): such a file is never loaded.
    """
    path = folder / STATE_FILE
    try:
        with torch.serialization.safe_globals(_LEGACY_NUMPY_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ConfigError(
            f"{path} holds Python objects besides tensors and numbers, which could run "
            f"code when loaded, so it was not loaded ({' '.join(str(error).split())[:160]}); "
            "start afresh with --no-resume or another --out"
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError, KeyError) as error:
        raise CheckpointDamaged(f"{path} cannot be read ({error})") from None
    expected = {"step", "schedule_steps", "optimizer", "scheduler", "sampler", "rng"}
    if not isinstance(state, dict) or not expected <= state.keys():
        raise CheckpointDamaged(f"{path} does not hold a training state")
    return state


def _step_of(folder: Path) -> int:
    return int(folder.name.split("-")[1])


def _discard(folder: Path) -> None:
    """Delete a checkpoint folder: renamed out of sight first, so a kill halfway through
    never leaves a partial ``step-N`` that looks complete (the rest is cleaned later)."""
    trash = folder.with_name(f".trash-{folder.name}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    """Every global random state as tensors, numbers and lists (no pickled objects)."""
    kind, key, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(key.astype(np.int64)), position, has_gauss, cached],
        "python": list(random.getstate()),
    }


def seed_globals(seed: int, rank: int) -> None:
    """Seed torch (dropout), numpy and Python's ``random`` for a fresh run, from the run's
    seed and the process rank, so a run does not depend on what ran before it in the
    process and DDP ranks draw different dropout masks."""
    derived = int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
    torch.manual_seed(derived)
    np.random.seed(derived)
    random.seed(derived)


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, key, position, has_gauss, cached = state["numpy"]
    key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
    np.random.set_state((kind, key.astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


__all__ = [
    "STATE_FILE",
    "CheckpointDamaged",
    "checkpoint_dirs",
    "read_state",
    "resume_candidates",
    "rng_state",
    "seed_globals",
    "set_rng_state",
    "write_checkpoint",
]
