"""Hugging Face checkpoint folders in and out.

This module is the one place that knows the parameter names of the published formats
(bert, distilbert, mobilebert). Each map lists our name -> the checkpoint's name, with
``{}`` standing for the layer index (torchtune style); ``{p}`` is the backbone prefix
(``bert.`` / ``distilbert.`` / ``mobilebert.`` in task models, empty in bare encoders);
``{f}`` is the index of one of MobileBERT's stacked FFNs.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from distilkit.model.card import CardFacts, keep_user_readme, transformer_facts, write_card
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel
from distilkit.model.st_folder import (
    SentenceFolderError,
    SentenceModules,
    read_sentence_modules,
    write_sentence_modules,
)
from distilkit.settings import ConfigError, atomic_folder, load_json


class CheckpointError(ValueError):
    """A checkpoint folder or file is missing, corrupt or does not fit the model."""


BERT_BACKBONE = {
    "embeddings.word_embeddings.weight": "{p}embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "{p}embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "{p}embeddings.token_type_embeddings.weight",
    "embeddings.layer_norm.weight": "{p}embeddings.LayerNorm.weight",
    "embeddings.layer_norm.bias": "{p}embeddings.LayerNorm.bias",
    "layers.{}.attention.query.weight": "{p}encoder.layer.{}.attention.self.query.weight",
    "layers.{}.attention.query.bias": "{p}encoder.layer.{}.attention.self.query.bias",
    "layers.{}.attention.key.weight": "{p}encoder.layer.{}.attention.self.key.weight",
    "layers.{}.attention.key.bias": "{p}encoder.layer.{}.attention.self.key.bias",
    "layers.{}.attention.value.weight": "{p}encoder.layer.{}.attention.self.value.weight",
    "layers.{}.attention.value.bias": "{p}encoder.layer.{}.attention.self.value.bias",
    "layers.{}.attention.output.weight": "{p}encoder.layer.{}.attention.output.dense.weight",
    "layers.{}.attention.output.bias": "{p}encoder.layer.{}.attention.output.dense.bias",
    "layers.{}.attention_norm.weight": "{p}encoder.layer.{}.attention.output.LayerNorm.weight",
    "layers.{}.attention_norm.bias": "{p}encoder.layer.{}.attention.output.LayerNorm.bias",
    "layers.{}.ffn.intermediate.weight": "{p}encoder.layer.{}.intermediate.dense.weight",
    "layers.{}.ffn.intermediate.bias": "{p}encoder.layer.{}.intermediate.dense.bias",
    "layers.{}.ffn.output.weight": "{p}encoder.layer.{}.output.dense.weight",
    "layers.{}.ffn.output.bias": "{p}encoder.layer.{}.output.dense.bias",
    "layers.{}.ffn_norm.weight": "{p}encoder.layer.{}.output.LayerNorm.weight",
    "layers.{}.ffn_norm.bias": "{p}encoder.layer.{}.output.LayerNorm.bias",
    "pooler.dense.weight": "{p}pooler.dense.weight",
    "pooler.dense.bias": "{p}pooler.dense.bias",
}
BERT_HEADS = {
    "masked_lm": {
        "head.transform.weight": "cls.predictions.transform.dense.weight",
        "head.transform.bias": "cls.predictions.transform.dense.bias",
        "head.layer_norm.weight": "cls.predictions.transform.LayerNorm.weight",
        "head.layer_norm.bias": "cls.predictions.transform.LayerNorm.bias",
        "head.bias": "cls.predictions.bias",
    },
    "sequence_classification": {
        "head.classifier.weight": "classifier.weight",
        "head.classifier.bias": "classifier.bias",
    },
    "token_classification": {
        "head.classifier.weight": "classifier.weight",
        "head.classifier.bias": "classifier.bias",
    },
    "question_answering": {
        "head.qa_outputs.weight": "qa_outputs.weight",
        "head.qa_outputs.bias": "qa_outputs.bias",
    },
}
DISTILBERT_BACKBONE = {
    "embeddings.word_embeddings.weight": "{p}embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "{p}embeddings.position_embeddings.weight",
    "embeddings.layer_norm.weight": "{p}embeddings.LayerNorm.weight",
    "embeddings.layer_norm.bias": "{p}embeddings.LayerNorm.bias",
    "layers.{}.attention.query.weight": "{p}transformer.layer.{}.attention.q_lin.weight",
    "layers.{}.attention.query.bias": "{p}transformer.layer.{}.attention.q_lin.bias",
    "layers.{}.attention.key.weight": "{p}transformer.layer.{}.attention.k_lin.weight",
    "layers.{}.attention.key.bias": "{p}transformer.layer.{}.attention.k_lin.bias",
    "layers.{}.attention.value.weight": "{p}transformer.layer.{}.attention.v_lin.weight",
    "layers.{}.attention.value.bias": "{p}transformer.layer.{}.attention.v_lin.bias",
    "layers.{}.attention.output.weight": "{p}transformer.layer.{}.attention.out_lin.weight",
    "layers.{}.attention.output.bias": "{p}transformer.layer.{}.attention.out_lin.bias",
    "layers.{}.attention_norm.weight": "{p}transformer.layer.{}.sa_layer_norm.weight",
    "layers.{}.attention_norm.bias": "{p}transformer.layer.{}.sa_layer_norm.bias",
    "layers.{}.ffn.intermediate.weight": "{p}transformer.layer.{}.ffn.lin1.weight",
    "layers.{}.ffn.intermediate.bias": "{p}transformer.layer.{}.ffn.lin1.bias",
    "layers.{}.ffn.output.weight": "{p}transformer.layer.{}.ffn.lin2.weight",
    "layers.{}.ffn.output.bias": "{p}transformer.layer.{}.ffn.lin2.bias",
    "layers.{}.ffn_norm.weight": "{p}transformer.layer.{}.output_layer_norm.weight",
    "layers.{}.ffn_norm.bias": "{p}transformer.layer.{}.output_layer_norm.bias",
}
DISTILBERT_HEADS = {
    "masked_lm": {
        "head.transform.weight": "vocab_transform.weight",
        "head.transform.bias": "vocab_transform.bias",
        "head.layer_norm.weight": "vocab_layer_norm.weight",
        "head.layer_norm.bias": "vocab_layer_norm.bias",
        "head.bias": "vocab_projector.bias",
    },
    "sequence_classification": {
        "head.pre_classifier.weight": "pre_classifier.weight",
        "head.pre_classifier.bias": "pre_classifier.bias",
        "head.classifier.weight": "classifier.weight",
        "head.classifier.bias": "classifier.bias",
    },
    "token_classification": BERT_HEADS["token_classification"],
    "question_answering": BERT_HEADS["question_answering"],
}
_LAYER = "{p}encoder.layer.{}."  # a MobileBERT block in transformers' names
MOBILEBERT_BACKBONE = {
    "embeddings.word_embeddings.weight": "{p}embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "{p}embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "{p}embeddings.token_type_embeddings.weight",
    "embeddings.embedding_transformation.weight": "{p}embeddings.embedding_transformation.weight",
    "embeddings.embedding_transformation.bias": "{p}embeddings.embedding_transformation.bias",
    "embeddings.layer_norm.weight": "{p}embeddings.LayerNorm.weight",
    "embeddings.layer_norm.bias": "{p}embeddings.LayerNorm.bias",
    "layers.{}.input_bottleneck.dense.weight": _LAYER + "bottleneck.input.dense.weight",
    "layers.{}.input_bottleneck.dense.bias": _LAYER + "bottleneck.input.dense.bias",
    "layers.{}.input_bottleneck.norm.weight": _LAYER + "bottleneck.input.LayerNorm.weight",
    "layers.{}.input_bottleneck.norm.bias": _LAYER + "bottleneck.input.LayerNorm.bias",
    "layers.{}.query_key_bottleneck.dense.weight": _LAYER + "bottleneck.attention.dense.weight",
    "layers.{}.query_key_bottleneck.dense.bias": _LAYER + "bottleneck.attention.dense.bias",
    "layers.{}.query_key_bottleneck.norm.weight": _LAYER + "bottleneck.attention.LayerNorm.weight",
    "layers.{}.query_key_bottleneck.norm.bias": _LAYER + "bottleneck.attention.LayerNorm.bias",
    "layers.{}.attention.query.weight": _LAYER + "attention.self.query.weight",
    "layers.{}.attention.query.bias": _LAYER + "attention.self.query.bias",
    "layers.{}.attention.key.weight": _LAYER + "attention.self.key.weight",
    "layers.{}.attention.key.bias": _LAYER + "attention.self.key.bias",
    "layers.{}.attention.value.weight": _LAYER + "attention.self.value.weight",
    "layers.{}.attention.value.bias": _LAYER + "attention.self.value.bias",
    "layers.{}.attention.output.weight": _LAYER + "attention.output.dense.weight",
    "layers.{}.attention.output.bias": _LAYER + "attention.output.dense.bias",
    "layers.{}.attention_norm.weight": _LAYER + "attention.output.LayerNorm.weight",
    "layers.{}.attention_norm.bias": _LAYER + "attention.output.LayerNorm.bias",
    "layers.{}.ffn_stack.{f}.intermediate.weight": _LAYER + "ffn.{f}.intermediate.dense.weight",
    "layers.{}.ffn_stack.{f}.intermediate.bias": _LAYER + "ffn.{f}.intermediate.dense.bias",
    "layers.{}.ffn_stack.{f}.output.weight": _LAYER + "ffn.{f}.output.dense.weight",
    "layers.{}.ffn_stack.{f}.output.bias": _LAYER + "ffn.{f}.output.dense.bias",
    "layers.{}.ffn_stack.{f}.norm.weight": _LAYER + "ffn.{f}.output.LayerNorm.weight",
    "layers.{}.ffn_stack.{f}.norm.bias": _LAYER + "ffn.{f}.output.LayerNorm.bias",
    "layers.{}.ffn.intermediate.weight": _LAYER + "intermediate.dense.weight",
    "layers.{}.ffn.intermediate.bias": _LAYER + "intermediate.dense.bias",
    "layers.{}.ffn.output.weight": _LAYER + "output.dense.weight",
    "layers.{}.ffn.output.bias": _LAYER + "output.dense.bias",
    "layers.{}.ffn.norm.weight": _LAYER + "output.LayerNorm.weight",
    "layers.{}.ffn.norm.bias": _LAYER + "output.LayerNorm.bias",
    "layers.{}.output_bottleneck.weight": _LAYER + "output.bottleneck.dense.weight",
    "layers.{}.output_bottleneck.bias": _LAYER + "output.bottleneck.dense.bias",
    "layers.{}.output_bottleneck_norm.weight": _LAYER + "output.bottleneck.LayerNorm.weight",
    "layers.{}.output_bottleneck_norm.bias": _LAYER + "output.bottleneck.LayerNorm.bias",
    "pooler.dense.weight": "{p}pooler.dense.weight",
    "pooler.dense.bias": "{p}pooler.dense.bias",
}
MOBILEBERT_HEADS = {
    **BERT_HEADS,
    "masked_lm": {
        **BERT_HEADS["masked_lm"],
        "head.extra_decoder": "cls.predictions.dense.weight",
    },
}
BACKBONES = {
    "bert": BERT_BACKBONE,
    "distilbert": DISTILBERT_BACKBONE,
    "mobilebert": MOBILEBERT_BACKBONE,
}
HEAD_MAPS = {"bert": BERT_HEADS, "distilbert": DISTILBERT_HEADS, "mobilebert": MOBILEBERT_HEADS}
ARCHITECTURES = {
    ("bert", None): "BertModel",
    ("bert", "masked_lm"): "BertForMaskedLM",
    ("bert", "sequence_classification"): "BertForSequenceClassification",
    ("bert", "token_classification"): "BertForTokenClassification",
    ("bert", "question_answering"): "BertForQuestionAnswering",
    ("distilbert", None): "DistilBertModel",
    ("distilbert", "masked_lm"): "DistilBertForMaskedLM",
    ("distilbert", "sequence_classification"): "DistilBertForSequenceClassification",
    ("distilbert", "token_classification"): "DistilBertForTokenClassification",
    ("distilbert", "question_answering"): "DistilBertForQuestionAnswering",
    ("mobilebert", None): "MobileBertModel",
    ("mobilebert", "masked_lm"): "MobileBertForMaskedLM",
    ("mobilebert", "sequence_classification"): "MobileBertForSequenceClassification",
    ("mobilebert", "token_classification"): "MobileBertForTokenClassification",
    ("mobilebert", "question_answering"): "MobileBertForQuestionAnswering",
}
# RoBERTa and XLM-R: BERT's backbone names under ``roberta.``; their own MLM and
# sequence-classification heads, BERT's other heads.
ROBERTA_HEADS = {
    **BERT_HEADS,
    "masked_lm": {
        "head.transform.weight": "lm_head.dense.weight",
        "head.transform.bias": "lm_head.dense.bias",
        "head.layer_norm.weight": "lm_head.layer_norm.weight",
        "head.layer_norm.bias": "lm_head.layer_norm.bias",
        "head.bias": "lm_head.bias",
    },
    "sequence_classification": {
        "head.pre_classifier.weight": "classifier.dense.weight",
        "head.pre_classifier.bias": "classifier.dense.bias",
        "head.classifier.weight": "classifier.out_proj.weight",
        "head.classifier.bias": "classifier.out_proj.bias",
    },
}
FAMILY_CLASS_PREFIX = {"bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta"}


def architecture_name(config: ModelConfig) -> str:
    """The `transformers` class of ``config``'s model (``XLMRobertaForMaskedLM``)."""
    name = ARCHITECTURES[(config.layout, config.head)]
    if config.family == "bert":
        return name
    return FAMILY_CLASS_PREFIX[config.family] + name.removeprefix("Bert")


