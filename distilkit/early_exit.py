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
classifier on every example (:func:`layer_logits`, :func:`simulate_exits`): that gives the
accuracy against average-layers curve (:func:`accuracy_vs_layers`) and the threshold for
a target speed-up (:func:`pick_threshold`) without re-running the model.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from distilkit.checkpoint import load_model, save_model
from distilkit.config import from_dict
from distilkit.data.batching import LengthGroupedSampler
from distilkit.losses import soft_target_loss
from distilkit.modeling import EncoderOutput, Padding, TransformerModel, use_onednn
from distilkit.tokenizer import Batch, Tokenizer
from distilkit.trainer import Objective, Trainer, TrainingConfig, TrainResult

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


# ----------------------------------------------------------------------------- curves
def collect_layer_logits(
    model: EarlyExitModel, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 64
) -> np.ndarray:
    """:meth:`EarlyExitModel.layer_logits` over ``texts``: ``(num_layers, n, num_labels)``
    float32, in the order of ``texts``."""
    from distilkit.export import sorted_batches

    out = np.zeros((model.num_layers, len(texts), model.model.config.num_labels), np.float32)
    with torch.inference_mode():
        for indices, batch in sorted_batches(tokenizer, texts, batch_size):
            out[:, indices] = model.layer_logits(**batch.model_inputs()).float().numpy()
    return out


