"""The C-MLM student: a small Transformer encoder-decoder that generates left to right.

Encoder: distilkit's own :class:`~distilkit.modeling.Backbone` (so it can start as a cut
of any encoder distilkit loads, with the teacher's vocabulary). Decoder: pre-LN blocks of
causal self-attention, cross-attention to the encoder output and a feed-forward layer;
its input embeddings and its output projection are the encoder's word embeddings
(tied), so teacher, student encoder and student decoder share one vocabulary.

Decoding: :func:`greedy_decode` and :func:`beam_search` (length penalty of Wu et al.,
2016), both on an incremental key/value cache: each step runs one new token through
the decoder, attending to cached keys and values of the earlier ones.
Token conventions: the target starts with ``bos_id`` ([CLS]) and ends with ``eos_id``
([SEP]), as in the teacher's ``[CLS] source [SEP] target [SEP]`` input.

With ``copy_source`` the output is a pointer-generator mixture (See et al., 2017): a gate
``g`` per position mixes the vocabulary softmax with an attention distribution over the
source's tokens, ``p = g * softmax(W h) + (1 - g) * sum_{s: x_s = w} a_s``, so a rare
word of the source (a name in a question) can be produced from few training examples.
The decoder then returns log-probabilities, which every consumer of its "logits"
(cross-entropy, the top-k KL, argmax, beam search) reads unchanged: ``log_softmax`` of
normalised log-probabilities is the identity.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from distilkit.model.card import CardFacts, write_card
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import Backbone, activation_fn
from distilkit.settings import ConfigError, build_nested, from_dict, load_json, save_json

CONFIG_FILE = "seq2seq_config.json"
WEIGHTS_FILE = "model.safetensors"

# A decoder cache: per layer, the self-attention keys/values so far and the
# cross-attention keys/values of the encoder output, each (batch, heads, len, head_dim);
# with copy_source the last layer's also holds the copy head's source keys and memory
# (batch, source_len, hidden), the source ids and which of them may be copied (batch, len).
LayerCache = dict[str, torch.Tensor]


@dataclass
class Seq2SeqConfig:
    """Shape of the encoder-decoder; the decoder width is the encoder's (tied embeddings)."""

    encoder: ModelConfig = field(default_factory=ModelConfig)
    decoder_layers: int = 2
    decoder_heads: int = 6
    decoder_intermediate_size: int = 1024
    max_target_positions: int = 64
    dropout: float = 0.1
    pad_id: int = 0
    bos_id: int = 101
    eos_id: int = 102
    copy_source: bool = False  # pointer-generator output over the source's tokens

    def __post_init__(self) -> None:
        build_nested(self)
        if self.encoder.head is not None:
            self.encoder = copy.deepcopy(self.encoder)
            self.encoder.head = None
        if self.decoder_layers < 1 or self.max_target_positions < 2:
            raise ConfigError("decoder_layers must be >= 1 and max_target_positions >= 2")
        if self.encoder.hidden_size % self.decoder_heads:
            raise ConfigError(
                f"hidden size {self.encoder.hidden_size} is not divisible by decoder_heads "
                f"{self.decoder_heads}"
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


class Attention(nn.Module):
    """Multi-head attention; queries from ``hidden``, keys/values given (already projected)."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.query = nn.Linear(hidden, hidden)
        self.key_value = nn.Linear(hidden, 2 * hidden)
        self.output = nn.Linear(hidden, hidden)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape  # (B, T, H) -> (B, heads, T, H / heads)
        return x.view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key, value = self.key_value(x).chunk(2, dim=-1)
        return self.split(key), self.split(value)

    def forward(
        self,
        hidden: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """``hidden`` (B, T, H); ``key``/``value`` (B, heads, S, d); ``mask`` broadcastable
        to (B, heads, T, S), True where attention is allowed. Returns (B, T, H)."""
        query = self.split(self.query(hidden))
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, heads, T, d)
        batch, _, length, _ = context.shape
        return self.output(context.transpose(1, 2).reshape(batch, length, -1))


class DecoderLayer(nn.Module):
    """Pre-LN block: causal self-attention, cross-attention, feed-forward; each residual."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        hidden, eps = config.encoder.hidden_size, config.encoder.layer_norm_eps
        self.self_norm = nn.LayerNorm(hidden, eps=eps)
        self.self_attention = Attention(hidden, config.decoder_heads, config.dropout)
        self.cross_norm = nn.LayerNorm(hidden, eps=eps)
        self.cross_attention = Attention(hidden, config.decoder_heads, config.dropout)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, config.decoder_intermediate_size)
        self.activation = activation_fn(config.encoder.hidden_act)
        self.ffn_out = nn.Linear(config.decoder_intermediate_size, hidden)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        hidden: torch.Tensor,
        cache: LayerCache,
        self_mask: torch.Tensor | None,
        memory_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """``hidden`` (B, T, H) of the new positions; ``cache`` holds ``cross_key``/
        ``cross_value`` and (incremental decoding) ``self_key``/``self_value``, which this
        call extends with the new positions."""
        normed = self.self_norm(hidden)
        key, value = self.self_attention.keys_values(normed)  # (B, heads, T, d)
        if "self_key" in cache:
            key = torch.cat([cache["self_key"], key], dim=2)
            value = torch.cat([cache["self_value"], value], dim=2)
        cache["self_key"], cache["self_value"] = key, value
        hidden = hidden + self.dropout(self.self_attention(normed, key, value, self_mask))
        normed = self.cross_norm(hidden)
        hidden = hidden + self.dropout(
            self.cross_attention(normed, cache["cross_key"], cache["cross_value"], memory_mask)
        )
        feed = self.ffn_out(self.dropout(self.activation(self.ffn_in(self.ffn_norm(hidden)))))
        return hidden + self.dropout(feed)