def heads_of(config: ModelConfig) -> dict[str, dict[str, str]]:
    """The head name maps of ``config``'s checkpoint family."""
    if config.layout != "bert":
        return HEAD_MAPS[config.layout]
    return BERT_HEADS if config.family == "bert" else ROBERTA_HEADS


# Checkpoint entries that carry no information we need (buffers, tied copies, the
# next-sentence head of BertForPreTraining).
IGNORED = re.compile(
    r"(^|\.)position_ids$|^cls\.predictions\.decoder\.(weight|bias)$|^vocab_projector\.weight$"
    r"|^cls\.seq_relationship\.|^(bert|mobilebert)\.embeddings\.position_ids$"
    r"|^lm_head\.decoder\.(weight|bias)$"
)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def name_map(config: ModelConfig, prefix: str) -> dict[str, str]:
    """Our parameter name -> checkpoint name, for every parameter of ``config``'s model."""
    mapping: dict[str, str] = {}
    for ours, theirs in BACKBONES[config.layout].items():
        with_pooler = config.with_pooler and config.classifier_activation
        if ours.startswith("pooler.") and not with_pooler:
            continue
        if ours.startswith("embeddings.token_type") and not config.type_vocab_size:
            continue
        if not config.use_bottleneck and "bottleneck" in ours:
            continue
        if ".query_key_bottleneck." in ours and not config.key_query_shared_bottleneck:
            continue
        stacked = range(config.num_feedforward_networks - 1) if "{f}" in ours else [None]
        layers = range(config.num_layers) if "{}" in ours else [None]
        for index in layers:
            for ffn in stacked:
                mapping["backbone." + ours.format(index, f=ffn)] = theirs.format(
                    index, p=prefix, f=ffn
                )
    if config.head is not None:
        mapping.update(heads_of(config)[config.head])
    return mapping


