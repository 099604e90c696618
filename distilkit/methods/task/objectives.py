"""Task-specific distillation: a fine-tuned teacher teaches a smaller student its task.

One objective, :class:`TaskDistillation`, holds every loss; the methods are weightings:

* ``logits`` (Hinton et al.): soft targets on the task logits, KL at temperature T scaled
  by T^2 (or MSE on the logits, Tang et al.), plus an optional hard-label loss;
* ``tinybert`` (Jiao et al.): first the intermediate stage — embedding-output MSE,
  hidden-state MSE per mapped layer and attention-score MSE, with learned projections
  when the widths differ — then the prediction stage (soft targets at T = 1). TinyBERT's
  *general* stage is the task-agnostic distillation of ``distilkit distill``: pass its
  output as the student;
* ``pkd`` (Sun et al.): soft targets and hard labels plus the patient loss between
  L2-normalised [CLS] vectors of mapped layers (PKD-Skip or PKD-Last maps).

NER logits are distilled per token on the first sub-word of each word (padding, special
tokens and continuation pieces excluded); QA distills the start and the end distributions
over the real tokens of each window.

Before training, :func:`dry_run` builds the objective and runs one batch: a layer map
index out of range, widths or head counts that do not fit, or logits of different shapes
are reported in plain words. :func:`teacher_gate` refuses a teacher that is not
fine-tuned for the task (near-chance dev score) or whose label names disagree with the
data's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from distilkit.model.checkpoint import load_student_weights, save_model
from distilkit.model.layer_map import KINDS as MAP_KINDS
from distilkit.model.layer_map import LayerMap, LayerMapError, build_layer_map
from distilkit.model.modeling import ModelOutput, TransformerModel
from distilkit.model.tokenizer import Tokenizer
from distilkit.tasks.features import (
    HEAD_FOR_KIND,
    TaskData,
    chance_score,
    check_model_for_task,
    evaluate_model,
)
from distilkit.tasks.ner import IGNORE_INDEX
from distilkit.tasks.spec import TaskDataError, TaskSpec
from distilkit.train.losses import (
    LossInputError,
    attention_score_mse,
    embedding_mse_loss,
    hidden_mse_loss,
    logit_mse_loss,
    pkd_loss,
    soft_target_loss,
)
from distilkit.train.task_training import BestCheckpoint, task_loss
from distilkit.train.trainer import Objective

EXTRAS_FILE = "projections.safetensors"
LOGIT_LOSSES = ("auto", "kl", "mse")
MASKED_LOGIT = -1e4  # QA: padded positions get this logit, i.e. probability 0


class DistillSetupError(ValueError):
    """Teacher, student, layer map and options do not fit together."""


class TeacherGateError(ValueError):
    """The teacher is not fine-tuned for the task, or its labels are not the data's."""


@dataclass
class TaskDistillWeights:
    """Weights of the named losses of :class:`TaskDistillation` (0 switches one off).

    logits: soft targets (KL x T^2 or MSE); hard: gold labels; embedding / hidden /
    attention: TinyBERT's intermediate losses; patient: Patient KD's [CLS] loss.
    """

    logits: float = 0.0
    hard: float = 0.0
    embedding: float = 0.0
    hidden: float = 0.0
    attention: float = 0.0
    patient: float = 0.0

    def active(self) -> dict[str, float]:
        return {name: float(value) for name, value in vars(self).items() if value}


INTERMEDIATE_LOSSES = ("embedding", "hidden", "attention", "patient")


@dataclass
class DistillOptions:
    """How the losses are computed (the weights say which are on).

    logit_loss: "kl" (soft targets at ``temperature``, x T^2), "mse" (on the logits), or
    "auto" (MSE for regression, KL otherwise). layer_map: "uniform" | "skip" | "last" |
    "explicit" (then ``layer_pairs`` = [[student, teacher], ...]); indices count hidden
    states, 0 = embeddings output, i = block i. project: learn a linear map from the
    student's width to the teacher's when they differ. average_attention_heads: compare
    head-averaged attention scores (needed when the head counts differ).
    """

    logit_loss: str = "auto"
    temperature: float = 1.0
    layer_map: str = "uniform"
    layer_pairs: list[list[int]] | None = None
    project: bool = True
    average_attention_heads: bool = False


