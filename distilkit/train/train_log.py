"""A run's ``train_log.jsonl``: one JSON record a line (step, losses, learning rate,
tokens/s, evaluation metrics), appended as training goes and cut back on resume."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a JSON line."""
    with path.open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(record) + "\n")


def trim_log(path: Path, step: int) -> None:
    """On resume at ``step``, drop the records of later steps (a killed run logged them
    before dying; they are trained again) and any half-written last line."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line + "\n")
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text("".join(kept), encoding="utf-8")
    os.replace(temp, path)


__all__ = ["append_record", "trim_log"]
