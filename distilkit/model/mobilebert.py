"""MobileBERT's layout (Sun et al., 2020): a deep, thin encoder, top to bottom.

The student keeps the teacher's depth and its width *between* blocks (``hidden_size``),
so every block output can be matched to the teacher's feature map; inside a block a
linear bottleneck narrows the stream to ``intra_bottleneck_size`` (``true_hidden_size``),
attention and a stack of ``num_feedforward_networks`` FFNs run at that width, and a
second linear restores ``hidden_size``. NoNorm (an element-wise affine) may stand in for
LayerNorm and ReLU for GELU, for speed. Word vectors are ``embedding_size`` wide; with
``trigram_input`` each token's vector is concatenated with its neighbours' (a width-3
convolution) before a linear maps them to ``hidden_size``.

The arithmetic follows transformers' ``MobileBertModel`` step for step, quirks
included (two norms ignore ``layer_norm_eps``), so its checkpoints load with the same
outputs; ``checkpoint.py`` maps the parameter names. The modules here plug into
:class:`distilkit.model.modeling.Backbone`: a block offers the same ``forward_fast`` (packed
real tokens, fused attention) and ``forward_explicit`` (attention maps returned) paths
as the BERT block, and ``forward_onednn`` for CPU inference.

NoNorm's speed is in that last path. Being affine, it folds into the matmul before it,
as the paper's TFLite runtime folds it: with NoNorm, inference on a CPU runs each block as
one matmul for Q, K, V and the residual, one for the attention output, two per FFN and
one for the output bottleneck, with bias, ReLU/GELU and residual inside the oneDNN
kernels (:meth:`MobileBertBlock.folded_weights`), and the embeddings' transformation on
the real tokens only. LayerNorm cannot fold; its blocks run ``forward_fast``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distilkit.model.config import ModelConfig
from distilkit.model.onednn import (
    ONEDNN_ACTIVATIONS,
    cached_weights,
    reorder_weight,
    use_onednn,
)
from distilkit.model.packing import Padding

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}
TRANSFORMERS_DEFAULT_EPS = 1e-5  # nn.LayerNorm's default, which two of its norms keep


class NoNorm(nn.Module):
    """MobileBERT's replacement for LayerNorm: ``x * weight + bias``, no statistics."""

    def __init__(self, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden * self.weight + self.bias


def make_norm(config: ModelConfig, size: int, eps: float | None = None) -> nn.Module:
    """LayerNorm (with ``eps``, default ``config.layer_norm_eps``) or NoNorm, per config."""
    if config.normalization_type == "no_norm":
        return NoNorm(size)
    return nn.LayerNorm(size, eps=config.layer_norm_eps if eps is None else eps)


# ----------------------------------------------------------------------------- embeddings
class MobileBertEmbeddings(nn.Module):
    """Word vectors (``embedding_size``; trigram-concatenated if asked) -> Linear to
    ``hidden_size``, plus position and token-type vectors, then the norm and dropout."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.trigram_input = config.trigram_input
        embedding_size = config.word_embedding_size
        self.word_embeddings = nn.Embedding(
            config.vocab_size, embedding_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        inputs = embedding_size * (3 if config.trigram_input else 1)
        self.embedding_transformation = nn.Linear(inputs, config.hidden_size)
        # transformers applies the transformation only when it changes something
        self.transform = config.trigram_input or embedding_size != config.hidden_size
        # forward_packed folds the norm into the transformation: NoNorm only
        self.foldable = self.transform and config.normalization_type == "no_norm"
        self.layer_norm = make_norm(config, config.hidden_size, TRANSFORMERS_DEFAULT_EPS)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def _words(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(batch, seq)`` ids -> word vectors ``(batch, seq, E)``, or with the trigram
        input each next to its neighbours, ``(batch, seq, 3E)``."""
        seq_len = input_ids.shape[1]
        if seq_len > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"input has {seq_len} tokens but the model has only "
                f"{self.position_embeddings.num_embeddings} positions: truncate the text"
            )
        words = self.word_embeddings(input_ids)  # (B, T, E)
        if not self.trigram_input:
            return words
        following = F.pad(words[:, 1:], (0, 0, 0, 1))  # token t+1, zeros past the end
        preceding = F.pad(words[:, :-1], (0, 0, 1, 0))  # token t-1, zeros before the start
        return torch.cat([following, words, preceding], dim=-1)  # (B, T, 3E)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(batch, seq)`` ids -> ``(batch, seq, hidden)`` input vectors."""
        seq_len = input_ids.shape[1]
        words = self._words(input_ids)
        if self.transform:
            words = self.embedding_transformation(words)  # (B, T, H)
        vectors = words + self.position_embeddings.weight[:seq_len]
        if token_type_ids is None:
            vectors = vectors + self.token_type_embeddings.weight[0]
        else:
            vectors = vectors + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.layer_norm(vectors))

    def forward_packed(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, padding: Padding
    ) -> torch.Tensor:
        """:meth:`forward` for the fast path: the real tokens' vectors ``(tokens, hidden)``.

        For inference on a CPU (:func:`~distilkit.model.onednn.use_onednn`) with NoNorm,
        the norm folds into the transformation and into a table of position and
        token-type vectors, and the transformation runs on the real tokens only, adding
        their rows of that table inside its matmul.
        """
        if not (self.foldable and use_onednn(self.embedding_transformation.weight, self.training)):
            return padding.unpad(self.forward(input_ids, token_type_ids))
        batch, seq = input_ids.shape
        words = padding.unpad(self._words(input_ids))  # (tokens, E or 3E)
        weight, bias, table = cached_weights(
            self, "folded", list(self.parameters()), self.folded_weights
        )
        flat = padding.indices
        if flat is None:
            flat = torch.arange(batch * seq, device=input_ids.device)
        rows = (flat % seq) * self.token_type_embeddings.num_embeddings  # position's block
        if token_type_ids is not None:
            rows = rows + token_type_ids.reshape(-1).index_select(0, flat)
        added = table.index_select(0, rows)  # (tokens, H)
        return torch.ops.mkldnn._linear_pointwise.binary(words, added, weight, bias, "add")

    def folded_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """NoNorm ``n(v) = v * g + b`` of ``W w + c + p + t`` is ``(g W) w + (g c + b) +
        g p + g t``: the transformation's weight (reordered for oneDNN) and bias with the
        scale in, and the table of ``g (p + t)``, ``(positions * types, H)``, row ``position
        * types + type``."""
        scale = self.layer_norm.weight
        linear = self.embedding_transformation
        weight = reorder_weight((linear.weight * scale[:, None]).detach())
        bias = (linear.bias * scale + self.layer_norm.bias).detach()
        positions = self.position_embeddings.weight[:, None, :]  # (P, 1, H)
        types = self.token_type_embeddings.weight[None]  # (1, types, H)
        table = ((positions + types) * scale).reshape(-1, scale.shape[0]).detach()
        return weight, bias, table


