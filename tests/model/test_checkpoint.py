"""Hugging Face folders in and out: parity with `transformers`, round trips, clear errors."""

from __future__ import annotations

import json
import pathlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import (
    HF_ARCHITECTURES,
    SEQUENCE_LABELS,
    TINY_TEXTS,
    TOKEN_LABELS,
    hf_tiny_config,
    randomize_,
)
from safetensors.torch import load_file, save_file

from distilkit.model.checkpoint import CheckpointError, hf_state_dict, load_model, save_model
from distilkit.model.modeling import TransformerModel
from distilkit.model.tokenizer import Batch, Tokenizer

transformers = pytest.importorskip("transformers")

HEAD_OF = {
    "Model": None,
    "ForMaskedLM": "masked_lm",
    "ForSequenceClassification": "sequence_classification",
    "ForTokenClassification": "token_classification",
    "ForQuestionAnswering": "question_answering",
}
AUTO_CLASS_OF = {
    None: "AutoModel",
    "masked_lm": "AutoModelForMaskedLM",
    "sequence_classification": "AutoModelForSequenceClassification",
    "token_classification": "AutoModelForTokenClassification",
    "question_answering": "AutoModelForQuestionAnswering",
}


def head_of(architecture: str) -> str | None:
    return HEAD_OF[architecture.removeprefix("DistilBert").removeprefix("Bert")]