def _prefix_for(config: ModelConfig, keys: set[str]) -> str:
    """The backbone prefix a checkpoint uses: ``bert.``/``distilbert.``/``mobilebert.``/
    ``roberta.`` or none."""
    prefix = _task_prefix(config)
    return prefix if any(k.startswith(prefix) for k in keys) else ""


def _task_prefix(config: ModelConfig) -> str:
    """The backbone prefix of a task model of ``config``'s family."""
    if config.layout != "bert":
        return f"{config.layout}."
    return "bert." if config.family == "bert" else "roberta."


# ----------------------------------------------------------------------------- reading
def _modern_name(key: str) -> str:
    """Old BERT checkpoints (bert-base-uncased among them) name LayerNorm parameters
    ``gamma``/``beta``; today's name is ``weight``/``bias``."""
    if key.endswith("LayerNorm.gamma"):
        return key.removesuffix("gamma") + "weight"
    if key.endswith("LayerNorm.beta"):
        return key.removesuffix("beta") + "bias"
    return key


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors`` or (read safely) ``pytorch_model.bin``."""
    path = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if path is None:
        raise CheckpointError(
            f"no weights in {folder}: expected model.safetensors or pytorch_model.bin "
            "(sharded checkpoints are not supported yet)"
        )
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} holds Python objects besides tensors, which torch.load(weights_only=True) "
            "refuses to run: convert it to model.safetensors from a trusted environment"
        ) from None
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as error:
        raise CheckpointError(
            f"cannot read {path}: the file is corrupt or truncated ({error})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return state


def infer_head(config_json: dict, keys: set[str]) -> str | None:
    """The task head a checkpoint carries, from ``architectures`` or its weight names."""
    for architecture in config_json.get("architectures") or []:
        for (_, head), name in ARCHITECTURES.items():
            suffix = name.removeprefix("Bert").removeprefix("DistilBert")
            if architecture in (name, "Roberta" + suffix, "XLMRoberta" + suffix):
                return head
    if any(k.startswith(("cls.predictions.", "vocab_transform.", "lm_head.")) for k in keys):
        return "masked_lm"
    if any(k.startswith("qa_outputs.") for k in keys):
        return "question_answering"
    return None


def load_model(
    folder: str | Path,
    head: str | bool | None = True,
    num_labels: int | None = None,
    label_names: list[str] | None = None,
) -> TransformerModel:
    """Build a :class:`TransformerModel` from a Hugging Face folder.

    ``head=True`` keeps the checkpoint's own head; a head name asks for that head (its
    weights are taken from the checkpoint if present, else freshly initialised — the
    returned model's ``new_parameters`` lists them); ``head=None`` drops any head.
    Missing, unexpected or mis-shaped tensors raise :class:`CheckpointError` naming them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    try:
        config_json = load_json(folder / "config.json")
        weights = {_modern_name(key): tensor for key, tensor in read_weights(folder).items()}
        keys = set(weights)
        config = ModelConfig.from_hf(config_json)
    except ConfigError as error:
        where = str(folder / "config.json")
        message = str(error)  # name the file once, whether or not the message already does
        raise CheckpointError(message if where in message else f"{where}: {message}") from None
    except KeyError as error:
        raise CheckpointError(f"{folder / 'config.json'} lacks the field {error}") from None
    stored_head = infer_head(config_json, keys)
    config.head = stored_head if head is True else (head or None)
    if num_labels is not None:
        config.num_labels = num_labels
    if label_names is not None:
        config.label_names, config.num_labels = list(label_names), len(label_names)
    if config.layout == "mobilebert" and not config.classifier_activation:
        config.with_pooler = config.head != "masked_lm"  # the [CLS] vector: no weights
    elif config.layout in ("bert", "mobilebert"):  # bare MLM checkpoints often have no pooler
        prefix = _prefix_for(config, keys)
        config.with_pooler = f"{prefix}pooler.dense.weight" in keys
        if config.head == "sequence_classification" and config.family == "bert":
            config.with_pooler = True  # BertForSequenceClassification needs it; init fresh
    config.validate()
    prefix = _prefix_for(config, keys)
    mapping = name_map(config, prefix)
    word_key = mapping["backbone.embeddings.word_embeddings.weight"]
    if word_key in keys and weights[word_key].shape[0] != config.vocab_size:
        raise CheckpointError(
            f"the embedding matrix has {weights[word_key].shape[0]} rows but config.json says "
            f"vocab_size {config.vocab_size}: is config.json the one for these weights?"
        )
    model = TransformerModel(config)
    state = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    for ours, theirs in mapping.items():
        if theirs not in keys:
            missing.append(theirs)
            continue
        tensor = weights[theirs]
        if tuple(tensor.shape) != tuple(state[ours].shape):
            raise CheckpointError(
                f"{folder}: tensor {theirs} has shape {tuple(tensor.shape)} but config.json "
                f"implies {tuple(state[ours].shape)}"
            )
        loaded[ours] = tensor
    heads = heads_of(config)
    # A head that differs from the stored one starts fresh, and so does a pooler added
    # for a BERT classifier; everything else must be in the file.
    may_be_fresh: set[str] = set()
    if config.head != stored_head:
        may_be_fresh |= set(heads.get(config.head, {}).values())
    if config.head == "sequence_classification" and config.family == "bert":
        may_be_fresh |= {f"{prefix}pooler.dense.weight", f"{prefix}pooler.dense.bias"}
    really_missing = sorted(set(missing) - may_be_fresh)
    if really_missing:
        raise CheckpointError(
            f"{folder} lacks {len(really_missing)} tensor(s) the model needs, e.g. "
            f"{', '.join(really_missing[:3])}"
        )
    droppable = set(heads.get(stored_head, {}).values()) if config.head != stored_head else set()
    unexpected = sorted(
        k for k in keys - set(mapping.values()) - droppable if not IGNORED.search(k)
    )
    if unexpected:
        raise CheckpointError(
            f"{folder} has {len(unexpected)} tensor(s) this {config.layout} model does not use, "
            f"e.g. {', '.join(unexpected[:3])}: is config.json the one for these weights?"
        )
    model.load_state_dict(loaded, strict=False)
    model.new_parameters = sorted(ours for ours, theirs in mapping.items() if theirs in missing)
    try:  # the sentence-transformers recipe travels with the model to every save
        model.sentence_modules = read_sentence_modules(folder)
    except SentenceFolderError as error:
        raise CheckpointError(str(error)) from None
    model.eval()
    return model


