"""``distilkit distill-static``: a teacher into a static table (model2vec's recipe), then
optionally trained against the teacher's sentence vectors (tokenlearn's idea).

1. vocabulary: the teacher's tokens, plus (``vocab_from``) the most frequent corpus words
   as whole entries (:mod:`distilkit.methods.static.vocab`);
2. each entry is run through the teacher alone, ``[CLS] pieces [SEP]``, and pooled by the
   teacher's own recipe (without its Normalize): one vector per entry;
3. PCA to ``dims`` (fitted on the entries a text can reach: no special or unused tokens);
4. SIF weighting ``a / (a + p(entry))``, p from Zipf's law over the vocabulary order of
   the reachable entries (BERT's 999 ``[unusedN]`` rows do not push ranks down), or
   from the entry frequencies of a corpus (``weighting="corpus"``);
5. optional training: the table as an ``EmbeddingBag`` (mean), fitted so the mean of a
   corpus sentence's rows points where the teacher's PCA-projected sentence vector does
   (cosine or MSE);
6. saved as a sentence-transformers StaticEmbedding folder with ``metrics.json``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer as BackendTokenizer
from tqdm.auto import tqdm

from distilkit.encoder import Encoder, load
from distilkit.evaluate.sentence import evaluate_encoder
from distilkit.methods.static.vocab import (
    corpus_probabilities,
    corpus_sentences,
    excluded_ids,
    new_words,
    sif_weights,
    with_words,
    word_counts,
    zipf_probabilities,
)
from distilkit.model.card import CardFacts, update_card
from distilkit.model.device import AUTO
from distilkit.model.hub import DEFAULT_MODEL
from distilkit.model.pca import PCA, fit_pca
from distilkit.model.static import StaticEncoder, save_static
from distilkit.settings import ConfigError, save_json, to_dict
from distilkit.train.distributed import say
from distilkit.train.losses import vector_cosine_loss

WEIGHTINGS = ("zipf", "corpus", "none")
LOSSES = ("cosine", "mse")
WORK = ".work"  # caches of teacher vectors, removed when the run ends


@dataclass
class StaticConfig:
    """Settings of a static distillation; saved as ``static_config.json``."""

    teacher: str = DEFAULT_MODEL
    dims: int = 256
    vocab_from: list[str] = field(default_factory=list)  # corpora whose words become entries
    vocab_words: int = 10000  # most corpus words added
    min_count: int = 3
    vocab_sentences: int = 200_000  # corpus sentences read for words and frequencies
    weighting: str = "zipf"  # zipf | corpus (needs vocab_from or train_corpus) | none
    sif_coefficient: float = 1e-4
    train_corpus: list[str] = field(default_factory=list)
    train_sentences: int = 20000
    epochs: int = 3
    lr: float = 0.01
    batch_size: int = 256
    loss: str = "cosine"  # cosine | mse
    teacher_batch_size: int = 256
    seed: int = 0
    evaluate: bool = True

    def __post_init__(self) -> None:
        if self.dims < 1:
            raise ConfigError(f"dims must be at least 1, got {self.dims}")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.weighting == "corpus" and not (self.vocab_from or self.train_corpus):
            raise ConfigError("weighting 'corpus' needs a corpus: give vocab_from or train_corpus")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        for name in ("epochs", "batch_size", "teacher_batch_size", "train_sentences"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")


# ----------------------------------------------------------------------------- teacher vectors
@torch.inference_mode()
def entry_vectors(
    teacher: Encoder, entries: list[list[int]], batch_size: int = 256, progress: bool = False
) -> np.ndarray:
    """The teacher's vector of each entry, ``(entries, dim)`` float32: ``[CLS] ids [SEP]``
    through the teacher, pooled by its recipe (pooling, Dense) without Normalize.
    ``progress``: a bar of the batches on stderr."""
    tokenizer = teacher.tokenizer
    out = np.zeros(
        (len(entries), teacher.sentence.output_dim(teacher.config.hidden_size)), np.float32
    )
    order = np.argsort([len(e) for e in entries], kind="stable")
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="vocabulary vectors", unit="batch", disable=not progress):
        rows = order[start : start + batch_size]
        sequences = [[tokenizer.cls_id, *entries[i], tokenizer.sep_id] for i in rows]
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            attention_mask[row, : len(sequence)] = 1
        input_ids, attention_mask = input_ids.to(teacher.device), attention_mask.to(teacher.device)
        hidden = teacher.model.backbone(
            input_ids, attention_mask, torch.zeros_like(input_ids)
        ).last_hidden_state
        vectors = teacher.sentence.encode(hidden, attention_mask, None, False)
        out[rows] = vectors.float().cpu().numpy()
    return out


def _cached(path: Path, key: str, compute) -> np.ndarray:
    """``compute()``, or the array saved at ``path`` by an earlier run with the same ``key``."""
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file() and json.loads(meta.read_text())["key"] == key:
        return np.load(path)
    array = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    meta.write_text(json.dumps({"key": key}))
    return array


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- the table
def static_table(
    vectors: np.ndarray, excluded: np.ndarray, dims: int, weights: np.ndarray
) -> tuple[np.ndarray, PCA]:
    """``(entries, dims)`` rows: PCA of ``vectors`` (fitted without the ``excluded`` ids,
    whose rows are zero) times each entry's weight."""
    reachable = np.ones(len(vectors), dtype=bool)
    reachable[excluded] = False
    pca = fit_pca(vectors[reachable], dims)
    table = pca.transform(vectors) * weights[:, None].astype(np.float32)
    table[~reachable] = 0.0
    return table.astype(np.float32), pca


