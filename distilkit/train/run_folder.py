"""A run folder's safety: one run at a time, a clean fresh start, honest resumes.

- :class:`RunLock`: ``OUT/.distilkit-lock`` names the process that runs there (PID, host,
  start time); a second run is refused, a lock left by a killed process is taken over.
- :func:`set_aside_previous_run`: ``--no-resume`` into a folder that holds a run moves that
  run into ``OUT/previous-<time>/`` (nothing is deleted).
- :func:`clean_stale_temporaries`: half-written checkpoint folders of a killed run.
- :func:`resume_changes`: a resumed run's settings against the saved ones; a setting that
  changes the result must match, the few that may change on resume are returned so the
  caller records them.
- :func:`open_run` / :func:`guarded_run`: all of the above around a method's ``run``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from distilkit.settings import ConfigError, process_alive

LOCK_FILE = ".distilkit-lock"
PREVIOUS_PREFIX = "previous-"
CHECKPOINTS = "checkpoints"
LATEST_FILE = "latest"
RUN_CONFIG_FILE = "run_config.json"

# Settings a resumed run may change: none alters the weights trained so far, and a change
# is recorded in train_log.jsonl at the step it takes effect. The time budgets are here so
# a run can be given more (or less) time when it is resumed.
RESUMABLE = (
    "time_budget",
    "job_time_budget",
    "progress",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "target_cache",  # float32 targets equal live ones; a float16 cache changes target_cache_dtype
    "fused_adamw",  # the same update by another kernel; the optimizer state is the same
)
# command-line flags of settings, for error messages (matched on the last name part)
FLAGS = {
    "learning_rate": "--lr",
    "max_steps": "--max-steps",
    "batch_size": "--batch-size",
    "grad_accumulation": "--grad-accumulation",
    "seed": "--seed",
    "precision": "--precision",
    "weights": "--weights",
    "corpus": "--corpus",
    "teacher": "--teacher",
    "max_len": "--max-len",
    "num_layers": "--num-layers",
    "layers": "--layers",
    "strategy": "--strategy",
    "layout": "--layout",
    "corpus_unit": "--corpus-unit",
    "pack": "--pack",
    "task": "--task",
    "method": "--method",
    "bottleneck_size": "--bottleneck-size",
    "ffn_stack": "--ffn-stack",
    "norm": "--norm",
    "act": "--act",
    "embedding_size": "--embedding-size",
    "transfer": "--transfer",
    "copy_source": "--copy-source / --no-copy-source",
}


# ----------------------------------------------------------------------------- the lock
def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux: clock ticks since boot), None if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the process that wrote a lock still runs (another host's: assumed so)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int) or not process_alive(pid):
        return False
    started = _process_start(pid)
    return owner.get("started") is None or started is None or started == owner["started"]


_HELD: dict[Path, int] = {}  # lock file -> how many times this process holds it


class RunLock:
    """An exclusive, re-entrant (within one process) lock on a run folder.

    ``with RunLock(out_dir):`` refuses (:class:`ConfigError`) while another live process
    holds it; one left behind by a killed process is detected by its PID and start time
    and taken over. Released when the block exits, however it exits.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = (self.folder / LOCK_FILE).absolute()

    def _write(self) -> bool:
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _process_start(os.getpid()),
        }
        try:
            handle = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(me, stream)
        return True

    def _owner(self) -> dict[str, Any]:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def acquire(self) -> None:
        if _HELD.get(self.path):
            _HELD[self.path] += 1
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._write():
                _HELD[self.path] = 1
                return
            owner = self._owner()
            if not owner and time.time() - _mtime(self.path) < 5:
                time.sleep(0.2)  # being written right now
                continue
            if owner and _alive(owner):
                raise ConfigError(
                    f"{self.folder} is in use by another run (process {owner.get('pid')} on "
                    f"{owner.get('host')}): wait for it to finish or stop it, or choose another "
                    f"--out (if no such run exists, delete {self.path})"
                )
            self.path.unlink(missing_ok=True)  # stale: its process is gone
        raise ConfigError(f"cannot take the lock {self.path}: another run keeps taking it")

    def release(self) -> None:
        count = _HELD.get(self.path, 0) - 1
        if count > 0:
            _HELD[self.path] = count
            return
        _HELD.pop(self.path, None)
        if self._owner().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# ----------------------------------------------------------------------------- fresh starts