# ----------------------------------------------------------------------------- the block
class Bottleneck(nn.Module):
    """``norm(Linear(hidden -> bottleneck))``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intra_bottleneck_size)
        self.norm = make_norm(config, config.intra_bottleneck_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dense(hidden))


class FeedForwardNorm(nn.Module):
    """One stacked FFN: ``norm(x + Linear(act(Linear(x))))`` at the block's inner width."""

    def __init__(self, config: ModelConfig, eps: float | None = None, dropout: float = 0.0):
        super().__init__()
        self.intermediate = nn.Linear(config.true_hidden_size, config.intermediate_size)
        self.output = nn.Linear(config.intermediate_size, config.true_hidden_size)
        self.norm = make_norm(config, config.true_hidden_size, eps)
        self.activation = ACTIVATIONS[config.hidden_act]
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        inner = self.activation(self.intermediate(hidden))  # (..., I)
        return self.norm(hidden + self.dropout(self.output(inner)))


class MobileBertAttention(nn.Module):
    """Multi-head attention at the inner width; Q, K and V may read different inputs."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        inner = config.true_hidden_size
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        value_input = inner if config.use_bottleneck_attention else config.hidden_size
        self.query = nn.Linear(inner, inner)
        self.key = nn.Linear(inner, inner)
        self.value = nn.Linear(value_input, inner)
        self.output = nn.Linear(inner, inner)
        self.dropout_p = config.attention_dropout
        self.dropout = nn.Dropout(config.attention_dropout)

    def attend(self, qkv: torch.Tensor, padding: Padding) -> torch.Tensor:
        """Packed projections Q, K and V side by side, ``(tokens, 3 * inner)`` -> context
        ``(tokens, inner)``."""
        qkv = padding.pad(qkv).view(padding.batch, padding.seq, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, d)
        context = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=padding.key_mask,
            dropout_p=self.dropout_p if self.training else 0.0,
        )  # (B, heads, T, d)
        return padding.unpad(context.transpose(1, 2))

    def explicit(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projections ``(B, T, inner)`` -> (context ``(B, T, inner)``, probabilities and
        pre-softmax scores ``(B, heads, T, T)``; padded keys get zero probability)."""
        batch, seq, _ = query.shape

        def heads(x: torch.Tensor) -> torch.Tensor:  # (B, T, inner) -> (B, heads, T, d)
            return x.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)

        scores = heads(query) @ heads(key).transpose(-1, -2) / math.sqrt(self.head_dim)
        masked = scores
        if key_mask is not None:
            masked = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
        probs = masked.softmax(dim=-1)  # (B, heads, T, T)
        context = (self.dropout(probs) @ heads(value)).transpose(1, 2).reshape(batch, seq, -1)
        return context, probs, scores


