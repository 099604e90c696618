"""The C-MLM teacher: a BERT-style encoder fine-tuned as a *conditional* masked LM.

Input (Chen et al., 2020): ``[CLS] source [SEP] target [SEP]`` with segment (token
type) 0 on ``[CLS] source [SEP]`` and 1 on ``target [SEP]``. Only target tokens (and the
closing ``[SEP]``, the student's end-of-sequence) are ever masked; the loss is the
masked-LM cross-entropy on masked target positions (labels are -100 everywhere else),
through the encoder's masked-LM head (``load_model(..., head="masked_lm")`` adds one
tied to the word embeddings when the checkpoint has none, as ``fit-mlm-head`` does).

Training masks a uniformly drawn fraction of each target (from one token to all of
them, as in Mask-Predict), so the teacher serves both uses below:

* soft targets: for every target position, the distribution with that position masked;
  a sweep of ``passes`` forward passes masks positions ``i`` with ``i % passes == p`` in
  pass ``p`` (:func:`sweep_groups`), so each position is masked exactly once per sweep;
* iterative mask-predict decoding (Ghazvininejad et al., 2019), the way to *generate*
  with the teacher itself, timed against the distilled student.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from distilkit.model.checkpoint import load_student_weights, save_model
from distilkit.model.modeling import TransformerModel
from distilkit.model.tokenizer import Tokenizer
from distilkit.train.losses import mlm_loss
from distilkit.train.trainer import Objective


def build_cmlm_inputs(
    sources: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    cls_id: int,
    sep_id: int,
    pad_id: int,
) -> dict[str, torch.Tensor]:
    """Padded teacher inputs for (source, target) token ids (without special tokens).

    Returns ``input_ids``, ``token_type_ids``, ``attention_mask`` and ``target_mask``
    (1 on the target tokens and the closing [SEP]), all (batch, seq) int64, and
    ``target_start`` (batch,): the index of the first target token.
    """
    if len(sources) != len(targets):
        raise ValueError(f"got {len(sources)} sources but {len(targets)} targets")
    lengths = [len(s) + len(t) + 3 for s, t in zip(sources, targets, strict=True)]
    batch, seq = len(lengths), max(lengths, default=0)
    input_ids = torch.full((batch, seq), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((batch, seq), dtype=torch.long)
    attention_mask = torch.zeros((batch, seq), dtype=torch.long)
    target_mask = torch.zeros((batch, seq), dtype=torch.long)
    target_start = torch.zeros(batch, dtype=torch.long)
    for row, (source, target) in enumerate(zip(sources, targets, strict=True)):
        ids = [cls_id, *source, sep_id, *target, sep_id]
        start = len(source) + 2
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        token_type_ids[row, start : len(ids)] = 1
        target_mask[row, start : len(ids)] = 1
        target_start[row] = start
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
        "target_mask": target_mask,
        "target_start": target_start,
    }


def mask_targets(
    input_ids: torch.Tensor,
    target_mask: torch.Tensor,
    mask_id: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a uniformly drawn number (1 .. all) of each row's target positions.

    Returns ``(masked_ids, labels)``, both (batch, seq): labels hold the original id at
    masked positions and -100 everywhere else (source, specials, padding).
    """
    scores = torch.rand(input_ids.shape, generator=generator)
    scores = scores.masked_fill(target_mask == 0, 2.0)  # non-targets sort last
    counts = target_mask.sum(1)  # (B,)
    fraction = torch.rand(input_ids.shape[0], generator=generator)
    to_mask = (fraction * counts).ceil().clamp(min=1).long() * (counts > 0)  # (B,)
    ranks = scores.argsort(1).argsort(1)  # rank of each position among its row
    chosen = (ranks < to_mask[:, None]) & (target_mask == 1)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    return input_ids.masked_fill(chosen, mask_id), labels


def sweep_groups(target_length: int, passes: int) -> list[list[int]]:
    """Target offsets masked in each pass of a sweep: offset ``i`` in pass ``i % passes``;
    every offset is in exactly one group. Groups may be empty for short targets."""
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    return [list(range(p, target_length, passes)) for p in range(passes)]


def sweep_masks(target_mask: torch.Tensor, target_start: torch.Tensor, passes: int):
    """Yield, for each pass, a bool (batch, seq) mask of the target positions it masks."""
    offsets = torch.arange(target_mask.shape[1])[None, :] - target_start[:, None]  # (B, T)
    for p in range(passes):
        yield (target_mask == 1) & (offsets % passes == p)


@torch.no_grad()
def sweep_logits(
    model: TransformerModel,
    inputs: dict[str, torch.Tensor],
    mask_id: int,
    passes: int,
) -> torch.Tensor:
    """Teacher logits (positions, vocab) of every target position, each computed with
    its own sweep group masked; positions in row-major order of ``target_mask``."""
    selected = inputs["target_mask"] == 1
    out = None
    for group in sweep_masks(inputs["target_mask"], inputs["target_start"], passes):
        if not bool(group.any()):
            continue
        masked = inputs["input_ids"].masked_fill(group, mask_id)
        hidden = model.backbone(
            masked, inputs["attention_mask"], inputs["token_type_ids"]
        ).last_hidden_state
        logits = model.mlm_logits(hidden[group])  # (n, V)
        if out is None:
            out = logits.new_zeros(int(selected.sum()), logits.shape[-1])
        # rows of `group` within the row-major list of all target positions
        index = torch.cumsum(selected.view(-1).long(), 0) - 1
        out[index[group.view(-1)]] = logits
    if out is None:
        raise ValueError("the batch holds no target positions")
    return out