# ----------------------------------------------------------------------------- writing
def hf_state_dict(model: TransformerModel) -> dict[str, torch.Tensor]:
    """The model's tensors under Hugging Face names (contiguous copies, tied ones included)."""
    config = model.config
    prefix = _task_prefix(config) if config.head is not None else ""
    mapping = name_map(config, prefix)
    state = model.state_dict()
    out = {theirs: state[ours].detach().contiguous().clone() for ours, theirs in mapping.items()}
    if config.head == "masked_lm":  # write the tied decoder too, for readers that expect it
        word = state["backbone.embeddings.word_embeddings.weight"]
        if config.family != "bert":
            out["lm_head.decoder.weight"] = word.detach().clone()
            out["lm_head.decoder.bias"] = out["lm_head.bias"].clone()
        elif config.layout in ("bert", "mobilebert"):
            out["cls.predictions.decoder.weight"] = word.detach().clone()
            out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"].clone()
        else:
            out["vocab_projector.weight"] = word.detach().clone()
    return out


def check_save_target(folder: Path, source: Path | None = None) -> None:
    """A save writes its files into ``folder``: refuse a file there, a folder that holds
    something other than a model, and the folder of the model being read from."""
    if source is not None and folder.exists() and folder.resolve() == Path(source).resolve():
        raise CheckpointError(
            f"{folder} is the model being read from: saving there would overwrite it, so "
            "choose another output folder"
        )
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(
            f"{folder} is a file: a model is saved as a folder, so choose another path "
            "(saving would replace the file)"
        )
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{folder} is a folder that holds no model (no config.json): saving would replace "
            "it and everything in it, so choose another path or empty it first"
        )


