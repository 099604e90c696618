"""The encoder's configuration (:class:`ModelConfig`) and its Hugging Face ``config.json``
form, both ways."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distilkit.settings import ConfigError

HEADS = ("masked_lm", "sequence_classification", "token_classification", "question_answering")
LAYOUTS = ("bert", "distilbert", "mobilebert")
NORMALIZATIONS = ("layer_norm", "no_norm")
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
# Checkpoint families of the BERT layout: RoBERTa and XLM-R are BERT blocks whose position
# ids start after padding_idx and whose one token type is never switched.
FAMILIES = ("bert", "roberta", "xlm-roberta")


@dataclass
class ModelConfig:
    """Shape and options of a BERT- or DistilBERT-layout encoder (and its head).

    ``layout="bert"`` has token-type (segment) embeddings and an optional pooler;
    ``layout="distilbert"`` has neither. ``layout="mobilebert"`` is MobileBERT's thin
    block (:mod:`distilkit.model.mobilebert`): ``hidden_size`` is the width between
    blocks, and the fields after ``problem_type`` (named as in transformers'
    ``MobileBertConfig``) shape the inside of a block. ``head`` names the task head, if any.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    layout: str = "bert"
    type_vocab_size: int = 2
    with_pooler: bool = True
    sinusoidal_positions: bool = False
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    classifier_dropout: float | None = None
    initializer_range: float = 0.02
    pad_token_id: int = 0
    head: str | None = None
    num_labels: int = 2
    label_names: list[str] | None = None
    problem_type: str | None = None
    family: str = "bert"
    # MobileBERT only (transformers' names); the defaults are a plain BERT block.
    embedding_size: int | None = None  # word-vector width (None: hidden_size)
    trigram_input: bool = False  # [next, this, previous] word vectors into the embedding
    use_bottleneck: bool = False  # linear bottleneck in and out of every block
    intra_bottleneck_size: int = 128  # the width inside a block (true_hidden_size)
    use_bottleneck_attention: bool = False  # Q, K and V all read the input bottleneck
    key_query_shared_bottleneck: bool = False  # Q and K read their own shared bottleneck
    num_feedforward_networks: int = 1  # stacked FFNs per block
    normalization_type: str = "layer_norm"  # layer_norm | no_norm (element-wise affine)
    classifier_activation: bool = True  # pooler dense + tanh (False: the [CLS] vector)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first inconsistent field."""
        for name in (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.true_hidden_size % self.num_heads:
            width = "intra_bottleneck_size" if self.use_bottleneck else "hidden_size"
            raise ConfigError(
                f"{width} {self.true_hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        self._validate_mobilebert()
        if self.layout == "distilbert" and (self.type_vocab_size or self.with_pooler):
            raise ConfigError(
                "the distilbert layout has no token-type embeddings and no pooler: "
                "set type_vocab_size=0 and with_pooler=False"
            )
        if self.family not in FAMILIES:
            raise ConfigError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.family != "bert" and self.layout != "bert":
            raise ConfigError(
                f"a {self.family} model has the bert layout (its position ids are offset by "
                "padding_idx, which the distilbert layout cannot express)"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act must be one of {ACTIVATIONS}, got {self.hidden_act!r}")
        if self.head is not None and self.head not in HEADS:
            raise ConfigError(f"head must be one of {HEADS} or None, got {self.head!r}")
        if self.problem_type not in (
            None,
            "regression",
            "single_label_classification",
            "multi_label_classification",
        ):
            raise ConfigError(f"unknown problem_type {self.problem_type!r}")
        if self.label_names is not None and len(self.label_names) != self.num_labels:
            raise ConfigError(
                f"label_names has {len(self.label_names)} names but num_labels is {self.num_labels}"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id {self.pad_token_id} is outside the vocabulary")

    def _validate_mobilebert(self) -> None:
        defaults = ModelConfig.__dataclass_fields__
        fields = (
            "embedding_size",
            "trigram_input",
            "use_bottleneck",
            "intra_bottleneck_size",
            "use_bottleneck_attention",
            "key_query_shared_bottleneck",
            "num_feedforward_networks",
            "normalization_type",
            "classifier_activation",
        )
        if self.layout != "mobilebert":
            changed = [name for name in fields if getattr(self, name) != defaults[name].default]
            if changed:
                raise ConfigError(
                    f"{', '.join(changed)} only apply to the mobilebert layout "
                    f"(this config has layout {self.layout!r})"
                )
            return
        for name in ("embedding_size", "intra_bottleneck_size", "num_feedforward_networks"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.normalization_type not in NORMALIZATIONS:
            raise ConfigError(
                f"normalization_type must be one of {NORMALIZATIONS}, "
                f"got {self.normalization_type!r}"
            )
        if self.type_vocab_size <= 0:
            raise ConfigError(
                "the mobilebert layout has token-type embeddings: type_vocab_size > 0"
            )
        if (
            self.use_bottleneck
            and not (self.use_bottleneck_attention or self.key_query_shared_bottleneck)
            and self.intra_bottleneck_size != self.hidden_size
        ):
            raise ConfigError(
                "with use_bottleneck, attention reads the block input (hidden_size "
                f"{self.hidden_size}) through projections of width intra_bottleneck_size "
                f"{self.intra_bottleneck_size}: set key_query_shared_bottleneck or "
                "use_bottleneck_attention (transformers' MobileBERT cannot run this either)"
            )

    @property
    def head_dim(self) -> int:
        return self.true_hidden_size // self.num_heads

    @property
    def true_hidden_size(self) -> int:
        """The width inside a block: the bottleneck's, or ``hidden_size`` without one."""
        return self.intra_bottleneck_size if self.use_bottleneck else self.hidden_size

    @property
    def word_embedding_size(self) -> int:
        """Width of the word vectors (MobileBERT's ``embedding_size``; else ``hidden_size``)."""
        return self.embedding_size or self.hidden_size

    @property
    def position_offset(self) -> int:
        """First position id: padding_idx + 1 in RoBERTa and XLM-R, else 0."""
        return self.pad_token_id + 1 if self.family != "bert" else 0

    @property
    def max_tokens(self) -> int:
        """The most tokens one sequence may have (positions after the offset)."""
        return self.max_position_embeddings - self.position_offset

    # ------------------------------------------------------------ Hugging Face
    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> ModelConfig:
        """Read a Hugging Face ``config.json`` dict of ``model_type`` bert or distilbert."""
        model_type = hf.get("model_type")
        if model_type in FAMILIES:
            position_type = hf.get("position_embedding_type", "absolute")
            if position_type != "absolute":
                raise ConfigError(
                    f"position_embedding_type {position_type!r} is not supported "
                    "(only absolute positions)"
                )
            config = cls(
                vocab_size=hf["vocab_size"],
                hidden_size=hf["hidden_size"],
                num_layers=hf["num_hidden_layers"],
                num_heads=hf["num_attention_heads"],
                intermediate_size=hf["intermediate_size"],
                max_position_embeddings=hf.get("max_position_embeddings", 512),
                layout="bert",
                type_vocab_size=hf.get("type_vocab_size", 2),
                hidden_act=_activation(hf.get("hidden_act", "gelu")),
                layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
                attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
                classifier_dropout=hf.get("classifier_dropout"),
                initializer_range=hf.get("initializer_range", 0.02),
                pad_token_id=hf.get("pad_token_id") or 0,
                family=model_type,
            )
        elif model_type == "distilbert":
            config = cls(
                vocab_size=hf["vocab_size"],
                hidden_size=hf.get("dim", 768),
                num_layers=hf.get("n_layers", 6),
                num_heads=hf.get("n_heads", 12),
                intermediate_size=hf.get("hidden_dim", 3072),
                max_position_embeddings=hf.get("max_position_embeddings", 512),
                layout="distilbert",
                type_vocab_size=0,
                with_pooler=False,
                sinusoidal_positions=bool(hf.get("sinusoidal_pos_embds", False)),
                hidden_act=_activation(hf.get("activation", "gelu")),
                hidden_dropout=hf.get("dropout", 0.1),
                attention_dropout=hf.get("attention_dropout", 0.1),
                classifier_dropout=hf.get("seq_classif_dropout"),
                initializer_range=hf.get("initializer_range", 0.02),
                pad_token_id=hf.get("pad_token_id") or 0,
            )
        elif model_type == "mobilebert":
            config = cls(
                vocab_size=hf["vocab_size"],
                hidden_size=hf.get("hidden_size", 512),
                num_layers=hf.get("num_hidden_layers", 24),
                num_heads=hf.get("num_attention_heads", 4),
                intermediate_size=hf.get("intermediate_size", 512),
                max_position_embeddings=hf.get("max_position_embeddings", 512),
                layout="mobilebert",
                type_vocab_size=hf.get("type_vocab_size", 2),
                hidden_act=_activation(hf.get("hidden_act", "relu")),
                layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                hidden_dropout=hf.get("hidden_dropout_prob", 0.0),
                attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
                classifier_dropout=hf.get("classifier_dropout"),
                initializer_range=hf.get("initializer_range", 0.02),
                pad_token_id=hf.get("pad_token_id") or 0,
                embedding_size=hf.get("embedding_size", 128),
                trigram_input=hf.get("trigram_input", True),
                use_bottleneck=hf.get("use_bottleneck", True),
                intra_bottleneck_size=hf.get("intra_bottleneck_size", 128),
                use_bottleneck_attention=hf.get("use_bottleneck_attention", False),
                key_query_shared_bottleneck=hf.get("key_query_shared_bottleneck", True),
                num_feedforward_networks=hf.get("num_feedforward_networks", 4),
                normalization_type=hf.get("normalization_type", "no_norm"),
                classifier_activation=hf.get("classifier_activation", True),
            )
        else:
            raise ConfigError(
                f"unsupported model_type {model_type!r}: distilkit reads 'bert', 'distilbert', "
                "'mobilebert', 'roberta' and 'xlm-roberta' checkpoints"
            )
        id2label = hf.get("id2label")
        if id2label:
            names = [id2label[key] for key in sorted(id2label, key=lambda k: int(k))]
            config.num_labels = len(names)
            if not all(name == f"LABEL_{i}" for i, name in enumerate(names)):
                config.label_names = names
        elif "num_labels" in hf:
            config.num_labels = int(hf["num_labels"])
        config.problem_type = hf.get("problem_type")
        config.validate()
        return config

    def to_hf(self, architecture: str) -> dict[str, Any]:
        """The ``config.json`` dict that `transformers` reads for ``architecture``."""
        labels = self.label_names or [f"LABEL_{i}" for i in range(self.num_labels)]
        common: dict[str, Any] = {
            "architectures": [architecture],
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "initializer_range": self.initializer_range,
            "pad_token_id": self.pad_token_id,
            "id2label": {str(i): name for i, name in enumerate(labels)},
            "label2id": {name: i for i, name in enumerate(labels)},
        }
        if self.problem_type:
            common["problem_type"] = self.problem_type
        if self.family != "bert":
            common.update(bos_token_id=0, eos_token_id=2)
        if self.layout == "bert":
            return {
                **common,
                "model_type": self.family,
                "hidden_size": self.hidden_size,
                "num_hidden_layers": self.num_layers,
                "num_attention_heads": self.num_heads,
                "intermediate_size": self.intermediate_size,
                "hidden_act": self.hidden_act,
                "hidden_dropout_prob": self.hidden_dropout,
                "attention_probs_dropout_prob": self.attention_dropout,
                "classifier_dropout": self.classifier_dropout,
                "type_vocab_size": self.type_vocab_size,
                "layer_norm_eps": self.layer_norm_eps,
                "position_embedding_type": "absolute",
            }
        if self.layout == "mobilebert":
            return {
                **common,
                "model_type": "mobilebert",
                "hidden_size": self.hidden_size,
                "num_hidden_layers": self.num_layers,
                "num_attention_heads": self.num_heads,
                "intermediate_size": self.intermediate_size,
                "hidden_act": self.hidden_act,
                "hidden_dropout_prob": self.hidden_dropout,
                "attention_probs_dropout_prob": self.attention_dropout,
                "classifier_dropout": self.classifier_dropout,
                "type_vocab_size": self.type_vocab_size,
                "layer_norm_eps": self.layer_norm_eps,
                "embedding_size": self.word_embedding_size,
                "trigram_input": self.trigram_input,
                "use_bottleneck": self.use_bottleneck,
                "intra_bottleneck_size": self.intra_bottleneck_size,
                "true_hidden_size": self.true_hidden_size,
                "use_bottleneck_attention": self.use_bottleneck_attention,
                "key_query_shared_bottleneck": self.key_query_shared_bottleneck,
                "num_feedforward_networks": self.num_feedforward_networks,
                "normalization_type": self.normalization_type,
                "classifier_activation": self.classifier_activation,
                "tie_word_embeddings": True,
            }
        if self.layer_norm_eps != 1e-12:
            raise ConfigError("the distilbert layout fixes layer_norm_eps at 1e-12")
        return {
            **common,
            "model_type": "distilbert",
            "dim": self.hidden_size,
            "n_layers": self.num_layers,
            "n_heads": self.num_heads,
            "hidden_dim": self.intermediate_size,
            "activation": self.hidden_act,
            "dropout": self.hidden_dropout,
            "attention_dropout": self.attention_dropout,
            "seq_classif_dropout": 0.2
            if self.classifier_dropout is None
            else self.classifier_dropout,
            "qa_dropout": self.hidden_dropout,
            "sinusoidal_pos_embds": self.sinusoidal_positions,
            "tie_weights_": True,
        }


def _activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unsupported activation {name!r}: expected one of {ACTIVATIONS}")
    return name