def hf_forward(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """The `transformers` model's main output as one tensor, shaped like distilkit's."""
    inputs = batch.model_inputs()
    if model.config.model_type == "distilbert":
        inputs.pop("token_type_ids")
    with torch.no_grad():
        output = model(**inputs)
    if hasattr(output, "start_logits"):
        return torch.stack([output.start_logits, output.end_logits], dim=-1)
    if hasattr(output, "logits"):
        return output.logits
    return output.last_hidden_state


def our_forward(model: TransformerModel, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        output = model(**batch.model_inputs())
    return output.last_hidden_state if output.logits is None else output.logits


def max_difference(ours: torch.Tensor, theirs: torch.Tensor, batch: Batch) -> float:
    """Largest |difference|, over real tokens only for per-token outputs.

    distilkit's fast path writes zeros at padding positions while `transformers`
    computes (meaningless) vectors there, so padding positions are not compared.
    """
    assert ours.shape == theirs.shape
    if ours.dim() == 3:
        real = batch.attention_mask.bool()
        ours, theirs = ours[real], theirs[real]
    return float((ours - theirs).abs().max())


@pytest.fixture(scope="module")
def batch(tiny_tokenizer: Tokenizer) -> Batch:
    padded = tiny_tokenizer(TINY_TEXTS)
    assert not bool(padded.attention_mask.all()), "the batch must contain padding"
    return padded


# ----------------------------------------------------------------------------- loading
@pytest.mark.parametrize("architecture", HF_ARCHITECTURES)
def test_tiny_transformers_checkpoint_loads_with_matching_outputs(
    architecture: str, hf_checkpoint: Callable[..., Path], batch: Batch
) -> None:
    folder = hf_checkpoint(architecture)
    reference = getattr(transformers, architecture).from_pretrained(folder).eval()
    model = load_model(folder)
    assert model.config.head == head_of(architecture)
    assert model.config.layout == ("distilbert" if "DistilBert" in architecture else "bert")
    assert model.new_parameters == []
    assert not model.training
    assert max_difference(our_forward(model, batch), hf_forward(reference, batch), batch) <= 1e-5


@pytest.mark.parametrize("layout", ["Bert", "DistilBert"])
def test_masked_lm_logits_match_transformers_on_masked_positions(
    layout: str, hf_checkpoint: Callable[..., Path], tiny_tokenizer: Tokenizer
) -> None:
    folder = hf_checkpoint(f"{layout}ForMaskedLM")
    reference = getattr(transformers, f"{layout}ForMaskedLM").from_pretrained(folder).eval()
    model = load_model(folder)
    batch = tiny_tokenizer(["the [MASK] sat on the mat.", "hello [MASK] [MASK]"])
    theirs = hf_forward(reference, batch)
    masked = batch.input_ids == tiny_tokenizer.mask_id
    assert int(masked.sum()) == 3
    with torch.no_grad():
        hidden = model(**batch.model_inputs()).last_hidden_state
        selected = model.mlm_logits(hidden[masked])  # the head on masked positions only
    assert selected.shape == (3, 99)
    assert torch.allclose(selected, theirs[masked], atol=1e-5)


def test_label_names_are_read_from_id2label(hf_checkpoint: Callable[..., Path]) -> None:
    for layout in ("Bert", "DistilBert"):
        sequence = load_model(hf_checkpoint(f"{layout}ForSequenceClassification"))
        assert sequence.config.label_names == SEQUENCE_LABELS
        assert sequence.config.num_labels == 3
        tokens = load_model(hf_checkpoint(f"{layout}ForTokenClassification"))
        assert tokens.config.label_names == TOKEN_LABELS
    # transformers' default names LABEL_0.. are not kept as names, only as a count
    assert load_model(hf_checkpoint("BertForQuestionAnswering")).config.label_names is None


def test_sinusoidal_distilbert_checkpoint(hf_checkpoint: Callable[..., Path], batch: Batch) -> None:
    folder = hf_checkpoint("DistilBertForMaskedLM", sinusoidal_pos_embds=True)
    reference = transformers.DistilBertForMaskedLM.from_pretrained(folder).eval()
    model = load_model(folder)
    assert model.config.sinusoidal_positions
    assert not model.backbone.embeddings.position_embeddings.weight.requires_grad
    assert max_difference(our_forward(model, batch), hf_forward(reference, batch), batch) <= 1e-5


def test_attention_probabilities_match_transformers_eager(
    hf_checkpoint: Callable[..., Path], batch: Batch
) -> None:
    folder = hf_checkpoint("BertModel")
    reference = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = reference(**batch.model_inputs(), output_attentions=True).attentions
        ours = load_model(folder)(**batch.model_inputs(), output_attentions=True).attentions
    assert len(ours) == len(theirs) == 3
    real_queries = batch.attention_mask.bool()  # (B, T): compare rows of real query tokens
    seq = batch.input_ids.shape[1]
    for our_layer, their_layer in zip(ours, theirs, strict=True):
        assert our_layer.shape == their_layer.shape == (5, 4, seq, seq)
        ours_rows = our_layer.transpose(1, 2)[real_queries]  # (tokens, heads, T)
        theirs_rows = their_layer.transpose(1, 2)[real_queries]
        assert torch.allclose(ours_rows, theirs_rows, atol=1e-6)


def test_real_minilm_matches_transformers(minilm_folder: Path) -> None:
    """Parity on the real all-MiniLM-L6-v2 weights, padded batch of varied lengths (fp32)."""
    texts = [
        "A man is playing a guitar.",
        "Distillation makes a small student imitate a large teacher, layer by layer, "
        "and the student keeps most of the accuracy at a fraction of the cost.",
        "ok",
        "Ünïcödé, émojis 😀 and 数字 mixed in.",
    ]
    tokenizer = Tokenizer.from_folder(minilm_folder)
    batch = tokenizer(texts)
    lengths = batch.attention_mask.sum(1)
    assert len(set(lengths.tolist())) == len(texts)
    reference, info = transformers.AutoModel.from_pretrained(
        str(minilm_folder), output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    model = load_model(minilm_folder)
    with torch.no_grad():
        theirs = reference.eval()(**batch.model_inputs(), output_hidden_states=True)
        ours = model(**batch.model_inputs(), output_hidden_states=True)
    real = batch.attention_mask.bool()
    # Our fast path writes zeros at padding; transformers fills it with vectors nobody reads.
    difference = (ours.last_hidden_state[real] - theirs.last_hidden_state[real]).abs().max()
    assert float(difference) <= 1e-5
    assert bool((ours.last_hidden_state[~real] == 0).all())
    assert len(ours.hidden_states) == len(theirs.hidden_states) == 7
    for our_layer, their_layer in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        assert torch.allclose(our_layer[real], their_layer[real], atol=1e-5)
    assert torch.allclose(ours.pooled_output, theirs.pooler_output, atol=1e-5)


def test_bert_for_pretraining_loads_as_masked_lm(tmp_path: Path, batch: Batch) -> None:
    """The next-sentence head of BertForPreTraining is dropped; the MLM head is kept."""
    reference = transformers.BertForPreTraining(hf_tiny_config("BertModel"))
    randomize_(reference, seed=11)
    reference.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert model.config.head == "masked_lm" and model.config.with_pooler
    with torch.no_grad():
        theirs = reference.eval()(**batch.model_inputs()).prediction_logits
    assert max_difference(our_forward(model, batch), theirs, batch) <= 1e-5


def test_legacy_layer_norm_gamma_beta_names(
    hf_checkpoint: Callable[..., Path], tmp_path: Path, batch: Batch
) -> None:
    """Old checkpoints (bert-base-uncased's own) call LayerNorm parameters gamma and beta."""
    source = hf_checkpoint("BertForMaskedLM")
    shutil.copytree(source, tmp_path / "legacy")
    tensors = load_file(source / "model.safetensors")
    old_names = {"LayerNorm.weight": "LayerNorm.gamma", "LayerNorm.bias": "LayerNorm.beta"}
    renamed = {}
    for key, value in tensors.items():
        for new, old in old_names.items():
            key = key.replace(new, old)
        renamed[key] = value
    assert sum(key.endswith(".gamma") for key in renamed) == 8
    save_file(renamed, tmp_path / "legacy" / "model.safetensors")
    assert torch.equal(
        our_forward(load_model(tmp_path / "legacy"), batch), our_forward(load_model(source), batch)
    )


# ----------------------------------------------------------------------------- heads on load
def test_head_none_drops_the_stored_head(hf_checkpoint: Callable[..., Path], batch: Batch) -> None:
    folder = hf_checkpoint("BertForSequenceClassification")
    full = load_model(folder)
    bare = load_model(folder, head=None)
    assert bare.config.head is None and bare.head is None
    with torch.no_grad():
        assert torch.equal(
            bare(**batch.model_inputs()).last_hidden_state,
            full(**batch.model_inputs()).last_hidden_state,
        )


def test_a_new_head_starts_fresh_and_is_listed(hf_checkpoint: Callable[..., Path]) -> None:
    folder = hf_checkpoint("BertForMaskedLM")  # no pooler in BertForMaskedLM
    model = load_model(folder, head="sequence_classification", label_names=["a", "b", "c", "d"])
    assert model.config.num_labels == 4 and model.config.label_names == ["a", "b", "c", "d"]
    assert model.new_parameters == [
        "backbone.pooler.dense.bias",
        "backbone.pooler.dense.weight",
        "head.classifier.bias",
        "head.classifier.weight",
    ]
    stored = load_file(folder / "model.safetensors")
    assert torch.equal(
        model.backbone.layers[2].ffn.output.weight,
        stored["bert.encoder.layer.2.output.dense.weight"],
    )


# ----------------------------------------------------------------------------- saving
@pytest.mark.parametrize("architecture", HF_ARCHITECTURES)
def test_save_round_trips_into_transformers(
    architecture: str,
    hf_checkpoint: Callable[..., Path],
    batch: Batch,
    tiny_tokenizer: Tokenizer,
    tmp_path: Path,
) -> None:
    model = load_model(hf_checkpoint(architecture))
    folder = save_model(model, tmp_path / "saved", tokenizer=tiny_tokenizer)
    assert {"config.json", "model.safetensors", "vocab.txt"} <= {p.name for p in folder.iterdir()}
    auto_class = getattr(transformers, AUTO_CLASS_OF[model.config.head])
    reference, info = auto_class.from_pretrained(folder, output_loading_info=True)
    assert type(reference).__name__ == architecture
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    theirs = hf_forward(reference.eval(), batch)
    assert max_difference(our_forward(model, batch), theirs, batch) <= 1e-5
    if model.config.label_names is not None:
        assert reference.config.id2label == dict(enumerate(model.config.label_names))
        assert reference.config.label2id == {n: i for i, n in enumerate(model.config.label_names)}
    reloaded = load_model(folder)
    assert reloaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


def test_label_names_survive_transformers_and_back(
    hf_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    model = load_model(hf_checkpoint("DistilBertForTokenClassification"))
    save_model(model, tmp_path / "ours")
    reference = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path / "ours")
    reference.save_pretrained(tmp_path / "theirs")
    assert load_model(tmp_path / "theirs").config.label_names == TOKEN_LABELS


def test_saved_masked_lm_holds_the_tied_decoder(hf_checkpoint: Callable[..., Path]) -> None:
    for layout, decoder in (("Bert", "cls.predictions.decoder.weight"), ("DistilBert", None)):
        model = load_model(hf_checkpoint(f"{layout}ForMaskedLM"))
        tensors = hf_state_dict(model)
        decoder = decoder or "vocab_projector.weight"
        word = model.backbone.embeddings.word_embeddings.weight
        assert torch.equal(tensors[decoder], word)
        assert tensors[decoder].data_ptr() != word.data_ptr()  # a copy, not a view


def test_save_replaces_an_existing_folder_and_leaves_no_temp_files(
    hf_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    target = tmp_path / "model"
    model = load_model(hf_checkpoint("BertModel"))
    save_model(model, target)
    (target / "notes.txt").write_text("mine")  # a file the save does not write is kept
    save_model(model, target)
    assert sorted(p.name for p in target.iterdir()) == [
        "1_Pooling",
        "README.md",  # the model card
        "config.json",
        "config_sentence_transformers.json",
        "model.safetensors",
        "modules.json",
        "notes.txt",
        "sentence_bert_config.json",
    ]
    assert (target / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    empty = tmp_path / "empty"
    empty.mkdir()
    save_model(model, empty)  # an empty folder is fine too
    assert (empty / "config.json").is_file()


def test_save_never_replaces_what_is_not_a_model(
    hf_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    model = load_model(hf_checkpoint("BertModel"))
    notes = tmp_path / "work"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match=r"holds no model \(no config.json\)"):
        save_model(model, notes)
    assert (notes / "notes.txt").read_text() == "mine"
    a_file = tmp_path / "victim.txt"
    a_file.write_text("mine")
    with pytest.raises(CheckpointError, match="is a file"):
        save_model(model, a_file)
    assert a_file.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt", "work"]  # no leftovers


def test_pytorch_model_bin_with_tensors_only_loads(
    hf_checkpoint: Callable[..., Path], tmp_path: Path, batch: Batch
) -> None:
    source = hf_checkpoint("BertForMaskedLM")
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(source / "config.json", folder)
    torch.save(load_file(source / "model.safetensors"), folder / "pytorch_model.bin")
    assert torch.equal(
        our_forward(load_model(folder), batch), our_forward(load_model(source), batch)
    )


# ----------------------------------------------------------------------------- bad checkpoints
@pytest.fixture
def damaged(hf_checkpoint: Callable[..., Path], tmp_path: Path) -> Path:
    """A private copy of the tiny BertForMaskedLM checkpoint, free to damage."""
    folder = tmp_path / "damaged"
    shutil.copytree(hf_checkpoint("BertForMaskedLM"), folder)
    return folder


def edit_weights(folder: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors")


def edit_config(folder: Path, edit: Callable[[dict], None]) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_missing_tensor_is_named(damaged: Path) -> None:
    edit_weights(damaged, lambda t: t.pop("bert.encoder.layer.1.attention.self.key.bias"))
    with pytest.raises(CheckpointError, match=r"lacks 1 tensor.*layer\.1\.attention\.self\.key"):
        load_model(damaged)


def test_unexpected_tensor_is_named(damaged: Path) -> None:
    extra = "bert.encoder.layer.3.output.dense.bias"
    edit_weights(damaged, lambda t: t.__setitem__(extra, torch.zeros(32)))
    with pytest.raises(CheckpointError, match=r"does not use, e\.g\. bert\.encoder\.layer\.3\."):
        load_model(damaged)


def test_shape_mismatch_names_tensor_and_shapes(damaged: Path) -> None:
    name = "bert.encoder.layer.2.intermediate.dense.weight"
    edit_weights(damaged, lambda t: t.__setitem__(name, torch.zeros(36, 32)))
    with pytest.raises(CheckpointError, match=rf"{name} has shape \(36, 32\).*\(37, 32\)"):
        load_model(damaged)


def test_unknown_model_type(damaged: Path) -> None:
    edit_config(damaged, lambda c: c.__setitem__("model_type", "gpt2"))
    with pytest.raises(CheckpointError, match=r"config\.json.*unsupported model_type 'gpt2'"):
        load_model(damaged)


def test_config_json_lacking_a_field(damaged: Path) -> None:
    edit_config(damaged, lambda c: c.pop("hidden_size"))
    with pytest.raises(CheckpointError, match=r"config\.json lacks the field 'hidden_size'"):
        load_model(damaged)


def test_config_json_that_is_not_json(damaged: Path) -> None:
    (damaged / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON"):
        load_model(damaged)


@pytest.mark.parametrize("keep_bytes", [5, 1000, None])
def test_truncated_safetensors(damaged: Path, keep_bytes: int | None) -> None:
    path = damaged / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: keep_bytes or len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cannot read .*model\.safetensors: .*corrupt"):
        load_model(damaged)


def test_missing_config_json(damaged: Path) -> None:
    (damaged / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config file not found: .*config\.json"):
        load_model(damaged)


def test_missing_weights(damaged: Path) -> None:
    (damaged / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no weights in .*model\.safetensors or pytorch"):
        load_model(damaged)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint folder not found: .*nowhere"):
        load_model(tmp_path / "nowhere")


@pytest.mark.parametrize("config_vocab", [50, 120])
def test_config_vocab_size_not_matching_embedding_rows(damaged: Path, config_vocab: int) -> None:
    edit_config(damaged, lambda c: c.__setitem__("vocab_size", config_vocab))
    with pytest.raises(
        CheckpointError,
        match=rf"embedding matrix has 99 rows but config\.json says vocab_size {config_vocab}",
    ):
        load_model(damaged)


class _TouchOnUnpickle:
    """Unpickling this creates a marker file, proving that arbitrary code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pytorch_model_bin_is_read_with_weights_only(damaged: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    state = load_file(damaged / "model.safetensors")
    state["payload"] = _TouchOnUnpickle(marker)
    (damaged / "model.safetensors").unlink()
    torch.save(state, damaged / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*weights_only") as error:
        load_model(damaged)
    assert "\n" not in str(error.value)
    assert not marker.exists()


def test_pytorch_model_bin_that_is_not_a_state_dict(damaged: Path) -> None:
    (damaged / "model.safetensors").unlink()
    torch.save([torch.zeros(2)], damaged / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"does not hold a state dict"):
        load_model(damaged)
