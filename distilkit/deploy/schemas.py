"""Requests and responses of ``distilkit serve``, in the shapes clients already speak.

* ``POST /v1/embeddings``: the OpenAI embeddings API (``input`` a string or a list of
  strings, ``encoding_format`` float | base64, ``dimensions``, ``usage`` token counts);
  errors as OpenAI writes them, ``{"error": {"message", "type", "param", "code"}}``.
* ``POST /embed``: text-embeddings-inference's (``inputs``, ``normalize``, ``truncate``;
  the response a list of vectors); errors as TEI writes them, ``{"error", "error_type"}``,
  plus ``"field"``.
* ``POST /classify``: ``inputs``, ``truncate``, ``threshold`` (early exit) -> one
  ``{"label", "score", "scores"}`` per text (``{"score"}`` for a regression head).

Parsing is by hand so that every 422 names the field at fault.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass

import numpy as np

try:  # the `serve` extra
    import orjson
except ImportError:  # pragma: no cover - exercised only without the extra
    orjson = None

MAX_INPUTS = 2048  # texts per request, OpenAI's limit
# orjson reads an integer past 64 bits as a float, where the json module keeps an int:
# a body with a run of 19 digits or more takes the json module's path
LONG_NUMBER = re.compile(rb"\d{19}")


class ApiError(Exception):
    """An HTTP error with a message and, for bad input, the request field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None, kind: str = ""):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.kind = kind or {
            401: "authentication_error",
            413: "payload_too_large",
            422: "invalid_request_error",
            429: "rate_limit_error",
            503: "unavailable",
        }.get(status, "server_error")
        self.headers: dict[str, str] = {}


def error_body(error: ApiError, openai_style: bool) -> dict:
    """The JSON body of an error in the route's dialect (OpenAI for ``/v1/...``, TEI else)."""
    if openai_style:
        return {
            "error": {
                "message": error.message,
                "type": error.kind,
                "param": error.field,
                "code": error.status,
            }
        }
    return {"error": error.message, "error_type": error.kind, "field": error.field}


def parse_json(body: bytes) -> dict:
    """A request body as a JSON object; 422 naming ``body`` when it is not one.

    orjson reads it; what orjson refuses (or may read differently) goes through the
    standard json module, so the result and every error message are the json module's
    (which takes NaN and Infinity, and integers of any size)."""
    if orjson is not None and not LONG_NUMBER.search(body):
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = _parse_json_slowly(body)
    else:
        payload = _parse_json_slowly(body)
    if not isinstance(payload, dict):
        raise ApiError(422, f"the body must be a JSON object, got {type(payload).__name__}", "body")
    return payload


def _parse_json_slowly(body: bytes) -> object:
    """The body through the json module; 422 naming ``body`` when it is not UTF-8 JSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(
            422, f"the body is not UTF-8 ({error.reason} at byte {error.start})", "body"
        ) from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise ApiError(
            422, f"the body is not JSON: {error.msg} at character {error.pos}", "body"
        ) from None
    return payload


def _check_keys(payload: dict, allowed: set[str], required: str) -> None:
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise ApiError(
            422, f"unknown field {unknown[0]!r}: this route takes {sorted(allowed)}", unknown[0]
        )
    if required not in payload:
        raise ApiError(422, f"the field {required!r} is required", required)


def _texts(value: object, field: str, max_inputs: int) -> list[str]:
    """A string or a non-empty list of non-empty strings."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list):
        raise ApiError(
            422, f"{field} must be a string or a list of strings, got {_kind(value)}", field
        )
    if not texts:
        raise ApiError(422, f"{field} is an empty list: give at least one text", field)
    if len(texts) > max_inputs:
        raise ApiError(
            413,
            f"{field} has {len(texts)} texts; this server takes at most {max_inputs} per "
            "request: split it",
            field,
        )
    for index, text in enumerate(texts):
        where = field if isinstance(value, str) else f"{field}[{index}]"
        if not isinstance(text, str):
            hint = ""
            if isinstance(text, (int, list)):
                hint = " (token-id arrays are not supported: send text)"
            raise ApiError(422, f"{where} must be a string, got {_kind(text)}{hint}", where)
        if not text.strip():
            raise ApiError(422, f"{where} is empty: give a text to embed", where)
    return texts


def _kind(value: object) -> str:
    return {type(None): "null", bool: "a boolean", dict: "an object", list: "a list"}.get(
        type(value), type(value).__name__
    )


