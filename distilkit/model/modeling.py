"""The distilkit encoder: BERT and DistilBERT layouts and their task heads, in one file.

Read top to bottom: embeddings -> self-attention -> feed-forward -> transformer block
-> backbone (the stack) -> heads -> :class:`TransformerModel` (backbone + optional head).

Both layouts are the same post-LayerNorm transformer; they differ only in the
embeddings (BERT adds token-type vectors) and the pooler (BERT only). A third layout,
MobileBERT's thin bottleneck block, lives in :mod:`distilkit.model.mobilebert` and plugs
into the same backbone. Parameter names
here are our own; ``model/checkpoint.py`` is the one place that maps them to the names in
Hugging Face ``bert`` and ``distilbert`` checkpoints.

Two execution paths give the same numbers:

* the fast path, used when no attention maps are requested: padding tokens are removed
  before the dense layers (which do most of the work) and only the attention itself
  sees a padded ``(batch, heads, seq, head_dim)`` view, through PyTorch's fused
  ``scaled_dot_product_attention``;
* the explicit path computes ``softmax(QK^T / sqrt(d))V`` step by step so that the
  pre-softmax scores and the attention probabilities can be returned for distillation.

Without autograd and dropout (``model.eval()`` under ``torch.inference_mode()`` or
``torch.no_grad()``) on a CPU, the fast path runs each block on oneDNN's linear kernels
with weights reordered once into its blocked layout, and with the bias, the GELU and the
residual addition done inside the matmuls (:meth:`TransformerBlock.forward_onednn`). The
stacked and reordered weights are cached per block and rebuilt whenever a parameter
changes (:mod:`distilkit.model.onednn`). ``DISTILKIT_ONEDNN=0`` in the environment turns
these kernels off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distilkit.model.config import ModelConfig
from distilkit.model.mobilebert import (
    FirstTokenPooler,
    MobileBertBlock,
    MobileBertEmbeddings,
    MobileBertMaskedLMHead,
)
from distilkit.model.onednn import ONEDNN_ACTIVATIONS, inference_weights, use_onednn
from distilkit.model.packing import Padding


def activation_fn(name: str):
    """The FFN non-linearity: exact GELU (BERT), tanh-approximated GELU, or ReLU."""
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    return F.relu


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    """Fixed sin/cos position vectors (Vaswani et al.), ``(num_positions, dim)``."""
    positions = torch.arange(num_positions, dtype=torch.float64)[:, None]
    rates = torch.pow(10000.0, -torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(positions * rates)
    table[:, 1::2] = torch.cos(positions * rates[: dim // 2])
    return table.float()


# ----------------------------------------------------------------------------- embeddings
class Embeddings(nn.Module):
    """word + position (+ token type) vectors, summed, then LayerNorm and dropout."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        if config.sinusoidal_positions:
            table = sinusoidal_table(config.max_position_embeddings, config.hidden_size)
            self.position_embeddings.weight.data.copy_(table)
            self.position_embeddings.weight.requires_grad_(False)
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, config.hidden_size)
            if config.type_vocab_size > 0
            else None
        )
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.padding_idx = config.pad_token_id
        self.offset = config.position_offset  # RoBERTa / XLM-R: positions after padding_idx

    def parts(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The vectors before summing, each ``(batch, seq, hidden)``: word, position, token_type."""
        seq_len = input_ids.shape[1]
        if seq_len > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"input has {seq_len} tokens but the model has only "
                f"{self.position_embeddings.num_embeddings} positions: truncate the text"
            )
        word = self.word_embeddings(input_ids)  # (B, T, H)
        if self.offset:
            position = self.position_embeddings(self.position_ids(input_ids))  # (B, T, H)
        else:
            position_ids = torch.arange(seq_len, device=input_ids.device)
            position = self.position_embeddings(position_ids)[None].expand_as(word)  # (B, T, H)
        result = {"word": word, "position": position}
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            result["token_type"] = self.token_type_embeddings(token_type_ids)
        return result

    def position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """RoBERTa / XLM-R positions, ``(batch, seq)``: real tokens count up from
        padding_idx + 1, padding tokens sit at padding_idx (as in `transformers`)."""
        real = input_ids.ne(self.padding_idx).int()
        return (torch.cumsum(real, dim=1).type_as(real) * real).long() + self.padding_idx

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(batch, seq)`` ids -> ``(batch, seq, hidden)`` input vectors."""
        seq_len = input_ids.shape[1]
        limit = self.position_embeddings.num_embeddings - self.offset
        if seq_len > limit:
            raise ValueError(
                f"input has {seq_len} tokens but the model has only {limit} positions: "
                "truncate the text"
            )
        if self.offset:
            positions = self.position_embeddings(self.position_ids(input_ids))  # (B, T, H)
        else:
            positions = self.position_embeddings.weight[:seq_len]  # (T, H)
        vectors = self.word_embeddings(input_ids) + positions
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                vectors = vectors + self.token_type_embeddings.weight[0]
            else:
                vectors = vectors + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.layer_norm(vectors))

    def forward_packed(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, padding: Padding
    ) -> torch.Tensor:
        """:meth:`forward` for the fast path: the real tokens' vectors ``(tokens, hidden)``."""
        return padding.unpad(self.forward(input_ids, token_type_ids))


