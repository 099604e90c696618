"""Training objectives: a batch in, a dict of named (unweighted) losses out.

Each objective is an :class:`~distilkit.train.trainer.Objective` module that owns the trainable
parameters (the student and any projections) and keeps the teacher outside them, frozen.
The training loop weights the losses with ``objective.weights``.

* :class:`GeneralDistillation` — DistilBERT's task-agnostic recipe on masked text:
  ``ce`` soft targets at temperature T over the masked positions, ``mlm`` masked-LM
  cross-entropy, ``cos`` cosine between last hidden states, plus optional ``mse`` on the
  last hidden state, ``hidden`` MSE over mapped intermediate layers, and two losses on
  mean-pooled sentence vectors: ``sentence`` (their cosine) and ``similarity`` (the
  in-batch similarity structure), and ``relations``: MiniLMv2's query-query, key-key and
  value-value self-attention relations of the student's last block against one teacher
  block (the teacher all-MiniLM-L6-v2 descends from a model distilled this way), and
  ``pairs``: each batch gains a view of every sequence with a span deleted, every loss
  sees both, and the student's cosine between a sentence and its view is matched to the
  teacher's (graded similarities, as STS-type tasks score), and ``matryoshka``: for each
  prefix width in ``matryoshka_dims``, the student's sentence vector cut to that many
  values and renormalised keeps the teacher's in-batch similarity structure (so the
  saved student's vectors can be truncated).
* :class:`MaskedLMFitting` — masked-LM training of one model (fitting an MLM head to a
  teacher that has none, optionally unfreezing its top layers).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from distilkit.data.masking import MaskingConfig, mask_tokens, span_deleted_views
from distilkit.data.target_cache import TargetCache, complete_targets
from distilkit.model.checkpoint import load_student_weights, save_model
from distilkit.model.layer_map import LayerMap
from distilkit.model.modeling import EncoderOutput, TransformerModel, pool
from distilkit.model.st_folder import SentenceModules
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import ConfigError, build_nested
from distilkit.train.losses import (
    cosine_hidden_loss,
    hidden_mse_loss,
    matryoshka_similarity_loss,
    mlm_loss,
    pair_cosine_loss,
    self_attention_relation_loss,
    sentence_cosine_loss,
    similarity_structure_loss,
    soft_target_loss,
)
from distilkit.train.trainer import Objective

EXTRAS_FILE = "objective_extras.safetensors"


@dataclass
class DistillationWeights:
    """Loss weights of general distillation (DistilBERT's defaults: 5, 2, 1)."""

    ce: float = 5.0
    mlm: float = 2.0
    cos: float = 1.0
    mse: float = 0.0
    hidden: float = 0.0
    sentence: float = 0.0  # 1 - cos of mean-pooled sentence vectors
    similarity: float = 0.0  # in-batch similarity-matrix MSE (Tung & Mori, 2019)
    relations: float = 0.0  # MiniLMv2: Q-Q + K-K + V-V relation KL of the last block
    pairs: float = 0.0  # cosine of each sentence with its shortened view, vs the teacher's
    matryoshka: float = 0.0  # similarity structure of each prefix in matryoshka_dims


@dataclass
class GeneralDistillationConfig:
    """Options of :class:`GeneralDistillation` (saved with every checkpoint)."""

    temperature: float = 2.0
    weights: DistillationWeights = field(default_factory=DistillationWeights)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    mask_inputs: bool | None = None  # None: mask when an MLM-based loss is in use
    hidden_layer_map: list[list[int]] | None = None  # pairs (student, teacher) for "hidden"
    relation_heads: int | None = None  # None: the student's number of attention heads
    relation_teacher_layer: int | None = None  # teacher block (1-based) for "relations"; None: last
    view_deletion: float = 0.25  # share of a sentence's tokens a "pairs" view drops
    # Prefix widths of the sentence vector the "matryoshka" loss teaches (384,256,128,64)
    matryoshka_dims: list[int] | None = None

    def __post_init__(self) -> None:
        build_nested(self)
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"temperature must be a finite number > 0, got {self.temperature}")
        dims = self.matryoshka_dims
        if dims is not None and (
            not dims or len(set(dims)) != len(dims) or any(d < 1 for d in dims)
        ):
            raise ConfigError(
                f"matryoshka_dims must be distinct widths >= 1 such as 384,256,128,64, got {dims}"
            )
        if bool(dims) != bool(self.weights.matryoshka):
            raise ConfigError(
                "the matryoshka loss needs both its widths and a weight: --matryoshka "
                "384,256,128,64 sets both (matryoshka_dims "
                f"{dims}, weight {self.weights.matryoshka:g})"
            )