class MobileBertBlock(nn.Module):
    """One MobileBERT block, ``(..., hidden)`` -> ``(..., hidden)``.

    ``x_in = norm(W_in x)`` (bottleneck); attention on Q/K from ``x`` or a shared
    bottleneck of it, V from ``x`` (or ``x_in``); ``a = norm(x_in + W_o attn)``; each
    stacked FFN ``a = norm(a + FFN(a))``; the last FFN likewise, then
    ``out = norm(x + W_out a)`` (the output bottleneck). Without a bottleneck,
    ``x_in = x`` and the output bottleneck is absent.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.use_bottleneck = config.use_bottleneck
        # forward_onednn folds the norms into the matmuls: NoNorm and a bottleneck only
        self.foldable = config.use_bottleneck and config.normalization_type == "no_norm"
        self.hidden_act = config.hidden_act
        self.bottleneck_attention = config.use_bottleneck_attention
        self.input_bottleneck = Bottleneck(config) if config.use_bottleneck else None
        self.query_key_bottleneck = (
            Bottleneck(config)
            if config.use_bottleneck and config.key_query_shared_bottleneck
            else None
        )
        self.attention = MobileBertAttention(config)
        self.attention_norm = make_norm(config, config.true_hidden_size)
        self.dropout = nn.Dropout(0.0 if config.use_bottleneck else config.hidden_dropout)
        self.ffn_stack = nn.ModuleList(
            FeedForwardNorm(config) for _ in range(config.num_feedforward_networks - 1)
        )
        self.ffn = FeedForwardNorm(
            config,
            eps=TRANSFORMERS_DEFAULT_EPS,
            dropout=0.0 if config.use_bottleneck else config.hidden_dropout,
        )
        self.output_bottleneck = None
        if config.use_bottleneck:
            self.output_bottleneck = nn.Linear(config.true_hidden_size, config.hidden_size)
            self.output_bottleneck_norm = make_norm(config, config.hidden_size)
            self.output_dropout = nn.Dropout(config.hidden_dropout)

    def _inputs(self, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(query input, key input, value input, residual) for the attention."""
        if self.input_bottleneck is None:
            return hidden, hidden, hidden, hidden
        inner = self.input_bottleneck(hidden)  # (..., b)
        if self.bottleneck_attention:
            return inner, inner, inner, inner
        if self.query_key_bottleneck is not None:
            shared = self.query_key_bottleneck(hidden)  # (..., b)
            return shared, shared, hidden, inner
        return hidden, hidden, hidden, inner

    def _after_attention(
        self, hidden: torch.Tensor, context: torch.Tensor, residual: torch.Tensor
    ) -> torch.Tensor:
        attended = self.attention_norm(residual + self.dropout(self.attention.output(context)))
        for ffn in self.ffn_stack:
            attended = ffn(attended)
        attended = self.ffn(attended)  # (..., inner)
        if self.output_bottleneck is None:
            return attended
        widened = self.output_dropout(self.output_bottleneck(attended))  # (..., hidden)
        return self.output_bottleneck_norm(hidden + widened)

    def forward_fast(self, hidden: torch.Tensor, padding: Padding) -> torch.Tensor:
        """Packed real tokens ``(tokens, hidden)`` -> ``(tokens, hidden)``."""
        query_in, key_in, value_in, residual = self._inputs(hidden)
        attention = self.attention
        projections = [attention.query(query_in), attention.key(key_in), attention.value(value_in)]
        context = attention.attend(torch.cat(projections, dim=-1), padding)
        return self._after_attention(hidden, context, residual)

    def forward_onednn(self, hidden: torch.Tensor, padding: Padding) -> torch.Tensor:
        """:meth:`forward_fast` for inference on a CPU (see
        :func:`~distilkit.model.onednn.use_onednn`), packed ``(tokens, hidden)`` ->
        ``(tokens, hidden)``, on the folded weights of :meth:`folded_weights`.

        One matmul gives Q, K, V and the attention's residual; the attention output
        projection adds that residual inside its matmul; each FFN runs its activation
        inside its first matmul; a NoNorm after a matmul is folded into its weights, so
        what is left of it is one ``addcmul`` for the residual's scale. Blocks with
        LayerNorm or without a bottleneck, and int8 blocks, run :meth:`forward_fast`.
        """
        if not self.foldable or type(self.attention.query) is not nn.Linear:
            return self.forward_fast(hidden, padding)
        first, attention_output, ffns, output, output_scale = cached_weights(
            self, "folded", list(self.parameters()), self._onednn_weights
        )
        linear = torch.ops.mkldnn._linear_pointwise
        projected = linear(hidden, *first, "none", [], "")  # (tokens, 4 * inner): Q, K, V, residual
        split = 3 * self.attention.output.in_features
        context = self.attention.attend(projected[:, :split], padding)  # (tokens, inner)
        attended = linear.binary(context, projected[:, split:], *attention_output, "add")
        post_op, algorithm = ONEDNN_ACTIVATIONS[self.hidden_act]
        for inner_weights, outer_weights, scale in ffns:
            inner = linear(attended, *inner_weights, post_op, [], algorithm)  # (tokens, I)
            attended = torch.addcmul(linear(inner, *outer_weights, "none", [], ""), attended, scale)
        return torch.addcmul(linear(attended, *output, "none", [], ""), hidden, output_scale)

    def folded_weights(self) -> FoldedBlock:
        """The block's affine maps with its NoNorms folded in, for inference.

        With NoNorm (``n(x) = x * g + b``) and a bottleneck, every input of the attention
        is an affine map of the block input ``x``: the bottleneck ``n(W_in x + b_in)``, the
        shared key-query bottleneck, and Q, K, V on either. So Q, K, V and the residual,
        the last pre-scaled by the attention's NoNorm, stack into one ``(4 * inner,
        hidden)`` map. A NoNorm after ``y + W h + c`` (``y`` the residual) becomes
        ``y * g + (g W) h + (g c + b)``: the weights take the scale, ``addcmul`` the residual.
        Worked out in float64, returned in the parameters' dtype.
        """
        dtype = self.attention.query.weight.dtype

        def affine(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
            return linear.weight.double(), linear.bias.double()

        def normed(weights: tuple, norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
            """``norm(W x + c)``, an affine map, for a NoNorm ``norm``."""
            weight, bias = weights
            scale = norm.weight.double()
            return weight * scale[:, None], bias * scale + norm.bias.double()

        def then(linear: nn.Linear, inputs: tuple | None) -> tuple[torch.Tensor, torch.Tensor]:
            """``linear`` applied to the affine map ``inputs`` of x (None: x itself)."""
            weight, bias = affine(linear)
            if inputs is None:
                return weight, bias
            return weight @ inputs[0], weight @ inputs[1] + bias

        def cast(weights: tuple) -> tuple[torch.Tensor, torch.Tensor]:
            return tuple(t.to(dtype).contiguous() for t in weights)

        with torch.no_grad():
            attention = self.attention
            inner = normed(affine(self.input_bottleneck.dense), self.input_bottleneck.norm)
            query_key_in = value_in = None  # None: the block input itself
            if self.bottleneck_attention:
                query_key_in = value_in = inner
            elif self.query_key_bottleneck is not None:
                bottleneck = self.query_key_bottleneck
                query_key_in = normed(affine(bottleneck.dense), bottleneck.norm)
            attention_scale = self.attention_norm.weight.double()
            residual = (inner[0] * attention_scale[:, None], inner[1] * attention_scale)
            stacked = [
                then(attention.query, query_key_in),
                then(attention.key, query_key_in),
                then(attention.value, value_in),
                residual,
            ]
            return FoldedBlock(
                first=cast(
                    (torch.cat([w for w, _ in stacked]), torch.cat([b for _, b in stacked]))
                ),
                attention_output=cast(normed(affine(attention.output), self.attention_norm)),
                ffns=[
                    (
                        cast(affine(ffn.intermediate)),
                        cast(normed(affine(ffn.output), ffn.norm)),
                        ffn.norm.weight.to(dtype).detach(),
                    )
                    for ffn in [*self.ffn_stack, self.ffn]
                ],
                output=cast(normed(affine(self.output_bottleneck), self.output_bottleneck_norm)),
                output_scale=self.output_bottleneck_norm.weight.to(dtype).detach(),
                activation=self.hidden_act,
            )

    def _onednn_weights(self) -> tuple:
        """:meth:`folded_weights` with each weight reordered for oneDNN."""
        folded = self.folded_weights()

        def packed(weights: tuple) -> tuple[torch.Tensor, torch.Tensor]:
            return reorder_weight(weights[0]), weights[1]

        ffns = [(packed(inner), packed(outer), scale) for inner, outer, scale in folded.ffns]
        return (
            packed(folded.first),
            packed(folded.attention_output),
            ffns,
            packed(folded.output),
            folded.output_scale,
        )

    def forward_explicit(
        self, hidden: torch.Tensor, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, T, hidden)`` -> (``(B, T, hidden)``, probabilities and scores, each
        ``(B, heads, T, T)``)."""
        query_in, key_in, value_in, residual = self._inputs(hidden)
        attention = self.attention
        context, probs, scores = attention.explicit(
            attention.query(query_in), attention.key(key_in), attention.value(value_in), key_mask
        )
        return self._after_attention(hidden, context, residual), probs, scores


@dataclass
class FoldedBlock:
    """A NoNorm MobileBERT block as affine maps, each ``(weight (out, in), bias (out,))``
    (:meth:`MobileBertBlock.folded_weights`): ``first`` gives Q, K, V and the pre-scaled
    residual from the block input, ``(4 * inner, hidden)``; ``attention_output`` adds to
    that residual; per FFN (inner map, outer map with the norm's scale in, that scale
    ``(inner,)``), and the output bottleneck and its scale ``(hidden,)``. The block is::

        q, k, v, r = first(x); a = attention_output(attend(q, k, v)) + r
        for inner, outer, g in ffns: a = outer(act(inner(a))) + a * g
        out = output(a) + x * output_scale
    """

    first: tuple[torch.Tensor, torch.Tensor]
    attention_output: tuple[torch.Tensor, torch.Tensor]
    ffns: list[
        tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], torch.Tensor]
    ]
    output: tuple[torch.Tensor, torch.Tensor]
    output_scale: torch.Tensor
    activation: str


class TracedFoldedBlock(nn.Module):
    """A NoNorm block's :class:`FoldedBlock` as a module of plain ops on padded tensors,
    for tracing (ONNX export): the folded maps are buffers, so they become the graph's
    weights, and int8 quantization finds every MatMul's weight among them."""

    def __init__(self, block: MobileBertBlock):
        super().__init__()
        folded = block.folded_weights()
        self.attend = [block.attention.explicit]  # a list: its Q/K/V weights are not ours
        self.activation = ACTIVATIONS[folded.activation]
        maps = {"first": folded.first, "attention_output": folded.attention_output}
        maps["output"] = folded.output
        for index, (inner, outer, scale) in enumerate(folded.ffns):
            maps[f"ffn{index}_inner"], maps[f"ffn{index}_outer"] = inner, outer
            self.register_buffer(f"ffn{index}_scale", scale.clone())
        for name, (weight, bias) in maps.items():
            self.register_buffer(f"{name}_weight", weight.clone())
            self.register_buffer(f"{name}_bias", bias.clone())
        self.register_buffer("output_scale", folded.output_scale.clone())
        self.num_ffns = len(folded.ffns)

    def _map(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias"))

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """``(B, T, hidden)`` -> ``(B, T, hidden)``, keys masked by ``key_mask``
        ``(B, 1, 1, T)``."""
        projected = self._map("first", hidden)  # (B, T, 4 * inner)
        query, key, value, residual = projected.chunk(4, dim=-1)
        context, _, _ = self.attend[0](query, key, value, key_mask)  # (B, T, inner)
        attended = self._map("attention_output", context) + residual
        for index in range(self.num_ffns):
            inner = self.activation(self._map(f"ffn{index}_inner", attended))  # (B, T, I)
            outer = self._map(f"ffn{index}_outer", inner)
            attended = outer + attended * getattr(self, f"ffn{index}_scale")
        return self._map("output", attended) + hidden * self.output_scale


# ----------------------------------------------------------------------------- pooler, MLM head
class FirstTokenPooler(nn.Module):
    """The pooler of a MobileBERT with ``classifier_activation=False``: the [CLS] vector."""

    def forward(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        return last_hidden_state[:, 0]


class MobileBertMaskedLMHead(nn.Module):
    """``LN(act(W h))`` times a decoder of the (tied) word vectors stacked with
    ``hidden_size - embedding_size`` extra learned rows, plus a bias: ``(..., vocab)``."""

    def __init__(self, config: ModelConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACTIVATIONS[config.hidden_act]
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        extra = config.hidden_size - config.word_embedding_size
        if extra < 0:
            raise ValueError(
                f"embedding_size {config.word_embedding_size} exceeds hidden_size "
                f"{config.hidden_size}: MobileBERT's masked-LM head needs embedding_size <= "
                "hidden_size"
            )
        self.extra_decoder = nn.Parameter(
            torch.randn(extra, config.vocab_size) * config.initializer_range
        )
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        # a list, so the tied weight is not registered twice
        self.word_embeddings = [word_embeddings]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.layer_norm(self.activation(self.transform(hidden)))  # (..., H)
        decoder = torch.cat([self.word_embeddings[0].weight.t(), self.extra_decoder])  # (H, V)
        return hidden @ decoder + self.bias
