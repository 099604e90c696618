"""The folder of a ``compress`` run: what may be written there, the corpus split into
training and held-out lines, and the picked form's copy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from distilkit.methods.compress import candidates as build
from distilkit.methods.compress.config import CompressConfig
from distilkit.methods.static.vocab import corpus_sentences
from distilkit.settings import ConfigError, atomic_folder, to_dict
from distilkit.train.run_folder import LOCK_FILE

CONFIG_FILE = "compress_config.json"
STATE_FILE = "state.json"
LOG_FILE = "compress_log.jsonl"


def check_out_dir(out_dir: Path, config: CompressConfig, resume: bool) -> None:
    """Refuse an ``out_dir`` that holds anything but an earlier compress run with the same
    settings (the time budget may differ), before any work."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file: give a folder")
    entries = [e for e in out_dir.iterdir() if e.name != LOCK_FILE] if out_dir.is_dir() else []
    if not entries:
        return
    saved_path = out_dir / CONFIG_FILE
    if not saved_path.is_file():
        raise ConfigError(
            f"{out_dir} exists and holds other files: compress writes only into an empty "
            "folder or one of its own runs; pick another --out"
        )
    if not resume:
        raise ConfigError(
            f"{out_dir} holds a compress run: run again without --no-resume to continue it, "
            "or pick another --out"
        )
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    asked = to_dict(config)
    for key in sorted(set(saved) & set(asked) - {"time_budget"}):
        if saved[key] != asked[key]:
            raise ConfigError(
                f"{out_dir} holds a compress run with {key}={json.dumps(saved[key])}, but this "
                f"one asks for {json.dumps(asked[key])}: continue it with the saved value, or "
                "pick another --out"
            )


def split_corpus(config: CompressConfig, folder: Path) -> tuple[Path, list[str]]:
    """Write the corpus's sentences to ``folder/train.txt`` (students train on these) and
    ``folder/heldout.txt`` (``heldout_lines`` sentences drawn by the seed: agreement and
    timing); returns the training file and the held-out lines. Reused when present."""
    train_path, heldout_path = folder / "train.txt", folder / "heldout.txt"
    if train_path.is_file() and heldout_path.is_file():
        return train_path, heldout_path.read_text(encoding="utf-8").splitlines()
    sentences = list(dict.fromkeys(s for s in corpus_sentences(config.corpus) if s.strip()))
    if len(sentences) < 2 * config.heldout_lines:
        raise ConfigError(
            f"the corpus has {len(sentences):,} distinct sentences; compress holds out "
            f"{config.heldout_lines} for agreement and timing and trains on the rest, so it "
            f"needs at least {2 * config.heldout_lines}: give a larger --corpus"
        )
    rng = np.random.default_rng(config.seed)
    held = set(rng.choice(len(sentences), size=config.heldout_lines, replace=False).tolist())
    heldout = [s for i, s in enumerate(sentences) if i in held]
    folder.mkdir(parents=True, exist_ok=True)
    # one sentence per paragraph, so the main job's sentence splitter keeps them whole
    train_text = "".join(f"{s}\n\n" for i, s in enumerate(sentences) if i not in held)
    heldout_path.write_text("".join(f"{s}\n" for s in heldout), encoding="utf-8")
    train_path.write_text(train_text, encoding="utf-8")
    return train_path, heldout


def save_picked(out_dir: Path, row: dict) -> tuple[str, str]:
    """Copy the picked form (a row of the search) into ``out_dir/picked/``, replacing an
    earlier pick there; returns its path and how to load it."""
    source = Path(row["model_folder"])
    with atomic_folder(out_dir / "picked") as temp:
        if row["form"].startswith("onnx-"):
            name = f"{row['candidate']}.{row['form'].removeprefix('onnx-')}.onnx"
            shutil.copy2(build.onnx_file(source, row["form"]), temp / name)
        else:
            name = row["candidate"]
            shutil.copytree(source, temp / name)
    path = out_dir / "picked" / name
    dtype = {"bf16": ", dtype='bfloat16'", "int8": ", dtype='int8'"}.get(row["form"], "")
    return str(path), f"distilkit.load('{path}'{dtype})"


__all__ = [
    "CONFIG_FILE",
    "LOG_FILE",
    "STATE_FILE",
    "check_out_dir",
    "save_picked",
    "split_corpus",
]
