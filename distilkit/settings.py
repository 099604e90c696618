"""Configuration dataclasses, and their JSON form.

Every config is a plain dataclass; :func:`from_dict` rebuilds one from JSON and rejects
unknown keys (a misspelt option is an error, never silently ignored). The model config
also converts to and from the ``config.json`` of Hugging Face ``bert`` and ``distilbert``
checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar


class ConfigError(ValueError):
    """A configuration value or file is invalid."""


# ---------------------------------------------------------------- generic JSON I/O
T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (possibly nested) config dataclass."""
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are errors.

    Nested dataclass fields are built recursively, so ``where`` names the full path of
    a bad key (``training.lr_warmup``).
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where or cls.__name__}: expected a JSON object, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown option(s) {', '.join(prefix + k for k in unknown)} for {cls.__name__}; "
            f"valid options: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        nested = _dataclass_in(hint)
        if nested is not None and isinstance(value, dict):
            values[name] = from_dict(nested, value, f"{where}.{name}" if where else name)
        else:
            _check_type(value, hint, f"{where}.{name}" if where else name)
            values[name] = value
    return cls(**values)


_SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _check_type(value: Any, hint: Any, name: str) -> None:
    """Reject a JSON scalar or list of the wrong kind (``"yes"`` for a bool, ``"1e-4"`` for a
    float); hints other than bool/int/float/str/list (optionally ``| None``) are not checked."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None and type(None) in options:
        return
    kinds = [typing.get_origin(o) or o for o in options if o is not type(None)]
    if len(kinds) != 1 or kinds[0] not in (*_SCALARS, list):
        return
    kind = kinds[0]
    if kind is list:
        ok = isinstance(value, list | tuple)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        expected = "a list" if kind is list else _SCALARS[kind]
        raise ConfigError(f"{name} must be {expected}, got {value!r}")


def _is_union(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union


def build_nested(config: Any) -> None:
    """Turn each nested-config field given as a plain dict into its dataclass, in place.

    Call it first in ``__post_init__`` of a config that holds other configs, so that
    ``Config(training={...})`` is checked as strictly as :func:`from_dict`.
    """
    hints = typing.get_type_hints(type(config))
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        nested = _dataclass_in(hints[item.name])
        if nested is not None and isinstance(value, dict):
            setattr(config, item.name, from_dict(nested, value, item.name))


def _dataclass_in(hint: Any) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint  # type: ignore[return-value]
    if _is_union(hint):
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg):
                return arg  # type: ignore[return-value]
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (for stale lock and temp files)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def give_plain_permissions(path: str | Path) -> None:
    """Give ``path`` (and, for a folder, everything in it) the permissions a plain ``open``
    or ``mkdir`` would under the current umask: temporary files (``mkstemp``, and the
    libraries that write through one, such as safetensors) are owner-only otherwise."""
    path = Path(path)
    mask = _umask()
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if not item.is_symlink():
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_folder(folder: str | Path, keep_others: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name beside it, then rename it into place.

    Yields the temporary folder to fill. An interrupted write never leaves a half-written
    ``folder``: on any exception the temporary folder is removed and ``folder`` is as it was.
    An existing ``folder`` is replaced only once the new one is complete; with
    ``keep_others`` every entry of it that the new one does not write (a user's notes,
    results, ...) is then moved from the old folder into the new one. The user's entries are
    never inside the temporary folder, and the old folder is renamed aside under a name no
    other save uses, so a crash or kill at any point leaves them on disk. The folder gets
    the permissions a plain ``mkdir`` would (``mkdtemp`` alone makes it owner-only).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    backup: Path | None = None
    try:
        os.chmod(temp, 0o777 & ~_umask())
        yield temp
        give_plain_permissions(temp)
        if not folder.exists():
            os.replace(temp, folder)
            return
        backup = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
        os.replace(folder, backup / folder.name)
        os.replace(temp, folder)
    except BaseException:
        if backup is not None and (backup / folder.name).exists() and not folder.exists():
            os.replace(backup / folder.name, folder)  # the old folder back where it was
        if backup is not None and not any(backup.iterdir()):
            backup.rmdir()
        shutil.rmtree(temp, ignore_errors=True)
        raise
    if keep_others:
        for entry in (backup / folder.name).iterdir():
            if not (folder / entry.name).exists() and not (folder / entry.name).is_symlink():
                os.replace(entry, folder / entry.name)
    shutil.rmtree(backup)


def save_json(data: dict[str, Any], path: str | Path) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temp, 0o666 & ~_umask())  # as a plain open() would; mkstemp makes it 0600
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=2, sort_keys=False)
            stream.write("\n")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def load_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder: a config is a JSON file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


__all__ = [
    "ConfigError",
    "atomic_folder",
    "from_dict",
    "give_plain_permissions",
    "load_json",
    "process_alive",
    "save_json",
    "to_dict",
]
