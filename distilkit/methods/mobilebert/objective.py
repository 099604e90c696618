"""MobileBERT's layer-wise knowledge transfer as trainer objectives.

:class:`LayerTransfer` matches chosen student blocks to the teacher's blocks of the same
index: feature-map transfer on each block output (and optionally on the embedding
output) and attention transfer (KL per head) on each block's attention. Progressive
transfer gives it one block and freezes everything else; joint transfer gives it all
blocks. :class:`AuxiliaryTransfer` adds the layer-wise losses to general distillation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from distilkit.methods.general.objectives import GeneralDistillation
from distilkit.model.checkpoint import load_student_weights, save_model
from distilkit.model.modeling import EncoderOutput, TransformerModel
from distilkit.model.tokenizer import Tokenizer
from distilkit.train.losses import attention_prob_kl, feature_map_transfer_loss
from distilkit.train.trainer import Objective


class LayerTransfer(Objective):
    """``feature``: sum over ``blocks`` (and the embeddings if ``embeddings``) of
    :func:`~distilkit.losses.feature_map_transfer_loss`; ``attention``: sum over
    ``blocks`` of :func:`~distilkit.losses.attention_prob_kl` (KL(teacher || student)
    per head, padded keys and queries ignored). Blocks are 0-based; only the blocks up
    to the highest one named are run."""

    def __init__(
        self,
        teacher: TransformerModel,
        student: TransformerModel,
        tokenizer: Tokenizer,
        blocks: Sequence[int],
        embeddings: bool = False,
        feature_weight: float = 1.0,
        attention_weight: float = 1.0,
    ):
        super().__init__()
        if student.config.num_layers != teacher.config.num_layers:
            raise ValueError(
                f"layer-wise transfer pairs blocks one to one: the student has "
                f"{student.config.num_layers} blocks, the teacher {teacher.config.num_layers}"
            )
        if student.config.num_heads != teacher.config.num_heads:
            raise ValueError(
                f"attention transfer compares heads one to one: the student has "
                f"{student.config.num_heads} heads, the teacher {teacher.config.num_heads}"
            )
        if not blocks and not embeddings:
            raise ValueError("name at least one block or the embeddings to transfer")
        self.student = student
        self._teacher = [teacher.eval().requires_grad_(False)]  # not a registered submodule
        self.tokenizer = tokenizer
        self.blocks = sorted(blocks)
        self.embeddings = embeddings
        self.depth = self.blocks[-1] + 1 if self.blocks else 0
        self.weights = {"feature": feature_weight}
        if self.blocks:
            self.weights["attention"] = attention_weight

    @property
    def teacher(self) -> TransformerModel:
        return self._teacher[0]

    def _run(self, model: TransformerModel, batch: dict[str, torch.Tensor]):
        return model.backbone(
            batch["input_ids"],
            batch["attention_mask"],
            output_hidden_states=True,
            output_attentions=bool(self.blocks),
            layer_indices=range(self.depth),
        )

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            teacher = self._run(self.teacher, batch)
        student = self._run(self.student, batch)
        return self.losses(teacher, student, batch["attention_mask"])

    def losses(
        self, teacher: EncoderOutput, student: EncoderOutput, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The two losses from outputs both models already computed on the same inputs
        (hidden states ``(B, T, H)`` from the embeddings on, attentions ``(B, heads, T, T)``;
        ``mask`` ``(B, T)``)."""
        indices = ([-1] if self.embeddings else []) + self.blocks  # -1: the embedding output
        feature = sum(
            feature_map_transfer_loss(
                student.hidden_states[i + 1], teacher.hidden_states[i + 1], mask
            )
            for i in indices
        )
        losses = {"feature": feature}
        if self.blocks:
            losses["attention"] = sum(
                attention_prob_kl(student.attentions[i], teacher.attentions[i], mask)
                for i in self.blocks
            )
        return losses

    def evaluate(self, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Held-out transfer losses, ``feature`` and ``attention`` (the trainer logs them
        as ``eval/...``)."""
        was_training = self.training
        self.eval()
        totals: dict[str, float] = {}
        with torch.no_grad():
            for batch in batches:
                for name, value in self(batch).items():
                    totals[name] = totals.get(name, 0.0) + float(value) / len(batches)
        self.train(was_training)
        return totals

    def save(self, folder: Path) -> None:
        save_model(self.student, folder, tokenizer=self.tokenizer)

    def load(self, folder: Path) -> None:
        load_student_weights(self.student, Path(folder))


class AuxiliaryTransfer(Objective):
    """General distillation with the layer-wise losses of every block as auxiliary terms
    (the paper's auxiliary knowledge transfer): one stage, every parameter trained."""

    def __init__(self, general: GeneralDistillation, layers: LayerTransfer):
        super().__init__()
        if general.student is not layers.student:
            raise ValueError("both objectives must train the same student")
        self.general, self.layers = general, layers
        self.weights = {**general.weights, **layers.weights}

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """One forward of each model serves both: the layer-wise losses read the hidden
        states and attentions of the inputs general distillation ran on."""
        losses, outputs = self.general.forward_with_outputs(batch, generator, layers=True)
        return {**losses, **self.layers.losses(*outputs)}

    def evaluate(self, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        return {**self.general.evaluate(batches), **self.layers.evaluate(batches)}

    def save(self, folder: Path) -> None:
        self.general.save(folder)

    def load(self, folder: Path) -> None:
        self.general.load(folder)
