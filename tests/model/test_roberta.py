"""RoBERTa and XLM-RoBERTa checkpoints: tiny random folders made with `transformers`, a
byte-level BPE and a Unigram (SentencePiece-style) tokenizer made with `tokenizers`;
parity with `transformers`, round trips both ways, init-student and a short distill."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from roberta_helpers import TEXTS, TRAINING_TEXT, make_folder

import distilkit
from distilkit.methods.general.config import DistillConfig
from distilkit.methods.general.job import init_student, run_distillation
from distilkit.model.checkpoint import load_model, save_model
from distilkit.model.tokenizer import Tokenizer
from distilkit.train.trainer import TrainingConfig

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=["roberta", "xlm-roberta"])
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def folder(family: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp(family), family)


def reference_hidden(folder: Path, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """`transformers`' own tokenizer and model: (last_hidden_state, attention_mask)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).last_hidden_state, batch["attention_mask"]


def test_tokenizer_reads_the_folder_as_transformers_does(folder: Path, family: str) -> None:
    ours = Tokenizer.from_folder(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert ours.model_kind == ("Unigram" if family == "xlm-roberta" else "BPE")
    assert (ours.cls_token, ours.sep_token, ours.pad_id, ours.mask_id) == ("<s>", "</s>", 1, 4)
    assert not ours.lowercase  # cased: "Hello" and "hello" differ
    assert ours.tokenize("Hello") != ours.tokenize("hello")
    batch = ours(TEXTS)
    expected = theirs(TEXTS, padding=True, truncation=True, return_tensors="pt")
    assert torch.equal(batch.input_ids, expected["input_ids"])
    assert torch.equal(batch.attention_mask, expected["attention_mask"])


def test_hidden_states_equal_transformers(folder: Path) -> None:
    encoder = distilkit.load(folder)
    assert encoder.config.family in ("roberta", "xlm-roberta")
    assert encoder.config.position_offset == 2 and encoder.tokenizer.max_length == 38
    expected, mask = reference_hidden(folder, TEXTS)
    batch = encoder.tokenizer(TEXTS)
    with torch.no_grad():
        ours = encoder.model.backbone(batch.input_ids, batch.attention_mask).last_hidden_state
        explicit = encoder.model.backbone(
            batch.input_ids, batch.attention_mask, output_attentions=True
        ).last_hidden_state
    real = mask.bool()
    assert (ours[real] - expected[real]).abs().max() <= 1e-5
    assert (explicit[real] - expected[real]).abs().max() <= 1e-5
    # sentence vectors: mean over real tokens, as sentence-transformers' default
    vectors = encoder.embed(TEXTS, batch_size=2)
    pooled = (expected * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert np.abs(vectors - pooled.numpy()).max() <= 1e-5


def _logits(output) -> torch.Tensor:
    """A transformers output's logits; QA's start and end stacked as ours, (batch, seq, 2)."""
    if hasattr(output, "start_logits"):
        return torch.stack([output.start_logits, output.end_logits], dim=-1)
    return output.logits


@pytest.mark.parametrize(
    "head",
    [
        "ForMaskedLM",
        "ForSequenceClassification",
        "ForTokenClassification",
        "ForQuestionAnswering",
    ],
)
def test_heads_equal_transformers_and_round_trip(family: str, head: str, tmp_path: Path) -> None:
    folder = make_folder(tmp_path, family, head, seed=5)
    model = load_model(folder)
    tokenizer = Tokenizer.from_folder(folder)
    reference = getattr(transformers, "AutoModel" + head).from_pretrained(str(folder)).eval()
    batch = tokenizer(TEXTS)
    with torch.no_grad():
        ours = model(batch.input_ids, batch.attention_mask).logits
        theirs = _logits(reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask))
    if head in ("ForMaskedLM", "ForTokenClassification", "ForQuestionAnswering"):
        real = batch.attention_mask.bool()  # per-token heads: compare real tokens
        ours, theirs = ours[real], theirs[real]
    assert (ours - theirs).abs().max() <= 1e-5
    # and back: transformers loads our save to the same tensors and logits
    out = save_model(model, tmp_path / "saved", tokenizer=tokenizer)
    config = json.loads((out / "config.json").read_text())
    prefix = "XLMRoberta" if family == "xlm-roberta" else "Roberta"
    assert config["model_type"] == family and config["architectures"] == [prefix + head]
    again = getattr(transformers, "AutoModel" + head).from_pretrained(str(out)).eval()
    with torch.no_grad():
        logits = _logits(again(input_ids=batch.input_ids, attention_mask=batch.attention_mask))
    if head in ("ForMaskedLM", "ForTokenClassification", "ForQuestionAnswering"):
        logits = logits[batch.attention_mask.bool()]
    assert (logits - theirs).abs().max() <= 1e-5
    loaded_again = load_model(out).state_dict()
    assert all(torch.equal(loaded_again[k], v) for k, v in model.state_dict().items())


def test_round_trip_through_sentence_transformers(folder: Path, tmp_path: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True
    encoder = distilkit.load(folder)
    out = encoder.save(tmp_path / "saved")
    assert not (out / "vocab.txt").exists()  # BPE / Unigram: tokenizer.json only
    theirs = st.SentenceTransformer(str(out), device="cpu").encode(TEXTS)
    assert np.abs(distilkit.load(out).embed(TEXTS) - theirs).max() <= 1e-5
    assert np.abs(encoder.embed(TEXTS) - theirs).max() <= 1e-5


def test_init_student_and_five_distill_steps(folder: Path, family: str, tmp_path: Path) -> None:
    out = tmp_path / "student"
    init_student(str(folder), out, num_layers=2, strategy="uniform", max_len=24)
    student = distilkit.load(out)
    assert student.config.family == family and student.config.num_layers == 2
    # the cut student is the teacher with fewer blocks: transformers agrees on its outputs
    expected, mask = reference_hidden(out, TEXTS)
    vectors = student.embed(TEXTS)
    pooled = (expected * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert np.abs(vectors - pooled.numpy()).max() <= 1e-5
    corpus = tmp_path / "text.txt"
    corpus.write_text("\n\n".join(TRAINING_TEXT * 4), encoding="utf-8")
    training = TrainingConfig(
        max_steps=5,
        batch_size=4,
        learning_rate=1e-3,
        eval_every=5,
        checkpoint_every=5,
        progress=False,
    )
    config = DistillConfig(
        teacher=str(folder),
        corpus=[str(corpus)],
        num_layers=2,
        strategy="uniform",
        max_len=24,
        heldout_fraction=0.2,
        training=training,
    )
    metrics = run_distillation(config, tmp_path / "run", evaluate=False)
    assert metrics["training"]["steps"] == 5
    losses = metrics["training"]["final_losses"]
    assert all(np.isfinite(v) for v in losses.values())
    trained = transformers.AutoModel.from_pretrained(str(tmp_path / "run" / "student"))
    assert trained.config.model_type == family and trained.config.num_hidden_layers == 2


def test_a_distilbert_layout_student_of_roberta_is_refused(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="padding_idx"):
        init_student(
            str(folder), tmp_path / "s", num_layers=2, strategy="uniform", layout="distilbert"
        )
