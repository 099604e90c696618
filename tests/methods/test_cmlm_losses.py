"""The C-MLM loss: top-k KL against a hand computation; alpha = 0 is plain cross-entropy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from cmlm_helpers import tiny_seq2seq

from distilkit.methods.cmlm.student import Seq2SeqObjective
from distilkit.train.losses import topk_kl_loss, weighted_sum


def _inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 7, generator=generator)
    probs = torch.rand(2, 3, 3, generator=generator)  # unnormalised top-3 masses
    ids = torch.stack([torch.randperm(7, generator=generator)[:3] for _ in range(6)]).view(2, 3, 3)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    return logits, probs, ids, mask


def test_topk_kl_matches_a_hand_computation():
    logits, probs, ids, mask = _inputs()
    total, count = 0.0, 0
    for b in range(2):
        for t in range(3):
            if not mask[b, t]:
                continue
            z = logits[b, t].tolist()
            log_norm = math.log(sum(math.exp(v) for v in z))
            mass = sum(probs[b, t].tolist())
            for j in range(3):
                p = float(probs[b, t, j]) / mass
                total += p * (math.log(p) - (z[int(ids[b, t, j])] - log_norm))
            count += 1
    got = topk_kl_loss(logits, probs, ids, mask)
    assert math.isclose(float(got), total / count, rel_tol=1e-5)


def test_padding_is_ignored_and_full_k_is_the_full_kl():
    logits, probs, ids, mask = _inputs(1)
    garbage = logits.clone()
    garbage[mask == 0] = 1e3
    assert torch.allclose(
        topk_kl_loss(logits, probs, ids, mask), topk_kl_loss(garbage, probs, ids, mask)
    )
    teacher = torch.randn(2, 3, 7).softmax(-1)
    top = teacher.topk(7, dim=-1)
    expected = F.kl_div(logits.log_softmax(-1), teacher, reduction="none").sum(-1)
    got = topk_kl_loss(logits, top.values, top.indices, mask)
    assert torch.allclose(got, expected[mask.bool()].mean(), atol=1e-6)
    assert float(topk_kl_loss(logits, probs, ids, torch.zeros_like(mask))) == 0.0


def test_alpha_zero_is_plain_cross_entropy():
    model = tiny_seq2seq(3)
    generator = torch.Generator().manual_seed(0)
    batch = {
        "source_ids": torch.randint(5, 99, (2, 6), generator=generator),
        "attention_mask": torch.ones(2, 6, dtype=torch.long),
        "decoder_input_ids": torch.randint(5, 99, (2, 4), generator=generator),
        "labels": torch.tensor([[7, 8, 9, 3], [10, 3, -100, -100]]),
    }
    objective = Seq2SeqObjective(model, alpha=0.0, tokenizer=None)
    losses = objective(batch, generator)
    total = weighted_sum(losses, objective.weights)
    logits = model(batch["source_ids"], batch["attention_mask"], batch["decoder_input_ids"])
    expected = F.cross_entropy(logits.reshape(-1, 99), batch["labels"].view(-1), ignore_index=-100)
    assert set(losses) == {"nll"}
    assert torch.allclose(total, expected, atol=1e-6)
    # alpha mixes: alpha * kd + (1 - alpha) * nll
    batch["topk_probs"] = torch.rand(2, 4, 3, generator=generator)
    batch["topk_ids"] = torch.randint(0, 99, (2, 4, 3), generator=generator)
    mixed = Seq2SeqObjective(model, alpha=0.3, tokenizer=None)
    parts = mixed(batch, generator)
    kd = topk_kl_loss(logits, batch["topk_probs"], batch["topk_ids"], batch["labels"] != -100)
    assert torch.allclose(weighted_sum(parts, mixed.weights), 0.3 * kd + 0.7 * expected, atol=1e-5)
