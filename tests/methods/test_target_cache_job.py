"""The main job with the teacher-target cache: a student trained from cached targets equals
one trained from live targets, resumes equal, a changed teacher starts afresh, objectives
that cannot use the cache say so, and `distilkit cache-targets` fills it ahead."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from distill_helpers import random_teacher, tiny_tokenizer, write_text_corpus

from distilkit.cli import main as cli
from distilkit.cli.distill import distill_config_from_args
from distilkit.methods.general.config import DistillConfig
from distilkit.methods.general.job import run_distillation
from distilkit.methods.general.objectives import GeneralDistillation
from distilkit.methods.general.targets import cache_teacher_targets
from distilkit.model.checkpoint import load_model, save_model
from distilkit.train.trainer import Trainer, TrainingConfig

CACHED = re.compile(r"teacher-target cache: (\d+) of (\d+) corpus sequences cached")


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory) -> Path:
    """A 3-layer random teacher without an MLM head (as all-MiniLM-L6-v2): cos on unmasked text."""
    root = tmp_path_factory.mktemp("teacher")
    save_model(random_teacher(3, seed=1, head=None), root / "t", tokenizer=tiny_tokenizer(root))
    return root / "t"


def job(teacher: Path, corpus: Path, **overrides) -> DistillConfig:
    training = {
        "max_steps": 10,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "log_every": 1,
        "eval_every": 100,
        "checkpoint_every": 4,
        "progress": False,
        **overrides.pop("training", {}),
    }
    settings = {
        "target_cache": True,
        "teacher": str(teacher),
        "corpus": [str(corpus)],
        "layers": [0, 2],
        "max_len": 24,
        "heldout_fraction": 0.2,
        "training": TrainingConfig(**training),
        **overrides,
    }
    return DistillConfig(**settings)


@pytest.fixture
def corpus(tmp_path) -> Path:
    """About 25 sentences: 10 steps of 4 go round the training set more than once."""
    return write_text_corpus(tmp_path / "corpus" / "text.txt", paragraphs=14, seed=2)


@pytest.fixture
def teacher_calls(monkeypatch) -> list[int]:
    """Sequences the teacher was run on for targets during training."""
    calls: list[int] = []
    original = GeneralDistillation._teacher_last

    def counting(self, input_ids, attention_mask):
        calls.append(len(input_ids))
        return original(self, input_ids, attention_mask)

    monkeypatch.setattr(GeneralDistillation, "_teacher_last", counting)
    return calls


def student(out: Path) -> dict[str, torch.Tensor]:
    return load_model(out / "student").state_dict()


def difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def cached_line(text: str) -> tuple[int, int]:
    match = CACHED.search(text)
    assert match, text
    return int(match[1]), int(match[2])


def cos_losses(out: Path) -> list[float]:
    records = [json.loads(line) for line in (out / "train_log.jsonl").open()]
    return [r["loss/cos"] for r in records if "loss/cos" in r]


def test_students_from_cached_and_live_targets_are_equal(
    teacher_folder, corpus, tmp_path, capsys, teacher_calls
):
    live = tmp_path / "live"
    metrics = run_distillation(
        job(teacher_folder, corpus, target_cache=False), live, evaluate=False
    )
    assert "teacher-target cache" not in capsys.readouterr().out
    assert not list(corpus.parent.glob(".distilkit-cache/targets-*"))
    assert metrics["training"]["throughput"]["teacher_share"] == 1.0

    # the first run with the cache computes each sequence once and fills the cache
    filling = tmp_path / "filling"
    metrics = run_distillation(job(teacher_folder, corpus), filling, evaluate=False)
    out = capsys.readouterr().out
    done, total = cached_line(out)
    train = round(0.8 * total)
    assert done == 0 and sum(teacher_calls) == train < 40  # the second epoch read the cache
    # the MFU counts the teacher's FLOPs on the rows it ran only (10 steps of <= 4 rows)
    throughput = metrics["training"]["throughput"]
    rows = throughput["teacher_rows"]
    assert rows["live"] == train and 30 < rows["seen"] <= 40
    assert throughput["teacher_share"] == pytest.approx(train / rows["seen"])
    share = 100 * train / rows["seen"]
    assert f"teacher forward on {share:.1f}% of the rows (the rest cached)" in out
    assert difference(student(filling), student(live)) < 1e-6
    np.testing.assert_allclose(cos_losses(filling), cos_losses(live), atol=1e-6)

    # filled ahead (the held-out rest too), a run never runs the teacher for targets
    assert cache_teacher_targets(job(teacher_folder, corpus))["computed"] == total - train
    assert cached_line(capsys.readouterr().out) == (train, total)
    teacher_calls.clear()
    cached = tmp_path / "cached"
    metrics = run_distillation(job(teacher_folder, corpus), cached, evaluate=False)
    assert cached_line(capsys.readouterr().out) == (total, total)
    assert teacher_calls == []
    assert metrics["training"]["throughput"]["teacher_share"] == 0.0
    assert difference(student(cached), student(live)) < 1e-6

    # a changed teacher weight gets a cache of its own: no stale targets
    changed = load_model(teacher_folder)
    with torch.no_grad():
        changed.backbone.layers[2].attention.query.bias[3] += 0.01
    save_model(changed, tmp_path / "changed", tokenizer=tiny_tokenizer(tmp_path / "v"))
    run_distillation(job(tmp_path / "changed", corpus), tmp_path / "c", evaluate=False)
    assert cached_line(capsys.readouterr().out) == (0, total)
    assert len(list(corpus.parent.glob(".distilkit-cache/targets-*"))) == 2
    # ... and so does another max_len
    run_distillation(job(teacher_folder, corpus, max_len=20), tmp_path / "m", evaluate=False)
    assert cached_line(capsys.readouterr().out)[0] == 0


def test_a_resumed_run_with_the_cache_equals_an_uninterrupted_one(
    teacher_folder, corpus, tmp_path, monkeypatch, capsys
):
    whole = tmp_path / "whole"
    run_distillation(job(teacher_folder, corpus, target_cache=False), whole, evaluate=False)
    original = Trainer.run

    def stopped(self, resume=True, stop_after_steps=None):
        return original(self, resume, 6)  # killed after step 6 (checkpoint at 4)

    monkeypatch.setattr(Trainer, "run", stopped)
    broken = tmp_path / "broken"
    run_distillation(job(teacher_folder, corpus), broken, evaluate=False)
    monkeypatch.setattr(Trainer, "run", original)
    run_distillation(job(teacher_folder, corpus), broken, evaluate=False)
    out = capsys.readouterr().out
    assert "resumed from" in out
    # the killed run started the cache empty; the resumed one found the rows it had written
    (killed, total), (resumed, _) = [tuple(map(int, m)) for m in CACHED.findall(out)]
    assert killed == 0 < resumed <= total
    assert difference(student(broken), student(whole)) < 1e-6
    # the cache may also be switched off (or on) when resuming: the targets are the same
    run_distillation(
        job(teacher_folder, corpus, target_cache=False), broken, resume=True, evaluate=False
    )


def test_objectives_that_cannot_use_the_cache_say_why(teacher_folder, corpus, tmp_path, capsys):
    root = tmp_path / "mlm"
    save_model(random_teacher(3, seed=1), root / "t", tokenizer=tiny_tokenizer(root))
    run_distillation(
        job(root / "t", corpus, training={"max_steps": 2}), tmp_path / "a", evaluate=False
    )
    out = capsys.readouterr().out
    assert "note: no teacher-target cache: the inputs are masked afresh every step" in out
    hidden = {"weights": {"cos": 1.0, "hidden": 1.0}, "hidden_layer_map": [[1, 2]]}
    run_distillation(
        job(teacher_folder, corpus, objective=hidden, training={"max_steps": 2}),
        tmp_path / "b",
        evaluate=False,
    )
    assert "note: no teacher-target cache: the hidden loss needs teacher outputs" in (
        capsys.readouterr().out
    )
    assert not list(corpus.parent.glob(".distilkit-cache/targets-*"))
    objective = GeneralDistillation(
        random_teacher(3, head=None), random_teacher(2, head=None), tiny_tokenizer(tmp_path)
    )
    assert objective.target_cache_blocker() is None
    objective.mask_inputs = True
    with pytest.raises(ValueError, match="cannot be used: the inputs are masked"):
        objective.use_target_cache(None)


def test_a_float16_cache_changes_the_cos_loss_only_slightly(
    teacher_folder, corpus, tmp_path, capsys
):
    live = tmp_path / "live"
    run_distillation(job(teacher_folder, corpus, target_cache=False), live, evaluate=False)
    half = job(teacher_folder, corpus, target_cache_dtype="float16")
    cache_teacher_targets(half)
    run_distillation(half, tmp_path / "half", evaluate=False)
    done, total = cached_line(capsys.readouterr().out.split("computed")[-1])
    assert done == total
    gap = np.abs(np.subtract(cos_losses(tmp_path / "half"), cos_losses(live))).max()
    print(f"float16 target cache: max |cos loss - live cos loss| over 10 steps = {gap:.3g}")
    assert 0 < gap < 1e-3
    assert difference(student(tmp_path / "half"), student(live)) < 1e-3


def test_the_flags_and_the_cache_targets_command(teacher_folder, corpus, capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["distill", "--no-target-cache", "--target-cache-dtype", "float16"])
    config = distill_config_from_args(args)
    assert config.target_cache is False and config.target_cache_dtype == "float16"
    assert distill_config_from_args(parser.parse_args(["distill"])).target_cache is False
    on = distill_config_from_args(parser.parse_args(["distill", "--target-cache"]))
    assert on.target_cache is True
    argv = ["cache-targets", "--teacher", str(teacher_folder), "--corpus", str(corpus)]
    argv += ["--max-len", "24", "--no-progress", "--batch-size", "5"]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert cached_line(first)[0] == 0 and "computed" in first
    assert cli.main(argv) == 0
    done, total = cached_line(capsys.readouterr().out)
    assert done == total > 0
    assert cli.main([*argv[:-2], "--target-cache-dtype", "float64"]) == 2


def test_dataloader_workers_read_the_cache(teacher_folder, corpus, tmp_path, capsys):
    """Workers (forked or spawned, each with a read-only copy of the cache) collate the
    same targets as the main process."""
    live = tmp_path / "live"
    run_distillation(job(teacher_folder, corpus, target_cache=False), live, evaluate=False)
    for name, workers in (("a", 2), ("b", 2), ("c", 0)):
        config = job(teacher_folder, corpus, training={"num_workers": workers})
        run_distillation(config, tmp_path / name, evaluate=False)
    found = [tuple(map(int, m)) for m in CACHED.findall(capsys.readouterr().out)]
    assert found[0][0] == 0 < found[1][0] == found[2][0] <= found[0][1]
    assert difference(student(tmp_path / "a"), student(live)) < 1e-6
    # b and c read the same cached rows: workers or not, the very same student
    assert difference(student(tmp_path / "b"), student(tmp_path / "c")) == 0.0
    assert difference(student(tmp_path / "b"), student(live)) < 1e-5