def masked_lm_metrics(
    model: TransformerModel, tokenizer: Tokenizer, batches: Sequence[dict[str, torch.Tensor]]
) -> dict[str, float]:
    """Held-out masked-token loss and top-1 accuracy of ``model``'s MLM head, with masks
    drawn from a fixed seed (the same positions every evaluation)."""
    generator = torch.Generator().manual_seed(12345)
    total = correct = count = 0.0
    for batch in batches:
        masked, labels = mask_tokens(
            batch["input_ids"],
            batch["attention_mask"],
            tokenizer.special_ids,
            tokenizer.mask_id,
            model.config.vocab_size,
            MaskingConfig(),
            generator,
        )
        hidden = model.backbone(masked, batch["attention_mask"]).last_hidden_state
        selected = labels != -100
        logits = model.mlm_logits(hidden[selected])
        n = int(selected.sum())
        total += float(mlm_loss(logits, labels[selected])) * n
        correct += float((logits.argmax(-1) == labels[selected]).sum())
        count += n
    return {"mlm_loss": total / max(count, 1), "mlm_accuracy": correct / max(count, 1)}


def _clone_output(output):
    """A backbone output with its tensors cloned (normal tensors, usable by autograd)."""
    hidden = output.hidden_states
    return dataclasses.replace(
        output,
        last_hidden_state=output.last_hidden_state.clone(),
        hidden_states=tuple(h.clone() for h in hidden) if hidden is not None else None,
        attentions=(
            tuple(a.clone() for a in output.attentions) if output.attentions is not None else None
        ),
    )


def _recipe(model: TransformerModel) -> SentenceModules:
    """How ``model``'s token vectors become its sentence vector (mean pooling if unknown)."""
    return getattr(model, "sentence_modules", None) or SentenceModules()