class CopyHead(nn.Module):
    """Pointer-generator output: a one-head attention over the encoder output picks source
    tokens, a gate mixes that with the vocabulary softmax (See et al., 2017)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.gate = nn.Linear(2 * hidden, 1)

    def forward(
        self,
        hidden: torch.Tensor,
        vocab_logits: torch.Tensor,
        cache: LayerCache,
        source_mask: torch.Tensor,
    ) -> torch.Tensor:
        """``hidden`` (B, T, H), ``vocab_logits`` (B, T, V); ``cache`` holds ``copy_key``
        and ``copy_memory`` (B, S, H), ``copy_ids`` and ``copyable`` (B, S). Returns
        log p (B, T, V)."""
        key, memory, ids = cache["copy_key"], cache["copy_memory"], cache["copy_ids"]
        copyable = cache["copyable"] & source_mask.bool()  # (B, S): words, not [CLS]/[SEP]/pad
        scores = self.query(hidden) @ key.transpose(1, 2) * hidden.shape[-1] ** -0.5
        scores = scores.float().masked_fill(~copyable[:, None, :], float("-inf"))
        # a source with nothing to copy (empty) gives the copy path no mass (gate 1 below)
        attention = scores.softmax(-1).nan_to_num(0.0)  # (B, T, S)
        context = attention.to(memory.dtype) @ memory  # (B, T, H)
        gate = torch.sigmoid(self.gate(torch.cat([hidden, context], dim=-1)).float())
        gate = torch.where(copyable.any(-1)[:, None, None], gate, 1.0)  # (B, T, 1)
        probs = vocab_logits.float().softmax(-1) * gate  # (B, T, V)
        probs = probs.scatter_add(
            -1, ids[:, None, :].expand(-1, hidden.shape[1], -1), attention * (1 - gate)
        )  # each source token's attention added to its vocabulary entry
        return probs.clamp_min(1e-12).log()


class Seq2Seq(nn.Module):
    """Encoder-decoder with tied word embeddings. ``forward`` is teacher forcing."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = config
        self.encoder = Backbone(config.encoder)
        hidden = config.encoder.hidden_size
        self.positions = nn.Embedding(config.max_target_positions, hidden)
        self.embedding_norm = nn.LayerNorm(hidden, eps=config.encoder.layer_norm_eps)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.final_norm = nn.LayerNorm(hidden, eps=config.encoder.layer_norm_eps)
        self.output_bias = nn.Parameter(torch.zeros(config.encoder.vocab_size))
        self.copy_head = CopyHead(hidden) if config.copy_source else None
        self.dropout = nn.Dropout(config.dropout)
        self.apply(self._init_weights)
        # The decoder is trained from scratch: Xavier-uniform projections and N(0, 1/H)
        # positions (as the original Transformer). With BERT's N(0, 0.02) its attention
        # starts almost uniform and a toy copy task took thousands of steps, not a hundred.
        decoder = [self.layers, self.copy_head] if self.copy_head is not None else [self.layers]
        for part in decoder:
            for module in part.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
        nn.init.normal_(self.positions.weight, std=hidden**-0.5)

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation (as :class:`TransformerModel`) for the encoder: normal(0,
        0.02) weights, zero biases, unit LayerNorm; fixed sinusoidal positions stay."""
        std = self.config.encoder.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding) and module.weight.requires_grad:
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.encoder.embeddings.word_embeddings

    # ------------------------------------------------------------------ pieces
    def encode(self, source_ids: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        """``source_ids``/``source_mask`` (B, S) -> encoder output (B, S, H)."""
        return self.encoder(source_ids, source_mask).last_hidden_state

    def start_cache(
        self, memory: torch.Tensor, source_ids: torch.Tensor | None = None
    ) -> list[LayerCache]:
        """Project the encoder output (B, S, H) to each layer's cross-attention keys/values;
        with ``copy_source``, the last layer's cache also keeps the copy head's keys, the memory
        and ``source_ids`` (B, S), which it needs."""
        caches = []
        for layer in self.layers:
            key, value = layer.cross_attention.keys_values(memory)
            caches.append({"cross_key": key, "cross_value": value})
        if self.copy_head is not None:
            if source_ids is None:
                raise ValueError("a copying decoder needs the source ids: start_cache(memory, ids)")
            config = self.config  # the end of the source is not a word to copy: [SEP] is eos
            specials = (source_ids == config.bos_id) | (source_ids == config.eos_id)
            caches[-1].update(
                copy_key=self.copy_head.key(memory),
                copy_memory=memory,
                copy_ids=source_ids,
                copyable=~specials,
            )
        return caches

    def decode(
        self,
        target_ids: torch.Tensor,
        caches: list[LayerCache],
        source_mask: torch.Tensor,
        start: int = 0,
    ) -> torch.Tensor:
        """Logits (B, T, vocab) for decoder inputs ``target_ids`` (B, T) at positions
        ``start .. start + T - 1``, given the caches (extended in place); with ``copy_source``,
        log-probabilities of the pointer-generator mixture."""
        length = target_ids.shape[1]
        if start + length > self.config.max_target_positions:
            raise ValueError(
                f"the decoder reads at most {self.config.max_target_positions} positions, "
                f"asked for {start + length}"
            )
        positions = torch.arange(start, start + length, device=target_ids.device)
        hidden = self.word_embeddings(target_ids) + self.positions(positions)  # (B, T, H)
        hidden = self.dropout(self.embedding_norm(hidden))
        self_mask = None
        if length > 1:  # position i sees cached positions and new positions <= i
            self_mask = torch.ones(
                length, start + length, dtype=torch.bool, device=target_ids.device
            ).tril(start)
        memory_mask = source_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        for layer, cache in zip(self.layers, caches, strict=True):
            hidden = layer(hidden, cache, self_mask, memory_mask)
        hidden = self.final_norm(hidden)
        logits = F.linear(hidden, self.word_embeddings.weight, self.output_bias)
        if self.copy_head is None:
            return logits
        return self.copy_head(hidden, logits, caches[-1], source_mask)

    def forward(
        self, source_ids: torch.Tensor, source_mask: torch.Tensor, decoder_input_ids: torch.Tensor
    ) -> torch.Tensor:
        """Teacher forcing: logits (B, T, vocab) of the token after each decoder input."""
        caches = self.start_cache(self.encode(source_ids, source_mask), source_ids)
        return self.decode(decoder_input_ids, caches, source_mask)

    # ------------------------------------------------------------------ saving
    def save(self, folder: str | Path, tokenizer=None) -> Path:
        """Write ``seq2seq_config.json``, ``model.safetensors`` (and the tokenizer)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE))
        save_json(_config_dict(self.config), folder / CONFIG_FILE)
        if tokenizer is not None:
            tokenizer.save(folder)
        encoder = self.config.encoder
        card = CardFacts(
            name=f"{encoder.num_layers}+{self.config.decoder_layers}-layer seq2seq student",
            kind="seq2seq",
            architecture="encoder-decoder (distilkit), BERT-layout encoder",
            num_layers=encoder.num_layers,
            hidden_size=encoder.hidden_size,
            vocab_size=encoder.vocab_size,
            settings={
                "decoder layers, heads, FFN": (
                    f"{self.config.decoder_layers}, {self.config.decoder_heads}, "
                    f"{self.config.decoder_intermediate_size}"
                ),
                "output tokens at most": str(self.config.max_target_positions),
                "copies source tokens (pointer-generator)": (
                    "yes" if self.config.copy_source else "no"
                ),
            },
        )
        write_card(folder, card)
        return folder