def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds (part of) an earlier training run."""
    return (folder / CHECKPOINTS).is_dir() or (folder / "train_log.jsonl").is_file()


def set_aside_previous_run(folder: Path, names: list[str] | None = None) -> Path | None:
    """Move an earlier run in ``folder`` (``names``, default: every entry but the lock and
    earlier ``previous-*`` folders) into ``folder/previous-<time>``; returns that folder."""
    if not holds_run(folder):
        return None
    entries = [
        entry
        for entry in sorted(folder.iterdir())
        if entry.name != LOCK_FILE
        and not entry.name.startswith(PREVIOUS_PREFIX)
        and (names is None or entry.name in names)
    ]
    if not entries:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder / f"{PREVIOUS_PREFIX}{stamp}"
    suffix = 1
    while target.exists():
        suffix += 1
        target = folder / f"{PREVIOUS_PREFIX}{stamp}-{suffix}"
    target.mkdir()
    for entry in entries:
        os.replace(entry, target / entry.name)
    return target


def clean_stale_temporaries(folder: Path) -> None:
    """Remove what a killed run left half-written in its checkpoint folder."""
    root = folder / CHECKPOINTS
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if entry.name.startswith((".tmp-", ".trash-", f".{LATEST_FILE}.")):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


@contextlib.contextmanager
def open_run(out_dir: str | Path, resume: bool) -> Iterator[Path]:
    """Lock ``out_dir`` for one run, clean a killed run's leftovers and, when not resuming,
    move an earlier run there aside. Only the first process of a DDP group does this."""
    folder = Path(out_dir)
    if int(os.environ.get("RANK", "0")) != 0:
        yield folder
        return
    with RunLock(folder):
        clean_stale_temporaries(folder)
        if not resume and (moved := set_aside_previous_run(folder)) is not None:
            print(f"--no-resume: the earlier run in {folder} was moved to {moved}", flush=True)
        yield folder


F = TypeVar("F", bound=Callable[..., Any])


def guarded_run(run: F) -> F:
    """Decorate a method's ``run(config, out_dir, resume=True, ...)`` with :func:`open_run`."""

    @functools.wraps(run)
    def wrapper(config: Any, out_dir: str | Path, resume: bool = True, **kwargs: Any) -> Any:
        with open_run(out_dir, resume):
            return run(config, out_dir, resume, **kwargs)

    return wrapper  # type: ignore[return-value]


# ----------------------------------------------------------------------------- resume checks
def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _flag(key: str) -> str:
    parts = key.split(".")
    for part in reversed(parts):
        if part in FLAGS:
            return f" ({FLAGS[part]})"
    return ""


def resume_changes(
    saved: dict[str, Any], asked: dict[str, Any], where: str | Path
) -> dict[str, list[Any]]:
    """Compare a resumed run's settings with those it was saved with.

    A difference in a setting that changes the result raises :class:`ConfigError` naming
    every such setting, both values and ``--no-resume``; differences in :data:`RESUMABLE` ones are
    returned as ``{setting: [old, new]}``. Settings only one side knows (a run saved by an
    older version) are not compared.
    """
    old, new = flatten(saved), flatten(asked)
    changes: dict[str, list[Any]] = {}
    refused = []
    for key in sorted(old.keys() & new.keys()):
        if _same(old[key], new[key]):
            continue
        if key.split(".")[-1] in RESUMABLE:
            changes[key] = [old[key], new[key]]
            continue
        refused.append(
            f"{key}={json.dumps(old[key])}, but this one asks for {json.dumps(new[key])}"
            f"{_flag(key)}"
        )
    if refused:
        raise ConfigError(
            f"{where} holds a run with {', and with '.join(refused)}: resume with the saved "
            f"value{'s' if len(refused) > 1 else ''}, or start afresh with --no-resume (the "
            "old run is moved aside) or another --out"
        )
    return changes


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def saved_run_config(folder: str | Path) -> dict[str, Any] | None:
    """The settings saved with the latest checkpoint in ``folder`` (None: no checkpoint)."""
    root = Path(folder) / CHECKPOINTS
    pointer = root / LATEST_FILE
    candidates = []
    if pointer.is_file():
        candidates.append(root / pointer.read_text(encoding="utf-8").strip())
    if root.is_dir():
        candidates += sorted(root.glob("step-*"), reverse=True)
    for candidate in candidates:
        try:
            data = json.loads((candidate / RUN_CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return None


def check_resume(folder: str | Path, asked: dict[str, Any]) -> None:
    """Before a method rewrites its settings file in ``folder``: refuse a resume whose
    result-changing settings differ from the saved run's (see :func:`resume_changes`)."""
    saved = saved_run_config(folder)
    if saved is not None:
        resume_changes({k: v for k, v in saved.items() if k in asked}, asked, folder)


__all__ = [
    "LOCK_FILE",
    "RESUMABLE",
    "RunLock",
    "check_resume",
    "clean_stale_temporaries",
    "flatten",
    "guarded_run",
    "holds_run",
    "open_run",
    "resume_changes",
    "saved_run_config",
    "set_aside_previous_run",
]
