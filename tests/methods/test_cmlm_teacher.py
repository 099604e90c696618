"""C-MLM teacher: input building, target-only masking, the sweep, the top-k cache."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from cmlm_helpers import tiny_mlm_teacher

from distilkit.methods.cmlm.teacher import (
    build_cmlm_inputs,
    mask_predict,
    mask_targets,
    sweep_groups,
    sweep_logits,
    sweep_masks,
)
from distilkit.methods.cmlm.topk_cache import cached_topk_targets
from distilkit.model.checkpoint import load_model

SOURCES = [[10, 11, 12], [20, 21], [30, 31, 32, 33, 34]]
TARGETS = [[40, 41], [50, 51, 52, 53, 54], [60]]


def test_inputs_have_segments_and_target_mask():
    inputs = build_cmlm_inputs(SOURCES, TARGETS, cls_id=2, sep_id=3, pad_id=0)
    assert inputs["input_ids"][0].tolist() == [2, 10, 11, 12, 3, 40, 41, 3, 0, 0]
    assert inputs["token_type_ids"][0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]
    assert inputs["target_mask"][0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]
    assert inputs["attention_mask"][0].tolist() == [1] * 8 + [0, 0]
    assert inputs["input_ids"][1].tolist() == [2, 20, 21, 3, 50, 51, 52, 53, 54, 3]
    assert inputs["token_type_ids"][1].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert inputs["target_start"].tolist() == [5, 4, 7]


def test_masking_touches_target_tokens_only():
    inputs = build_cmlm_inputs(SOURCES, TARGETS, cls_id=2, sep_id=3, pad_id=0)
    generator = torch.Generator().manual_seed(0)
    seen_counts = set()
    for _ in range(50):
        masked, labels = mask_targets(inputs["input_ids"], inputs["target_mask"], 4, generator)
        chosen = masked == 4
        assert torch.equal(chosen, labels != -100)
        assert not (chosen & (inputs["target_mask"] == 0)).any()
        assert torch.equal(labels[chosen], inputs["input_ids"][chosen])
        assert torch.equal(masked[~chosen], inputs["input_ids"][~chosen])
        per_row = chosen.sum(1)
        assert (per_row >= 1).all() and (per_row <= inputs["target_mask"].sum(1)).all()
        seen_counts.add(int(per_row[1]))
    assert len(seen_counts) >= 4  # the fraction is drawn per example (1 .. all of 6)


def test_sweep_masks_every_target_position_exactly_once():
    for length in range(1, 12):
        for passes in range(1, 5):
            groups = sweep_groups(length, passes)
            assert sorted(i for group in groups for i in group) == list(range(length))
    inputs = build_cmlm_inputs(SOURCES, TARGETS, cls_id=2, sep_id=3, pad_id=0)
    for passes in (1, 2, 3, 7):
        masks = torch.stack(
            list(sweep_masks(inputs["target_mask"], inputs["target_start"], passes))
        )
        assert torch.equal(masks.sum(0), inputs["target_mask"])  # once each, targets only


def test_sweep_logits_match_masking_each_group_by_hand(tmp_path, tiny_tokenizer):
    model = load_model(tiny_mlm_teacher(tmp_path / "t", tiny_tokenizer)).eval()
    inputs = build_cmlm_inputs(SOURCES, TARGETS, cls_id=2, sep_id=3, pad_id=0)
    got = sweep_logits(model, inputs, mask_id=4, passes=2)  # (positions, V)
    expected = []
    for row in range(3):
        start, n = int(inputs["target_start"][row]), int(inputs["target_mask"][row].sum())
        for offset in range(n):
            ids = inputs["input_ids"][row : row + 1].clone()
            group = [start + o for o in range(offset % 2, n, 2)]
            ids[0, group] = 4
            length = int(inputs["attention_mask"][row].sum())
            hidden = model.backbone(
                ids[:, :length], None, inputs["token_type_ids"][row : row + 1, :length]
            ).last_hidden_state
            expected.append(model.mlm_logits(hidden[0, start + offset]))
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-4, rtol=1e-4)


def test_mask_predict_fills_the_given_lengths(tmp_path, tiny_tokenizer):
    model = load_model(tiny_mlm_teacher(tmp_path / "t", tiny_tokenizer)).eval()
    out = mask_predict(model, SOURCES, [2, 4, 1], tiny_tokenizer, iterations=3)
    assert [len(o) for o in out] == [2, 4, 1]
    assert all(tiny_tokenizer.mask_id not in o for o in out)


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    sys.path[:0] = [{tests!r}, {helpers!r}]
    from distilkit.model.checkpoint import load_model
    from distilkit.model.tokenizer import Tokenizer
    from distilkit.methods.cmlm.topk_cache import cached_topk_targets
    from test_cmlm_teacher import pairs

    torch.set_num_threads(1)
    model = load_model({teacher!r})
    tokenizer = Tokenizer.from_folder({teacher!r})
    sources, targets = pairs()

    def die(batch):
        if batch == 2:  # rows of batch 2 written, not yet recorded
            os.kill(os.getpid(), signal.SIGKILL)

    cached_topk_targets(model, tokenizer, sources, targets, {cache!r}, top_k=5, passes=2,
                        batch_size=4, progress=False, after_batch=die)
    """
)