def train_table(
    table: np.ndarray,
    ids: list[list[int]],
    targets: np.ndarray,
    config: StaticConfig,
    progress: bool = False,
) -> tuple[np.ndarray, list[dict]]:
    """Fit ``table`` ``(entries, dim)`` so that each text's mean row matches ``targets``
    ``(texts, dim)`` (cosine or MSE); returns the new table and one log row per epoch
    (train loss, loss on a 5% held-out split). ``progress``: a bar of the batches on
    stderr."""
    generator = torch.Generator().manual_seed(config.seed)
    keep = [i for i, row in enumerate(ids) if row]
    order = torch.randperm(len(keep), generator=generator).tolist()
    heldout = [keep[i] for i in order[: max(1, len(keep) // 20)]]
    train = [keep[i] for i in order[len(heldout) :]]
    bag = torch.nn.EmbeddingBag.from_pretrained(
        torch.from_numpy(table.copy()), freeze=False, mode="mean"
    )
    optimizer = torch.optim.Adam(bag.parameters(), lr=config.lr)
    target_tensor = torch.from_numpy(targets.astype(np.float32))

    def loss_of(rows: list[int]) -> torch.Tensor:
        flat = torch.tensor([t for r in rows for t in ids[r]], dtype=torch.long)
        offsets = torch.tensor(np.cumsum([0] + [len(ids[r]) for r in rows[:-1]]), dtype=torch.long)
        student = bag(flat, offsets)  # (batch, dim)
        target = target_tensor[rows]
        if config.loss == "cosine":
            return vector_cosine_loss(student, target)
        return F.mse_loss(student, target)

    log = []
    per_epoch = -(-len(train) // config.batch_size)
    bar = tqdm(total=config.epochs * per_epoch, desc="training", unit="batch", disable=not progress)
    for epoch in range(config.epochs):
        shuffled = torch.randperm(len(train), generator=generator).tolist()
        total, batches = 0.0, 0
        for start in range(0, len(shuffled), config.batch_size):
            rows = [train[i] for i in shuffled[start : start + config.batch_size]]
            loss = loss_of(rows)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
            bar.update()
        with torch.no_grad():
            held = float(loss_of(heldout))
        log.append(
            {"epoch": epoch + 1, "train_loss": total / max(batches, 1), "heldout_loss": held}
        )
        say(
            f"epoch {epoch + 1}: train {config.loss} loss {log[-1]['train_loss']:.4f}, "
            f"held-out {held:.4f}"
        )
    bar.close()
    return bag.weight.detach().numpy().astype(np.float32), log


# ----------------------------------------------------------------------------- the job
def run_static_distillation(
    config: StaticConfig,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = False,
    device: str | torch.device = AUTO,
) -> dict:
    """Build, train (optionally), save and score a static student in ``out_dir``; returns
    the metrics written to ``metrics.json``. With ``resume``, teacher vectors computed by
    an interrupted run with the same settings are reused; a finished run is returned as is.
    ``progress``: bars of the teacher passes, the training and the evaluation on stderr;
    ``device``: where the teacher runs (auto: the GPU when there is one; the table is
    trained and scored on the CPU)."""
    out_dir = Path(out_dir)
    metrics_path = out_dir / "metrics.json"
    saved_config = out_dir / "static_config.json"
    if (
        resume
        and metrics_path.is_file()
        and saved_config.is_file()
        and json.loads(saved_config.read_text()) == to_dict(config)
    ):
        return json.loads(metrics_path.read_text())
    if (out_dir / "modules.json").is_file() and not resume:
        raise ConfigError(f"{out_dir} already holds a model: pick another --out")
    work = out_dir / WORK
    started = time.perf_counter()
    teacher = load(config.teacher, head=None, device=device)
    base = BackendTokenizer.from_str(teacher.tokenizer.backend.to_str())
    corpus_texts: list[str] = []
    if config.vocab_from:
        corpus_texts = list(corpus_sentences(config.vocab_from, config.vocab_sentences))
        words = new_words(
            base, word_counts(base, corpus_texts), config.vocab_words, config.min_count
        )
        tokenizer = with_words(base, words)
        say(f"vocabulary: {base.get_vocab_size():,} teacher tokens + {len(words):,} corpus words")
    else:
        words, tokenizer = [], base
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    entries = [[i] for i in range(base.get_vocab_size(with_added_tokens=True))]
    entries += [e.ids for e in base.encode_batch(words, add_special_tokens=False)]
    say(f"embedding {len(entries):,} vocabulary entries with the teacher")
    vectors = _cached(
        work / "entries.npy",
        _key(config.teacher, words),
        lambda: entry_vectors(teacher, entries, config.teacher_batch_size, progress),
    )
    excluded = excluded_ids(
        tokenizer, teacher.tokenizer.special_ids[:1] + teacher.tokenizer.special_ids[2:]
    )
    train_texts: list[str] = []
    if config.train_corpus:
        train_texts = list(corpus_sentences(config.train_corpus, config.train_sentences))
    if config.weighting == "zipf":  # ranks count the reachable entries only, in id order
        reachable = np.ones(size, dtype=bool)
        reachable[excluded] = False
        probabilities = np.zeros(size)
        probabilities[reachable] = zipf_probabilities(int(reachable.sum()))
        weights = sif_weights(probabilities, config.sif_coefficient)
    elif config.weighting == "corpus":
        weights = sif_weights(
            corpus_probabilities(tokenizer, corpus_texts or train_texts, size),
            config.sif_coefficient,
        )
    else:
        weights = np.ones(size)
    table, pca = static_table(vectors, excluded, config.dims, weights)
    say(f"PCA to {table.shape[1]} dimensions keeps {100 * pca.kept_variance:.1f}% of the variance")
    log: list[dict] = []
    if train_texts:
        say(f"teacher vectors of {len(train_texts):,} training sentences")
        targets = _cached(
            work / "targets.npy",
            _key(config.teacher, config.train_corpus, config.train_sentences),
            lambda: teacher.embed(train_texts, normalize=False, batch_size=64, progress=progress),
        )
        ids = [e.ids for e in tokenizer.encode_batch(train_texts, add_special_tokens=False)]
        table, log = train_table(table, ids, pca.transform(targets), config, progress)
    metadata = {
        "teacher": config.teacher,
        "dims": int(table.shape[1]),
        "vocabulary": size,
        "corpus_words": len(words),
        "pca_kept_variance": pca.kept_variance,
        "weighting": config.weighting,
        "sif_coefficient": config.sif_coefficient,
        "trained_on_sentences": len(train_texts),
        "loss": config.loss if train_texts else None,
    }
    card = _card(config, words, len(train_texts), log)
    save_static(out_dir, table, tokenizer, normalize=True, metadata=metadata, card=card)
    save_json(to_dict(config), out_dir / "static_config.json")
    metrics = {**metadata, "train_log": log, "build_seconds": time.perf_counter() - started}
    if config.evaluate:
        student = StaticEncoder(table, tokenizer, True, out_dir, str(out_dir))
        metrics["evaluation"] = evaluate_encoder(student, out_dir.name, progress=progress)
        say(
            f"STS-B dev Spearman {metrics['evaluation']['stsb_spearman']:.2f}, SST-2 probe "
            f"{metrics['evaluation']['sst2_probe_accuracy']:.2f}%, "
            f"{metrics['evaluation']['sentences_per_s']:,.0f} sentences/s"
        )
        update_card(out_dir, rows=[metrics["evaluation"]])
    save_json(metrics, metrics_path)
    shutil.rmtree(work, ignore_errors=True)
    return metrics


def _card(config: StaticConfig, words: list[str], sentences: int, log: list[dict]) -> CardFacts:
    """What the run knows beyond the table's metadata: corpora and training settings."""
    settings = {}
    if sentences:
        settings["training"] = (
            f"{sentences:,} sentences, {config.loss} loss, {config.epochs} epochs, "
            f"lr {config.lr:g}, batch {config.batch_size}"
        )
    losses = {}
    if log:
        losses = {"train": log[-1]["train_loss"], "held-out": log[-1]["heldout_loss"]}
    corpora = [*config.vocab_from, *(c for c in config.train_corpus if c not in config.vocab_from)]
    return CardFacts(
        name=f"static student of {Path(str(config.teacher)).name}",
        corpus=[str(c) for c in corpora] if words or sentences else [],
        losses=losses,
        settings=settings,
    )


__all__ = [
    "StaticConfig",
    "entry_vectors",
    "run_static_distillation",
    "static_table",
    "train_table",
]
