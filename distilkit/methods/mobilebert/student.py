"""A MobileBERT student shaped to a teacher: the teacher's depth, width between blocks
and number of heads; a thin bottleneck inside each block; initialised from the teacher
where shapes allow."""

from __future__ import annotations

import torch

from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel
from distilkit.settings import ConfigError

NORMS = {"nonorm": "no_norm", "layernorm": "layer_norm"}
PAPER_BOTTLENECK = 128


def mobilebert_config(
    teacher: ModelConfig,
    bottleneck_size: int | None = None,
    ffn_stack: int = 2,
    norm: str = "nonorm",
    act: str = "relu",
    embedding_size: int = 128,
    intermediate_size: int | None = None,
) -> ModelConfig:
    """The student's config. ``bottleneck_size`` None: the largest multiple of the
    teacher's head count up to the paper's 128 (attention transfer compares heads one
    to one, so the student has the teacher's heads); ``intermediate_size`` None: 4x the
    bottleneck, the paper's ratio."""
    heads = teacher.num_heads
    if bottleneck_size is None:
        bottleneck_size = max(heads, PAPER_BOTTLENECK // heads * heads)
    if bottleneck_size % heads:
        lower = max(heads, bottleneck_size // heads * heads)
        raise ConfigError(
            f"--bottleneck-size {bottleneck_size} is not divisible by the teacher's {heads} "
            f"attention heads (attention transfer compares heads one to one): use {lower} "
            f"or {lower + heads}"
        )
    if norm not in NORMS:
        raise ConfigError(f"--norm must be one of {sorted(NORMS)}, got {norm!r}")
    if act not in ("relu", "gelu"):
        raise ConfigError(f"--act must be relu or gelu, got {act!r}")
    if ffn_stack < 1:
        raise ConfigError(f"--ffn-stack must be at least 1, got {ffn_stack}")
    if not 0 < embedding_size <= teacher.hidden_size:
        raise ConfigError(
            f"--embedding-size must be from 1 to the teacher's width {teacher.hidden_size}, "
            f"got {embedding_size}"
        )
    return ModelConfig(
        vocab_size=teacher.vocab_size,
        hidden_size=teacher.hidden_size,
        num_layers=teacher.num_layers,
        num_heads=heads,
        intermediate_size=intermediate_size or 4 * bottleneck_size,
        max_position_embeddings=teacher.max_position_embeddings,
        layout="mobilebert",
        type_vocab_size=max(teacher.type_vocab_size, 2),
        with_pooler=teacher.with_pooler,
        hidden_act=act,
        layer_norm_eps=teacher.layer_norm_eps,
        hidden_dropout=0.0,  # transformers' MobileBERT defaults
        attention_dropout=0.1,
        initializer_range=teacher.initializer_range,
        pad_token_id=teacher.pad_token_id,
        embedding_size=embedding_size,
        trigram_input=True,
        use_bottleneck=True,
        intra_bottleneck_size=bottleneck_size,
        key_query_shared_bottleneck=True,
        num_feedforward_networks=ffn_stack,
        normalization_type=NORMS[norm],
    )


def build_mobilebert_student(
    teacher: TransformerModel, config: ModelConfig, seed: int = 0
) -> TransformerModel:
    """A MobileBERT ``config`` student, initialised from ``teacher`` where shapes allow.

    Position and token-type vectors, the embedding LayerNorm (with ``layer_norm``) and the
    pooler are copied. The word vectors are the teacher's projected on their top
    ``embedding_size`` principal directions (truncated SVD ``W ~ U S V^T``): the student's
    rows are ``U S`` and the middle (current-token) block of the trigram transformation is
    ``V``, so embedding + transformation reproduce the teacher's word vectors up to the
    dropped directions. The blocks have no teacher counterpart of their shape and start
    from BERT's random initialisation (seeded).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = TransformerModel(config)
    source = teacher.backbone.embeddings
    target = student.backbone.embeddings
    with torch.no_grad():
        target.position_embeddings.weight.copy_(source.position_embeddings.weight)
        if source.token_type_embeddings is not None:
            rows = source.token_type_embeddings.num_embeddings
            target.token_type_embeddings.weight[:rows].copy_(source.token_type_embeddings.weight)
        else:
            target.token_type_embeddings.weight.zero_()
        if config.normalization_type == "layer_norm":
            target.layer_norm.load_state_dict(source.layer_norm.state_dict())
        words = source.word_embeddings.weight.double()  # (V, H)
        left, singular, right_t = torch.linalg.svd(words, full_matrices=False)
        size = config.word_embedding_size
        target.word_embeddings.weight.copy_(left[:, :size] * singular[:size])  # (V, E)
        transformation = torch.zeros_like(target.embedding_transformation.weight)  # (H, 3E)
        middle = slice(size, 2 * size) if config.trigram_input else slice(0, size)
        transformation[:, middle] = right_t[:size].t()  # (H, E)
        target.embedding_transformation.weight.copy_(transformation)
        target.embedding_transformation.bias.zero_()
        if teacher.backbone.pooler is not None and student.backbone.pooler is not None:
            student.backbone.pooler.load_state_dict(teacher.backbone.pooler.state_dict())
    recipe = getattr(teacher, "sentence_modules", None)  # pooling, Normalize, length limit
    if recipe is not None:
        student.sentence_modules = recipe.for_width(config.hidden_size)
    return student