def pairs() -> tuple[list[list[int]], list[list[int]]]:
    rng = np.random.default_rng(0)
    sources = [rng.integers(5, 99, rng.integers(2, 8)).tolist() for _ in range(19)]
    targets = [rng.integers(5, 99, rng.integers(1, 6)).tolist() for _ in range(19)]
    return sources, targets


def test_topk_cache_resumes_after_sigkill(tmp_path, tiny_tokenizer):
    teacher = tiny_mlm_teacher(tmp_path / "teacher", tiny_tokenizer)
    model = load_model(teacher)
    sources, targets = pairs()
    reference = cached_topk_targets(
        model, tiny_tokenizer, sources, targets, tmp_path / "clean", top_k=5, passes=2,
        batch_size=4, progress=False,
    )  # fmt: skip
    script = KILL_SCRIPT.format(
        tests=str(Path(__file__).parent),
        helpers=str(Path(__file__).parents[1]),
        teacher=str(teacher),
        cache=str(tmp_path / "killed"),
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()
    folder = next((tmp_path / "killed").iterdir())
    assert '"batches_done": 2' in (folder / "progress.json").read_text()
    resumed_batches = []
    resumed = cached_topk_targets(
        model, tiny_tokenizer, sources, targets, tmp_path / "killed", top_k=5, passes=2,
        batch_size=4, progress=False, after_batch=resumed_batches.append,
    )  # fmt: skip
    assert resumed_batches == [2, 3, 4]  # started where the killed run stopped
    np.testing.assert_array_equal(resumed.ids, reference.ids)
    np.testing.assert_allclose(resumed.probs, reference.probs, rtol=1e-6, atol=1e-7)
    # the cache holds the teacher's renormalisable top-k of the sweep
    inputs = build_cmlm_inputs(sources, targets, 2, 3, 0)
    full = sweep_logits(model.eval(), inputs, 4, 2).softmax(-1).topk(5, dim=-1)
    np.testing.assert_allclose(reference.probs, full.values.numpy(), rtol=1e-5, atol=1e-6)
    assert reference.pair(1)[0].shape == (len(targets[1]) + 1, 5)
    # a finished entry is reused; another teacher gets a new entry
    again = []
    cached_topk_targets(
        model,
        tiny_tokenizer,
        sources,
        targets,
        tmp_path / "killed",
        top_k=5,
        passes=2,
        batch_size=4,
        progress=False,
        after_batch=again.append,
    )
    assert again == []
    with torch.no_grad():
        model.head.bias.add_(1.0)
    other = cached_topk_targets(
        model,
        tiny_tokenizer,
        sources,
        targets,
        tmp_path / "killed",
        top_k=5,
        passes=2,
        batch_size=4,
        progress=False,
    )
    assert other.folder != resumed.folder
