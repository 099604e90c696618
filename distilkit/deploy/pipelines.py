"""Putting fine-tuned models to work: ``classify``, ``ner`` and ``answer``.

Each function takes an :class:`~distilkit.encoder.Encoder` (or anything
:func:`distilkit.load` accepts: a checkpoint folder, a Hub id) with the matching head,
and returns plain Python values with character offsets into the input text. A model
given by name is loaded on ``device`` (auto: the GPU when there is one); inputs follow
the model's device and outputs come back to the host.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from distilkit.encoder import Encoder, load
from distilkit.model.bilstm import is_bilstm_folder, load_bilstm
from distilkit.model.device import AUTO, resolve_device, to_device
from distilkit.tasks.qa import QAExample, make_features

CHUNK_BATCHES = 16  # batches per call of the model in classify (one step of its bar)

ModelLike = Encoder | str | os.PathLike


def _encoder(model: ModelLike, head: str, device: str | torch.device = AUTO) -> Encoder:
    encoder = model if isinstance(model, Encoder) else load(model, device=device)
    if encoder.config.head != head:
        raise ValueError(
            f"{encoder.name} has head {encoder.config.head!r} but this needs a {head!r} head: "
            "use a model fine-tuned for the task (distilkit finetune)"
        )
    return encoder


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- classify
def classify(
    model: ModelLike,
    texts: str | Sequence[str],
    pairs: Sequence[str] | None = None,
    batch_size: int = 32,
    progress: bool = False,
    device: str | torch.device = AUTO,
) -> list[dict]:
    """Label each text (or text pair) with a sequence-classification model.

    Classification: ``{"label": name, "score": probability, "scores": {name: p, ...}}``;
    regression (one output): ``{"score": value}``. One dict per text, in order.
    ``progress``: a bar of the batches on stderr. ``device``: where a model given by name
    runs.
    """
    if isinstance(model, (str, os.PathLike)) and is_bilstm_folder(model):
        # a BiLSTM student: same .logits and .config
        encoder = load_bilstm(model).to(resolve_device(device))
    elif not isinstance(model, (str, os.PathLike, Encoder)) and hasattr(model, "logits"):
        encoder = model  # an already-loaded BiLSTM or ONNX classifier
    else:
        encoder = _encoder(model, "sequence_classification", device)
    if isinstance(texts, str):
        texts = [texts]
        pairs = [pairs] if isinstance(pairs, str) else pairs
    texts = list(texts)
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(pairs)} second texts: they must pair up")
    if not texts:
        return []
    # chunks of many batches: each call still sorts its texts by length before batching
    chunk = CHUNK_BATCHES * batch_size
    starts = range(0, len(texts), chunk)
    logits = np.concatenate(  # (n, num_labels)
        [
            encoder.logits(
                texts[start : start + chunk],
                None if pairs is None else pairs[start : start + chunk],
                batch_size=batch_size,
            )
            for start in tqdm(starts, desc="classifying", unit="chunk", disable=not progress)
        ]
    )
    config = encoder.config
    if config.num_labels == 1:
        return [{"score": float(row[0])} for row in logits]
    names = config.label_names or [f"LABEL_{i}" for i in range(config.num_labels)]
    results = []
    for probabilities in _softmax(logits.astype(np.float64)):
        best = int(probabilities.argmax())
        results.append(
            {
                "label": names[best],
                "score": float(probabilities[best]),
                "scores": {name: float(p) for name, p in zip(names, probabilities, strict=True)},
            }
        )
    return results


# ----------------------------------------------------------------------------- ner
def group_entities(
    text: str, tags: Sequence[str], spans: Sequence[tuple[int, int]], scores: Sequence[float]
) -> list[dict]:
    """Join per-word IOB2 tags into entities, as the CoNLL ``conlleval`` script reads them.

    An entity starts at ``B-X``, or at ``I-X`` after ``O`` or another type, and runs while
    ``I-X`` follows; ``spans`` are the words' (start, end) characters in ``text``. Returns
    ``{"entity": X, "text", "start", "end", "score": mean word score}`` per entity.
    """
    if not len(tags) == len(spans) == len(scores):
        raise ValueError(f"got {len(tags)} tags, {len(spans)} spans and {len(scores)} scores")
    entities: list[dict] = []
    current: dict | None = None
    for tag, (start, end), score in zip(tags, spans, scores, strict=True):
        prefix, _, kind = tag.partition("-") if tag != "O" else ("O", "", "")
        continues = current is not None and prefix == "I" and kind == current["entity"]
        if continues:
            current["end"] = end
            current["scores"].append(score)
            continue
        if current is not None:
            entities.append(current)
            current = None
        if prefix in ("B", "I") and kind:
            current = {"entity": kind, "start": start, "end": end, "scores": [score]}
    if current is not None:
        entities.append(current)
    return [
        {
            "entity": entity["entity"],
            "text": text[entity["start"] : entity["end"]],
            "start": entity["start"],
            "end": entity["end"],
            "score": float(np.mean(entity["scores"])),
        }
        for entity in entities
    ]


@torch.inference_mode()
def ner(model: ModelLike, text: str, device: str | torch.device = AUTO) -> list[dict]:
    """Named entities in ``text`` from a token-classification model with IOB2 label names.

    Words are the tokenizer's pre-tokenized words (punctuation apart); a word's tag is
    the prediction at its first sub-word. Text beyond the model's token limit is cut
    (with a warning). Returns :func:`group_entities` dicts with character offsets.
    ``device``: where a model given by name runs.
    """
    encoder = _encoder(model, "token_classification", device)
    names = encoder.config.label_names
    if names is None:
        raise ValueError(
            f"{encoder.name} has no label names (only LABEL_0, ...), so its tags cannot be "
            "read as entities: fine-tune it with distilkit finetune --task conll2003"
        )
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    batch = encoder.tokenizer([text])
    inputs = to_device(batch.model_inputs(), encoder.device)
    logits = encoder.model(**inputs).logits[0].float().cpu().numpy()  # (T, labels)
    probabilities = _softmax(logits.astype(np.float64))
    words: dict[int, dict] = {}
    for position, word in enumerate(batch.word_ids[0]):
        if word is None:
            continue
        start, end = batch.offsets[0][position]
        if word not in words:
            best = int(probabilities[position].argmax())
            words[word] = {"tag": names[best], "start": start, "end": end}
            words[word]["score"] = float(probabilities[position, best])
        words[word]["end"] = max(words[word]["end"], end)
    ordered = [words[index] for index in sorted(words)]
    return group_entities(
        text,
        [word["tag"] for word in ordered],
        [(word["start"], word["end"]) for word in ordered],
        [word["score"] for word in ordered],
    )


# ----------------------------------------------------------------------------- answer
def best_span(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    in_context: np.ndarray,
    max_answer_length: int = 30,
) -> tuple[float, int, int] | None:
    """The highest-scoring valid span of one window: (start logit + end logit, start
    token, end token), or None. start_logits, end_logits, in_context: ``(tokens,)``; a
    span is valid when both ends are context tokens, start <= end and it has at most
    ``max_answer_length`` tokens."""
    starts = np.where(in_context, start_logits, -np.inf)
    ends = np.where(in_context, end_logits, -np.inf)
    scores = starts[:, None] + ends[None, :]  # (start, end)
    length = np.arange(len(ends))[None, :] - np.arange(len(starts))[:, None] + 1
    scores = np.where((length >= 1) & (length <= max_answer_length), scores, -np.inf)
    if not np.isfinite(scores).any():
        return None
    flat = int(np.argmax(scores))
    start, end = divmod(flat, scores.shape[1])
    return float(scores[start, end]), start, end


@torch.inference_mode()
def answer(
    model: ModelLike,
    question: str,
    context: str,
    max_answer_length: int = 30,
    max_length: int | None = None,
    doc_stride: int | None = None,
    batch_size: int = 16,
    device: str | torch.device = AUTO,
) -> dict:
    """The answer to ``question`` in ``context`` from an extractive QA model.

    A long context is read in overlapping windows (``max_length`` tokens, ``doc_stride``
    shared; defaults 384 / 128, less for models that read fewer tokens). The span with
    the best start + end logit over all windows wins. Returns ``{"answer": text,
    "score": p, "start": char, "end": char}`` where ``p`` is the span's probability
    (start probability x end probability within its window) and
    ``context[start:end] == answer``; an empty answer with score 0 when no span fits.
    ``device``: where a model given by name runs.
    """
    encoder = _encoder(model, "question_answering", device)
    for name, value in (("question", question), ("context", context)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"the {name} must be a non-empty string")
    limit = encoder.tokenizer.max_length
    max_length = min(max_length or 384, limit)
    doc_stride = min(doc_stride if doc_stride is not None else 128, max_length // 4)
    features = make_features(
        encoder.tokenizer,
        [QAExample(id="0", title="", question=question, context=context, answers=[])],
        max_length=max_length,
        doc_stride=doc_stride,
        max_question_length=min(64, max_length // 4),
    )
    inputs = to_device(features.model_inputs(), encoder.device)
    windows = [
        encoder.model(**{k: v[i : i + batch_size] for k, v in inputs.items()}).logits.float()
        for i in range(0, len(features), batch_size)
    ]
    logits = torch.cat(windows).cpu().numpy()  # (windows, T, 2)
    best: tuple[float, int, int, int] | None = None  # (score, window, start, end)
    for window, offsets in enumerate(features.offsets):
        in_context = np.array([span is not None for span in offsets], dtype=bool)
        n = len(offsets)
        found = best_span(
            logits[window, :n, 0], logits[window, :n, 1], in_context, max_answer_length
        )
        if found is not None and (best is None or found[0] > best[0]):
            best = (found[0], window, found[1], found[2])
    if best is None:
        return {"answer": "", "score": 0.0, "start": 0, "end": 0}
    _, window, start, end = best
    n = len(features.offsets[window])
    start_probs = _softmax(logits[window, :n, 0].astype(np.float64))
    end_probs = _softmax(logits[window, :n, 1].astype(np.float64))
    char_start = features.offsets[window][start][0]
    char_end = features.offsets[window][end][1]
    return {
        "answer": context[char_start:char_end],
        "score": float(start_probs[start] * end_probs[end]),
        "start": char_start,
        "end": char_end,
    }