def simulate_exits(layer_logits: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """What :meth:`EarlyExitModel.forward` returns at ``threshold``, from every classifier's
    logits ``(num_layers, n, num_labels)``: (logits ``(n, num_labels)``, exit layers ``(n,)``)."""
    threshold = _check_threshold(threshold)
    layer_logits = np.asarray(layer_logits)
    if layer_logits.ndim != 3:
        raise EarlyExitError(
            f"layer_logits must be (num_layers, n, num_labels), got shape {layer_logits.shape}"
        )
    entropy = normalized_entropy(torch.from_numpy(layer_logits)).numpy()  # (L, n)
    exits = np.zeros_like(entropy, dtype=bool)
    if threshold >= 1:
        exits[:] = True
    elif threshold > 0:
        exits = entropy < threshold
    exits[-1] = True
    first = exits.argmax(0)  # (n,) index of the first classifier that lets go
    return layer_logits[first, np.arange(layer_logits.shape[1])], first + 1


@dataclass
class CurvePoint:
    """One threshold on the speed/accuracy curve.

    average_layers: mean blocks run per example; layer_speedup: num_layers divided by it
    (the FLOP speed-up of the blocks, branches not counted); accuracy: against labels;
    agreement: with the full-depth classifier; exits_per_layer: how many examples left
    after each block; seconds / wall_clock_speedup: measured (see :func:`time_thresholds`).
    """

    threshold: float
    average_layers: float
    layer_speedup: float
    agreement: float
    accuracy: float | None = None
    exits_per_layer: list[int] = field(default_factory=list)
    seconds: float | None = None
    wall_clock_speedup: float | None = None


def accuracy_vs_layers(
    layer_logits: np.ndarray, labels: Sequence[int] | np.ndarray | None, thresholds: Sequence[float]
) -> list[CurvePoint]:
    """The accuracy against average-layers curve, one :class:`CurvePoint` per threshold."""
    layer_logits = np.asarray(layer_logits)
    num_layers, count = layer_logits.shape[:2]
    if labels is not None and len(labels) != count:
        raise EarlyExitError(f"got {len(labels)} labels for {count} examples")
    final = layer_logits[-1].argmax(-1)
    points = []
    for threshold in thresholds:
        logits, layers = simulate_exits(layer_logits, threshold)
        predictions = logits.argmax(-1)
        points.append(
            CurvePoint(
                threshold=float(threshold),
                average_layers=float(layers.mean()),
                layer_speedup=num_layers / float(layers.mean()),
                agreement=float((predictions == final).mean()),
                accuracy=None
                if labels is None
                else float((predictions == np.asarray(labels)).mean()),
                exits_per_layer=np.bincount(layers - 1, minlength=num_layers).tolist(),
            )
        )
    return points


def pick_threshold(layer_logits: np.ndarray, target_speedup: float) -> float:
    """The threshold with the fewest early exits whose layer speed-up reaches
    ``target_speedup`` on these examples.

    The exits only change where the threshold passes a branch entropy, and the speed-up
    never falls as the threshold rises, so the candidates are 0, the midpoints between
    consecutive distinct branch entropies and 1, searched by bisection. A midpoint rather
    than the entropy itself keeps new examples near the boundary on the same side.
    """
    layer_logits = np.asarray(layer_logits)
    num_layers = layer_logits.shape[0]
    if not 1.0 <= target_speedup <= num_layers:
        raise EarlyExitError(
            f"the target speed-up must be between 1 and {num_layers} (the number of layers: "
            f"exiting everything after the first block), got {target_speedup}"
        )
    entropies = np.unique(normalized_entropy(torch.from_numpy(layer_logits[:-1])).numpy())
    entropies = entropies.astype(np.float64)
    candidates = [0.0, *((entropies[:-1] + entropies[1:]) / 2), 1.0]

    def speedup(threshold: float) -> float:
        return num_layers / float(simulate_exits(layer_logits, threshold)[1].mean())

    low, high = 0, len(candidates) - 1  # speedup(candidates[high]) == num_layers >= target
    while low < high:
        middle = (low + high) // 2
        if speedup(candidates[middle]) >= target_speedup:
            high = middle
        else:
            low = middle + 1
    return float(candidates[low])


def time_thresholds(
    model: EarlyExitModel,
    batches: Sequence[Batch],
    thresholds: Sequence[float],
    repeats: int = 3,
) -> tuple[float, list[float]]:
    """Median seconds of one pass over ``batches``: (plain model forward, adaptive inference
    at each threshold). Passes are timed in turns so background load hits all alike."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    runs = [lambda batch: model.model(**batch.model_inputs())]
    runs += [
        lambda batch, t=threshold: model(**batch.model_inputs(), threshold=t)
        for threshold in thresholds
    ]
    seconds: list[list[float]] = [[] for _ in runs]
    with torch.inference_mode():
        for run in runs:  # warm-up
            run(batches[0])
        for _ in range(repeats):
            for index, run in enumerate(runs):
                start = time.perf_counter()
                for batch in batches:
                    run(batch)
                seconds[index].append(time.perf_counter() - start)
    medians = [statistics.median(values) for values in seconds]
    return medians[0], medians[1:]


def add_wall_clock(
    points: list[CurvePoint],
    model: EarlyExitModel,
    batches: Sequence[Batch],
    repeats: int = 3,
) -> float:
    """Fill ``seconds`` and ``wall_clock_speedup`` (over the plain model) of each point;
    returns the plain model's seconds per pass."""
    reference, seconds = time_thresholds(model, batches, [p.threshold for p in points], repeats)
    for point, value in zip(points, seconds, strict=True):
        point.seconds = value
        point.wall_clock_speedup = reference / value
    return reference


def plot_curve(points: Sequence[CurvePoint], path: str | os.PathLike, title: str = "") -> Path:
    """Accuracy (or agreement with the full model) against average layers and, when
    timed, against wall-clock speed-up; one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not points:
        raise EarlyExitError("no curve points to plot")
    timed = all(p.wall_clock_speedup is not None for p in points)
    labelled = all(p.accuracy is not None for p in points)
    quality = [100 * (p.accuracy if labelled else p.agreement) for p in points]
    figure, axes = plt.subplots(1, 2 if timed else 1, figsize=(11 if timed else 6, 4.5))
    axes = list(np.atleast_1d(axes))
    panels = [("average layers run", [p.average_layers for p in points])]
    if timed:
        panels.append(
            ("wall-clock speed-up over the plain model", [p.wall_clock_speedup for p in points])
        )
    for axis, (label, xs) in zip(axes, panels, strict=True):
        axis.plot(xs, quality, marker="o")
        for x, y, point in zip(xs, quality, points, strict=True):
            axis.annotate(
                f"{point.threshold:.2g}",
                (x, y),
                xytext=(4, 4),
                fontsize=7,
                textcoords="offset points",
            )
        axis.set_xlabel(label)
        axis.set_ylabel("accuracy %" if labelled else "agreement with the full model %")
        axis.grid(True, alpha=0.3)
    figure.suptitle(title or "Early exit: quality against speed (labels: thresholds)")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


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


__all__ = [
    "Branch",
    "BranchConfig",
    "CurvePoint",
    "EarlyExitError",
    "EarlyExitModel",
    "EarlyExitOutput",
    "SelfDistillationObjective",
    "accuracy_vs_layers",
    "add_wall_clock",
    "collect_layer_logits",
    "has_branches",
    "normalized_entropy",
    "pick_threshold",
    "plot_curve",
    "simulate_exits",
    "time_thresholds",
    "train_branches",
]
