"""FastBERT-style adaptive early exit for a fine-tuned sequence classifier.

A small classifier (a "branch") sits after every transformer block but the last, where
the model's own head already is. The branches are trained by self-distillation: on
unlabeled text, each branch's prediction is pulled (KL divergence) towards the soft
prediction of the final classifier, with the backbone and its head frozen, so the
model's full-depth predictions do not change at all (Liu et al., 2020, FastBERT).

At inference, after each block every example still running asks its branch how sure it
is: the normalised entropy of the branch's prediction, ``H(p) / log(num_labels)`` in
[0, 1]. Examples below the threshold ("speed") return that prediction; the others go on
to the next block **as a smaller batch** (the finished rows, and any padding columns
only they needed, are dropped), so a batch costs what its hard examples cost. FastBERT's
own code exits only when a whole batch is sure. Threshold 0 never exits early (and
skips the branches); threshold 1 exits every example after the first block.

Because an example's branch predictions do not depend on which other examples share its
batch, the outcome of any threshold can be computed exactly from the predictions of every
classifier on every example (:meth:`EarlyExitModel.layer_logits`):
:mod:`distilkit.methods.early_exit.curves` turns them into the accuracy against
average-layers curve and the threshold for a target speed-up without re-running the model.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from distilkit.model.checkpoint import load_model, save_model
from distilkit.model.modeling import EncoderOutput, TransformerModel
from distilkit.model.onednn import use_onednn
from distilkit.model.packing import Padding
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import from_dict

BRANCHES_FILE = "early_exit.safetensors"
SETTINGS_FILE = "early_exit.json"


class EarlyExitError(ValueError):
    """A model cannot take early-exit branches, or branch files do not fit the model."""


@dataclass
class BranchConfig:
    """Shape of the branch classifiers (FastBERT's: 128 wide, 2 attention heads) and the
    seed of their initialisation."""

    width: int = 128
    num_heads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.width < 1 or self.num_heads < 1 or self.width % self.num_heads:
            raise EarlyExitError(
                f"branch width {self.width} must be a positive multiple of num_heads "
                f"{self.num_heads}"
            )


class Branch(nn.Module):
    """One early classifier: ``(batch, seq, hidden)`` -> ``(batch, num_labels)`` logits.

    The token vectors are projected to ``width``; the [CLS] position attends over all
    real tokens (FastBERT's small self-attention, of which only the [CLS] output is
    used); a tanh layer and a linear classifier follow.
    """

    def __init__(self, hidden_size: int, num_labels: int, config: BranchConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.project = nn.Linear(hidden_size, config.width)
        self.query = nn.Linear(config.width, config.width)
        self.key = nn.Linear(config.width, config.width)
        self.value = nn.Linear(config.width, config.width)
        self.dense = nn.Linear(config.width, config.width)
        self.classifier = nn.Linear(config.width, num_labels)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """``hidden`` (B, T, H); ``key_mask`` (B, 1, 1, T) bool, True at real tokens, or None."""
        return self.classify(self.project(hidden), key_mask)

    def forward_packed(self, packed: torch.Tensor, padding: Padding) -> torch.Tensor:
        """The same on the fast path's packed ``(tokens, H)``: projected before padding, so
        only ``width``-sized vectors are copied into the padded layout."""
        return self.classify(padding.pad(self.project(packed)), padding.key_mask)

    def classify(self, tokens: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """Projected tokens ``(B, T, width)`` -> ``(B, num_labels)``."""
        batch, seq, _ = tokens.shape
        head_dim = tokens.shape[-1] // self.num_heads
        query = self.query(tokens[:, :1]).view(batch, 1, self.num_heads, head_dim)
        key = self.key(tokens).view(batch, seq, self.num_heads, head_dim)
        value = self.value(tokens).view(batch, seq, self.num_heads, head_dim)
        context = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_mask=key_mask
        )  # (B, heads, 1, head_dim)
        context = context.reshape(batch, -1)  # (B, W)
        return self.classifier(torch.tanh(self.dense(context)))


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``H(softmax(logits)) / log(num_labels)``: (..., num_labels) -> (...) float32 in [0, 1]."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return -(log_probs.exp() * log_probs).sum(-1) / math.log(logits.shape[-1])


@dataclass
class EarlyExitOutput:
    """logits: (batch, num_labels) float32 of the classifier each example left by;
    exit_layers: (batch,) int64, the number of blocks it ran (1 .. num_layers);
    entropy: (batch,) its normalised prediction entropy there."""

    logits: torch.Tensor
    exit_layers: torch.Tensor
    entropy: torch.Tensor

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(-1)


def _padding(attention_mask: torch.Tensor) -> Padding:
    """The fast path's packing plan for a ``(batch, seq)`` bool mask."""
    batch, seq = attention_mask.shape
    if bool(attention_mask.all()):
        return Padding(batch=batch, seq=seq)
    return Padding(
        batch=batch,
        seq=seq,
        indices=attention_mask.reshape(-1).nonzero().squeeze(1),
        key_mask=attention_mask[:, None, None, :],
    )


class EarlyExitModel(nn.Module):
    """A fine-tuned sequence classifier plus one :class:`Branch` after each block but the
    last. ``threshold`` is the default exit threshold of :meth:`forward`."""

    def __init__(
        self,
        model: TransformerModel,
        branch_config: BranchConfig | None = None,
        threshold: float = 0.0,
    ):
        super().__init__()
        config = model.config
        if config.head != "sequence_classification":
            raise EarlyExitError(
                f"early exit needs a sequence-classification model, got head {config.head!r}: "
                "fine-tune a classifier first"
            )
        if config.num_labels < 2:
            raise EarlyExitError(
                "early exit needs at least 2 classes (it exits on prediction entropy); "
                f"this model has num_labels={config.num_labels} (regression)"
            )
        if config.num_layers < 2:
            raise EarlyExitError("early exit needs a model with at least 2 layers")
        self.model = model
        self.branch_config = branch_config or BranchConfig()
        self.threshold = _check_threshold(threshold)
        self.branches = nn.ModuleList(
            Branch(config.hidden_size, config.num_labels, self.branch_config)
            for _ in range(config.num_layers - 1)
        )
        generator = torch.Generator().manual_seed(self.branch_config.seed)
        with torch.no_grad():
            for module in self.branches.modules():
                if isinstance(module, nn.Linear):
                    module.weight.normal_(0.0, config.initializer_range, generator=generator)
                    module.bias.zero_()

    @property
    def num_layers(self) -> int:
        return self.model.config.num_layers

    def _final_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The model's own head on the last block's ``(B, T, H)`` output."""
        backbone = self.model.backbone
        pooled = backbone.pooler(hidden) if backbone.pooler is not None else None
        return self.model.head(EncoderOutput(last_hidden_state=hidden, pooled_output=pooled))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        threshold: float | None = None,
    ) -> EarlyExitOutput:
        """Batched adaptive inference on ``(batch, seq)`` inputs; see the module docstring."""
        threshold = self.threshold if threshold is None else _check_threshold(threshold)
        _check_inputs(input_ids, attention_mask, self.model.config.vocab_size)
        batch = input_ids.shape[0]
        mask = (
            torch.ones_like(input_ids, dtype=torch.bool)
            if attention_mask is None
            else attention_mask.bool()
        )
        hidden = self.model.backbone.embeddings(input_ids, token_type_ids)  # (B, T, H)
        onednn = use_onednn(hidden, self.training)
        padding = _padding(mask)
        packed = padding.unpad(hidden)  # (tokens, H): the rows still running, real tokens only
        device = input_ids.device
        rows = torch.arange(batch, device=device)  # original index of each row still running
        logits_out = torch.zeros(batch, self.model.config.num_labels, device=device)
        exit_layers = torch.zeros(batch, dtype=torch.int64, device=device)
        entropy_out = torch.zeros(batch, device=device)
        for index, block in enumerate(self.model.backbone.layers):
            if onednn:
                packed = block.forward_onednn(packed, padding)
            else:
                packed = block.forward_fast(packed, padding)
            last = index == self.num_layers - 1
            if last:
                logits = self._final_logits(padding.pad(packed))
            elif threshold > 0:
                logits = self.branches[index].forward_packed(packed, padding)
            else:
                continue  # nothing may exit: skip the branch
            entropy = normalized_entropy(logits)
            exits = torch.ones_like(entropy, dtype=torch.bool)
            if not last and threshold < 1:
                exits = entropy < threshold
            if not bool(exits.any()):
                continue
            done = rows[exits]
            logits_out[done] = logits[exits].float()
            exit_layers[done] = index + 1
            entropy_out[done] = entropy[exits]
            keep = ~exits
            if not bool(keep.any()):
                break
            # the smaller batch: running rows only, without the columns only finished rows used
            rows, mask = rows[keep], mask[keep]
            used = int(mask.any(0).nonzero().max()) + 1
            hidden = padding.pad(packed)[keep, :used]  # (b, t, H)
            mask = mask[:, :used]
            padding = _padding(mask)
            packed = padding.unpad(hidden)
        return EarlyExitOutput(logits_out, exit_layers, entropy_out)

    def layer_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Every classifier on every example: ``(num_layers, batch, num_labels)``; row
        ``l`` is the branch after block ``l + 1``, the last row the model's own head."""
        encoded = self.model.backbone(
            input_ids, attention_mask, token_type_ids, output_hidden_states=True
        )
        key_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            key_mask = attention_mask.bool()[:, None, None, :]
        logits = [
            branch(encoded.hidden_states[index + 1], key_mask)
            for index, branch in enumerate(self.branches)
        ]
        logits.append(self.model.head(encoded))
        return torch.stack(logits)

    # ------------------------------------------------------------------ files
    def save_branches(self, folder: str | os.PathLike) -> Path:
        """Write the branches (and the threshold) into ``folder``, next to a saved model."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.branches.state_dict().items()}
        save_file(state, str(folder / BRANCHES_FILE), metadata={"format": "pt"})
        settings = {
            "branch": asdict(self.branch_config),
            "num_layers": self.num_layers,
            "hidden_size": self.model.config.hidden_size,
            "num_labels": self.model.config.num_labels,
            "threshold": self.threshold,
        }
        (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", "utf-8")
        return folder

    def load_branches(self, folder: str | os.PathLike) -> None:
        """Read branch weights (and the saved threshold) written by :meth:`save_branches`."""
        folder = Path(folder)
        settings = read_settings(folder)
        expected = (self.num_layers, self.model.config.hidden_size, self.model.config.num_labels)
        found = (settings["num_layers"], settings["hidden_size"], settings["num_labels"])
        if found != expected:
            raise EarlyExitError(
                f"{folder / SETTINGS_FILE} describes branches for (layers, hidden, labels) = "
                f"{found} but the model has {expected}: the branches belong to another model"
            )
        if from_dict(BranchConfig, settings["branch"]) != self.branch_config:
            raise EarlyExitError(
                f"{folder / SETTINGS_FILE} has branch settings {settings['branch']} but this "
                f"model was built with {asdict(self.branch_config)}"
            )
        self.branches.load_state_dict(load_file(str(folder / BRANCHES_FILE)))
        self.threshold = _check_threshold(float(settings.get("threshold", 0.0)))

    def save(self, folder: str | os.PathLike, tokenizer: Tokenizer | None = None) -> Path:
        """A loadable folder: the model (Hugging Face format) with the branches beside it."""
        save_model(self.model, folder, tokenizer=tokenizer)
        return self.save_branches(folder)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> EarlyExitModel:
        """Load a model folder that holds early-exit branches (see :meth:`save`)."""
        folder = Path(folder)
        settings = read_settings(folder)
        model = cls(load_model(folder), from_dict(BranchConfig, settings["branch"]))
        model.load_branches(folder)
        return model.eval()


def has_branches(folder: str | os.PathLike) -> bool:
    """Whether a model folder holds early-exit branches."""
    folder = Path(folder)
    return (folder / BRANCHES_FILE).is_file() and (folder / SETTINGS_FILE).is_file()


def read_settings(folder: Path) -> dict:
    """The ``early_exit.json`` of a folder, checked for presence."""
    if not has_branches(folder):
        raise EarlyExitError(
            f"{folder} has no early-exit branches ({BRANCHES_FILE} and {SETTINGS_FILE}): "
            "train them with `distilkit train-early-exit`"
        )
    return json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))


def _check_threshold(threshold: float) -> float:
    if not 0.0 <= float(threshold) <= 1.0:
        raise EarlyExitError(
            f"the exit threshold is a normalised entropy in [0, 1] (0: never exit early, "
            f"1: always after the first layer), got {threshold}"
        )
    return float(threshold)


def _check_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, vocab_size: int
) -> None:
    if input_ids.dim() != 2:
        raise EarlyExitError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise EarlyExitError(
            f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids shape "
            f"{tuple(input_ids.shape)}"
        )
    if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= vocab_size):
        raise EarlyExitError(
            f"token ids must lie in [0, {vocab_size}): is the tokenizer the model's own?"
        )


__all__ = [
    "Branch",
    "BranchConfig",
    "EarlyExitError",
    "EarlyExitModel",
    "EarlyExitOutput",
    "has_branches",
    "normalized_entropy",
]
