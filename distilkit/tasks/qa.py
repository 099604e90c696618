"""Extractive question answering on SQuAD v1.1: reading, windowed features, span decoding.

A context longer than the model's window is cut into overlapping windows (question
first, then a slice of the context); each window is one *feature*. Training labels are
the first answer's start / end token in each window, or the [CLS] position 0 when the
answer is not wholly inside that window. At prediction time :func:`postprocess` takes
the best-scoring valid span over all windows of a question and maps it back to the
context text through the tokens' character offsets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from distilkit.model.tokenizer import Tokenizer


class SquadFormatError(ValueError):
    """A SQuAD file does not follow the v1.1 layout or has a wrong answer offset."""


@dataclass
class QAExample:
    """One question about a context; answers are (text, character start in context)."""

    id: str
    title: str
    question: str
    context: str
    answers: list[tuple[str, int]]


def _field(record: object, key: str, where: str, kind: type) -> object:
    if not isinstance(record, dict) or key not in record:
        raise SquadFormatError(f"{where}: missing field {key!r} (expected SQuAD v1.1 JSON)")
    value = record[key]
    if not isinstance(value, kind):
        raise SquadFormatError(
            f"{where}: field {key!r} should be {kind.__name__}, got {type(value).__name__}"
        )
    return value


def read_squad(path: str | Path) -> list[QAExample]:
    """Read a SQuAD v1.1 JSON file into one :class:`QAExample` per question.

    Checks that every ``context[answer_start : answer_start + len(text)] == text`` and
    that question ids are unique.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"SQuAD file not found: {path} (set DISTILKIT_DATA or pass the data root)"
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SquadFormatError(f"{path} is not valid JSON: {error}") from None
    examples: list[QAExample] = []
    seen_ids: set[str] = set()
    for article_index, article in enumerate(_field(document, "data", str(path), list)):
        where = f"{path}: article {article_index}"
        title = _field(article, "title", where, str)
        for paragraph_index, paragraph in enumerate(_field(article, "paragraphs", where, list)):
            where = f"{path}: article {title!r} paragraph {paragraph_index}"
            context = _field(paragraph, "context", where, str)
            for question in _field(paragraph, "qas", where, list):
                question_id = str(_field(question, "id", where, (str, int)))
                where = f"{path}: question {question_id!r}"
                if question_id in seen_ids:
                    raise SquadFormatError(f"{where}: the id occurs twice; ids must be unique")
                seen_ids.add(question_id)
                answers: list[tuple[str, int]] = []
                for answer in _field(question, "answers", where, list):
                    text = _field(answer, "text", where, str)
                    start = _field(answer, "answer_start", where, int)
                    if context[start : start + len(text)] != text:
                        raise SquadFormatError(
                            f"{where}: answer {text!r} is not at character {start} of the "
                            f"context (found {context[start : start + len(text)]!r}); "
                            "answer_start must be a character offset into the context"
                        )
                    answers.append((text, start))
                examples.append(
                    QAExample(
                        id=question_id,
                        title=title,
                        question=_field(question, "question", where, str),
                        context=context,
                        answers=answers,
                    )
                )
    return examples


def split_by_article(
    examples: Sequence[QAExample], eval_fraction: float = 0.2, seed: int = 0
) -> tuple[list[QAExample], list[QAExample]]:
    """Split into (train, eval) by article title, so no context is on both sides.

    ``round(eval_fraction * n_titles)`` titles (at least 1, at most n_titles - 1), chosen
    with a numpy generator seeded by ``seed``, go to eval; examples keep their order.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be strictly between 0 and 1, got {eval_fraction}")
    titles = list(dict.fromkeys(example.title for example in examples))
    if len(titles) < 2:
        raise ValueError(
            f"splitting by article needs at least 2 titles, got {len(titles)}: "
            "there is nothing to hold out"
        )
    n_eval = min(max(round(eval_fraction * len(titles)), 1), len(titles) - 1)
    order = np.random.default_rng(seed).permutation(len(titles))
    eval_titles = {titles[index] for index in order[:n_eval]}
    train = [example for example in examples if example.title not in eval_titles]
    held_out = [example for example in examples if example.title in eval_titles]
    return train, held_out


@dataclass
class QAFeatures:
    """Windowed model inputs for a list of examples, one row per window (feature).

    input_ids, attention_mask, token_type_ids: (n_features, seq) int64, padded right.
    example_index: per feature, the index of its example in the list given to
    :func:`make_features`. offsets: per feature, per token (unpadded), the (start, end)
    character span in the context, or None for question and special tokens.
    start_positions, end_positions: (n_features,) int64 token positions of the first
    answer, 0 ([CLS]) when the answer is not wholly inside the window or there is none.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    example_index: list[int]
    offsets: list[list[tuple[int, int] | None]]
    start_positions: torch.Tensor
    end_positions: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The tensors a model's forward takes, as keyword arguments."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }


def _answer_positions(
    offsets: list[tuple[int, int] | None], answers: list[tuple[str, int]]
) -> tuple[int, int]:
    """Token positions of the first answer within one window, or (0, 0)."""
    context_positions = [position for position, span in enumerate(offsets) if span is not None]
    if not answers or not context_positions:
        return 0, 0
    text, char_start = answers[0]
    char_end = char_start + len(text)
    first, last = context_positions[0], context_positions[-1]
    if offsets[first][0] > char_start or offsets[last][1] < char_end:
        return 0, 0
    # First token ending after the answer's start, last token starting before its end:
    # robust to answers that begin or end on whitespace or inside a word piece.
    start = next(p for p in context_positions if offsets[p][1] > char_start)
    end = next(p for p in reversed(context_positions) if offsets[p][0] < char_end)
    return (start, end) if start <= end else (0, 0)


def _cut_questions(tokenizer: Tokenizer, questions: list[str], max_tokens: int) -> list[str]:
    """Questions cut at the end of their ``max_tokens``-th word piece."""
    encodings = tokenizer.backend.encode_batch(questions, add_special_tokens=False)
    cut: list[str] = []
    for question, encoding in zip(questions, encodings, strict=True):
        if len(encoding.ids) > max_tokens:
            question = question[: encoding.offsets[max_tokens - 1][1]]
        cut.append(question)
    return cut


def make_features(
    tokenizer: Tokenizer,
    examples: Sequence[QAExample],
    max_length: int = 384,
    doc_stride: int = 128,
    max_question_length: int = 64,
) -> QAFeatures:
    """Tokenize (question, context) pairs into overlapping windows of the context.

    Each window holds ``[CLS] question [SEP] context-slice [SEP]`` in at most
    ``max_length`` tokens; consecutive windows share ``doc_stride`` context tokens (the
    meaning of ``stride`` in `tokenizers` and Hugging Face's run_qa, not the step size of
    the original BERT script). Questions are cut to ``max_question_length`` word pieces.
    """
    if not 0 < max_length <= tokenizer.max_length:
        raise ValueError(
            f"max_length must be between 1 and the tokenizer's limit {tokenizer.max_length}, "
            f"got {max_length}"
        )
    if doc_stride < 0 or max_question_length < 1:
        raise ValueError(
            f"need doc_stride >= 0 and max_question_length >= 1, got {doc_stride} and "
            f"{max_question_length}"
        )
    if max_question_length + 3 + doc_stride >= max_length:
        raise ValueError(
            f"max_length {max_length} leaves no new context per window: it must exceed "
            f"max_question_length ({max_question_length}) + doc_stride ({doc_stride}) + 3 "
            "special tokens"
        )
    questions = _cut_questions(
        tokenizer, [example.question for example in examples], max_question_length
    )
    backend = tokenizer.backend
    backend.enable_truncation(max_length, stride=doc_stride, strategy="only_second")
    try:
        encodings = backend.encode_batch(
            [
                (question, example.context)
                for question, example in zip(questions, examples, strict=True)
            ]
        )
    finally:
        backend.no_truncation()

    windows = []
    example_index: list[int] = []
    for index, encoding in enumerate(encodings):
        for window in [encoding, *encoding.overflowing]:
            windows.append(window)
            example_index.append(index)

    length = max((len(window.ids) for window in windows), default=0)
    input_ids = np.full((len(windows), length), tokenizer.pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(windows), length), dtype=np.int64)
    token_type_ids = np.zeros((len(windows), length), dtype=np.int64)
    start_positions = np.zeros(len(windows), dtype=np.int64)
    end_positions = np.zeros(len(windows), dtype=np.int64)
    all_offsets: list[list[tuple[int, int] | None]] = []
    for row, (window, index) in enumerate(zip(windows, example_index, strict=True)):
        n_tokens = len(window.ids)
        input_ids[row, :n_tokens] = window.ids
        attention_mask[row, :n_tokens] = 1
        token_type_ids[row, :n_tokens] = window.type_ids
        offsets = [
            tuple(span) if sequence == 1 else None
            for span, sequence in zip(window.offsets, window.sequence_ids, strict=True)
        ]
        all_offsets.append(offsets)
        start_positions[row], end_positions[row] = _answer_positions(
            offsets, examples[index].answers
        )
    return QAFeatures(
        input_ids=torch.from_numpy(input_ids),
        attention_mask=torch.from_numpy(attention_mask),
        token_type_ids=torch.from_numpy(token_type_ids),
        example_index=example_index,
        offsets=all_offsets,
        start_positions=torch.from_numpy(start_positions),
        end_positions=torch.from_numpy(end_positions),
    )