def _config_dict(config: Seq2SeqConfig) -> dict:
    from dataclasses import asdict

    return asdict(config)


def load_seq2seq(folder: str | Path) -> Seq2Seq:
    """A :class:`Seq2Seq` saved by :meth:`Seq2Seq.save` (eval mode)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise ConfigError(
            f"{folder} holds no {CONFIG_FILE}: not a seq2seq student (train one with "
            "`distilkit distill-cmlm`)"
        )
    model = Seq2Seq(from_dict(Seq2SeqConfig, load_json(folder / CONFIG_FILE)))
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.eval()


# ----------------------------------------------------------------------------- decoding
@torch.no_grad()
def greedy_decode(
    model: Seq2Seq, source_ids: torch.Tensor, source_mask: torch.Tensor, max_length: int
) -> list[list[int]]:
    """Argmax decoding with the cache; per source, the tokens after ``bos`` up to and
    without ``eos`` (at most ``max_length`` tokens)."""
    config = model.config
    batch = source_ids.shape[0]
    caches = model.start_cache(model.encode(source_ids, source_mask), source_ids)
    tokens = torch.full((batch, 1), config.bos_id, dtype=torch.long, device=source_ids.device)
    outputs: list[list[int]] = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool)
    for step in range(max_length):
        logits = model.decode(tokens, caches, source_mask, start=step)[:, -1]  # (B, V)
        tokens = logits.argmax(-1, keepdim=True)  # (B, 1), on the model's device
        chosen = tokens[:, 0].tolist()  # read by the host once per step
        for row in range(batch):
            if not done[row]:
                token = chosen[row]
                if token == config.eos_id:
                    done[row] = True
                else:
                    outputs[row].append(token)
        if bool(done.all()):
            break
    return outputs


def length_penalty(length: int, alpha: float) -> float:
    """Wu et al. (2016): ``((5 + length) / 6) ** alpha``; 0 means no penalty."""
    return ((5 + length) / 6) ** alpha


@torch.no_grad()
def beam_search(
    model: Seq2Seq,
    source_ids: torch.Tensor,
    source_mask: torch.Tensor,
    max_length: int,
    beam_size: int = 4,
    alpha: float = 1.0,
) -> list[list[int]]:
    """Beam search with the cache; a finished hypothesis scores ``log p / lp(length)``
    (length counts its tokens and the ``eos``). A source stops once it holds
    ``beam_size`` finished hypotheses; unfinished beams count at ``max_length``."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    config = model.config
    batch, width = source_ids.shape[0], beam_size
    memory = model.encode(source_ids, source_mask).repeat_interleave(width, 0)  # (B*K, S, H)
    mask = source_mask.repeat_interleave(width, 0)
    caches = model.start_cache(memory, source_ids.repeat_interleave(width, 0))
    scores = torch.full((batch, width), float("-inf"))
    scores[:, 0] = 0.0  # one live beam to start with
    sequences: list[list[list[int]]] = [[[] for _ in range(width)] for _ in range(batch)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    tokens = torch.full((batch * width, 1), config.bos_id, dtype=torch.long).to(source_ids.device)
    for step in range(max_length):
        logits = model.decode(tokens, caches, mask, start=step)[:, -1]  # (B*K, V)
        vocab = logits.shape[-1]
        # the bookkeeping runs on the host: one copy of the step's log-probabilities
        log_probs = logits.float().log_softmax(-1).cpu().view(batch, width, vocab)
        candidates = scores[:, :, None] + log_probs
        top_scores, top_ids = candidates.view(batch, -1).topk(2 * width, dim=-1)  # (B, 2K)
        new_scores = torch.full((batch, width), float("-inf"))
        origins = torch.zeros(batch, width, dtype=torch.long)
        next_tokens = torch.full((batch, width), config.pad_id, dtype=torch.long)
        new_sequences: list[list[list[int]]] = []
        for row in range(batch):
            kept: list[list[int]] = []
            if len(finished[row]) >= width:  # done: keep dead beams
                new_sequences.append(sequences[row])
                continue
            for score, flat in zip(top_scores[row].tolist(), top_ids[row].tolist(), strict=True):
                beam, token = divmod(flat, vocab)
                if score == float("-inf"):
                    break
                if token == config.eos_id:
                    if len(finished[row]) < width:
                        hypothesis = sequences[row][beam]
                        normed = score / length_penalty(len(hypothesis) + 1, alpha)
                        finished[row].append((normed, hypothesis))
                    continue
                slot = len(kept)
                new_scores[row, slot], origins[row, slot] = score, beam
                next_tokens[row, slot] = token
                kept.append([*sequences[row][beam], token])
                if len(kept) == width:
                    break
            new_sequences.append(kept + [[] for _ in range(width - len(kept))])
        sequences, scores = new_sequences, new_scores
        if all(len(f) >= width for f in finished):
            break
        order = (origins + torch.arange(batch)[:, None] * width).view(-1)  # (B*K,)
        order = order.to(source_ids.device)
        for cache in caches:
            cache["self_key"] = cache["self_key"][order]
            cache["self_value"] = cache["self_value"][order]
        tokens = next_tokens.view(-1, 1).to(source_ids.device)
    results = []
    for row in range(batch):
        pool = list(finished[row])
        if len(pool) < width:  # beams still live at max_length compete too
            for beam in range(width):
                if scores[row, beam] > float("-inf"):
                    hypothesis = sequences[row][beam]
                    pool.append(
                        (
                            float(scores[row, beam]) / length_penalty(len(hypothesis), alpha),
                            hypothesis,
                        )
                    )
        results.append(max(pool, key=lambda item: item[0])[1] if pool else [])
    return results


__all__ = [
    "Seq2Seq",
    "Seq2SeqConfig",
    "beam_search",
    "greedy_decode",
    "length_penalty",
    "load_seq2seq",
]