# ----------------------------------------------------------------------------- checks
def setup_problems(
    teacher: TransformerModel,
    student: TransformerModel,
    task: TaskSpec,
    weights: TaskDistillWeights,
    options: DistillOptions,
) -> list[str]:
    """Everything that keeps this teacher, student and options from training together,
    in plain words (an empty list when all is well)."""
    problems: list[str] = []
    tc, sc = teacher.config, student.config
    head = HEAD_FOR_KIND[task.kind]
    for who, config in (("teacher", tc), ("student", sc)):
        if config.head != head:
            problems.append(f"the {who} has head {config.head!r} but {task.name} needs {head!r}")
    same_heads = tc.head == sc.head == head and task.kind != "question_answering"
    if same_heads and tc.num_labels != sc.num_labels:
        problems.append(
            f"the teacher predicts {tc.num_labels} labels but the student {sc.num_labels}: "
            "their logits cannot be compared"
        )
    if tc.vocab_size != sc.vocab_size:
        problems.append(
            f"the teacher's vocabulary has {tc.vocab_size:,} entries but the student's "
            f"{sc.vocab_size:,}: they must share one tokenizer"
        )
    active = weights.active()
    if not active:
        problems.append("every loss weight is 0: nothing to train on")
    if any(value < 0 for value in vars(weights).values()):
        problems.append(f"loss weights must be >= 0, got {weights}")
    if options.logit_loss not in LOGIT_LOSSES:
        problems.append(f"logit_loss must be one of {LOGIT_LOSSES}, got {options.logit_loss!r}")
    if options.logit_loss == "kl" and task.kind == "regression" and "logits" in active:
        problems.append(
            f"{task.name} is a regression (one output), which has no distribution for a KL: "
            "use logit_loss 'mse' (or 'auto')"
        )
    if not options.temperature > 0:
        problems.append(f"temperature must be > 0, got {options.temperature}")
    intermediate = [name for name in INTERMEDIATE_LOSSES if name in active]
    if not intermediate:
        return problems
    if sc.hidden_size != tc.hidden_size and not options.project:
        problems.append(
            f"the student's hidden width is {sc.hidden_size} but the teacher's is "
            f"{tc.hidden_size}, and projections are off: the {', '.join(intermediate)} "
            "loss(es) need project=true (a learned linear map) or a student of the teacher's width"
        )
    if (
        "attention" in active
        and sc.num_heads != tc.num_heads
        and not options.average_attention_heads
    ):
        problems.append(
            f"the student has {sc.num_heads} attention heads but the teacher {tc.num_heads}: "
            "attention scores can only be matched head by head with equal counts; set "
            "average_attention_heads=true to compare head-averaged scores"
        )
    try:
        layer_map = make_layer_map(options, sc.num_layers, tc.num_layers)
    except LayerMapError as error:
        problems.append(f"layer map: {error}")
        return problems
    if "attention" in active:
        for match in layer_map.matches:
            if match.student > 0 and match.teacher == 0:
                problems.append(
                    f"layer map pair (student {match.student}, teacher 0): the attention loss "
                    "needs a transformer block on both sides, and index 0 is the embeddings"
                )
    if "patient" in active and not [m for m in layer_map.matches if m.student > 0]:
        problems.append(
            f"the {layer_map.kind} layer map has no pair with a student block (index >= 1), "
            f"so the patient loss has nothing to compare for a {sc.num_layers}-layer student"
        )
    return problems


def make_layer_map(options: DistillOptions, n_student: int, n_teacher: int) -> LayerMap:
    """The validated layer map of ``options`` for these depths (numbers of blocks)."""
    if options.layer_map not in MAP_KINDS:
        raise LayerMapError(f"unknown layer map {options.layer_map!r}; choose one of {MAP_KINDS}")
    pairs = options.layer_pairs if options.layer_map == "explicit" else None
    if options.layer_map != "explicit" and options.layer_pairs is not None:
        raise LayerMapError(
            f"layer_pairs are only read with layer_map 'explicit', not {options.layer_map!r}"
        )
    return build_layer_map(options.layer_map, n_student, n_teacher, pairs)


