"""Every distillation loss as a plain function of tensors.

Each function returns a scalar tensor that is differentiable with respect to the
student side. Teacher tensors are treated as constants (they are detached here, so a
forgotten ``torch.no_grad()`` around the teacher never sends gradients into it).

Masks are bool or 0/1 tensors over the leading dimensions of the inputs (usually
``(batch, seq)``). Positions a mask excludes contribute nothing, whatever values they
hold, and a mask that selects nothing gives a loss of exactly 0 (still attached to the
graph, so ``loss.backward()`` works).

Default weights quoted in docstrings follow the DistilBERT training code: temperature
2, ``alpha_ce=5`` (soft targets), ``alpha_mlm=2`` (masked LM), ``alpha_cos=1``
(cosine of hidden states).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LossInputError(ValueError):
    """A loss got tensors of incompatible shapes, a malformed mask or a bad option."""


# ---------------------------------------------------------------------------------------
# Input checks and masked reductions shared by the losses below.


def _check_same_shape(student: Tensor, teacher: Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise LossInputError(
            f"student {what} have shape {tuple(student.shape)} but teacher {what} have shape "
            f"{tuple(teacher.shape)}: they must match"
        )


def _selection(mask: Tensor | None, leading_shape: Sequence[int], device: torch.device) -> Tensor:
    """A bool tensor of shape ``leading_shape`` from an optional bool or 0/1 mask."""
    if mask is None:
        return torch.ones(tuple(leading_shape), dtype=torch.bool, device=device)
    if tuple(mask.shape) != tuple(leading_shape):
        raise LossInputError(
            f"mask has shape {tuple(mask.shape)} but the inputs need a mask of shape "
            f"{tuple(leading_shape)} (their leading dimensions)"
        )
    if mask.dtype != torch.bool:
        # (checked on the host only: off it, the check would wait for the device)
        if mask.is_complex() or (
            mask.device.type == "cpu" and not ((mask == 0) | (mask == 1)).all()
        ):
            raise LossInputError("mask must be bool or hold only 0 and 1 (1 = position counts)")
        mask = mask != 0
    return mask.to(device)


def _mean_or_zero(total: Tensor, count: int | Tensor) -> Tensor:
    """``total / count``, or 0 (keeping the graph) when nothing was counted."""
    if isinstance(count, Tensor):
        return total / count.clamp_min(1).to(total.dtype)
    return total / max(count, 1)


def _check_temperature(temperature: float) -> None:
    if not (temperature > 0 and math.isfinite(temperature)):
        raise LossInputError(f"temperature must be a positive finite number, got {temperature}")


def _check_hidden(student_hidden: Tensor, teacher_hidden: Tensor, hint: str) -> None:
    if student_hidden.shape[:-1] != teacher_hidden.shape[:-1]:
        raise LossInputError(
            f"student hidden states have shape {tuple(student_hidden.shape)} but teacher hidden "
            f"states have shape {tuple(teacher_hidden.shape)}: all but the last dimension "
            "must match"
        )
    student_dim, teacher_dim = student_hidden.shape[-1], teacher_hidden.shape[-1]
    if student_dim != teacher_dim:
        raise LossInputError(
            f"student hidden width is {student_dim} but teacher hidden width is {teacher_dim}: "
            f"{hint} (e.g. nn.Linear({student_dim}, {teacher_dim}))"
        )


# ---------------------------------------------------------------------------------------
# Prediction-layer losses.


def soft_target_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 2.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Hinton KD / DistilBERT's ``L_ce``: ``KL(softmax(t/T) || softmax(s/T)) * T**2``.

    student_logits, teacher_logits: ``(..., classes)``; mask: ``(...)`` over the leading
    dimensions (e.g. the masked-LM positions). The KL is summed over classes and averaged
    over the selected positions. The ``T**2`` factor keeps gradient magnitudes roughly
    independent of the temperature. DistilBERT uses ``temperature=2`` and weight 5.
    """
    _check_same_shape(student_logits, teacher_logits, "logits")
    _check_temperature(temperature)
    selected = _selection(mask, student_logits.shape[:-1], student_logits.device)
    student_log_probs = F.log_softmax(student_logits[selected] / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.detach()[selected] / temperature, dim=-1)
    teacher_probs = teacher_log_probs.exp()
    # Classes the teacher gives probability 0 contribute 0 (0 * log 0 = 0), not NaN.
    teacher_log_probs = torch.where(teacher_probs > 0, teacher_log_probs, 0.0)
    kl = (teacher_probs * (teacher_log_probs - student_log_probs)).sum()
    return _mean_or_zero(kl, selected.sum()) * temperature**2


