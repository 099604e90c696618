"""Evaluate sentence encoders side by side: quality (STS-B, SST-2 probe), size and speed.

Every model goes through the same protocol, so a teacher and its student can be
compared number for number:

- **STS-B**: Spearman correlation (x100) between the cosine similarity of the two
  sentences' pooled embeddings and the gold score, on the GLUE dev set.
- **SST-2 probe**: a logistic regression (fixed C, standardised features) trained on
  frozen embeddings of a 4,000-sentence sample of SST-2 train, accuracy (%) on dev.
- **Static baseline**: the same two tasks on the average of the model's input word
  embeddings (no context, no positions, no LayerNorm), the floor a transformer must beat.
- **Throughput**: sentences per second of ``embed`` (tokenization included) in
  inference mode, median over timed passes after a warm-up, plus batch-1 latency
  percentiles. Models compared together are timed in turns, in one process, with the
  same thread count, so background load on a shared machine hits them alike; a caller
  that has trained first asks for a fresh process (``fresh_process=True``).

Results come as flat dicts ("rows"), one per model, that :mod:`distilkit.evaluate.report`
turns into tables and plots; :func:`compare` gives a student's retention and speed-up.

The default data files ship with the package (``distilkit/resources/data``, see its
README for sources and licenses).
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from distilkit.evaluate.timing import time_embedders, time_in_fresh_process
from distilkit.model.int8 import is_int8
from distilkit.model.static import StaticEncoder
from distilkit.model.summary import model_info
from distilkit.resources import RESOURCES

if TYPE_CHECKING:
    from distilkit.encoder import Encoder

DATA_DIR = RESOURCES / "data"
STSB_DEV = DATA_DIR / "stsb_dev.tsv"
SST2_DEV = DATA_DIR / "sst2_dev.tsv"
SST2_TRAIN_SAMPLE = DATA_DIR / "sst2_train_sample.tsv"

# The probe's settings, the same for every model. C was chosen once by 5-fold
# cross-validation on the shipped training sample (never on dev): for the teacher and
# the static baseline alike, accuracy is flat within 0.3 points over C in [0.001, 0.01]
# and 1-1.5 points lower at C = 1.
PROBE_C = 0.01
PROBE_MAX_ITER = 2000
# A feature column whose spread is below this fraction of the widest column's is dead:
# rounding noise, left out of the probe (see probe_predictions)
DEAD_SPREAD = 1e-9

EmbedFunction = Callable[[list[str]], np.ndarray]


class EvaluationDataError(ValueError):
    """An evaluation file is missing or does not have the expected layout."""


# --------------------------------------------------------------------------- reading data
def _read_tsv(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a tab-separated file, quotes taken literally (GLUE style)."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationDataError(f"evaluation file not found: {path}")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = [row for row in rows if row]
    if not rows:
        raise EvaluationDataError(f"{path} is empty: expected a header line and rows")
    return rows[0], rows[1:]


def read_sst2(path: str | Path = SST2_DEV) -> tuple[list[str], np.ndarray]:
    """Sentences and 0/1 labels ``(n,)`` int64 of a GLUE SST-2 file (``sentence``, ``label``)."""
    header, rows = _read_tsv(path)
    if header != ["sentence", "label"]:
        raise EvaluationDataError(
            f"{path} has header {header}, expected ['sentence', 'label'] (GLUE SST-2 train/dev; "
            "the test split has no labels)"
        )
    sentences, labels = [], []
    for line, row in enumerate(rows, start=2):
        if len(row) != 2 or row[1] not in ("0", "1"):
            raise EvaluationDataError(
                f"{path} line {line}: expected 'sentence<TAB>0|1', got {len(row)} field(s): "
                f"{row!r:.80}"
            )
        sentences.append(row[0].strip())
        labels.append(int(row[1]))
    return sentences, np.asarray(labels, dtype=np.int64)


def read_stsb(path: str | Path = STSB_DEV) -> tuple[list[str], list[str], np.ndarray]:
    """First sentences, second sentences and gold scores ``(n,)`` (0-5) of a GLUE STS-B file.

    The GLUE layout has 10 columns: sentence1, sentence2 and score are the last three.
    """
    header, rows = _read_tsv(path)
    if len(header) != 10 or header[7:] != ["sentence1", "sentence2", "score"]:
        raise EvaluationDataError(
            f"{path} has header {header}, expected the 10-column GLUE STS-B layout ending in "
            "sentence1, sentence2, score (the test split has no scores)"
        )
    first, second, scores = [], [], []
    for line, row in enumerate(rows, start=2):
        if len(row) != 10:
            raise EvaluationDataError(f"{path} line {line}: expected 10 fields, got {len(row)}")
        try:
            score = float(row[9])
        except ValueError:
            raise EvaluationDataError(
                f"{path} line {line}: score {row[9]!r} is not a number"
            ) from None
        first.append(row[7])
        second.append(row[8])
        scores.append(score)
    return first, second, np.asarray(scores, dtype=np.float64)


# --------------------------------------------------------------------------- metrics on vectors
def cosine_spearman(
    first_embeddings: np.ndarray, second_embeddings: np.ndarray, gold_scores: np.ndarray
) -> float:
    """Spearman x100 of the row-wise cosines of two ``(n, dim)`` arrays vs ``(n,)`` gold scores."""
    from scipy.stats import spearmanr

    if first_embeddings.shape != second_embeddings.shape or len(first_embeddings) != len(
        gold_scores
    ):
        raise ValueError(
            f"embedding shapes {first_embeddings.shape} and {second_embeddings.shape} and "
            f"{len(gold_scores)} gold scores do not align"
        )
    if len(gold_scores) < 2:
        raise ValueError(f"Spearman correlation needs at least 2 pairs, got {len(gold_scores)}")
    cosines = row_cosines(first_embeddings, second_embeddings)  # (n,)
    if not np.isfinite(cosines).all():
        raise ValueError("the embeddings contain NaN or infinite values: is the model broken?")
    if np.ptp(cosines) == 0 or np.ptp(gold_scores) == 0:
        raise ValueError(
            "Spearman correlation is undefined: the gold scores or the cosines are constant"
        )
    return 100.0 * float(spearmanr(cosines, gold_scores).statistic)


def probe_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    dev_features: np.ndarray,
    dev_labels: np.ndarray,
    seed: int = 0,
    c: float = PROBE_C,
) -> float:
    """Dev accuracy (%) of a logistic regression fitted on standardised ``(n, dim)`` features
    with inverse regularisation ``c`` (max_iter is :data:`PROBE_MAX_ITER`)."""
    if len(train_features) != len(train_labels) or len(dev_features) != len(dev_labels):
        raise ValueError("features and labels must have the same number of rows")
    if len(np.unique(train_labels)) < 2:
        raise ValueError("the probe's training labels have a single class: it cannot learn")
    if len(dev_labels) == 0:
        raise ValueError("the dev set is empty")
    predictions = probe_predictions(train_features, train_labels, dev_features, seed, c)
    return 100.0 * float((predictions == dev_labels).mean())


def probe_predictions(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    features: np.ndarray,
    seed: int = 0,
    c: float = PROBE_C,
) -> np.ndarray:
    """Labels ``(n,)`` that the probe (standardised logistic regression with inverse
    regularisation ``c``) fitted on ``train_features`` gives the rows of ``features``.

    Dead dimensions are left out: a column whose spread over the training rows is below
    :data:`DEAD_SPREAD` of the widest column's holds rounding noise only (a student whose
    final LayerNorm decayed two weights to 1e-25 had such columns). Standardising them in
    float32 divided by a spread that rounds to zero, and the probe got NaN.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_features = np.asarray(train_features)
    spread = train_features.std(axis=0, dtype=np.float64)  # (dim,)
    live = slice(None)  # every column
    if spread.size and spread.max() > 0:
        live = spread > DEAD_SPREAD * spread.max()
    probe = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=c, max_iter=PROBE_MAX_ITER, random_state=seed),
    )
    probe.fit(train_features[:, live], train_labels)
    return probe.predict(np.asarray(features)[:, live])