def _bool(payload: dict, field: str, default: bool) -> bool:
    value = payload.get(field, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(422, f"{field} must be true or false, got {_kind(value)}", field)
    return value


# ----------------------------------------------------------------------------- requests
@dataclass
class EmbeddingsRequest:
    """OpenAI ``/v1/embeddings``."""

    texts: list[str]
    model: str | None
    base64: bool
    dimensions: int | None
    single: bool


def parse_embeddings(payload: dict, hidden_size: int, max_inputs: int) -> EmbeddingsRequest:
    _check_keys(payload, {"input", "model", "encoding_format", "dimensions", "user"}, "input")
    texts = _texts(payload["input"], "input", max_inputs)
    encoding = payload.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ApiError(
            422, f"encoding_format must be 'float' or 'base64', got {encoding!r}", "encoding_format"
        )
    dimensions = payload.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool)
        or not isinstance(dimensions, int)
        or not 1 <= dimensions <= hidden_size
    ):
        raise ApiError(
            422,
            f"dimensions must be an integer from 1 to {hidden_size} (the model's width), "
            f"got {dimensions!r}",
            "dimensions",
        )
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(422, f"model must be a string, got {_kind(model)}", "model")
    return EmbeddingsRequest(
        texts, model, encoding == "base64", dimensions, isinstance(payload["input"], str)
    )


@dataclass
class EmbedRequest:
    """TEI ``/embed``."""

    texts: list[str]
    normalize: bool
    truncate: bool


def parse_embed(payload: dict, max_inputs: int) -> EmbedRequest:
    _check_keys(payload, {"inputs", "normalize", "truncate"}, "inputs")
    return EmbedRequest(
        _texts(payload["inputs"], "inputs", max_inputs),
        _bool(payload, "normalize", True),
        _bool(payload, "truncate", False),
    )


@dataclass
class ClassifyRequest:
    texts: list[str]
    truncate: bool
    threshold: float | None


def parse_classify(payload: dict, max_inputs: int) -> ClassifyRequest:
    _check_keys(payload, {"inputs", "truncate", "threshold"}, "inputs")
    threshold = payload.get("threshold")
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0.0 <= threshold <= 1.0
    ):
        raise ApiError(
            422,
            "threshold is the early-exit threshold, a normalised entropy from 0 (never exit "
            f"early) to 1 (always after the first block), got {threshold!r}",
            "threshold",
        )
    return ClassifyRequest(
        _texts(payload["inputs"], "inputs", max_inputs),
        _bool(payload, "truncate", False),
        None if threshold is None else float(threshold),
    )


# ----------------------------------------------------------------------------- responses
def finish_vectors(vectors: np.ndarray, normalize: bool, dimensions: int | None) -> np.ndarray:
    """``(n, hidden)`` pooled vectors cut to their first ``dimensions`` (Matryoshka), then
    scaled to unit length if ``normalize``; float32."""
    if dimensions is not None:
        vectors = vectors[:, :dimensions]
    vectors = vectors.astype(np.float32)
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return vectors


def embeddings_response(
    vectors: np.ndarray, request: EmbeddingsRequest, model: str, tokens: int
) -> dict:
    """The OpenAI embeddings response: each embedding a float32 ``(dims,)`` array (JSON
    numbers once serialized) or, with base64, its little-endian float32 bytes."""
    data = []
    for index, vector in enumerate(vectors):
        if request.base64:
            embedding: object = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        else:
            embedding = vector
        data.append({"object": "embedding", "embedding": embedding, "index": index})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def classify_response(
    logits: np.ndarray, names: list[str], exit_layers: np.ndarray | None
) -> list[dict]:
    """One dict per text, as :func:`distilkit.pipelines.classify` returns, plus
    ``exit_layer`` (blocks run) with early exit."""
    results: list[dict] = []
    for row, values in enumerate(logits.astype(np.float64)):
        if len(values) == 1:
            result: dict = {"score": float(values[0])}
        else:
            probabilities = _softmax(values)
            best = int(probabilities.argmax())
            result = {
                "label": names[best],
                "score": float(probabilities[best]),
                "scores": {n: float(p) for n, p in zip(names, probabilities, strict=True)},
            }
        if exit_layers is not None:
            result["exit_layer"] = int(exit_layers[row])
        if not all(math.isfinite(v) for v in values):
            raise ApiError(500, "the model produced non-finite logits")
        results.append(result)
    return results
