"""Training the seq2seq student: pairs as tensors, and the objective
``alpha * KL(teacher top-k || student) + (1 - alpha) * NLL(ground truth)`` under teacher
forcing (alpha = 0: plain cross-entropy, the baseline without a teacher)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from distilkit.methods.cmlm.seq2seq import Seq2Seq, greedy_decode, load_seq2seq
from distilkit.methods.cmlm.topk_cache import TopKTargets
from distilkit.settings import ConfigError
from distilkit.train.losses import mlm_loss, topk_kl_loss
from distilkit.train.trainer import Objective


def truncate_around(ids: list[int], anchor_id: int | None, max_length: int) -> list[int]:
    """At most ``max_length`` ids; a long sequence keeps a window that starts a third of
    the window before the first ``anchor_id`` (the answer marker), else its head."""
    if len(ids) <= max_length:
        return list(ids)
    anchor = ids.index(anchor_id) if anchor_id is not None and anchor_id in ids else 0
    start = max(0, min(anchor - max_length // 3, len(ids) - max_length))
    return list(ids[start : start + max_length])


class PairDataset:
    """Item ``i``: source ids, target ids (no special tokens) and, with a teacher, the
    top-k soft targets of its target positions."""

    def __init__(
        self,
        sources: Sequence[list[int]],
        targets: Sequence[list[int]],
        topk: TopKTargets | None = None,
    ):
        self.sources, self.targets, self.topk = sources, targets, topk
        self.lengths = np.array([len(s) + len(t) for s, t in zip(sources, targets, strict=True)])

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict:
        item = {"source": self.sources[index], "target": self.targets[index]}
        if self.topk is not None:
            item["topk_probs"], item["topk_ids"] = self.topk.pair(index)
        return item


def collate_pairs(items: list[dict], pad_id: int, bos_id: int, eos_id: int) -> dict:
    """Batch tensors: ``source_ids``/``attention_mask`` (B, S); ``decoder_input_ids``
    ([bos] + target) and ``labels`` (target + [eos], -100 on padding), (B, T); with a
    teacher ``topk_probs`` float (B, T, k) and ``topk_ids`` int64 (B, T, k)."""
    batch = len(items)
    source_length = max(len(item["source"]) + 2 for item in items)
    target_length = max(len(item["target"]) + 1 for item in items)
    source_ids = torch.full((batch, source_length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, source_length), dtype=torch.long)
    decoder_input_ids = torch.full((batch, target_length), pad_id, dtype=torch.long)
    labels = torch.full((batch, target_length), -100, dtype=torch.long)
    out = {}
    if "topk_probs" in items[0]:
        k = items[0]["topk_probs"].shape[1]
        out["topk_probs"] = torch.zeros((batch, target_length, k))
        out["topk_ids"] = torch.zeros((batch, target_length, k), dtype=torch.long)
    for row, item in enumerate(items):
        source = [bos_id, *item["source"], eos_id]
        source_ids[row, : len(source)] = torch.tensor(source)
        attention_mask[row, : len(source)] = 1
        n = len(item["target"]) + 1
        decoder_input_ids[row, :n] = torch.tensor([bos_id, *item["target"]])
        labels[row, :n] = torch.tensor([*item["target"], eos_id])
        if "topk_probs" in out:
            out["topk_probs"][row, :n] = torch.from_numpy(np.array(item["topk_probs"]))
            out["topk_ids"][row, :n] = torch.from_numpy(np.array(item["topk_ids"], dtype=np.int64))
    return {
        "source_ids": source_ids,
        "attention_mask": attention_mask,
        "decoder_input_ids": decoder_input_ids,
        "labels": labels,
        **out,
    }


def cmlm_losses(
    logits: torch.Tensor,
    labels: torch.Tensor,
    topk_probs: torch.Tensor | None,
    topk_ids: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """``nll`` (cross-entropy on the labels) and, given teacher top-k, ``kd`` (top-k KL on
    the same positions). logits (B, T, V); labels (B, T) with -100 on padding."""
    losses = {"nll": mlm_loss(logits, labels)}
    if topk_probs is not None and topk_ids is not None:
        losses["kd"] = topk_kl_loss(logits, topk_probs, topk_ids, labels != -100)
    return losses


class Seq2SeqObjective(Objective):
    """Teacher-forced student training; ``alpha`` weighs the teacher's soft targets."""

    def __init__(self, model: Seq2Seq, alpha: float, tokenizer, eval_max_length: int = 32):
        super().__init__()
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.model, self.alpha, self.tokenizer = model, alpha, tokenizer
        self.eval_max_length = eval_max_length
        self.weights = {"nll": 1.0 - alpha} | ({"kd": alpha} if alpha > 0 else {})

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator):
        logits = self.model(
            batch["source_ids"], batch["attention_mask"], batch["decoder_input_ids"]
        )
        if self.alpha > 0:
            return cmlm_losses(logits, batch["labels"], batch["topk_probs"], batch["topk_ids"])
        return cmlm_losses(logits, batch["labels"], None, None)

    @torch.no_grad()
    def evaluate(self, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Held-out token NLL, and exact match of greedy decodes."""
        nll_sum = count = exact = rows = 0.0
        for batch in batches:
            logits = self.model(
                batch["source_ids"], batch["attention_mask"], batch["decoder_input_ids"]
            )
            selected = batch["labels"] != -100
            nll_sum += float(
                F.cross_entropy(logits[selected], batch["labels"][selected], reduction="sum")
            )
            count += int(selected.sum())
            decoded = greedy_decode(
                self.model, batch["source_ids"], batch["attention_mask"], self.eval_max_length
            )
            for row, tokens in enumerate(decoded):
                gold = batch["labels"][row][selected[row]].tolist()[:-1]
                exact += tokens == gold
                rows += 1
        return {"nll": nll_sum / max(count, 1), "exact_match": exact / max(rows, 1)}

    def save(self, folder: Path) -> None:
        self.model.save(folder, tokenizer=self.tokenizer)

    def load(self, folder: Path) -> None:
        saved = load_seq2seq(folder)
        if saved.config.copy_source != self.model.config.copy_source:
            flag = "--copy-source" if saved.config.copy_source else "--no-copy-source"
            raise ConfigError(
                f"{folder} holds a student saved with copy_source={saved.config.copy_source}: "
                f"resume with {flag}, or start afresh with --no-resume or another --out"
            )
        self.model.load_state_dict(saved.state_dict())


__all__ = [
    "PairDataset",
    "Seq2SeqObjective",
    "cmlm_losses",
    "collate_pairs",
    "truncate_around",
]