def save_model(
    model: TransformerModel,
    folder: str | Path,
    tokenizer=None,
    sentence: SentenceModules | None = None,
    source: str | Path | None = None,
    card: CardFacts | None = None,
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (+ tokenizer files) atomically.

    The folder is assembled under a temporary name and renamed into place, so an
    interrupted save never leaves a half-written checkpoint behind. The
    sentence-transformers files (``modules.json`` and the rest) are written too, from
    ``sentence`` or else the recipe the model was loaded with (``model.sentence_modules``),
    so ``SentenceTransformer(folder)`` embeds as distilkit does. Saving over an earlier
    model replaces only the files a save writes: the user's own (a README.md, results,
    notes) are kept. ``source``: the folder the model was made from, which is never
    overwritten. Unless the user's own README.md is there, a model card
    (:mod:`distilkit.model.card`) is written from ``card`` (what the caller knows) and
    the model's shape, head and recipe.
    """
    folder = Path(folder)
    check_save_target(folder, None if source is None else Path(source))
    config = model.config
    architecture = architecture_name(config)
    with atomic_folder(folder, keep_others=True) as temp:
        hf_config = config.to_hf(architecture)
        hf_config["torch_dtype"] = str(next(model.parameters()).dtype).replace("torch.", "")
        (temp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", "utf-8")
        tensors = hf_state_dict(model)
        save_file(tensors, str(temp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(temp)
        recipe = sentence or getattr(model, "sentence_modules", None) or SentenceModules()
        limit = tokenizer.max_length if tokenizer is not None else config.max_tokens
        write_sentence_modules(temp, recipe, config.hidden_size, limit)
        keep_user_readme(folder, temp)  # else this model's card replaces the old one
        facts = transformer_facts(model, recipe, limit, architecture, card)
        write_card(temp, facts, shown_as=folder)
    return folder


def load_student_weights(student: torch.nn.Module, folder: Path) -> None:
    """Copy the weights of a saved checkpoint folder into ``student`` in place."""
    saved = load_model(folder)
    student.load_state_dict(saved.state_dict())
