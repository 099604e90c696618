"""Model inspection: parameter counts per array, layer-type counts, size on disk."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from torch import nn


def model_info(model: nn.Module, folder: str | Path | None = None) -> dict:
    """A summary dict of ``model`` (tied weights counted once).

    Keys: total_params, trainable_params, arrays (name -> {shape, count, dtype}),
    layer_types (module class -> count, leaves only), dtype, size_on_disk_bytes
    (weights files in ``folder``, if given), bytes_in_memory.
    """
    arrays = {}
    seen: set[int] = set()
    total = trainable = in_memory = 0
    for name, parameter in model.named_parameters():
        arrays[name] = {
            "shape": list(parameter.shape),
            "count": parameter.numel(),
            "dtype": str(parameter.dtype).replace("torch.", ""),
        }
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        in_memory += parameter.numel() * parameter.element_size()
        if parameter.requires_grad:
            trainable += parameter.numel()
    layer_types = Counter(
        type(module).__name__ for module in model.modules() if not list(module.children())
    )
    composite = Counter(
        type(module).__name__ for module in model.modules() if list(module.children())
    )
    info = {
        "total_params": total,
        "trainable_params": trainable,
        "arrays": arrays,
        "layer_types": dict(sorted(layer_types.items())),
        "blocks": dict(sorted(composite.items())),
        "dtype": next((a["dtype"] for a in arrays.values()), "float32"),
        "bytes_in_memory": in_memory,
    }
    if folder is not None:
        folder = Path(folder)
        files = (
            [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".onnx")]
            if folder.is_dir()
            else []
        )
        info["size_on_disk_bytes"] = sum(p.stat().st_size for p in files)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "layout"):
        info["config"] = {
            "layout": config.layout,
            "num_layers": config.num_layers,
            "hidden_size": config.hidden_size,
            "num_heads": config.num_heads,
            "intermediate_size": config.intermediate_size,
            "vocab_size": config.vocab_size,
            "head": config.head,
        }
    return info


def format_info(info: dict, max_arrays: int | None = None) -> str:
    """A human-readable table of :func:`model_info`'s output."""
    lines = [f"{'array':<60} {'shape':<18} {'elements':>12}"]
    items = list(info["arrays"].items())
    shown = items if max_arrays is None else items[:max_arrays]
    for name, array in shown:
        shape = "x".join(str(d) for d in array["shape"])
        lines.append(f"{name:<60} {shape:<18} {array['count']:>12,}")
    if len(shown) < len(items):
        lines.append(f"... {len(items) - len(shown)} more arrays (use --json for all)")
    lines.append("")
    lines.append(
        f"total parameters: {info['total_params']:,} ({info['dtype']}, "
        f"{info['bytes_in_memory'] / 1e6:.1f} MB in memory)"
    )
    if "size_on_disk_bytes" in info:
        lines.append(f"size on disk: {info['size_on_disk_bytes'] / 1e6:.1f} MB")
    lines.append("layer types: " + ", ".join(f"{k} x{v}" for k, v in info["layer_types"].items()))
    lines.append("blocks: " + ", ".join(f"{k} x{v}" for k, v in info["blocks"].items()))
    return "\n".join(lines)