def _as_matrix(logits: torch.Tensor | np.ndarray, name: str, n_features: int) -> np.ndarray:
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu().numpy()
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] != n_features:
        raise ValueError(
            f"{name} must have shape (n_features={n_features}, seq), got {logits.shape}"
        )
    return logits


def postprocess(
    start_logits: torch.Tensor | np.ndarray,
    end_logits: torch.Tensor | np.ndarray,
    features: QAFeatures,
    examples: Sequence[QAExample],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """Best answer text per question id from start / end logits (n_features, seq).

    For each window, the ``n_best`` highest start and end positions are paired; a span
    is valid when both ends are context tokens, start <= end and it has at most
    ``max_answer_length`` tokens. Its score is start logit + end logit; the best valid
    span over all windows of a question wins. A question without a valid span gets "".
    """
    if n_best < 1 or max_answer_length < 1:
        raise ValueError(
            f"n_best and max_answer_length must be positive, got {n_best} and {max_answer_length}"
        )
    start_scores = _as_matrix(start_logits, "start_logits", len(features))
    end_scores = _as_matrix(end_logits, "end_logits", len(features))
    if start_scores.shape != end_scores.shape:
        raise ValueError(
            f"start_logits {start_scores.shape} and end_logits {end_scores.shape} differ in shape"
        )
    if features.example_index and max(features.example_index) >= len(examples):
        raise ValueError(
            f"the features refer to example {max(features.example_index)} but only "
            f"{len(examples)} examples were given: pass the examples used in make_features"
        )
    # example index -> (score, answer start char, answer end char)
    best: dict[int, tuple[float, int, int]] = {}
    for row, (index, offsets) in enumerate(
        zip(features.example_index, features.offsets, strict=True)
    ):
        n_tokens = len(offsets)
        if n_tokens > start_scores.shape[1]:
            raise ValueError(
                f"feature {row} has {n_tokens} tokens but the logits only {start_scores.shape[1]}"
            )
        in_context = np.array([span is not None for span in offsets], dtype=bool)
        row_start = np.where(in_context, start_scores[row, :n_tokens], -np.inf)
        row_end = np.where(in_context, end_scores[row, :n_tokens], -np.inf)
        top_starts = np.argsort(-row_start, kind="stable")[:n_best]
        top_ends = np.argsort(-row_end, kind="stable")[:n_best]
        span_tokens = top_ends[None, :] - top_starts[:, None] + 1  # (n_best, n_best)
        scores = row_start[top_starts][:, None] + row_end[top_ends][None, :]
        valid = (span_tokens >= 1) & (span_tokens <= max_answer_length) & np.isfinite(scores)
        if not valid.any():
            continue
        scores = np.where(valid, scores, -np.inf)
        flat = int(np.argmax(scores))
        start = int(top_starts[flat // scores.shape[1]])
        end = int(top_ends[flat % scores.shape[1]])
        score = float(scores.flat[flat])
        if index not in best or score > best[index][0]:
            best[index] = (score, offsets[start][0], offsets[end][1])
    predictions: dict[str, str] = {}
    for index, example in enumerate(examples):
        if index in best:
            _, char_start, char_end = best[index]
            predictions[example.id] = example.context[char_start:char_end]
        else:
            predictions[example.id] = ""
    return predictions
