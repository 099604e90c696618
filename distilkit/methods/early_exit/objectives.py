"""FastBERT's self-distillation: the branches learn the final classifier's soft targets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from distilkit.data.batching import LengthGroupedSampler
from distilkit.methods.early_exit.model import EarlyExitError, EarlyExitModel
from distilkit.model.modeling import EncoderOutput
from distilkit.model.tokenizer import Tokenizer
from distilkit.train.losses import soft_target_loss
from distilkit.train.trainer import Objective, Trainer, TrainingConfig, TrainResult


# ----------------------------------------------------------------------------- training
class SelfDistillationObjective(Objective):
    """Trains the branches of an :class:`EarlyExitModel` towards the final classifier.

    Loss ``kl``: the mean over branches of ``soft_target_loss(branch_logits,
    final_logits, temperature)``. The model (backbone and head) is frozen and kept in
    eval mode, so no dropout disturbs the targets; batches need no labels.
    """

    def __init__(self, model: EarlyExitModel, tokenizer: Tokenizer, temperature: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise EarlyExitError(f"temperature must be > 0, got {temperature}")
        self.early_exit = model
        self.tokenizer = tokenizer
        self.temperature = temperature
        self.weights = {"kl": 1.0}
        model.model.requires_grad_(False)
        model.branches.requires_grad_(True)

    def train(self, mode: bool = True) -> SelfDistillationObjective:
        super().train(mode)
        self.early_exit.model.eval()  # frozen, deterministic targets
        return self

    def _targets(self, batch: dict[str, torch.Tensor]) -> tuple[EncoderOutput, torch.Tensor]:
        model = self.early_exit.model
        with torch.no_grad():
            encoded = model.backbone(
                batch["input_ids"],
                batch["attention_mask"],
                batch.get("token_type_ids"),
                output_hidden_states=True,
            )
            return encoded, model.head(encoded)

    def _branch_logits(
        self, encoded: EncoderOutput, attention_mask: torch.Tensor
    ) -> list[torch.Tensor]:
        key_mask = attention_mask.bool()[:, None, None, :]
        return [
            branch(encoded.hidden_states[index + 1], key_mask)
            for index, branch in enumerate(self.early_exit.branches)
        ]

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        encoded, final_logits = self._targets(batch)
        losses = [
            soft_target_loss(logits, final_logits, self.temperature)
            for logits in self._branch_logits(encoded, batch["attention_mask"])
        ]
        return {"kl": torch.stack(losses).mean()}

    @torch.no_grad()
    def evaluate(self, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Per branch, how often its prediction equals the final classifier's."""
        agree = torch.zeros(len(self.early_exit.branches))
        count = 0
        for batch in batches:
            encoded, final_logits = self._targets(batch)
            final = final_logits.argmax(-1)
            for index, logits in enumerate(self._branch_logits(encoded, batch["attention_mask"])):
                agree[index] += float((logits.argmax(-1) == final).sum())
            count += len(final)
        return {
            f"layer{index + 1}_agreement": float(value) / max(count, 1)
            for index, value in enumerate(agree)
        }

    def save(self, folder: Path) -> None:
        self.early_exit.save(folder, tokenizer=self.tokenizer)

    def load(self, folder: Path) -> None:
        self.early_exit.load_branches(folder)


def train_branches(
    model: EarlyExitModel,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    out_dir: str | os.PathLike,
    training: TrainingConfig,
    temperature: float = 1.0,
    max_length: int = 128,
    eval_texts: Sequence[str] | None = None,
    resume: bool = True,
) -> TrainResult:
    """Self-distil the branches on unlabeled ``texts`` with the one training loop.

    Batches group texts of similar length; checkpoints (model + branches) and the JSONL
    log go to ``out_dir``; ``eval_texts`` give the per-branch agreement in the log.
    """
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise EarlyExitError("no (non-empty) texts to train the branches on")
    lengths = [min(len(ids) + 2, max_length) for ids in tokenizer.encode_ids(texts)]
    sampler = LengthGroupedSampler(lengths, training.batch_size, seed=training.seed)

    def collate(items: list[str]) -> dict[str, torch.Tensor]:
        batch = tokenizer(items, max_length=max_length, warn_on_truncation=False)
        return {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }

    eval_batches = [
        collate(list(eval_texts[start : start + 64]))
        for start in range(0, len(eval_texts or []), 64)
    ]
    objective = SelfDistillationObjective(model, tokenizer, temperature)
    trainer = Trainer(
        objective,
        texts,
        sampler,
        collate,
        training,
        out_dir,
        eval_batches=eval_batches,
        run_config={
            "early_exit": {
                "branch": asdict(model.branch_config),
                "temperature": temperature,
                "max_length": max_length,
                "texts": len(texts),
            }
        },
    )
    return trainer.run(resume=resume)