# ----------------------------------------------------------------------------- the losses
def prediction_loss(
    kind: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    batch: dict[str, torch.Tensor],
    logit_loss: str,
    temperature: float,
) -> torch.Tensor:
    """Soft-target loss of the task head's logits for a task kind.

    classification ``(B, C)`` and regression ``(B, 1)``: KL x T^2 or MSE per example;
    token_classification ``(B, T, C)``: the same per token, over first sub-words only
    (``labels != -100``); question_answering ``(B, T, 2)``: KL x T^2 of the start and of
    the end distribution over each window's real tokens, averaged (or MSE over them).
    """
    use_kl = logit_loss == "kl" or (logit_loss == "auto" and kind != "regression")
    mask = None
    if kind == "token_classification":
        mask = batch["labels"] != IGNORE_INDEX  # (B, T)
    elif kind == "question_answering":
        mask = batch["attention_mask"].bool()  # (B, T)
    if not use_kl:
        return logit_mse_loss(student_logits, teacher_logits, mask)
    if kind != "question_answering":
        return soft_target_loss(student_logits, teacher_logits, temperature, mask)
    padding = ~mask[..., None]  # (B, T, 1)
    student_logits = student_logits.masked_fill(padding, MASKED_LOGIT)
    teacher_logits = teacher_logits.masked_fill(padding, MASKED_LOGIT)
    start = soft_target_loss(student_logits[..., 0], teacher_logits[..., 0], temperature)
    end = soft_target_loss(student_logits[..., 1], teacher_logits[..., 1], temperature)
    return (start + end) / 2


def _checked(what: str, compute) -> torch.Tensor:
    """Run one loss term; a shape problem is re-raised naming the term (``what``)."""
    try:
        return compute()
    except LossInputError as error:
        raise DistillSetupError(f"{what}: {error}") from None


def _pair(loss: str, student_index: int, teacher_index: int) -> str:
    return f"{loss} loss, layer pair (student {student_index}, teacher {teacher_index})"


def _projection(inputs: int, outputs: int, generator: torch.Generator) -> nn.Linear:
    """A learned ``Linear(student width, teacher width)``: Xavier-uniform weights drawn
    from ``generator``, zero bias."""
    projection = nn.Linear(inputs, outputs)
    with torch.no_grad():
        nn.init.xavier_uniform_(projection.weight, generator=generator)
        projection.bias.zero_()
    return projection


