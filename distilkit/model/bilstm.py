"""The BiLSTM student of Tang et al. (2019), over a teacher's word-piece embeddings.

Read top to bottom: config -> :class:`BiLSTMEncoder` (embeddings -> one bidirectional
LSTM layer -> max-pooling over time) -> :class:`BiLSTMClassifier` (encoder + ReLU MLP head,
plus the tokenizer, saving and loading, and ``predict_logits``).

Sentence pairs use the siamese variant: both sentences go through the same encoder,
giving ``u`` and ``v``, and the head reads ``[u, v, |u - v|, u * v]``.

Differences from the paper, on purpose: the embeddings are the teacher's own input
(word-piece) embeddings rather than word2vec, so the student shares the teacher's
tokenizer and needs no external vectors; the optimiser is the training loop's AdamW.

A saved student is a folder with ``config.json`` (``"model_type": "distilkit-bilstm"``),
``model.safetensors`` and the tokenizer files; :func:`load_bilstm` reads it back and
:func:`is_bilstm_folder` tells such a folder from a transformer checkpoint.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from distilkit.data.batching import collate_sequences
from distilkit.encoder import load
from distilkit.model.card import CardFacts, keep_user_readme, write_card
from distilkit.model.device import to_device
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import ConfigError, atomic_folder, from_dict, load_json, to_dict

MODEL_TYPE = "distilkit-bilstm"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class BiLSTMError(ValueError):
    """A BiLSTM student folder, config or input is unusable."""


@dataclass
class BiLSTMConfig:
    """Shape of a BiLSTM student.

    hidden_size: LSTM units per direction (the pooled sentence vector has twice that);
    mlp_size: width of the head's ReLU layer; pair: siamese sentence-pair variant;
    max_length: tokens per sentence, [CLS] and [SEP] included; num_labels: 1 means
    regression (e.g. STS-B). Tang et al. use 150 LSTM units and a 200-unit MLP for SST-2.
    """

    vocab_size: int
    embedding_dim: int
    hidden_size: int = 150
    mlp_size: int = 200
    num_labels: int = 2
    pair: bool = False
    dropout: float = 0.1
    pad_token_id: int = 0
    max_length: int = 128
    freeze_embeddings: bool = False
    label_names: list[str] | None = None
    model_type: str = MODEL_TYPE

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embedding_dim", "hidden_size", "mlp_size", "num_labels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_length < 3:
            raise ConfigError(f"max_length must be >= 3 ([CLS] word [SEP]), got {self.max_length}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id {self.pad_token_id} is outside the vocabulary")
        if self.label_names is not None and len(self.label_names) != self.num_labels:
            raise ConfigError(
                f"label_names has {len(self.label_names)} names but num_labels is {self.num_labels}"
            )
        if self.model_type != MODEL_TYPE:
            raise ConfigError(f"model_type must be {MODEL_TYPE!r}, got {self.model_type!r}")

    @property
    def sentence_size(self) -> int:
        """Width of one pooled sentence vector: both LSTM directions."""
        return 2 * self.hidden_size

    @property
    def feature_size(self) -> int:
        """Width of the head's input: ``[u, v, |u-v|, u*v]`` for pairs, else ``u``."""
        return 4 * self.sentence_size if self.pair else self.sentence_size