# ----------------------------------------------------------------------------- attention
class SelfAttention(nn.Module):
    """Multi-head self-attention with its output projection (no residual, no norm)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_dropout
        self.dropout = nn.Dropout(config.attention_dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape  # (B, T, H) -> (B, heads, T, head_dim)
        return x.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, seq, _ = x.shape  # (B, heads, T, head_dim) -> (B, T, H)
        return x.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim)

    def qkv_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Q, K and V weights stacked, ``(3H, H)``, and biases ``(3H,)``: one matmul for the
        three projections. Without autograd the stacked copy is cached."""
        linears = (self.query, self.key, self.value)
        if torch.is_grad_enabled():
            weight = torch.cat([linear.weight for linear in linears])
            return weight, torch.cat([linear.bias for linear in linears])
        return inference_weights(self, [linears], reorder=False)[0]

    def _qkv(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return F.linear(hidden, *self.qkv_parameters()).chunk(3, dim=-1)

    def attend(self, qkv: torch.Tensor, padding: Padding) -> torch.Tensor:
        """Fused attention on packed projections: ``(tokens, 3H)`` -> context ``(tokens, H)``.

        The projections are padded once, as one tensor, and viewed per head; the context
        comes back packed.
        """
        qkv = padding.pad(qkv).view(padding.batch, padding.seq, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, head_dim)
        context = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=padding.key_mask,
            dropout_p=self.dropout_p if self.training else 0.0,
        )  # (B, heads, T, head_dim)
        return padding.unpad(context.transpose(1, 2))

    def forward_fast(self, hidden: torch.Tensor, padding: Padding) -> torch.Tensor:
        """Packed ``(tokens, H)`` -> ``(tokens, H)``; see :meth:`attend`."""
        context = self.attend(F.linear(hidden, *self.qkv_parameters()), padding)
        return self.output(context)

    def forward_explicit(
        self, hidden: torch.Tensor, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step-by-step attention on ``(B, T, H)``.

        Returns (output ``(B, T, H)``, probabilities ``(B, heads, T, T)``, pre-softmax
        scores ``(B, heads, T, T)``). The scores are ``QK^T / sqrt(head_dim)`` before the
        padding mask is applied; the probabilities put zero weight on padded keys.
        """
        query, key, value = (self._heads(x) for x in self._qkv(hidden))
        scores = query @ key.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, heads, T, T)
        masked = scores
        if key_mask is not None:
            masked = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
        probs = masked.softmax(dim=-1)
        context = self._merge(self.dropout(probs) @ value)
        return self.output(context), probs, scores


class FeedForward(nn.Module):
    """Position-wise ``Linear(H, I) -> activation -> Linear(I, H)``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.activation = activation_fn(config.hidden_act)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(self.activation(self.intermediate(hidden)))


class TransformerBlock(nn.Module):
    """Post-LN block: ``x = LN(x + Attn(x)); x = LN(x + FFN(x))`` (BERT and DistilBERT)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.onednn_activation = ONEDNN_ACTIVATIONS[config.hidden_act]

    def forward_fast(self, hidden: torch.Tensor, padding: Padding) -> torch.Tensor:
        """Packed ``(tokens, H)`` -> ``(tokens, H)``, with autograd and dropout."""
        hidden = self.attention_norm(
            hidden + self.dropout(self.attention.forward_fast(hidden, padding))
        )
        return self.ffn_norm(hidden + self.dropout(self.ffn(hidden)))

    def forward_onednn(self, hidden: torch.Tensor, padding: Padding) -> torch.Tensor:
        """:meth:`forward_fast` for inference on a CPU (see :func:`use_onednn`), packed
        ``(tokens, H)`` -> ``(tokens, H)``.

        Four oneDNN matmuls on reordered weights: Q/K/V stacked; the attention output
        projection with the residual added inside; the FFN's first matmul with its
        activation inside; its second with the residual inside. Then the two LayerNorms.
        """
        attention, ffn = self.attention, self.ffn
        groups = [
            [attention.query, attention.key, attention.value],
            [attention.output],
            [ffn.intermediate],
            [ffn.output],
        ]
        qkv, attention_output, intermediate, ffn_output = inference_weights(
            self, groups, reorder=True
        )
        linear = torch.ops.mkldnn._linear_pointwise
        context = attention.attend(linear(hidden, *qkv, "none", [], ""), padding)  # (tokens, H)
        norm = self.attention_norm
        hidden = F.layer_norm(
            linear.binary(context, hidden, *attention_output, "add"),
            norm.normalized_shape,
            norm.weight,
            norm.bias,
            norm.eps,
        )
        post_op, algorithm = self.onednn_activation
        inner = linear(hidden, *intermediate, post_op, [], algorithm)  # (tokens, I)
        norm = self.ffn_norm
        return F.layer_norm(
            linear.binary(inner, hidden, *ffn_output, "add"),
            norm.normalized_shape,
            norm.weight,
            norm.bias,
            norm.eps,
        )

    def forward_explicit(
        self, hidden: torch.Tensor, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attended, probs, scores = self.attention.forward_explicit(hidden, key_mask)
        hidden = self.attention_norm(hidden + self.dropout(attended))
        hidden = self.ffn_norm(hidden + self.dropout(self.ffn(hidden)))
        return hidden, probs, scores


# ----------------------------------------------------------------------------- the stack
@dataclass
class EncoderOutput:
    """What the backbone returns.

    last_hidden_state: (batch, seq, hidden), zeros at padding on the fast path.
    hidden_states: num_layers + 1 tensors (embeddings output first), if requested.
    attentions / attention_scores: num_layers tensors (batch, heads, seq, seq), if requested.
    pooled_output: (batch, hidden) tanh-pooled [CLS] vector (BERT layout with pooler only).
    """

    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    attention_scores: tuple[torch.Tensor, ...] | None = None
    pooled_output: torch.Tensor | None = None


class Pooler(nn.Module):
    """BERT's pooler: ``tanh(W h_[CLS] + b)``, ``(batch, hidden)``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(last_hidden_state[:, 0]))


class Backbone(nn.Module):
    """Embeddings, then ``num_layers`` transformer blocks, then (BERT) the pooler."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        mobile = config.layout == "mobilebert"
        self.embeddings = MobileBertEmbeddings(config) if mobile else Embeddings(config)
        block = MobileBertBlock if mobile else TransformerBlock
        self.layers = nn.ModuleList(block(config) for _ in range(config.num_layers))
        self.pooler = Pooler(config) if config.with_pooler else None
        if mobile and config.with_pooler and not config.classifier_activation:
            self.pooler = FirstTokenPooler()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        output_attention_scores: bool = False,
        layer_indices: Sequence[int] | None = None,
    ) -> EncoderOutput:
        """``input_ids`` (batch, seq); ``attention_mask`` (batch, seq), 1 for real tokens.

        ``layer_indices`` runs only those blocks, in that order (a cut of the stack, for
        choosing a student's layers without copying weights).
        """
        blocks = self.layers if layer_indices is None else [self.layers[i] for i in layer_indices]
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        on_host = input_ids.device.type == "cpu"  # off the host, checks would wait for the device
        if (
            on_host
            and input_ids.numel()
            and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size)
        ):
            raise ValueError(
                f"token ids must lie in [0, {self.config.vocab_size}): got ids from "
                f"{int(input_ids.min())} to {int(input_ids.max())}: "
                "is the tokenizer the model's own?"
            )
        if token_type_ids is not None and self.embeddings.token_type_embeddings is not None:
            limit = self.embeddings.token_type_embeddings.num_embeddings
            if token_type_ids.numel() and int(token_type_ids.max()) >= limit:
                raise ValueError(f"token_type_ids must be < {limit}")
        batch, seq = input_ids.shape
        key_mask = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids "
                    f"shape {tuple(input_ids.shape)}"
                )
            if not on_host or not bool(attention_mask.all()):  # (no mask: the fast path)
                key_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        all_hidden = None
        if output_attentions or output_attention_scores or output_hidden_states:
            hidden = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
            all_hidden = [hidden] if output_hidden_states else None

        if output_attentions or output_attention_scores:
            probs_per_layer, scores_per_layer = [], []
            for layer in blocks:
                hidden, probs, scores = layer.forward_explicit(hidden, key_mask)
                probs_per_layer.append(probs)
                scores_per_layer.append(scores)
                if all_hidden is not None:
                    all_hidden.append(hidden)
            attentions = tuple(probs_per_layer) if output_attentions else None
            attention_scores = tuple(scores_per_layer) if output_attention_scores else None
        else:
            attentions = attention_scores = None
            padding = Padding(batch, seq)
            if key_mask is not None:
                if on_host:  # drop padding rows before the dense layers (nonzero would sync a GPU)
                    padding.indices = attention_mask.reshape(-1).nonzero().squeeze(1)
                padding.key_mask = key_mask
            if all_hidden is None:
                hidden = self.embeddings.forward_packed(input_ids, token_type_ids, padding)
            else:
                hidden = padding.unpad(hidden)  # (tokens, H)
            onednn = use_onednn(hidden, self.training)
            for layer in blocks:
                if onednn:
                    hidden = layer.forward_onednn(hidden, padding)
                else:
                    hidden = layer.forward_fast(hidden, padding)
                if all_hidden is not None:
                    all_hidden.append(padding.pad(hidden))
            hidden = padding.pad(hidden)  # (B, T, H)
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return EncoderOutput(
            last_hidden_state=hidden,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=attentions,
            attention_scores=attention_scores,
            pooled_output=pooled,
        )


# ----------------------------------------------------------------------------- heads
class MaskedLMHead(nn.Module):
    """``LN(act(W h))``, then a decoder tied to the word embeddings plus a bias.

    Output: ``(..., vocab)`` logits.
    """

    def __init__(self, config: ModelConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = activation_fn(config.hidden_act)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.word_embeddings = [
            word_embeddings
        ]  # a list, so the tied weight is not registered twice

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.layer_norm(self.activation(self.transform(hidden)))
        return F.linear(hidden, self.word_embeddings[0].weight, self.bias)


class SequenceClassificationHead(nn.Module):
    """Sentence (or pair) -> ``(batch, num_labels)`` logits.

    BERT layout: pooler output -> dropout -> linear. DistilBERT layout: [CLS] vector ->
    ``pre_classifier`` -> ReLU -> dropout -> linear. ``num_labels=1`` is regression.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.distilbert_style = config.layout == "distilbert"
        default_dropout = 0.2 if self.distilbert_style else config.hidden_dropout
        dropout = (
            config.classifier_dropout if config.classifier_dropout is not None else default_dropout
        )
        # RoBERTa / XLM-R: [CLS] -> dropout -> dense -> tanh -> dropout -> out_proj, no pooler
        self.roberta_style = config.family != "bert"
        self.pre_classifier = (
            nn.Linear(config.hidden_size, config.hidden_size)
            if self.distilbert_style or self.roberta_style
            else None
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, encoded: EncoderOutput) -> torch.Tensor:
        if self.roberta_style:
            first = self.dropout(encoded.last_hidden_state[:, 0])
            features = torch.tanh(self.pre_classifier(first))
        elif self.pre_classifier is not None:
            features = F.relu(self.pre_classifier(encoded.last_hidden_state[:, 0]))
        elif encoded.pooled_output is not None:
            features = encoded.pooled_output
        else:
            raise ValueError("a BERT-layout classifier needs the pooler: set with_pooler=True")
        return self.classifier(self.dropout(features))


class TokenClassificationHead(nn.Module):
    """Per token ``(batch, seq, num_labels)`` logits (NER)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        dropout = (
            config.classifier_dropout
            if config.classifier_dropout is not None
            else config.hidden_dropout
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, encoded: EncoderOutput) -> torch.Tensor:
        return self.classifier(self.dropout(encoded.last_hidden_state))


class QuestionAnsweringHead(nn.Module):
    """Span start/end logits, ``(batch, seq, 2)``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)

    def forward(self, encoded: EncoderOutput) -> torch.Tensor:
        return self.qa_outputs(self.dropout(encoded.last_hidden_state))


# ----------------------------------------------------------------------------- full model
@dataclass
class ModelOutput(EncoderOutput):
    """:class:`EncoderOutput` plus the head's ``logits`` (shape depends on the head)."""

    logits: torch.Tensor | None = None

    @property
    def start_logits(self) -> torch.Tensor:
        """QA head: ``(batch, seq)``."""
        return self.logits[..., 0]

    @property
    def end_logits(self) -> torch.Tensor:
        """QA head: ``(batch, seq)``."""
        return self.logits[..., 1]


class TransformerModel(nn.Module):
    """Backbone plus the head named by ``config.head`` (or none)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.head: nn.Module | None = None
        if config.head == "masked_lm":
            mlm_head = MobileBertMaskedLMHead if config.layout == "mobilebert" else MaskedLMHead
            self.head = mlm_head(config, self.backbone.embeddings.word_embeddings)
        elif config.head == "sequence_classification":
            self.head = SequenceClassificationHead(config)
        elif config.head == "token_classification":
            self.head = TokenClassificationHead(config)
        elif config.head == "question_answering":
            self.head = QuestionAnsweringHead(config)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation: normal(0, 0.02) weights, zero biases, unit LayerNorm."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            if module.weight.requires_grad:  # sinusoidal positions stay fixed
                nn.init.normal_(module.weight, std=std)
                if module.padding_idx is not None:
                    module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        output_attention_scores: bool = False,
    ) -> ModelOutput:
        """Run backbone and head. Shapes as in :meth:`Backbone.forward`."""
        encoded = self.backbone(
            input_ids,
            attention_mask,
            token_type_ids,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            output_attention_scores=output_attention_scores,
        )
        logits = None
        if isinstance(self.head, MaskedLMHead | MobileBertMaskedLMHead):
            logits = self.head(encoded.last_hidden_state)
        elif self.head is not None:
            logits = self.head(encoded)
        return ModelOutput(**vars(encoded), logits=logits)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Masked-LM logits ``(..., vocab)`` for selected hidden vectors ``(..., hidden)``.

        Distillation applies the head to masked positions only, which saves most of
        the ``hidden x vocab`` matmul.
        """
        if not isinstance(self.head, MaskedLMHead | MobileBertMaskedLMHead):
            raise ValueError(
                "this model has no masked-LM head: fit one with `distilkit fit-mlm-head` "
                "or load a checkpoint that has one"
            )
        return self.head(hidden)


# ----------------------------------------------------------------------------- pooling
POOLINGS = ("mean", "cls", "max", "last")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Sentence vectors ``(batch, hidden)`` from token vectors ``(batch, seq, hidden)``.

    mean: average of real tokens (sentence-transformers' recipe); cls: the first token;
    max: element-wise max over real tokens; last: the last real token ([SEP]).
    """
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    if mode == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).amax(1)
    if mode == "last":
        last = attention_mask.long().sum(1).clamp(min=1) - 1  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")


def set_dropout(model: nn.Module, rate: float) -> None:
    """Every dropout of ``model`` (hidden, attention, head) at ``rate`` from now on; the
    model's config is left as it was."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = rate
        if hasattr(module, "dropout_p"):  # attention dropout inside the fused kernel
            module.dropout_p = rate