def logit_mse_loss(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Mean squared error between logits (Tang et al., 2019).

    student_logits, teacher_logits: ``(..., classes)``; mask: ``(...)``. Averaged over
    the selected positions and the classes.
    """
    _check_same_shape(student_logits, teacher_logits, "logits")
    selected = _selection(mask, student_logits.shape[:-1], student_logits.device)
    squared = (student_logits[selected] - teacher_logits.detach()[selected]).pow(2)
    return _mean_or_zero(squared.sum(), squared.numel())


def mlm_loss(mlm_logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Masked-LM cross-entropy over positions whose label is not ``ignore_index``.

    mlm_logits: ``(..., vocab)``; labels: ``(...)`` int64 token ids. Averaged over the
    labelled positions; 0 when there are none. DistilBERT weights it by 2.
    """
    if labels.shape != mlm_logits.shape[:-1]:
        raise LossInputError(
            f"labels have shape {tuple(labels.shape)} but mlm_logits have shape "
            f"{tuple(mlm_logits.shape)}: labels must have the logits' shape without the "
            "vocabulary dimension"
        )
    selected = labels != ignore_index
    selected_labels = labels[selected]
    vocab_size = mlm_logits.shape[-1]
    if selected_labels.numel() and (
        selected_labels.min() < 0 or selected_labels.max() >= vocab_size
    ):
        raise LossInputError(
            f"labels must be token ids in [0, {vocab_size}) or {ignore_index} for unlabelled "
            f"positions; got values from {int(selected_labels.min())} to "
            f"{int(selected_labels.max())}"
        )
    nll = F.cross_entropy(mlm_logits[selected], selected_labels, reduction="sum")
    return _mean_or_zero(nll, selected_labels.numel())


def hard_label_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Classification cross-entropy with gold labels.

    logits: ``(batch, classes)``; labels: ``(batch,)`` int64 class ids. Mean over the batch.
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise LossInputError(
            f"hard_label_loss expects logits (batch, classes) and labels (batch,); got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise LossInputError(f"labels must be integer class ids, got dtype {labels.dtype}")
    return F.cross_entropy(logits, labels)


def regression_loss(predictions: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error for regression tasks such as STS-B.

    predictions: ``(batch,)`` or ``(batch, 1)`` (a one-output head); targets: ``(batch,)``.
    """
    if predictions.dim() == 2 and predictions.shape[1] == 1:
        predictions = predictions[:, 0]
    if predictions.shape != targets.shape:
        raise LossInputError(
            f"predictions have shape {tuple(predictions.shape)} but targets have shape "
            f"{tuple(targets.shape)}: expected (batch,) or (batch, 1) predictions for "
            "(batch,) targets"
        )
    return F.mse_loss(predictions, targets.to(predictions.dtype))


# ---------------------------------------------------------------------------------------
# Intermediate-layer losses.


def cosine_hidden_loss(
    student_hidden: Tensor, teacher_hidden: Tensor, attention_mask: Tensor
) -> Tensor:
    """DistilBERT's ``L_cos``: mean of ``1 - cos(student, teacher)`` over real tokens.

    student_hidden, teacher_hidden: ``(batch, seq, hidden)``; attention_mask:
    ``(batch, seq)``, 1 for real tokens. Equals ``nn.CosineEmbeddingLoss`` with target 1
    on the non-padding tokens. DistilBERT weights it by 1.
    """
    _check_hidden(student_hidden, teacher_hidden, "cosine needs equal widths; project first")
    selected = _selection(attention_mask, student_hidden.shape[:-1], student_hidden.device)
    if student_hidden.device.type != "cpu":  # weights, not indexing: no wait for the device
        cosine = F.cosine_similarity(student_hidden, teacher_hidden.detach(), dim=-1)  # (B, T)
        weights = selected.to(cosine.dtype)
        return _mean_or_zero(((1.0 - cosine) * weights).sum(), weights.sum())
    cosine = F.cosine_similarity(
        student_hidden[selected], teacher_hidden.detach()[selected], dim=-1
    )  # (tokens,)
    return _mean_or_zero((1.0 - cosine).sum(), cosine.numel())


def hidden_mse_loss(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    attention_mask: Tensor | None = None,
    projection: nn.Module | None = None,
) -> Tensor:
    """TinyBERT's hidden-state loss: MSE after an optional projection of the student.

    student_hidden: ``(batch, seq, student_hidden)``; teacher_hidden:
    ``(batch, seq, teacher_hidden)``; attention_mask: ``(batch, seq)``, None = all tokens.
    projection (e.g. ``nn.Linear(student_hidden, teacher_hidden)``, trained with the
    student) maps the student to the teacher's width first. Averaged over the real tokens
    and the features.
    """
    if projection is not None:
        student_hidden = projection(student_hidden)
    _check_hidden(student_hidden, teacher_hidden, "pass a projection")
    selected = _selection(attention_mask, student_hidden.shape[:-1], student_hidden.device)
    if student_hidden.device.type != "cpu":  # weights, not indexing: no wait for the device
        squared = (student_hidden - teacher_hidden.detach()).pow(2)
        weights = selected.to(squared.dtype).unsqueeze(-1)
        count = weights.sum() * squared.shape[-1]
        return _mean_or_zero((squared * weights).sum(), count)
    squared = (student_hidden[selected] - teacher_hidden.detach()[selected]).pow(2)
    return _mean_or_zero(squared.sum(), squared.numel())


def feature_map_transfer_loss(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    attention_mask: Tensor | None = None,
    statistics_weight: float = 1.0,
    eps: float = 1e-5,
) -> Tensor:
    """MobileBERT's feature-map transfer, normalised as the paper does.

    The MSE between the feature maps is decomposed into the discrepancy of the normalised
    maps and of their statistics (Sun et al., 2020, section 3.5; the official code's
    ``layer_output`` loss): per real token, with ``mu``, ``var`` the mean and (biased)
    variance over the feature axis and ``n(x) = (x - mu) / sqrt(var + eps)``,
    ``mean_f (n(s) - n(t))^2 + statistics_weight * ((mu_s - mu_t)^2 + |var_s - var_t|)``,
    averaged over the real tokens. student_hidden, teacher_hidden: ``(batch, seq,
    hidden)`` of equal width (MobileBERT keeps the teacher's width between blocks);
    attention_mask: ``(batch, seq)``, None = all tokens.
    """
    _check_hidden(student_hidden, teacher_hidden, "feature maps must have the teacher's width")
    selected = _selection(attention_mask, student_hidden.shape[:-1], student_hidden.device)
    student, teacher = student_hidden[selected], teacher_hidden.detach()[selected]  # (tokens, H)
    student_var, student_mean = torch.var_mean(student, dim=-1, correction=0)  # (tokens,)
    teacher_var, teacher_mean = torch.var_mean(teacher, dim=-1, correction=0)
    student_normalised = (student - student_mean[:, None]) / (student_var[:, None] + eps).sqrt()
    teacher_normalised = (teacher - teacher_mean[:, None]) / (teacher_var[:, None] + eps).sqrt()
    normalised = student_normalised - teacher_normalised  # (tokens, H)
    per_token = normalised.pow(2).mean(dim=-1) + statistics_weight * (
        (student_mean - teacher_mean).pow(2) + (student_var - teacher_var).abs()
    )
    return _mean_or_zero(per_token.sum(), per_token.numel())


def _mean_pooled(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """``(batch, hidden)`` averages of the real tokens of ``(batch, seq, hidden)``."""
    mask = _selection(attention_mask, hidden.shape[:-1], hidden.device).to(hidden.dtype)
    return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)


def sentence_cosine_loss(
    student_hidden: Tensor, teacher_hidden: Tensor, attention_mask: Tensor
) -> Tensor:
    """Mean over the batch of ``1 - cos`` between mean-pooled sentence vectors.

    student_hidden, teacher_hidden: ``(batch, seq, hidden)``; attention_mask:
    ``(batch, seq)``, 1 for real tokens (padding is left out of the averages). Aims
    at the vector a sentence-embedding teacher is used for, where
    :func:`cosine_hidden_loss` matches each token.
    """
    _check_hidden(student_hidden, teacher_hidden, "cosine needs equal widths; project first")
    student_sentence = _mean_pooled(student_hidden, attention_mask)  # (B, H)
    teacher_sentence = _mean_pooled(teacher_hidden.detach(), attention_mask)  # (B, H)
    return (1.0 - F.cosine_similarity(student_sentence, teacher_sentence, dim=-1)).mean()


def vector_cosine_loss(student_vectors: Tensor, teacher_vectors: Tensor) -> Tensor:
    """Mean over the batch of ``1 - cos`` between ``(batch, dim)`` sentence vectors (the
    teacher's taken as fixed targets)."""
    _check_same_shape(student_vectors, teacher_vectors, "sentence vectors")
    return (1.0 - F.cosine_similarity(student_vectors, teacher_vectors.detach(), dim=-1)).mean()


def similarity_structure_loss(
    student_hidden: Tensor, teacher_hidden: Tensor, attention_mask: Tensor
) -> Tensor:
    """Similarity-preserving KD (Tung & Mori, 2019) on sentence vectors: MSE between
    the in-batch cosine-similarity matrices of student and teacher.

    student_hidden: ``(batch, seq, student_hidden)``; teacher_hidden:
    ``(batch, seq, teacher_hidden)`` (widths may differ: only ``(batch, batch)``
    similarities are compared); attention_mask: ``(batch, seq)``. The diagonal (always 1)
    is left out; a batch of one gives 0.
    """
    if student_hidden.shape[:-1] != teacher_hidden.shape[:-1]:
        raise LossInputError(
            f"student {tuple(student_hidden.shape)} and teacher "
            f"{tuple(teacher_hidden.shape)} must agree on batch and sequence length"
        )
    student_unit = F.normalize(_mean_pooled(student_hidden, attention_mask), dim=-1)
    teacher_unit = F.normalize(_mean_pooled(teacher_hidden.detach(), attention_mask), dim=-1)
    batch = student_unit.shape[0]
    off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=student_unit.device)
    difference = (student_unit @ student_unit.T - teacher_unit @ teacher_unit.T)[off_diagonal]
    return _mean_or_zero(difference.pow(2).sum(), difference.numel())


def matryoshka_similarity_loss(
    student_vectors: Tensor, teacher_vectors: Tensor, dims: Sequence[int]
) -> Tensor:
    """Matryoshka distillation: for each prefix width ``d`` in ``dims``, the student's
    first ``d`` dimensions, renormalised, must keep the teacher's in-batch cosine
    similarities; the mean over the prefixes of the off-diagonal MSE between the two
    ``(batch, batch)`` cosine matrices.

    student_vectors: ``(batch, student_dim)``; teacher_vectors: ``(batch, teacher_dim)``
    (the widths may differ; the teacher is used whole, it need not be Matryoshka-trained).
    Every ``d`` must be in ``[1, student_dim]``. A batch of one gives 0.
    """
    if student_vectors.shape[0] != teacher_vectors.shape[0]:
        raise LossInputError(
            f"student {tuple(student_vectors.shape)} and teacher {tuple(teacher_vectors.shape)} "
            "must have one row per sentence each"
        )
    width = student_vectors.shape[1]
    if not dims or any(not 1 <= d <= width for d in dims):
        raise LossInputError(f"each Matryoshka width must be in [1, {width}], got {list(dims)}")
    teacher_unit = F.normalize(teacher_vectors.detach(), dim=-1)
    teacher_similarity = teacher_unit @ teacher_unit.T
    batch = student_vectors.shape[0]
    off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=student_vectors.device)
    total = student_vectors.new_zeros(())
    for d in dims:
        prefix = F.normalize(student_vectors[:, :d], dim=-1)  # truncated, renormalised
        difference = (prefix @ prefix.T - teacher_similarity)[off_diagonal]
        total = total + _mean_or_zero(difference.pow(2).sum(), difference.numel())
    return total / len(dims)


def pair_cosine_loss(
    student_first: Tensor,
    student_second: Tensor,
    teacher_first: Tensor,
    teacher_second: Tensor,
) -> Tensor:
    """MSE between the student's and the teacher's cosine similarity of sentence pairs.

    student_first, student_second: ``(pairs, student_hidden)`` sentence vectors, pair i
    being row i of each; teacher_first, teacher_second: ``(pairs, teacher_hidden)`` (the
    widths may differ: only the ``(pairs,)`` cosines meet). Teaches the teacher's graded
    similarity of related sentences (a sentence and a shortened view of it), which random
    in-batch pairs, nearly all unrelated, do not.
    """
    if student_first.shape != student_second.shape or teacher_first.shape != teacher_second.shape:
        raise LossInputError(
            "both sentences of a pair need vectors of one shape: student "
            f"{tuple(student_first.shape)} / {tuple(student_second.shape)}, teacher "
            f"{tuple(teacher_first.shape)} / {tuple(teacher_second.shape)}"
        )
    if student_first.shape[0] != teacher_first.shape[0]:
        raise LossInputError(
            f"the student has {student_first.shape[0]} pairs but the teacher "
            f"{teacher_first.shape[0]}: they must match"
        )
    student_cosine = F.cosine_similarity(student_first, student_second, dim=-1)
    teacher_cosine = F.cosine_similarity(teacher_first.detach(), teacher_second.detach(), dim=-1)
    return (student_cosine - teacher_cosine).pow(2).mean()


def embedding_mse_loss(
    student_embeddings: Tensor,
    teacher_embeddings: Tensor,
    attention_mask: Tensor | None = None,
    projection: nn.Module | None = None,
) -> Tensor:
    """TinyBERT's embedding-layer loss: :func:`hidden_mse_loss` on hidden state 0.

    student_embeddings: ``(batch, seq, student_hidden)``; teacher_embeddings:
    ``(batch, seq, teacher_hidden)``. Kept as a name so loss dicts read like the paper.
    """
    return hidden_mse_loss(student_embeddings, teacher_embeddings, attention_mask, projection)


def _attention_pairs(
    student_maps: Tensor, teacher_maps: Tensor, attention_mask: Tensor, average_heads: bool
) -> Tensor:
    """Check ``(batch, heads, seq, seq)`` maps; return the (batch, 1, seq, seq) pair mask."""
    if student_maps.dim() != 4 or teacher_maps.dim() != 4:
        raise LossInputError(
            f"attention maps must be (batch, heads, seq, seq); got student "
            f"{tuple(student_maps.shape)} and teacher {tuple(teacher_maps.shape)}"
        )
    if not average_heads and student_maps.shape[1] != teacher_maps.shape[1]:
        raise LossInputError(
            f"student has {student_maps.shape[1]} attention heads but teacher has "
            f"{teacher_maps.shape[1]}: pass average_heads=True to compare head-averaged maps"
        )
    batch, _, seq, keys = student_maps.shape
    if keys != seq or (batch, seq, keys) != (teacher_maps.shape[0], *teacher_maps.shape[2:]):
        raise LossInputError(
            f"attention maps must be square and agree in batch and sequence size: student "
            f"{tuple(student_maps.shape)}, teacher {tuple(teacher_maps.shape)}"
        )
    token_mask = _selection(attention_mask, (batch, seq), student_maps.device)
    return (token_mask[:, :, None] & token_mask[:, None, :])[:, None]


def attention_score_mse(
    student_scores: Tensor,
    teacher_scores: Tensor,
    attention_mask: Tensor,
    average_heads: bool = False,
) -> Tensor:
    """TinyBERT's attention loss: MSE between pre-softmax attention scores.

    student_scores, teacher_scores: ``(batch, heads, seq, seq)`` (query, key);
    attention_mask: ``(batch, seq)``. Only (query, key) pairs where both are real tokens
    count, so masked scores (-inf, -1e4, ...) never leak in. Averaged over heads and the
    counted pairs. Different head counts are an error unless ``average_heads=True``,
    which compares the head-averaged maps.
    """
    pairs = _attention_pairs(student_scores, teacher_scores, attention_mask, average_heads)
    # Zero the excluded pairs *before* any arithmetic: -inf - (-inf) is NaN, and a NaN
    # would poison the gradients even of an excluded term.
    student_scores = torch.where(pairs, student_scores, 0.0)
    teacher_scores = torch.where(pairs, teacher_scores.detach(), 0.0)
    if average_heads:
        student_scores = student_scores.mean(dim=1, keepdim=True)
        teacher_scores = teacher_scores.mean(dim=1, keepdim=True)
    squared = (student_scores - teacher_scores).pow(2)  # (batch, heads, seq, seq), 0 off pairs
    return _mean_or_zero(squared.sum(), squared.shape[1] * pairs.sum())


def attention_prob_kl(
    student_probs: Tensor,
    teacher_probs: Tensor,
    attention_mask: Tensor,
    average_heads: bool = False,
) -> Tensor:
    """MiniLM-style attention loss: ``KL(teacher || student)`` per query row over keys.

    student_probs, teacher_probs: ``(batch, heads, seq, seq)`` post-softmax attention
    (each query row sums to 1); attention_mask: ``(batch, seq)``. The KL is summed over
    the real keys and averaged over heads and real queries; padded queries are excluded.
    ``average_heads=True`` compares head-averaged maps (needed when head counts differ).
    """
    pairs = _attention_pairs(student_probs, teacher_probs, attention_mask, average_heads)
    # Excluded pairs become (teacher 0, student 1), which contributes exactly 0.
    student_probs = torch.where(pairs, student_probs, 1.0)
    teacher_probs = torch.where(pairs, teacher_probs.detach(), 0.0)
    if average_heads:
        student_probs = student_probs.mean(dim=1, keepdim=True)
        teacher_probs = teacher_probs.mean(dim=1, keepdim=True)
    # Clamping at the smallest normal number only changes probabilities that underflowed.
    student_log_probs = student_probs.clamp_min(torch.finfo(student_probs.dtype).tiny).log()
    kl = torch.xlogy(teacher_probs, teacher_probs) - teacher_probs * student_log_probs
    real_queries = pairs.any(dim=-1).sum()  # a real query always has a real key: itself
    return _mean_or_zero(kl.sum(), student_probs.shape[1] * real_queries)


def self_attention_relation_loss(
    student_vectors: Tensor,
    teacher_vectors: Tensor,
    attention_mask: Tensor,
    relation_heads: int,
) -> Tensor:
    """MiniLMv2's relation loss for one kind of vector (queries, keys or values).

    student_vectors: ``(batch, seq, student_width)``; teacher_vectors:
    ``(batch, seq, teacher_width)``, e.g. the query projections of the last block;
    attention_mask: ``(batch, seq)``. Each side is split into ``relation_heads`` heads of
    width ``d`` (both widths must divide evenly) and turned into relations
    ``softmax(x x^T / sqrt(d))`` over the real keys, ``(batch, heads, seq, seq)``. The
    loss is ``KL(teacher || student)`` summed over keys and averaged over heads and real
    queries. Only ``seq x seq`` relations are compared, so the widths and the models'
    own head counts may differ.
    """
    if student_vectors.dim() != 3 or student_vectors.shape[:2] != teacher_vectors.shape[:2]:
        raise LossInputError(
            f"relation vectors must be (batch, seq, width) and agree in batch and sequence: "
            f"student {tuple(student_vectors.shape)}, teacher {tuple(teacher_vectors.shape)}"
        )
    if relation_heads < 1:
        raise LossInputError(f"relation_heads must be at least 1, got {relation_heads}")
    for side, vectors in (("student", student_vectors), ("teacher", teacher_vectors)):
        if vectors.shape[-1] % relation_heads:
            raise LossInputError(
                f"the {side} width {vectors.shape[-1]} is not divisible by relation_heads="
                f"{relation_heads}: choose a number of relation heads that divides both widths"
            )
    batch, seq, _ = student_vectors.shape
    key_mask = _selection(attention_mask, (batch, seq), student_vectors.device)

    def relations(vectors: Tensor) -> Tensor:
        heads = vectors.view(batch, seq, relation_heads, -1).transpose(1, 2)  # (B, R, T, d)
        scores = heads @ heads.transpose(-1, -2) / math.sqrt(heads.shape[-1])  # (B, R, T, T)
        scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        return scores.softmax(dim=-1)

    # The relations are attention-like maps: the KL is attention_prob_kl's.
    return attention_prob_kl(
        relations(student_vectors), relations(teacher_vectors.detach()), attention_mask
    )


def pkd_loss(student_cls: Tensor, teacher_cls: Tensor) -> Tensor:
    """Patient KD's loss on [CLS] vectors of matched layers.

    student_cls, teacher_cls: ``(batch, layers, hidden)`` or ``(batch, hidden)``. Each
    vector is L2-normalised, then the squared Euclidean distance is summed over hidden and
    averaged over batch and layers (so scaling any vector leaves the loss unchanged).
    """
    _check_hidden(student_cls, teacher_cls, "PKD needs equal widths; project the student first")
    if student_cls.dim() not in (2, 3):
        raise LossInputError(
            f"pkd_loss expects (batch, layers, hidden) or (batch, hidden); got "
            f"{tuple(student_cls.shape)}"
        )
    student_unit = F.normalize(student_cls, dim=-1)
    teacher_unit = F.normalize(teacher_cls.detach(), dim=-1)
    squared_distance = (student_unit - teacher_unit).pow(2).sum(dim=-1)  # (batch[, layers])
    return squared_distance.mean()


# ---------------------------------------------------------------------------------------
# Combining losses and teachers.


def weighted_sum(losses: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """``sum(weights[name] * losses[name])`` over the named losses.

    Every loss needs a weight and every weight a loss (a typo is an error, not a silently
    dropped term). Terms with weight 0 are skipped entirely, so a NaN there cannot spread.
    """
    missing_weights = sorted(set(losses) - set(weights))
    if missing_weights:
        raise LossInputError(
            f"no weight for loss(es) {missing_weights}; weights were given for "
            f"{sorted(weights)} (give weight 0 to switch a loss off)"
        )
    unknown_weights = sorted(set(weights) - set(losses))
    if unknown_weights:
        raise LossInputError(
            f"weight(s) {unknown_weights} name no loss; the losses are {sorted(losses)}"
        )
    if not losses:
        raise LossInputError("weighted_sum got no losses")
    total: Tensor | None = None
    for name, loss in losses.items():
        weight = float(weights[name])
        if not (weight >= 0 and math.isfinite(weight)):
            raise LossInputError(f"weight of {name!r} must be finite and >= 0, got {weight}")
        if loss.dim() != 0:
            raise LossInputError(f"loss {name!r} must be a scalar, got shape {tuple(loss.shape)}")
        if weight == 0:
            continue
        total = weight * loss if total is None else total + weight * loss
    if total is None:
        first = next(iter(losses.values()))
        return torch.zeros((), dtype=first.dtype, device=first.device)
    return total


def average_teacher_logits(
    teacher_logits: list[Tensor],
    mode: str = "probs",
    temperature: float = 1.0,
    weights: list[float] | None = None,
) -> Tensor:
    """Combine several teachers into one set of soft-target logits.

    teacher_logits: a list of ``(..., classes)`` tensors of one shape. weights: one
    non-negative number per teacher (normalised to sum 1; default equal).

    mode "probs": returns ``T * log(sum_i w_i softmax(logits_i / T))``, so that
    ``softmax(result / T)`` is exactly the weighted mean teacher distribution at
    temperature T; pass the same temperature to :func:`soft_target_loss`.
    mode "logits": returns the weighted mean of the logits (temperature is unused).

    With one teacher both modes give soft targets equal to that teacher's (in mode
    "probs" the logits are shifted by a per-row constant, which softmax ignores).
    The result is detached: it is a target, not something to train.
    """
    if not teacher_logits:
        raise LossInputError("average_teacher_logits needs at least one teacher")
    if mode not in ("probs", "logits"):
        raise LossInputError(f"mode must be 'probs' or 'logits', got {mode!r}")
    _check_temperature(temperature)
    first = teacher_logits[0]
    for index, logits in enumerate(teacher_logits[1:], start=1):
        if logits.shape != first.shape:
            raise LossInputError(
                f"teacher {index} logits have shape {tuple(logits.shape)} but teacher 0 "
                f"logits have shape {tuple(first.shape)}: all teachers must match"
            )
    if weights is None:
        weights = [1.0] * len(teacher_logits)
    if len(weights) != len(teacher_logits):
        raise LossInputError(
            f"got {len(weights)} weights for {len(teacher_logits)} teachers: give one each"
        )
    if any(not (w >= 0 and math.isfinite(w)) for w in weights) or sum(weights) <= 0:
        raise LossInputError(f"teacher weights must be finite, >= 0 and not all 0; got {weights}")
    # Teachers with weight 0 are dropped (log 0 = -inf would otherwise enter logsumexp).
    total_weight = sum(weights)
    kept = [index for index, weight in enumerate(weights) if weight > 0]
    stacked = torch.stack([teacher_logits[i].detach() for i in kept])  # (teachers, ..., classes)
    weight_tensor = torch.tensor(
        [weights[i] / total_weight for i in kept], dtype=stacked.dtype, device=stacked.device
    ).view((len(kept),) + (1,) * first.dim())
    if mode == "logits":
        return (weight_tensor * stacked).sum(dim=0)
    log_probs = F.log_softmax(stacked / temperature, dim=-1)
    return temperature * torch.logsumexp(log_probs + weight_tensor.log(), dim=0)


def topk_kl_loss(
    student_logits: Tensor,
    teacher_topk_probs: Tensor,
    teacher_topk_ids: Tensor,
    mask: Tensor | None = None,
) -> Tensor:
    """KL(teacher top-k || student) per position, averaged over the positions of ``mask``
    (C-MLM, Chen et al., 2020).

    student_logits: ``(..., vocab)``; teacher_topk_probs and teacher_topk_ids: ``(..., k)``,
    the teacher's k most likely tokens and their probabilities, renormalised here to sum to
    1. Per position: ``sum_j p_j (log p_j - log q(id_j))`` with ``q`` the student's softmax
    over the whole vocabulary. Padding (mask 0) contributes nothing.
    """
    if teacher_topk_probs.shape != teacher_topk_ids.shape:
        raise LossInputError(
            f"teacher top-k probabilities have shape {tuple(teacher_topk_probs.shape)} but "
            f"their ids have shape {tuple(teacher_topk_ids.shape)}: they must match"
        )
    if teacher_topk_ids.shape[:-1] != student_logits.shape[:-1]:
        raise LossInputError(
            f"teacher top-k has positions {tuple(teacher_topk_ids.shape[:-1])} but student "
            f"logits have {tuple(student_logits.shape[:-1])}: align teacher and student"
        )
    selected = _selection(mask, student_logits.shape[:-1], student_logits.device)
    probs = teacher_topk_probs.detach()[selected].float()  # (N, k)
    probs = probs / probs.sum(-1, keepdim=True).clamp_min(1e-12)
    student_log_probs = F.log_softmax(student_logits[selected].float(), dim=-1)  # (N, vocab)
    picked = student_log_probs.gather(-1, teacher_topk_ids[selected].long())  # (N, k)
    terms = torch.where(probs > 0, probs * (probs.clamp_min(1e-12).log() - picked), 0.0)
    return _mean_or_zero(terms.sum(), probs.shape[0])
