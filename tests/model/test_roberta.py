"""RoBERTa and XLM-RoBERTa checkpoints: tiny random folders made with `transformers`, a
byte-level BPE and a Unigram (SentencePiece-style) tokenizer made with `tokenizers`;
parity with `transformers`, round trips both ways, init-student and a short distill."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize_
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

import distilkit
from distilkit.methods.general.config import DistillConfig
from distilkit.methods.general.job import init_student, run_distillation
from distilkit.model.checkpoint import load_model, save_model
from distilkit.model.tokenizer import Tokenizer
from distilkit.train.trainer import TrainingConfig

transformers = pytest.importorskip("transformers")

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as in RoBERTa and XLM-R
TRAINING_TEXT = [
    "the cat sat on the mat.", "Hello World, this is a tiny corpus!", "a big red dog ran.",
    "Le chat est sur le tapis.", "Der Hund läuft schnell.", "el perro corre rápido.",
    "this is that; it was read.", "small blue house and the tree", "Über die Brücke gehen.",
] * 3  # fmt: skip
TEXTS = [
    "the cat sat on the mat.",
    "Hello World",
    "Le chat est sur le tapis, et le chien court vite!",
    "Über",
    "this is that; it was read. Zebra xylophone?",
]


def unigram_tokenizer() -> BackendTokenizer:
    """XLM-R's pipeline: NFKC, Metaspace, Unigram; ``<s> A </s></s> B </s>``; cased."""
    tokenizer = BackendTokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=150, special_tokens=SPECIALS, unk_token="<unk>")
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer)
    return _with_template(tokenizer)


def bpe_tokenizer() -> BackendTokenizer:
    """RoBERTa's pipeline: byte-level BPE, cased."""
    tokenizer = BackendTokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer)
    return _with_template(tokenizer)


def _with_template(tokenizer: BackendTokenizer) -> BackendTokenizer:
    ids = {t: tokenizer.token_to_id(t) for t in ("<s>", "</s>")}
    assert ids == {"<s>": 0, "</s>": 2}
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=list(ids.items()),
    )
    return tokenizer


def make_folder(root: Path, family: str, head: str = "Model", seed: int = 1) -> Path:
    """A tiny random `transformers` checkpoint of ``family`` with its tokenizer files."""
    backend = unigram_tokenizer() if family == "xlm-roberta" else bpe_tokenizer()
    prefix = "XLMRoberta" if family == "xlm-roberta" else "Roberta"
    config = getattr(transformers, f"{prefix}Config")(
        vocab_size=backend.get_vocab_size(),
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=37,
        num_hidden_layers=3,
        max_position_embeddings=40,  # 38 tokens after the padding_idx offset
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        id2label={0: "no", 1: "yes", 2: "maybe"},
    )
    model = getattr(transformers, f"{prefix}{head}")(config)
    randomize_(model, seed=seed)
    folder = root / f"{family}-{head}"
    model.save_pretrained(folder)
    backend.save(str(folder / "tokenizer.json"))
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 38,
        **{
            f"{role}_token": tok
            for role, tok in zip(["bos", "pad", "eos", "unk", "mask"], SPECIALS, strict=True)
        },
        "cls_token": "<s>",
        "sep_token": "</s>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return folder


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


@pytest.mark.parametrize("head", ["ForMaskedLM", "ForSequenceClassification"])
def test_heads_equal_transformers_and_round_trip(family: str, head: str, tmp_path: Path) -> None:
    folder = make_folder(tmp_path, family, head, seed=5)
    model = load_model(folder)
    tokenizer = Tokenizer.from_folder(folder)
    reference = getattr(transformers, "AutoModel" + head).from_pretrained(str(folder)).eval()
    batch = tokenizer(TEXTS)
    with torch.no_grad():
        ours = model(batch.input_ids, batch.attention_mask).logits
        theirs = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    if head == "ForMaskedLM":
        real = batch.attention_mask.bool()
        ours, theirs = ours[real], theirs[real]
    assert (ours - theirs).abs().max() <= 1e-5
    # and back: transformers loads our save to the same tensors and logits
    out = save_model(model, tmp_path / "saved", tokenizer=tokenizer)
    config = json.loads((out / "config.json").read_text())
    prefix = "XLMRoberta" if family == "xlm-roberta" else "Roberta"
    assert config["model_type"] == family and config["architectures"] == [prefix + head]
    again = getattr(transformers, "AutoModel" + head).from_pretrained(str(out)).eval()
    with torch.no_grad():
        logits = again(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    if head == "ForMaskedLM":
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