# ----------------------------------------------------------------------------- objective
class TaskDistillation(Objective):
    """Distil a fine-tuned ``teacher`` into ``student`` on task batches.

    Both models carry the task's head. Losses (those with a non-zero weight): ``logits``,
    ``hard``, ``embedding``, ``hidden``, ``attention``, ``patient`` (see the module
    docstring). Intermediate losses follow the layer map: the pair with student index 0
    (else (0, 0)) for ``embedding``, pairs with a student block for ``hidden`` and
    ``patient`` (averaged over pairs), pairs of blocks for ``attention``. The teacher is
    frozen and not a parameter of the objective. Projections (when widths differ) are
    initialised from ``seed``.
    """

    def __init__(
        self,
        teacher: TransformerModel,
        student: TransformerModel,
        task: TaskSpec,
        tokenizer: Tokenizer,
        weights: TaskDistillWeights,
        options: DistillOptions | None = None,
        eval_data: TaskData | None = None,
        best: BestCheckpoint | None = None,
        seed: int = 0,
    ):
        super().__init__()
        options = options or DistillOptions()
        problems = setup_problems(teacher, student, task, weights, options)
        if problems:
            raise DistillSetupError(
                "cannot distill this teacher into this student:\n  - " + "\n  - ".join(problems)
            )
        self.student = student
        self._teacher = [teacher.eval().requires_grad_(False)]  # not a registered submodule
        self.task = task
        self.tokenizer = tokenizer
        self.options = options
        self.weights = weights.active()
        self.eval_data = eval_data
        self.best = best
        self.layer_map: LayerMap | None = None
        self.embedding_projection: nn.Linear | None = None
        self.hidden_projection: nn.Linear | None = None
        if not set(INTERMEDIATE_LOSSES) & set(self.weights):
            return
        n_student, n_teacher = student.config.num_layers, teacher.config.num_layers
        self.layer_map = make_layer_map(options, n_student, n_teacher)
        student_width, teacher_width = student.config.hidden_size, teacher.config.hidden_size
        if student_width != teacher_width:
            generator = torch.Generator().manual_seed(seed)
            if "embedding" in self.weights:
                self.embedding_projection = _projection(student_width, teacher_width, generator)
            if {"hidden", "patient"} & set(self.weights):
                self.hidden_projection = _projection(student_width, teacher_width, generator)

    @property
    def teacher(self) -> TransformerModel:
        return self._teacher[0]

    # ---------------------------------------------------------------- the pairs
    def embedding_pair(self) -> tuple[int, int]:
        for match in self.layer_map.matches:
            if match.student == 0:
                return 0, match.teacher
        return 0, 0

    def block_pairs(self) -> list[tuple[int, int]]:
        """Pairs whose student side is a transformer block (index >= 1)."""
        return [(m.student, m.teacher) for m in self.layer_map.matches if m.student > 0]

    # ---------------------------------------------------------------- forward
    def _run(self, model: TransformerModel, batch: dict[str, torch.Tensor]) -> ModelOutput:
        return model(
            batch["input_ids"],
            batch["attention_mask"],
            batch["token_type_ids"],
            output_hidden_states=bool({"embedding", "hidden", "patient"} & set(self.weights)),
            output_attention_scores="attention" in self.weights,
        )

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            teacher_out = self._run(self.teacher, batch)
        student_out = self._run(self.student, batch)
        attention_mask = batch["attention_mask"]
        kind = self.task.kind
        losses: dict[str, torch.Tensor] = {}
        if "logits" in self.weights:
            if student_out.logits.shape != teacher_out.logits.shape:
                raise DistillSetupError(
                    f"student logits have shape {tuple(student_out.logits.shape)} but the "
                    f"teacher's {tuple(teacher_out.logits.shape)}: the heads must match"
                )
            losses["logits"] = prediction_loss(
                kind,
                student_out.logits,
                teacher_out.logits,
                batch,
                self.options.logit_loss,
                self.options.temperature,
            )
        if "hard" in self.weights:
            losses["hard"] = task_loss(kind, student_out.logits, batch)
        student_states, teacher_states = student_out.hidden_states, teacher_out.hidden_states
        if "embedding" in self.weights:
            s, t = self.embedding_pair()
            losses["embedding"] = _checked(
                _pair("embedding", s, t),
                lambda: embedding_mse_loss(
                    student_states[s], teacher_states[t], attention_mask, self.embedding_projection
                ),
            )
        if "hidden" in self.weights:
            terms = [
                _checked(
                    _pair("hidden", s, t),
                    lambda s=s, t=t: hidden_mse_loss(
                        student_states[s], teacher_states[t], attention_mask, self.hidden_projection
                    ),
                )
                for s, t in self.block_pairs()
            ]
            losses["hidden"] = torch.stack(terms).mean()
        if "attention" in self.weights:
            terms = [
                _checked(
                    _pair("attention", s, t),
                    lambda s=s, t=t: attention_score_mse(
                        student_out.attention_scores[s - 1],
                        teacher_out.attention_scores[t - 1],
                        attention_mask,
                        self.options.average_attention_heads,
                    ),
                )
                for s, t in self.block_pairs()
            ]
            losses["attention"] = torch.stack(terms).mean()
        if "patient" in self.weights:
            pairs = self.block_pairs()
            student_cls = torch.stack([student_states[s][:, 0] for s, _ in pairs], 1)  # (B, L, H_s)
            teacher_cls = torch.stack([teacher_states[t][:, 0] for _, t in pairs], 1)  # (B, L, H_t)
            if self.hidden_projection is not None:
                student_cls = self.hidden_projection(student_cls)
            losses["patient"] = _checked(
                f"patient loss on the [CLS] vectors of pairs {pairs}",
                lambda: pkd_loss(student_cls, teacher_cls),
            )
        return losses

    # ---------------------------------------------------------------- evaluation and I/O
    def evaluate(self, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        """The student's dev metrics; the best so far is kept by ``best``."""
        if self.eval_data is None:
            return {}
        metrics = evaluate_model(self.student, self.eval_data, batches)
        if self.best is not None:
            self.best.offer(self.student, metrics)
        return metrics

    def _projections(self) -> dict[str, nn.Linear]:
        found = {"embedding": self.embedding_projection, "hidden": self.hidden_projection}
        return {name: module for name, module in found.items() if module is not None}

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        save_model(self.student, folder, tokenizer=self.tokenizer)
        tensors = {
            f"{name}.{key}": value.detach().contiguous()
            for name, module in self._projections().items()
            for key, value in module.state_dict().items()
        }
        if tensors:
            save_file(tensors, str(folder / EXTRAS_FILE))
        if self.best is not None:
            self.best.save_state(folder)

    def load(self, folder: Path) -> None:
        folder = Path(folder)
        load_student_weights(self.student, folder)
        projections = self._projections()
        if projections:
            tensors = load_file(str(folder / EXTRAS_FILE))
            for name, module in projections.items():
                prefix = f"{name}."
                module.load_state_dict(
                    {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
                )
        if self.best is not None:
            self.best.load_state(folder)


# ----------------------------------------------------------------------------- dry run
@dataclass
class DryRunReport:
    """What one batch through teacher and student showed: the losses and the layer map."""

    losses: dict[str, float]
    layer_map: LayerMap | None
    lines: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(self.lines)


def describe_map(layer_map: LayerMap | None) -> str:
    if layer_map is None:
        return "no layer map (no intermediate loss)"
    pairs = ", ".join(f"{m.student}->{m.teacher}" for m in layer_map.matches)
    return f"{layer_map.kind} layer map (student->teacher hidden states): {pairs}"


def dry_run(
    teacher: TransformerModel,
    student: TransformerModel,
    task: TaskSpec,
    tokenizer: Tokenizer,
    weights: TaskDistillWeights,
    options: DistillOptions,
    batch: dict[str, torch.Tensor],
) -> DryRunReport:
    """Build the objective and run one batch without training; any problem with the layer
    map, the widths, the head counts or the logits raises :class:`DistillSetupError` in
    plain words. Returns the loss values and a description of the setup."""
    objective = TaskDistillation(teacher, student, task, tokenizer, weights, options)
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            losses = objective(batch, torch.Generator().manual_seed(0))
    except (LossInputError, RuntimeError, IndexError) as error:
        raise DistillSetupError(f"dry run on one batch failed: {error}") from None
    finally:
        student.train(was_training)
    bad = [name for name, value in losses.items() if not torch.isfinite(value)]
    if bad:
        raise DistillSetupError(f"dry run on one batch: loss(es) {bad} are not finite")
    values = {name: float(value) for name, value in losses.items()}
    tc, sc = teacher.config, student.config
    lines = [
        f"teacher: {tc.num_layers} layers, width {tc.hidden_size}, {tc.num_heads} heads; "
        f"student: {sc.num_layers} layers, width {sc.hidden_size}, {sc.num_heads} heads",
        describe_map(objective.layer_map),
        "losses on one batch: "
        + ", ".join(
            f"{name} {value:.4g} (x{objective.weights[name]:g})" for name, value in values.items()
        ),
    ]
    if objective._projections():
        lines.append(
            f"learned projections {sc.hidden_size}->{tc.hidden_size} for: "
            + ", ".join(objective._projections())
        )
    return DryRunReport(values, objective.layer_map, lines)


# ----------------------------------------------------------------------------- teacher gate
# A teacher must beat chance by this much on dev (headline metric units: accuracy in
# [0, 1], Spearman in [-1, 1], entity F1 in [0, 1], SQuAD F1 in percent).
GATE_MARGINS = {
    "classification": 0.1,
    "regression": 0.3,
    "token_classification": 0.3,
    "question_answering": 20.0,
}


def check_teacher_for_task(teacher: TransformerModel, task: TaskSpec) -> None:
    """The gate's first half: the teacher's head and label names must be the task's
    (raises :class:`TeacherGateError`)."""
    try:
        check_model_for_task(teacher, task, "the teacher")
    except TaskDataError as error:
        raise TeacherGateError(str(error)) from None


def teacher_gate(
    teacher: TransformerModel,
    task: TaskSpec,
    dev: TaskData,
    min_score: float | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """Check the teacher before distilling: its head and label names must be the task's,
    and its dev score must reach ``min_score`` (default: chance + ``GATE_MARGINS[kind]``).

    Returns its dev metrics with ``chance`` and ``threshold``; raises
    :class:`TeacherGateError` otherwise.
    """
    check_teacher_for_task(teacher, task)
    metrics = evaluate_model(teacher, dev, batch_size=batch_size)
    score, chance = metrics[task.metric], chance_score(dev)
    threshold = chance + GATE_MARGINS[task.kind] if min_score is None else min_score
    if not score >= threshold:
        hint = ""
        if task.kind == "classification" and score < chance - GATE_MARGINS[task.kind]:
            hint = (
                " It is well below chance, which is what a classifier whose label order "
                "differs from the data's scores."
            )
        raise TeacherGateError(
            f"the teacher scores {task.metric} {score:.4g} on {len(dev.examples)} {task.name} "
            f"dev examples, where chance is {chance:.4g} and distilling needs at least "
            f"{threshold:.4g}: it does not look fine-tuned for {task.name}.{hint} Fine-tune it "
            f"first (distilkit finetune --task {task.name}), or lower the bar with "
            "teacher_min_score if you know better"
        )
    return {**metrics, "chance": chance, "threshold": threshold}