# --------------------------------------------------------------------------- embedders
def encoder_embedder(encoder: Encoder, pooling: str, batch_size: int) -> EmbedFunction:
    """``texts -> (n, dim)`` vectors of ``encoder.embed`` with this pooling and batch size."""

    def embed(texts: list[str]) -> np.ndarray:
        return encoder.embed(texts, pooling=pooling, batch_size=batch_size, progress=False)

    return embed


def static_embedder(encoder: Encoder, batch_size: int) -> EmbedFunction:
    """``texts -> (n, hidden)``: :func:`static_embeddings` in batches of ``batch_size``."""

    def embed(texts: list[str]) -> np.ndarray:
        batches = [
            static_embeddings(encoder, texts[start : start + batch_size])
            for start in range(0, len(texts), batch_size)
        ]
        return np.concatenate(batches) if batches else static_embeddings(encoder, [])

    return embed


@torch.inference_mode()
def static_embeddings(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    """Average input word embedding of each text, ``(n, hidden)`` float32.

    Context-free: the rows of ``word_embeddings`` for the text's word pieces, averaged,
    with no position or segment embeddings and no LayerNorm. [CLS], [SEP] and [PAD]
    are left out; a text with no word pieces gets a zero vector.
    """
    tokenizer = encoder.tokenizer
    weight = encoder.model.backbone.embeddings.word_embeddings.weight.detach().float()
    if not texts:
        return np.zeros((0, weight.shape[1]), dtype=np.float32)
    excluded = {tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id}
    ids_per_text = [
        [i for i in ids if i not in excluded]
        for ids in tokenizer.encode_ids(list(texts), add_special_tokens=False)
    ]
    flat_ids = torch.tensor([i for ids in ids_per_text for i in ids], dtype=torch.long)
    starts = np.cumsum([0] + [len(ids) for ids in ids_per_text[:-1]])
    offsets = torch.as_tensor(starts, dtype=torch.long)
    # An empty bag gives zeros in "mean" mode, which is what a wordless text should get.
    vectors = torch.nn.functional.embedding_bag(flat_ids, weight, offsets, mode="mean")
    return vectors.numpy().astype(np.float32)  # (n, hidden)


def _stsb_with(embed: EmbedFunction, path: str | Path, limit: int | None) -> tuple[float, int]:
    first, second, scores = read_stsb(path)
    if limit is not None:
        first, second, scores = first[:limit], second[:limit], scores[:limit]
    vectors = embed(first + second)  # one call, so length-sorted batching sees every text
    return cosine_spearman(vectors[: len(first)], vectors[len(first) :], scores), len(scores)


def _sst2_with(
    embed: EmbedFunction,
    train_path: str | Path,
    dev_path: str | Path,
    seed: int,
    train_limit: int | None,
) -> tuple[float, int, int]:
    train_texts, train_labels = read_sst2(train_path)
    dev_texts, dev_labels = read_sst2(dev_path)
    if train_limit is not None:
        train_texts, train_labels = train_texts[:train_limit], train_labels[:train_limit]
    vectors = embed(train_texts + dev_texts)
    accuracy = probe_accuracy(
        vectors[: len(train_texts)], train_labels, vectors[len(train_texts) :], dev_labels, seed
    )
    return accuracy, len(train_texts), len(dev_texts)


# --------------------------------------------------------------------------- quality
def stsb_spearman(
    encoder: Encoder,
    path: str | Path = STSB_DEV,
    pooling: str = "mean",
    limit: int | None = None,
    batch_size: int = 64,
) -> float:
    """STS-B Spearman x100 of the cosine of pooled embeddings against gold scores.

    limit: use only the first ``limit`` pairs (default: all 1,500 dev pairs).
    """
    return _stsb_with(encoder_embedder(encoder, pooling, batch_size), path, limit)[0]


def row_cosines(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine of each row pair of two ``(n, dim)`` arrays: ``(n,)``."""
    first, second = first.astype(np.float64), second.astype(np.float64)
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    return (first * second).sum(axis=1) / np.maximum(norms, 1e-12)


def stsb_teacher_agreement(
    student: Encoder,
    teacher: Encoder,
    path: str | Path = STSB_DEV,
    pooling: str = "mean",
    limit: int | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """How closely ``student`` reproduces ``teacher``'s sentence vectors on STS-B sentences.

    ``sentence_cosine``: the mean cosine between the two models' vectors of each of the
    ``2n`` sentences; ``similarity_spearman``: Spearman x100 between the two models' pair
    cosines (how well the student keeps the teacher's ranking of the ``n`` pairs, gold
    scores aside). A perfect copy scores 1 and 100. ``student_spearman`` and
    ``teacher_spearman``: each model's STS-B Spearman, from the same vectors.
    """
    from scipy.stats import spearmanr

    first, second, scores = read_stsb(path)
    if limit is not None:
        first, second, scores = first[:limit], second[:limit], scores[:limit]
    texts = first + second
    student_vectors = encoder_embedder(student, pooling, batch_size)(texts)
    teacher_vectors = encoder_embedder(teacher, pooling, batch_size)(texts)
    n = len(first)
    student_pairs = row_cosines(student_vectors[:n], student_vectors[n:])
    teacher_pairs = row_cosines(teacher_vectors[:n], teacher_vectors[n:])
    same_width = student_vectors.shape[1] == teacher_vectors.shape[1]
    return {
        "sentence_cosine": (
            float(row_cosines(student_vectors, teacher_vectors).mean()) if same_width else None
        ),
        "similarity_spearman": 100.0 * float(spearmanr(student_pairs, teacher_pairs).statistic),
        "student_spearman": cosine_spearman(student_vectors[:n], student_vectors[n:], scores),
        "teacher_spearman": cosine_spearman(teacher_vectors[:n], teacher_vectors[n:], scores),
        "pairs": n,
    }


def sst2_probe_accuracy(
    encoder: Encoder,
    train_path: str | Path = SST2_TRAIN_SAMPLE,
    dev_path: str | Path = SST2_DEV,
    pooling: str = "mean",
    seed: int = 0,
    train_limit: int | None = None,
    batch_size: int = 64,
) -> float:
    """SST-2 dev accuracy (%) of a logistic-regression probe on frozen pooled embeddings.

    The probe trains on the shipped 4,000-sentence sample of SST-2 train (or its first
    ``train_limit`` rows); see :func:`probe_accuracy` for the fixed settings.
    """
    embed = encoder_embedder(encoder, pooling, batch_size)
    return _sst2_with(embed, train_path, dev_path, seed, train_limit)[0]


# --------------------------------------------------------------------------- speed
def throughput(
    encoder: Encoder,
    texts: Sequence[str],
    batch_size: int = 64,
    repeats: int = 5,
    warmup: int = 1,
    latency_texts: int = 100,
    num_threads: int | None = None,
    pooling: str = "mean",
) -> dict:
    """CPU speed of ``encoder.embed`` (tokenization included) on ``texts``.

    Keys: sentences_per_s, ms_per_batch, latency_ms_p50, latency_ms_p95 (batch 1) and
    the settings used; see :func:`time_embedders` for the protocol. The model is put in
    eval mode for the measurement. To compare models, time them together with
    :func:`evaluate_side_by_side`: on a shared machine, separate runs see different loads.
    """
    with _eval_mode([encoder]):
        return time_embedders(
            {"model": encoder_embedder(encoder, pooling, batch_size)},
            texts,
            batch_size,
            repeats,
            warmup,
            latency_texts,
            num_threads,
        )["model"]


@contextmanager
def _eval_mode(encoders: Sequence[Encoder]) -> Iterator[None]:
    encoders = [encoder for encoder in encoders if hasattr(encoder, "model")]  # not static ones
    modes = [encoder.model.training for encoder in encoders]
    for encoder in encoders:
        encoder.model.eval()
    try:
        yield
    finally:
        for encoder, mode in zip(encoders, modes, strict=True):
            encoder.model.train(mode)


def default_throughput_texts(count: int, stsb_path: str | Path = STSB_DEV) -> list[str]:
    """The first ``count`` distinct STS-B sentences: short, real, the same for every model."""
    first, second, _ = read_stsb(stsb_path)
    return list(dict.fromkeys(first + second))[:count]


# --------------------------------------------------------------------------- report rows
def _size_on_disk(encoder: Encoder) -> int:
    info = encoder.info()
    if "size_on_disk_bytes" in info:
        return int(info["size_on_disk_bytes"])
    with tempfile.TemporaryDirectory() as folder:  # not loaded from disk: save to measure
        encoder.save(folder)
        return int(model_info(encoder.model, folder)["size_on_disk_bytes"])


def _describe_encoder(encoder: Encoder | StaticEncoder, name: str, pooling: str) -> dict:
    if isinstance(encoder, StaticEncoder):
        return {
            "name": name,
            "kind": "static",
            "layers": 0,
            "hidden_size": encoder.dim,
            "parameters": int(encoder.table.size),
            "size_on_disk_bytes": int(
                encoder.info().get("size_on_disk_bytes", encoder.table.nbytes)
            ),
            "pooling": "mean of static token vectors",
        }
    return {
        "name": name,
        "kind": "transformer",
        "layers": encoder.config.num_layers,
        "hidden_size": encoder.config.hidden_size,
        "parameters": int(encoder.info()["total_params"]),
        "size_on_disk_bytes": _size_on_disk(encoder),
        "pooling": pooling,
    }


def _describe_static(encoder: Encoder, name: str) -> dict:
    weight = encoder.model.backbone.embeddings.word_embeddings.weight
    return {
        "name": name,
        "kind": "static",
        "layers": 0,
        "hidden_size": int(weight.shape[1]),
        "parameters": int(weight.numel()),
        "size_on_disk_bytes": int(weight.numel()) * 4,  # the float32 matrix; not a file
        "pooling": "mean of input word embeddings",
    }


@dataclass
class Protocol:
    """What every model is measured on (see :data:`FULL_PROTOCOL`, :data:`QUICK_PROTOCOL`).

    None for a count means the whole file.
    """

    stsb_path: str | Path = STSB_DEV
    sst2_train_path: str | Path = SST2_TRAIN_SAMPLE
    sst2_dev_path: str | Path = SST2_DEV
    stsb_pairs: int | None = None
    sst2_train_examples: int | None = None
    throughput_texts: int = 1024
    throughput_repeats: int = 5
    latency_texts: int = 100
    batch_size: int = 64
    seed: int = 0
    num_threads: int | None = None
    quick: bool = False

    def __post_init__(self) -> None:
        for name in ("stsb_pairs", "sst2_train_examples"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ValueError(f"{name} must be None (all) or at least 2, got {value}")
        for name in ("throughput_texts", "throughput_repeats", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.latency_texts < 0:
            raise ValueError(f"latency_texts must be >= 0, got {self.latency_texts}")


FULL_PROTOCOL = Protocol()
QUICK_PROTOCOL = Protocol(
    stsb_pairs=300,
    sst2_train_examples=1000,
    throughput_texts=256,
    throughput_repeats=3,
    latency_texts=20,
    quick=True,
)


def _measure(
    rows: list[dict],
    embedders: dict[str, EmbedFunction],
    protocol: Protocol,
    progress: bool,
    fresh: dict[str, dict] | None = None,
) -> list[dict]:
    """Fill each row (keyed by its name in ``embedders``) with quality and timing results;
    ``progress``: a bar of the steps (STS-B and SST-2 per model, then timing) on stderr.
    ``fresh``: the models as :func:`time_in_fresh_process` takes them, to be timed there
    (in this process should that fail; each row's ``timed_in`` says where and why)."""
    bar = tqdm(total=2 * len(rows) + 1, desc="evaluating", unit="step", disable=not progress)
    for row in rows:
        embed = embedders[row["name"]]
        bar.set_postfix_str(f"{row['name']}: STS-B")
        stsb, pairs = _stsb_with(embed, protocol.stsb_path, protocol.stsb_pairs)
        bar.update()
        bar.set_postfix_str(f"{row['name']}: SST-2 probe")
        sst2, train_size, dev_size = _sst2_with(
            embed,
            protocol.sst2_train_path,
            protocol.sst2_dev_path,
            protocol.seed,
            protocol.sst2_train_examples,
        )
        bar.update()
        row.update(
            stsb_spearman=stsb,
            stsb_pairs=pairs,
            sst2_probe_accuracy=sst2,
            sst2_train_examples=train_size,
            sst2_dev_examples=dev_size,
            quick=protocol.quick,
        )
    bar.set_postfix_str("timing all models in turns")
    texts = default_throughput_texts(protocol.throughput_texts, protocol.stsb_path)
    settings = dict(
        batch_size=protocol.batch_size,
        repeats=protocol.throughput_repeats,
        latency_texts=protocol.latency_texts,
        num_threads=protocol.num_threads,
    )
    timings, timed_in = None, "this process"
    if fresh is not None:
        timings, why = time_in_fresh_process(fresh, texts, **settings)
        timed_in = "a fresh process" if timings is not None else f"this process: {why}"
    if timings is None:
        timings = time_embedders(embedders, texts, **settings)
    bar.update()
    bar.close()
    for row in rows:
        row.update(timings[row["name"]], timed_in=timed_in)
    return rows


def evaluate_side_by_side(
    encoders: dict[str, Encoder],
    static_baseline_of: str | None = None,
    quick: bool = False,
    protocol: Protocol | None = None,
    pooling: str = "mean",
    progress: bool = False,
    fresh_process: bool = False,
) -> list[dict]:
    """One report row per model (name -> encoder), all timed together; teacher first.

    static_baseline_of: the name of an encoder whose averaged input word embeddings
    (:func:`static_embeddings`) get a row too, last. quick: use :data:`QUICK_PROTOCOL`
    (fewer STS-B pairs, probe sentences and timing passes; cite only full numbers);
    protocol: your own :class:`Protocol` instead. progress: a progress bar on stderr.

    Row keys: name, kind, layers, hidden_size, parameters, size_on_disk_bytes, pooling,
    stsb_spearman, stsb_pairs, sst2_probe_accuracy, sst2_train_examples,
    sst2_dev_examples, quick, the timing keys of :func:`time_embedders`, and timed_in.

    fresh_process: time the models in a new process that loads them from their folders
    (:func:`time_in_fresh_process`), for a caller that has trained in this one; models
    not loaded plainly from a folder (int8, bf16, on a GPU, ONNX, static) are timed here.
    """
    if static_baseline_of is not None and static_baseline_of not in encoders:
        raise ValueError(
            f"static_baseline_of={static_baseline_of!r} is not one of the encoders {list(encoders)}"
        )
    protocol = protocol or (QUICK_PROTOCOL if quick else FULL_PROTOCOL)
    rows, embedders = [], {}
    for name, encoder in encoders.items():
        rows.append(_describe_encoder(encoder, name, pooling))
        embedders[name] = encoder_embedder(encoder, pooling, protocol.batch_size)
    if static_baseline_of is not None:
        static_name = f"static embeddings of {static_baseline_of}"
        if static_name in embedders:
            raise ValueError(f"an encoder is already named {static_name!r}")
        rows.append(_describe_static(encoders[static_baseline_of], static_name))
        embedders[static_name] = static_embedder(encoders[static_baseline_of], protocol.batch_size)
    fresh = _fresh_specs(encoders, static_baseline_of, pooling) if fresh_process else None
    with _eval_mode(list(encoders.values())):
        return _measure(rows, embedders, protocol, progress, fresh)


def _fresh_specs(
    encoders: dict[str, Encoder], static_baseline_of: str | None, pooling: str
) -> dict[str, dict] | None:
    """The models as :func:`time_in_fresh_process` takes them, or None when one of them
    is not a plain float32 CPU model from a folder (a new process would load another)."""
    specs = {}
    for name, encoder in encoders.items():
        model = getattr(encoder, "model", None)
        parameters = list(model.parameters()) if model is not None else []
        plain = bool(parameters) and all(
            p.dtype == torch.float32 and p.device.type == "cpu" for p in parameters
        )
        folder = getattr(encoder, "folder", None)
        if not plain or folder is None or is_int8(model):
            return None
        specs[name] = {"kind": "encoder", "folder": str(folder), "pooling": pooling}
    if static_baseline_of is not None:
        specs[f"static embeddings of {static_baseline_of}"] = {
            "kind": "static",
            "folder": specs[static_baseline_of]["folder"],
        }
    return specs


def evaluate_encoder(
    encoder: Encoder,
    name: str,
    quick: bool = False,
    protocol: Protocol | None = None,
    pooling: str = "mean",
    progress: bool = False,
) -> dict:
    """One report row for one model (see :func:`evaluate_side_by_side` for the keys);
    ``progress``: a bar of the evaluation steps on stderr."""
    rows = evaluate_side_by_side(
        {name: encoder}, quick=quick, protocol=protocol, pooling=pooling, progress=progress
    )
    return rows[0]


def static_embedding_baseline(
    encoder: Encoder,
    name: str | None = None,
    quick: bool = False,
    protocol: Protocol | None = None,
) -> dict:
    """The report row of ``encoder``'s averaged input word embeddings (context-free).

    Same protocol and keys as :func:`evaluate_encoder`; ``parameters`` counts the
    embedding matrix and ``size_on_disk_bytes`` is that matrix as float32.
    """
    protocol = protocol or (QUICK_PROTOCOL if quick else FULL_PROTOCOL)
    name = name or f"static embeddings of {encoder.name}"
    embedders = {name: static_embedder(encoder, protocol.batch_size)}
    return _measure([_describe_static(encoder, name)], embedders, protocol, False)[0]


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return float(numerator) / float(denominator)


def compare(teacher_metrics: dict, student_metrics: dict) -> dict:
    """Student relative to teacher, from two report rows.

    Retention is % of the teacher's score; speed-up is student/teacher sentences per
    second; latency speed-up is teacher/student p50; compression is teacher/student
    parameters (and bytes on disk). A ratio is None when a number is missing.
    """
    stsb = _ratio(student_metrics.get("stsb_spearman"), teacher_metrics.get("stsb_spearman"))
    sst2 = _ratio(
        student_metrics.get("sst2_probe_accuracy"), teacher_metrics.get("sst2_probe_accuracy")
    )
    return {
        "teacher": teacher_metrics.get("name"),
        "student": student_metrics.get("name"),
        "stsb_retention_pct": None if stsb is None else 100.0 * stsb,
        "sst2_retention_pct": None if sst2 is None else 100.0 * sst2,
        "speedup": _ratio(
            student_metrics.get("sentences_per_s"), teacher_metrics.get("sentences_per_s")
        ),
        "latency_speedup": _ratio(
            teacher_metrics.get("latency_ms_p50"), student_metrics.get("latency_ms_p50")
        ),
        "parameter_compression": _ratio(
            teacher_metrics.get("parameters"), student_metrics.get("parameters")
        ),
        "size_compression": _ratio(
            teacher_metrics.get("size_on_disk_bytes"), student_metrics.get("size_on_disk_bytes")
        ),
    }