class CMLMTeacherObjective(Objective):
    """Conditional MLM fine-tuning: masked target tokens predicted from the source and
    the unmasked target tokens. ``train_layers`` top blocks and the head are trained; the
    embeddings (the head's decoder is tied to the word embeddings) only with
    ``train_embeddings`` (for a teacher that is not pretrained, as in the toy tests)."""

    def __init__(
        self,
        model: TransformerModel,
        tokenizer: Tokenizer,
        train_layers: int = 2,
        sweep_passes: int = 2,
        train_embeddings: bool = False,
    ):
        super().__init__()
        if model.config.head != "masked_lm":
            raise ValueError("the C-MLM teacher needs a masked_lm head")
        if not 0 <= train_layers <= model.config.num_layers:
            raise ValueError(
                f"train_layers must be from 0 to {model.config.num_layers}, got {train_layers}"
            )
        self.model, self.tokenizer = model, tokenizer
        self.sweep_passes = sweep_passes
        self.weights = {"cmlm": 1.0}
        model.requires_grad_(False)
        model.head.requires_grad_(True)
        model.backbone.embeddings.requires_grad_(train_embeddings)
        for block in model.backbone.layers[model.config.num_layers - train_layers :]:
            block.requires_grad_(True)
        self.frozen_layers = model.config.num_layers - train_layers

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator):
        masked, labels = mask_targets(
            batch["input_ids"], batch["target_mask"], self.tokenizer.mask_id, generator
        )
        hidden = self.model.backbone(
            masked, batch["attention_mask"], batch["token_type_ids"]
        ).last_hidden_state
        selected = labels != -100
        return {"cmlm": mlm_loss(self.model.mlm_logits(hidden[selected]), labels[selected])}

    @torch.no_grad()
    def evaluate(self, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Masked-token accuracy and loss over held-out batches, each target position
        predicted with its sweep group masked (deterministic)."""
        return sweep_accuracy(self.model, batches, self.tokenizer.mask_id, self.sweep_passes)

    def save(self, folder: Path) -> None:
        save_model(self.model, folder, tokenizer=self.tokenizer)

    def load(self, folder: Path) -> None:
        load_student_weights(self.model, Path(folder))


@torch.no_grad()
def sweep_accuracy(
    model: TransformerModel,
    batches: Sequence[dict[str, torch.Tensor]],
    mask_id: int,
    passes: int,
) -> dict[str, float]:
    """``cmlm_accuracy`` and ``cmlm_loss`` of target tokens predicted by the sweep."""
    correct = total = 0
    loss_sum = 0.0
    for batch in batches:
        logits = sweep_logits(model, batch, mask_id, passes)
        gold = batch["input_ids"][batch["target_mask"] == 1]
        correct += int((logits.argmax(-1) == gold).sum())
        loss_sum += float(F.cross_entropy(logits, gold, reduction="sum"))
        total += int(gold.numel())
    return {"cmlm_accuracy": correct / max(total, 1), "cmlm_loss": loss_sum / max(total, 1)}


@torch.no_grad()
def mask_predict(
    model: TransformerModel,
    sources: Sequence[Sequence[int]],
    lengths: Sequence[int],
    tokenizer: Tokenizer,
    iterations: int = 4,
) -> list[list[int]]:
    """Generate with the teacher alone by mask-predict (Ghazvininejad et al., 2019).

    Each target of ``lengths[i]`` tokens (the closing [SEP] excluded) starts all
    [MASK]; iteration ``t`` predicts every masked position, then re-masks the
    ``n * (T - t) / T`` least confident tokens. The length is given (here the gold one,
    which favours the teacher); returns the token ids of each target.
    """
    targets = [[tokenizer.mask_id] * n for n in lengths]
    inputs = build_cmlm_inputs(
        sources, targets, tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id
    )
    ids = inputs["input_ids"].clone()
    offsets = torch.arange(ids.shape[1])[None, :] - inputs["target_start"][:, None]
    body = (offsets >= 0) & (offsets < torch.tensor(lengths)[:, None])  # (B, T)
    confidence = torch.zeros(ids.shape)
    masked = body.clone()
    for step in range(iterations):
        hidden = model.backbone(
            ids, inputs["attention_mask"], inputs["token_type_ids"]
        ).last_hidden_state
        probs = model.mlm_logits(hidden[masked]).softmax(-1)  # (n, V)
        best, tokens = probs.max(-1)
        ids[masked], confidence[masked] = tokens, best
        if step == iterations - 1:
            break
        remask = (torch.tensor(lengths) * (iterations - 1 - step) // iterations).tolist()
        masked = torch.zeros_like(body)
        scores = confidence.masked_fill(~body, float("inf"))
        for row, count in enumerate(remask):
            if count:
                masked[row, scores[row].topk(count, largest=False).indices] = True
        ids = ids.masked_fill(masked, tokenizer.mask_id)
    return [ids[row][body[row]].tolist() for row in range(ids.shape[0])]


def token_counts(targets: Sequence[Sequence[int]], vocab_size: int) -> np.ndarray:
    """How often each token id occurs in the targets (for the head's initial bias)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for target in targets:
        np.add.at(counts, np.asarray(target, dtype=np.int64), 1)
    return counts


__all__ = [
    "CMLMTeacherObjective",
    "build_cmlm_inputs",
    "mask_predict",
    "mask_targets",
    "sweep_accuracy",
    "sweep_groups",
    "sweep_logits",
    "sweep_masks",
    "token_counts",
]