# ----------------------------------------------------------------------------- the network
def pair_features(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Siamese pair features ``[u, v, |u - v|, u * v]``: ``(batch, 4 * dim)`` from two
    ``(batch, dim)`` sentence vectors."""
    return torch.cat([first, second, (first - second).abs(), first * second], dim=-1)


class BiLSTMEncoder(nn.Module):
    """Word-piece embeddings -> one bidirectional LSTM layer -> max over time."""

    def __init__(self, config: BiLSTMConfig):
        super().__init__()
        self.embeddings = nn.Embedding(
            config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id
        )
        self.embeddings.weight.requires_grad_(not config.freeze_embeddings)
        self.lstm = nn.LSTM(
            config.embedding_dim, config.hidden_size, batch_first=True, bidirectional=True
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(batch, seq)`` ids and right-padded 0/1 mask -> ``(batch, 2 * hidden)`` sentence
        vectors: :meth:`forward_inference` without autograd and dropout, else
        :meth:`forward_packed` (the two agree to float rounding)."""
        lengths = self._lengths(input_ids, attention_mask)
        if not self.training and not torch.is_grad_enabled():
            return self.forward_inference(input_ids, lengths)
        return self.forward_packed(input_ids, lengths)

    def _lengths(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise BiLSTMError(
                f"input_ids and attention_mask must both be (batch, seq); got "
                f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
            )
        vocab_size = self.embeddings.num_embeddings
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= vocab_size):
            raise BiLSTMError(
                f"token ids must lie in [0, {vocab_size}): is the tokenizer the student's own?"
            )
        lengths = attention_mask.sum(dim=1)  # (B,)
        if bool((lengths == 0).any()):
            raise BiLSTMError("every sentence needs at least one token (tokenize with [CLS]/[SEP])")
        return lengths

    def forward_packed(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """nn.LSTM over packed sequences (training): ``(batch, 2 * hidden)``.

        Packing means the LSTM never reads padding, so a sentence's vector does not depend
        on what it is batched with.
        """
        embedded = self.dropout(self.embeddings(input_ids))  # (B, T, E)
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, _ = self.lstm(packed)
        hidden, _ = pad_packed_sequence(
            outputs, batch_first=True, total_length=input_ids.shape[1]
        )  # (B, T, 2H), zeros at padding
        padding = torch.arange(input_ids.shape[1], device=lengths.device) >= lengths[:, None]
        return hidden.masked_fill(padding[..., None], torch.finfo(hidden.dtype).min).amax(dim=1)

    def forward_inference(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The same vectors, computed faster without autograd: ``(batch, 2 * hidden)``.

        The input half of every LSTM gate, ``W_ih x + b``, depends on the token alone, so
        it is looked up in a table computed once per weight version (``(vocab, 2, 4H)``,
        see :func:`gate_table`) instead of multiplied out per token, one step at a time
        (a small gather that stays in cache); the loop then does only the recurrent half.
        Rows are sorted by length so that step t computes only the first n_t rows (the
        state is a shrinking view; no padding is read), the backward direction runs over
        each sentence reversed within its own length, and the max over time is kept as a
        running maximum (pooling does not care about order).
        """
        hidden_size = self.lstm.hidden_size
        table, recurrent = gate_table(self)  # (V, 2, 4H), (2, H, 4H)
        sorted_lengths, order = lengths.sort(descending=True)
        input_ids = input_ids[order]
        batch, seq = input_ids.shape
        steps = torch.arange(seq, device=input_ids.device)
        reverse = (sorted_lengths[:, None] - 1 - steps).clamp(min=0)  # (B, T)
        ids = torch.stack([input_ids.t(), input_ids.gather(1, reverse).t()])  # (2, T, B)
        rows = ids * 2 + torch.arange(2, device=ids.device)[:, None, None]  # rows of (2V, 4H)
        flat_table = table.view(-1, table.shape[-1])  # (2V, 4H)
        state = table.new_zeros(2, batch, hidden_size)  # h of the rows still running
        cell = table.new_zeros(2, batch, hidden_size)  # c of the rows still running
        pooled = table.new_full((2, batch, hidden_size), float("-inf"))
        alive = (sorted_lengths[None, :] > steps[:, None]).sum(dim=1).tolist()  # rows per step
        h = hidden_size
        for step in range(int(sorted_lengths[0])):
            n = alive[step]
            if n < state.shape[1]:  # the shortest rows have ended: keep a view of the rest
                state, cell = state[:, :n], cell[:, :n]
            gates = F.embedding(rows[:, step, :n], flat_table)  # (2, n, 4H), input half
            gates.baddbmm_(state, recurrent)  # + recurrent half; table order: i, f, o, g
            gates[..., : 3 * h].sigmoid_()
            gates[..., 3 * h :].tanh_()
            cell = torch.addcmul(gates[..., h : 2 * h] * cell, gates[..., :h], gates[..., 3 * h :])
            state = gates[..., 2 * h : 3 * h] * torch.tanh(cell)
            torch.maximum(pooled[:, :n], state, out=pooled[:, :n])
        vectors = torch.empty(batch, 2 * hidden_size, dtype=table.dtype, device=table.device)
        vectors[order] = torch.cat([pooled[0], pooled[1]], dim=-1)
        return vectors


# Per encoder: (parameter versions, table, recurrent weights). A weak dictionary rather than
# a module attribute, so state_dict, deepcopy and pickling never see the cache.
_GATE_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def gate_table(encoder: BiLSTMEncoder) -> tuple[torch.Tensor, torch.Tensor]:
    """``(vocab, 2, 4 * hidden)`` input gates ``E W_ih^T + b_ih + b_hh`` of every token for
    both directions, and the recurrent weights ``W_hh^T`` stacked, ``(2, hidden, 4 * hidden)``,
    both with the gates in the order input, forget, output, cell.

    Cached per encoder and rebuilt when a parameter changes (an optimizer step or
    ``load_state_dict`` bumps its version; a cast or move gives it new storage). For a
    30,522-token vocabulary and 150 units it holds 146 MB.
    """
    lstm = encoder.lstm
    parameters = [encoder.embeddings.weight, *lstm.parameters()]
    try:
        key = tuple((p.data_ptr(), p._version) for p in parameters)
    except RuntimeError:  # parameters made inside inference_mode keep no version counter
        key = tuple((p.data_ptr(), -1) for p in parameters)
    cached = _GATE_TABLES.get(encoder)
    if cached is not None and cached[0] == key:
        return cached[2], cached[3]
    with torch.no_grad():
        input_weights = torch.stack([lstm.weight_ih_l0, lstm.weight_ih_l0_reverse])  # (2, 4H, E)
        biases = torch.stack(
            [
                lstm.bias_ih_l0 + lstm.bias_hh_l0,
                lstm.bias_ih_l0_reverse + lstm.bias_hh_l0_reverse,
            ]
        )  # (2, 4H)
        # PyTorch stores the gates as input, forget, cell, output; the table puts the three
        # sigmoid gates first (i, f, o, g) so the loop applies each nonlinearity once.
        hidden = lstm.hidden_size
        order = torch.cat(
            [
                torch.arange(2 * hidden),
                torch.arange(3 * hidden, 4 * hidden),
                torch.arange(2 * hidden, 3 * hidden),
            ]
        ).to(input_weights.device)
        input_weights, biases = input_weights[:, order], biases[:, order]
        table = torch.einsum("ve,dge->vdg", encoder.embeddings.weight, input_weights) + biases
        recurrent = torch.stack([lstm.weight_hh_l0, lstm.weight_hh_l0_reverse])[:, order]
        recurrent = recurrent.transpose(1, 2).contiguous()
    # the parameters are held too, so their storage cannot be reused by a new tensor
    _GATE_TABLES[encoder] = (key, [p.detach() for p in parameters], table, recurrent)
    return table, recurrent


class BiLSTMClassifier(nn.Module):
    """A BiLSTM sentence (or siamese pair) classifier with its tokenizer.

    Build with :meth:`from_teacher` (embeddings copied from a teacher) or :func:`load_bilstm`.
    """

    def __init__(self, config: BiLSTMConfig, tokenizer: Tokenizer):
        super().__init__()
        if tokenizer.vocab_size > config.vocab_size:
            raise BiLSTMError(
                f"the tokenizer has {tokenizer.vocab_size:,} entries but the embedding matrix "
                f"has {config.vocab_size:,} rows: the tokenizer must be the teacher's own"
            )
        self.config = config
        self.tokenizer = tokenizer
        self.encoder = BiLSTMEncoder(config)
        self.head = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(config.feature_size, config.mlp_size),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.mlp_size, config.num_labels),
        )

    @classmethod
    def from_teacher(
        cls,
        word_embeddings: torch.Tensor,
        tokenizer: Tokenizer,
        seed: int = 0,
        **settings,
    ) -> BiLSTMClassifier:
        """A student whose embeddings are a copy of ``word_embeddings`` ``(vocab, dim)``
        (a teacher's input embeddings); ``settings`` are :class:`BiLSTMConfig` fields.

        The LSTM and the head are drawn from ``seed`` alone.
        """
        if word_embeddings.dim() != 2:
            raise BiLSTMError(
                f"word_embeddings must be (vocab, dim), got {tuple(word_embeddings.shape)}"
            )
        vocab_size, dim = word_embeddings.shape
        config = BiLSTMConfig(
            vocab_size=vocab_size, embedding_dim=dim, pad_token_id=tokenizer.pad_id, **settings
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config, tokenizer)
        with torch.no_grad():
            model.encoder.embeddings.weight.copy_(word_embeddings.detach().float())
        return model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pair_input_ids: torch.Tensor | None = None,
        pair_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``(batch, num_labels)`` from ``(batch, seq)`` ids and masks (and, for the
        pair variant, the second sentences' ``(batch, seq2)`` ids and masks)."""
        if self.config.pair != (pair_input_ids is not None):
            raise BiLSTMError(
                "this student reads sentence pairs: pass the second sentences too"
                if self.config.pair
                else "this student reads single sentences, but second sentences were given"
            )
        features = self.encoder(input_ids, attention_mask)  # (B, 2H)
        if pair_input_ids is not None:
            if pair_attention_mask is None:
                raise BiLSTMError("pair_input_ids need a pair_attention_mask")
            second = self.encoder(pair_input_ids, pair_attention_mask)  # (B, 2H)
            features = pair_features(features, second)  # (B, 8H)
        return self.head(features)

    # ------------------------------------------------------------------ text in, logits out
    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each text with [CLS] and [SEP], cut to ``config.max_length``."""
        return tokenize_texts(self.tokenizer, texts, self.config.max_length)

    def collate(
        self, first: Sequence[np.ndarray], second: Sequence[np.ndarray] | None = None
    ) -> dict[str, torch.Tensor]:
        """Padded model inputs for token-id sequences (and second sentences)."""
        batch = collate_sequences(first, self.tokenizer.pad_id)
        if second is not None:
            pair = collate_sequences(second, self.tokenizer.pad_id)
            batch["pair_input_ids"] = pair["input_ids"]
            batch["pair_attention_mask"] = pair["attention_mask"]
        return batch

    @torch.inference_mode()
    def predict_logits(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        batch_size: int = 256,
        max_length: int | None = None,
    ) -> np.ndarray:
        """Logits ``(len(texts), num_labels)`` float32, in eval mode, batched by length;
        sentences are cut to ``max_length`` tokens (at most, and by default,
        ``config.max_length``)."""
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(pairs, str):
            pairs = [pairs]
        if batch_size < 1:
            raise BiLSTMError(f"batch_size must be >= 1, got {batch_size}")
        if self.config.pair != (pairs is not None):
            raise BiLSTMError(
                "this student reads sentence pairs: pass pairs"
                if self.config.pair
                else "this student reads single sentences: pairs must be None"
            )
        if pairs is not None and len(pairs) != len(texts):
            raise BiLSTMError(f"got {len(texts)} texts but {len(pairs)} second texts")
        if max_length is not None and max_length < 3:
            raise BiLSTMError(f"max_length must be >= 3 ([CLS] word [SEP]), got {max_length}")
        limit = min(max_length or self.config.max_length, self.config.max_length)
        first = tokenize_texts(self.tokenizer, texts, limit)
        second = tokenize_texts(self.tokenizer, pairs, limit) if pairs is not None else None
        lengths = [len(ids) + (len(second[i]) if second else 0) for i, ids in enumerate(first)]
        order = np.argsort(lengths, kind="stable")
        out = np.zeros((len(texts), self.config.num_labels), dtype=np.float32)
        was_training = self.training
        self.eval()
        device = self.encoder.embeddings.weight.device  # inputs follow the weights
        try:
            for start in range(0, len(texts), batch_size):
                indices = order[start : start + batch_size]
                batch = self.collate(
                    [first[i] for i in indices],
                    [second[i] for i in indices] if second is not None else None,
                )
                out[indices] = self(**to_device(batch, device)).float().cpu().numpy()
        finally:
            self.train(was_training)
        return out

    def logits(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, batch_size: int = 256
    ) -> np.ndarray:
        """Same as :meth:`predict_logits`, under the name :meth:`Encoder.logits` uses, so
        code that classifies with either kind of model can call one method."""
        return self.predict_logits(texts, pairs, batch_size)

    # ------------------------------------------------------------------ inspection and I/O
    def parameter_counts(self) -> dict[str, int]:
        """Parameters: total, in the embedding matrix, and the rest (LSTM and head)."""
        total = sum(p.numel() for p in self.parameters())
        embedding = self.encoder.embeddings.weight.numel()
        return {"total": total, "embedding": embedding, "non_embedding": total - embedding}

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json``, ``model.safetensors``, the tokenizer files and a model card
        atomically; saving over an earlier student keeps the user's own files there (a
        README.md of theirs is never replaced by the card)."""
        folder = Path(folder)
        config = self.config
        card = CardFacts(
            name=f"BiLSTM {'sentence-pair ' if config.pair else ''}classifier",
            kind="bilstm",
            architecture="BiLSTM (distilkit)",
            hidden_size=config.hidden_size,
            vocab_size=config.vocab_size,
            labels=list(config.label_names or []),
            max_seq_length=config.max_length,
            settings={
                "embeddings, LSTM units per direction, MLP": (
                    f"{config.embedding_dim}, {config.hidden_size}, {config.mlp_size}"
                ),
                "outputs": "1 (regression)" if config.num_labels == 1 else str(config.num_labels),
            },
        )
        with atomic_folder(folder, keep_others=True) as temp:
            (temp / CONFIG_FILE).write_text(
                json.dumps(to_dict(self.config), indent=2) + "\n", "utf-8"
            )
            tensors = {k: v.detach().contiguous().clone() for k, v in self.state_dict().items()}
            save_file(tensors, str(temp / WEIGHTS_FILE), metadata={"format": "pt"})
            self.tokenizer.save(temp)
            keep_user_readme(folder, temp)
            write_card(temp, card, shown_as=folder)
        return folder

    def load_weights(self, folder: str | os.PathLike) -> None:
        """Copy the weights of a saved student of the same shape into this one."""
        path = Path(folder) / WEIGHTS_FILE
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise BiLSTMError(f"cannot read {path}: {error}") from None
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
        if missing or unexpected or wrong:
            raise BiLSTMError(
                f"{path} does not fit this student: missing {missing[:3]}, unexpected "
                f"{unexpected[:3]}, wrong shape {wrong[:3]}: is config.json the one for it?"
            )
        self.load_state_dict(state)

    def __repr__(self) -> str:
        c = self.config
        kind = "pair" if c.pair else "single"
        return (
            f"BiLSTMClassifier({kind}, embeddings {c.vocab_size}x{c.embedding_dim}, "
            f"lstm {c.hidden_size}x2, mlp {c.mlp_size}, labels {c.num_labels})"
        )


# ----------------------------------------------------------------------------- helpers
def tokenize_texts(
    tokenizer: Tokenizer, texts: Sequence[str], max_length: int, chunk: int = 2048
) -> list[np.ndarray]:
    """Unpadded int64 token ids of each text, with [CLS] and [SEP], cut to ``max_length``."""
    sequences: list[np.ndarray] = []
    for start in range(0, len(texts), chunk):
        sequences.extend(tokenizer.encode_unpadded(list(texts[start : start + chunk]), max_length))
    return sequences


def is_bilstm_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a saved BiLSTM student (rather than a transformer)."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text("utf-8")).get("model_type") == MODEL_TYPE
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def load_bilstm(folder: str | os.PathLike) -> BiLSTMClassifier:
    """Read a student written by :meth:`BiLSTMClassifier.save` (in eval mode)."""
    folder = Path(folder)
    if not is_bilstm_folder(folder):
        raise BiLSTMError(
            f"{folder} is not a BiLSTM student: expected a config.json with "
            f'"model_type": "{MODEL_TYPE}"'
        )
    try:
        config = from_dict(BiLSTMConfig, load_json(folder / CONFIG_FILE))
    except (ConfigError, TypeError) as error:
        raise BiLSTMError(f"{folder / CONFIG_FILE}: {error}") from None
    tokenizer = Tokenizer.from_folder(folder)
    model = BiLSTMClassifier(config, tokenizer)
    model.load_weights(folder)
    return model.eval()


def load_classifier(name: str | os.PathLike):
    """A text classifier with ``.logits(texts, pairs)``: a BiLSTM student folder gives a
    :class:`BiLSTMClassifier`, anything else :func:`distilkit.load`'s ``Encoder``."""
    if is_bilstm_folder(name):
        return load_bilstm(name)

    return load(name)


__all__ = [
    "MODEL_TYPE",
    "BiLSTMClassifier",
    "BiLSTMConfig",
    "BiLSTMEncoder",
    "BiLSTMError",
    "is_bilstm_folder",
    "load_bilstm",
    "load_classifier",
    "pair_features",
    "tokenize_texts",
]