class GeneralDistillation(Objective):
    """DistilBERT's triple loss (and hidden-state extras) on masked text."""

    def __init__(
        self,
        teacher: TransformerModel,
        student: TransformerModel,
        tokenizer: Tokenizer,
        config: GeneralDistillationConfig | None = None,
        token_weights: torch.Tensor | None = None,
    ):
        super().__init__()
        config = config or GeneralDistillationConfig()
        if teacher.config.vocab_size != student.config.vocab_size:
            raise ValueError(
                f"the teacher's vocabulary has {teacher.config.vocab_size:,} entries but the "
                f"student's has {student.config.vocab_size:,}: teacher and student must share "
                "a vocabulary"
            )
        self.config = config
        self.student = student
        self._teacher = [teacher.eval().requires_grad_(False)]  # not a registered submodule
        self.tokenizer = tokenizer
        self.token_weights = token_weights
        self.notes: list[str] = []
        self.target_cache: TargetCache | None = None  # the teacher's cached last hidden states
        # training rows seen, and those the teacher ran on (the rest came from the cache)
        self.teacher_rows = {"seen": 0, "live": 0}
        weights = {k: float(v) for k, v in vars(config.weights).items() if v}
        teacher_mlm = teacher.config.head == "masked_lm"
        student_mlm = student.config.head == "masked_lm"
        if "ce" in weights and not (teacher_mlm and student_mlm):
            del weights["ce"]
            self.notes.append(
                "no soft-target loss: "
                + (
                    "the teacher has no masked-LM head (fit one with `distilkit fit-mlm-head`)"
                    if not teacher_mlm
                    else "the student has no masked-LM head"
                )
            )
        if "mlm" in weights and not student_mlm:
            del weights["mlm"]
            self.notes.append("no masked-LM loss: the student has no masked-LM head")
        if not weights:
            raise ValueError("every loss weight is zero or unavailable: nothing to train on")
        self.weights = weights
        self.mask_inputs = (
            config.mask_inputs
            if config.mask_inputs is not None
            else bool({"ce", "mlm"} & set(weights))
        )
        student_width, teacher_width = student.config.hidden_size, teacher.config.hidden_size
        self.projection = (
            nn.Linear(student_width, teacher_width) if student_width != teacher_width else None
        )
        self.layer_map = None
        if "hidden" in weights:
            pairs = config.hidden_layer_map
            if pairs is None:
                raise ValueError(
                    "the 'hidden' loss needs hidden_layer_map pairs (student, teacher)"
                )
            self.layer_map = LayerMap.from_list(pairs)
            self.layer_map.validate(student.config.num_layers, teacher.config.num_layers)
        if "pairs" in weights and not 0.0 < config.view_deletion < 1.0:
            raise ValueError(
                f"view_deletion must be between 0 and 1 (the share of tokens a view drops), "
                f"got {config.view_deletion}"
            )
        self.relation_teacher_layer = self.relation_heads = 0
        if "relations" in weights:
            layer = config.relation_teacher_layer or teacher.config.num_layers
            if not 1 <= layer <= teacher.config.num_layers:
                raise ValueError(
                    f"relation_teacher_layer={layer} is out of range: the teacher has blocks "
                    f"1 to {teacher.config.num_layers}"
                )
            heads = config.relation_heads or student.config.num_heads
            if student_width % heads or teacher_width % heads:
                raise ValueError(
                    f"relation_heads={heads} must divide both the student's width "
                    f"({student_width}) and the teacher's ({teacher_width})"
                )
            self.relation_teacher_layer, self.relation_heads = layer, heads
        self.matryoshka_dims = list(config.matryoshka_dims or [])
        if "matryoshka" in weights:
            width = _recipe(student).output_dim(student_width)
            if max(self.matryoshka_dims) > width:
                raise ValueError(
                    f"matryoshka_dims {self.matryoshka_dims} must not exceed the student's "
                    f"sentence vector ({width} values)"
                )
            # saved with the student (config_sentence_transformers.json), for embed/serve
            student.sentence_modules = dataclasses.replace(
                _recipe(student), matryoshka_dims=tuple(sorted(self.matryoshka_dims, reverse=True))
            )

    @property
    def teacher(self) -> TransformerModel:
        return self._teacher[0]

    def target_cache_blocker(self) -> str | None:
        """Why the teacher's last hidden states cannot be cached for this objective (None:
        they can): inputs masked afresh each step, or a loss that needs more of the teacher."""
        if self.mask_inputs:
            return "the inputs are masked afresh every step (an MLM loss, or mask_inputs)"
        more = [name for name in ("hidden", "relations", "pairs") if name in self.weights]
        if more:
            return f"the {', '.join(more)} loss needs teacher outputs beyond its last hidden state"
        return None

    def use_target_cache(self, cache: TargetCache) -> None:
        """Read the teacher's last hidden states from ``cache`` (and fill it) from now on."""
        if (blocker := self.target_cache_blocker()) is not None:
            raise ValueError(f"the teacher-target cache cannot be used: {blocker}")
        self.target_cache = cache

    def _teacher_last(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """The teacher's last hidden state ``(batch, seq, hidden)``, usable by autograd."""
        with torch.inference_mode():
            hidden = self.teacher.backbone(input_ids, attention_mask).last_hidden_state
        return hidden.clone()

    def _mask(self, batch: dict[str, torch.Tensor], generator: torch.Generator):
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        if not self.mask_inputs:
            return input_ids, None
        return mask_tokens(
            input_ids,
            attention_mask,
            self.tokenizer.special_ids,
            self.tokenizer.mask_id,
            self.student.config.vocab_size,
            self.config.masking,
            generator,
            token_weights=self.token_weights,
        )

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        return self.forward_with_outputs(batch, generator)[0]

    def forward_with_outputs(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, layers: bool = False
    ) -> tuple[dict[str, torch.Tensor], tuple[EncoderOutput, EncoderOutput, torch.Tensor]]:
        """The losses, and the outputs they came from: ``(teacher, student, attention_mask)``
        of the inputs both models read. With ``layers``, both outputs keep every hidden state
        ``(B, T, H)`` and attention map ``(B, heads, T, T)``, so losses defined on them
        (MobileBERT's auxiliary transfer) need no second forward."""
        if layers and self.target_cache is not None:
            raise ValueError(
                "the teacher-target cache holds last hidden states only: "
                "layer outputs need the teacher run live"
            )
        batch_size = batch["input_ids"].shape[0]
        if "pairs" in self.weights:
            view_ids, view_mask = span_deleted_views(
                batch["input_ids"],
                batch["attention_mask"],
                self.config.view_deletion,
                self.tokenizer.pad_id,
                generator,
            )
            batch = {  # (2B, T): the sequences, then their views
                "input_ids": torch.cat([batch["input_ids"], view_ids]),
                "attention_mask": torch.cat([batch["attention_mask"], view_mask]),
            }
        attention_mask = batch["attention_mask"]
        input_ids, labels = self._mask(batch, generator)
        need_all_hidden = layers or self.layer_map is not None or "relations" in self.weights
        self.teacher_rows["seen"] += input_ids.shape[0]
        if self.target_cache is not None and "teacher_hidden" in batch:
            self.teacher_rows["live"] += len(batch["teacher_missing"])
            teacher_out = EncoderOutput(
                complete_targets(self.target_cache, batch, self._teacher_last)
            )
        else:
            self.teacher_rows["live"] += input_ids.shape[0]
            # the teacher under inference mode; what the losses keep of it is cloned out of
            # it (inference tensors cannot be saved for the student's backward)
            with torch.inference_mode():
                teacher_out = self.teacher.backbone(
                    input_ids,
                    attention_mask,
                    output_hidden_states=need_all_hidden,
                    output_attentions=layers,
                )
            teacher_out = _clone_output(teacher_out)
        student_out = self.student.backbone(
            input_ids,
            attention_mask,
            output_hidden_states=need_all_hidden,
            output_attentions=layers,
        )
        student_last = student_out.last_hidden_state  # (B, T, H_student)
        teacher_last = teacher_out.last_hidden_state  # (B, T, H_teacher)
        projected = self.projection(student_last) if self.projection is not None else student_last
        losses: dict[str, torch.Tensor] = {}
        if labels is not None and {"ce", "mlm"} & set(self.weights):
            selected = labels != -100  # (B, T): the masked positions only
            student_logits = self.student.mlm_logits(student_last[selected])  # (N, vocab)
            if "mlm" in self.weights:
                losses["mlm"] = mlm_loss(student_logits, labels[selected])
            if "ce" in self.weights:
                with torch.no_grad():
                    teacher_logits = self.teacher.mlm_logits(teacher_last[selected])
                losses["ce"] = soft_target_loss(
                    student_logits, teacher_logits, self.config.temperature
                )
        if "cos" in self.weights:
            losses["cos"] = cosine_hidden_loss(projected, teacher_last, attention_mask)
        if "mse" in self.weights:
            losses["mse"] = hidden_mse_loss(projected, teacher_last, attention_mask)
        if "sentence" in self.weights:
            losses["sentence"] = sentence_cosine_loss(projected, teacher_last, attention_mask)
        if "similarity" in self.weights:
            losses["similarity"] = similarity_structure_loss(
                student_last, teacher_last, attention_mask
            )
        if self.layer_map is not None:
            terms = [
                hidden_mse_loss(
                    self.projection(student_out.hidden_states[m.student])
                    if self.projection is not None
                    else student_out.hidden_states[m.student],
                    teacher_out.hidden_states[m.teacher],
                    attention_mask,
                )
                for m in self.layer_map.matches
            ]
            losses["hidden"] = torch.stack(terms).mean()
        if "relations" in self.weights:
            losses["relations"] = self._relations(
                student_out.hidden_states, teacher_out.hidden_states, attention_mask
            )
        if "pairs" in self.weights:
            student_vectors = pool(student_last, attention_mask, "mean")  # (2B, H_student)
            teacher_vectors = pool(teacher_last, attention_mask, "mean")  # (2B, H_teacher)
            losses["pairs"] = pair_cosine_loss(
                student_vectors[:batch_size],
                student_vectors[batch_size:],
                teacher_vectors[:batch_size],
                teacher_vectors[batch_size:],
            )
        if "matryoshka" in self.weights:
            # the saved sentence vectors (pooling and Dense of each model's own recipe),
            # before their Normalize: the loss renormalises each prefix itself
            losses["matryoshka"] = matryoshka_similarity_loss(
                _recipe(self.student).encode(student_last, attention_mask, normalize=False),
                _recipe(self.teacher).encode(teacher_last, attention_mask, normalize=False),
                self.matryoshka_dims,
            )
        return losses, (teacher_out, student_out, attention_mask)

    def _relations(
        self,
        student_hidden: Sequence[torch.Tensor],
        teacher_hidden: Sequence[torch.Tensor],
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """MiniLMv2's loss: the Q-Q, K-K and V-V relation KLs, summed, between the
        student's last block and teacher block ``relation_teacher_layer``. Each block's
        projections are applied to its input hidden state ``(batch, seq, width)``."""
        student_block = self.student.backbone.layers[-1].attention
        teacher_index = self.relation_teacher_layer - 1
        teacher_block = self.teacher.backbone.layers[teacher_index].attention
        student_input = student_hidden[-2]  # the input of the last block
        teacher_input = teacher_hidden[teacher_index]
        total = student_input.new_zeros(())
        for name in ("query", "key", "value"):
            student_vectors = getattr(student_block, name)(student_input)
            with torch.no_grad():
                teacher_vectors = getattr(teacher_block, name)(teacher_input)
            total = total + self_attention_relation_loss(
                student_vectors, teacher_vectors, attention_mask, self.relation_heads
            )
        return total

    @torch.no_grad()
    def evaluate(self, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Held-out metrics with fixed masks: token and sentence cosine to the teacher,
        and (with an MLM head) masked-token loss and top-1 accuracy."""
        token_cos = sentence_cos = 0.0
        for batch in batches:
            attention_mask = batch["attention_mask"]
            teacher_hidden = self.teacher.backbone(
                batch["input_ids"], attention_mask
            ).last_hidden_state
            student_hidden = self.student.backbone(
                batch["input_ids"], attention_mask
            ).last_hidden_state
            if self.projection is not None:
                student_hidden = self.projection(student_hidden)
            token_cos += 1 - float(
                cosine_hidden_loss(student_hidden, teacher_hidden, attention_mask)
            )
            sentence_cos += float(
                torch.nn.functional.cosine_similarity(
                    pool(student_hidden, attention_mask), pool(teacher_hidden, attention_mask)
                ).mean()
            )
        metrics = {
            "token_cosine": token_cos / len(batches),
            "sentence_cosine": sentence_cos / len(batches),
        }
        if self.student.config.head == "masked_lm":
            metrics |= masked_lm_metrics(self.student, self.tokenizer, batches)
        return metrics

    def save(self, folder: Path) -> None:
        if self.target_cache is not None:  # a checkpoint's targets are marked done with it
            self.target_cache.flush()
        save_model(self.student, folder, tokenizer=self.tokenizer)
        if self.projection is not None:
            save_file(
                {k: v.contiguous() for k, v in self.projection.state_dict().items()},
                str(Path(folder) / EXTRAS_FILE),
            )

    def load(self, folder: Path) -> None:
        load_student_weights(self.student, Path(folder))
        if self.projection is not None:
            self.projection.load_state_dict(load_file(str(Path(folder) / EXTRAS_FILE)))


class MaskedLMFitting(Objective):
    """Masked-LM training of ``model`` alone (its own MLM head must exist).

    ``train_layers`` = number of top transformer blocks to unfreeze (0: the head only).
    """

    def __init__(
        self,
        model: TransformerModel,
        tokenizer: Tokenizer,
        train_layers: int = 0,
        masking: MaskingConfig | None = None,
    ):
        super().__init__()
        if model.config.head != "masked_lm":
            raise ValueError("MaskedLMFitting needs a model with a masked_lm head")
        if not 0 <= train_layers <= model.config.num_layers:
            raise ValueError(
                f"train_layers must be between 0 and {model.config.num_layers}, got {train_layers}"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.masking = masking or MaskingConfig()
        self.weights = {"mlm": 1.0}
        model.requires_grad_(False)
        model.head.requires_grad_(True)
        for block in model.backbone.layers[model.config.num_layers - train_layers :]:
            block.requires_grad_(True)
        # The decoder is tied to the word embeddings, which stay frozen: the head learns
        # its transform and bias around the teacher's own vocabulary vectors.

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator):
        masked, labels = mask_tokens(
            batch["input_ids"],
            batch["attention_mask"],
            self.tokenizer.special_ids,
            self.tokenizer.mask_id,
            self.model.config.vocab_size,
            self.masking,
            generator,
        )
        hidden = self.model.backbone(masked, batch["attention_mask"]).last_hidden_state
        selected = labels != -100
        return {"mlm": mlm_loss(self.model.mlm_logits(hidden[selected]), labels[selected])}

    @torch.no_grad()
    def evaluate(self, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        return masked_lm_metrics(self.model, self.tokenizer, batches)

    def save(self, folder: Path) -> None:
        save_model(self.model, folder, tokenizer=self.tokenizer)

    def load(self, folder: Path) -> None:
        load_student_weights(self.model, Path(folder))
