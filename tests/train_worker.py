"""Run tiny distillation trainings in a separate process (for the DDP and kill tests).

    python tests/train_worker.py RUNS_JSON
    python -m torch.distributed.run --nproc_per_node 2 tests/train_worker.py RUNS_JSON

``RUNS_JSON`` is a file holding a list of ``{"out_dir": ..., "settings": {...}}``; each
run is built by ``distill_helpers.make_trainer`` (exactly as the in-process tests build
theirs), trained with resumption on, and every rank saves its final trainable tensors to
``out_dir/final-rank<r>.pt`` (and its step and stop reason to ``result-rank<r>.json``).
Optional keys: ``"interrupt_at": n`` stops the run after
step n and resumes it with a fresh trainer; ``"clock_skew": s`` starts rank r's clock at
``r * s`` seconds (ranks whose clocks disagree about a time budget); ``"stop_at": n``
stops after step n and leaves the run there (for a resume by another process count).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

# run as a script, this file's folder (tests/) is first on sys.path: the helpers import
from distill_helpers import RunSettings, make_trainer, student_state, tiny_tokenizer

from distilkit.train import distributed


def main(runs_path: str) -> None:
    # the thread count of the in-process reference run (reductions must split the same way)
    torch.set_num_threads(int(os.environ.get("DISTILKIT_TEST_THREADS", "1")))
    distributed.init_from_env("cpu")
    runs = json.loads(Path(runs_path).read_text(encoding="utf-8"))
    for run in runs:
        out_dir = Path(run["out_dir"])
        tokenizer = tiny_tokenizer(out_dir.parent / f"vocab-rank{distributed.rank()}")
        settings = RunSettings(**run["settings"])
        if "interrupt_at" in run:
            make_trainer(out_dir, tokenizer, settings).run(stop_after_steps=run["interrupt_at"])
        if "stop_at" in run:
            make_trainer(out_dir, tokenizer, settings).run(stop_after_steps=run["stop_at"])
            continue
        trainer = make_trainer(out_dir, tokenizer, settings)
        trainer.elapsed = run.get("clock_skew", 0.0) * distributed.rank()
        result = trainer.run(resume=True)
        rank = distributed.rank()
        torch.save(student_state(trainer), out_dir / f"final-rank{rank}.pt")
        summary = {"step": result.step, "stopped_by": result.stopped_by}
        (out_dir / f"result-rank{rank}.json").write_text(json.dumps(summary), encoding="utf-8")
    if distributed.active():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
