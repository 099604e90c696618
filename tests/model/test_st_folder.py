"""sentence-transformers folders both ways, checked against sentence-transformers itself:
its pooling modes, Dense, Normalize, prompts and length limit read and written; the
recipe inherited by students; model cards that never replace a user's README."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TEXTS

import distilkit
from distilkit.model.card import MARKER, CardFacts, write_card
from distilkit.model.checkpoint import CheckpointError, load_model, save_model
from distilkit.model.st_folder import read_sentence_modules
from distilkit.model.student import build_student
from distilkit.model.tokenizer import Tokenizer

st = pytest.importorskip("sentence_transformers")
models = pytest.importorskip("sentence_transformers.models")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def st_folder(base: Path, out: Path, pooling, stages=(), max_seq_length=40, **kwargs) -> Path:
    """Save a sentence-transformers model over the checkpoint ``base`` with sentence-
    transformers' own classes; returns the folder."""
    transformer = models.Transformer(str(base), max_seq_length=max_seq_length)
    modules = [transformer, models.Pooling(32, pooling_mode=pooling, **kwargs), *stages]
    st.SentenceTransformer(modules=modules, device="cpu").save(str(out))
    return out


def reference(folder: Path, texts, **kwargs) -> np.ndarray:
    return st.SentenceTransformer(str(folder), device="cpu").encode(texts, **kwargs)


@pytest.mark.parametrize(
    "pooling, stages",
    [
        ("cls", ()),  # CLS pooling, no Normalize: unnormalised [CLS] vectors
        ("mean", ("normalize",)),
        ("max", ("dense", "normalize")),
        (("cls", "mean"), ("dense",)),
        ("lasttoken", ()),
        ("weightedmean", ("normalize",)),
        ("mean_sqrt_len_tokens", ()),
    ],
)
def test_folders_embed_as_sentence_transformers_does(
    hf_checkpoint: Callable[..., Path], tmp_path: Path, pooling, stages
) -> None:
    width = 32 * (len(pooling) if isinstance(pooling, tuple) else 1)
    built = [
        models.Normalize()
        if s == "normalize"
        else models.Dense(width, 17, activation_function=torch.nn.Tanh())
        for s in stages
    ]
    folder = st_folder(hf_checkpoint("BertModel"), tmp_path / "st", pooling, built)
    encoder = distilkit.load(folder)
    ours = encoder.embed(TINY_TEXTS, batch_size=2)
    expected = reference(folder, TINY_TEXTS)
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= 1e-5
    norms = np.linalg.norm(ours, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) == ("normalize" in stages)
    # and written back: sentence-transformers reads our save the same way
    again = encoder.save(tmp_path / "again")
    assert np.abs(reference(again, TINY_TEXTS) - expected).max() <= 1e-5
    assert np.abs(distilkit.load(again).embed(TINY_TEXTS) - expected).max() <= 1e-5


def test_prompts_and_include_prompt(hf_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    folder = st_folder(
        hf_checkpoint("BertModel"),
        tmp_path / "st",
        "mean",
        [models.Normalize()],
        include_prompt=False,
    )
    settings = json.loads((folder / "config_sentence_transformers.json").read_text())
    settings["prompts"] = {"query": "the book: ", "document": ""}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(settings))
    encoder = distilkit.load(folder)
    expected = reference(folder, TINY_TEXTS, prompt_name="query")
    ours = encoder.embed(TINY_TEXTS, prompt_name="query")
    assert np.abs(ours - expected).max() <= 1e-5
    # leaving the prompt out of the pooling matters: with it, the vectors differ
    assert np.abs(ours - encoder.embed(["the book: " + t for t in TINY_TEXTS])).max() > 1e-3
    with pytest.raises(ValueError, match="not one of the model's prompts"):
        encoder.embed(TINY_TEXTS, prompt_name="passage")


def test_max_seq_length_and_lowercase_are_followed(
    hf_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    folder = st_folder(hf_checkpoint("BertModel"), tmp_path / "st", "mean", max_seq_length=9)
    settings = json.loads((folder / "sentence_bert_config.json").read_text())
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({**settings, "do_lower_case": True})
    )
    encoder = distilkit.load(folder)
    assert encoder.tokenizer.max_length == 9
    texts = ["The CAT sat on THE mat and the dog sat on it too.", "HELLO World"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = encoder.embed(texts)
    assert np.abs(ours - reference(folder, texts)).max() <= 1e-5


def test_normalize_none_follows_the_folder_and_overrides(
    hf_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    folder = st_folder(hf_checkpoint("BertModel"), tmp_path / "st", "mean", [models.Normalize()])
    encoder = distilkit.load(folder)
    raw = encoder.embed(TINY_TEXTS, normalize=False)
    unit = encoder.embed(TINY_TEXTS)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    assert np.allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    plain = distilkit.load(hf_checkpoint("BertModel"))  # no modules.json: mean, unnormalised
    assert np.allclose(plain.embed(TINY_TEXTS), raw, atol=1e-6)


@pytest.mark.parametrize("override, mode", [("cls", "cls"), ("max", "max"), ("last", "lasttoken")])
def test_a_pooling_override_keeps_dense_and_normalize(
    hf_checkpoint: Callable[..., Path], tmp_path: Path, override: str, mode: str
) -> None:
    """embed(pooling=...) on a mean-pooled folder with Dense and Normalize equals
    sentence-transformers' model of the same transformer with that Pooling, the same
    Dense and Normalize (the override replaces the pooling step only)."""
    base = hf_checkpoint("BertModel")
    dense = models.Dense(32, 17, activation_function=torch.nn.Tanh())
    folder = st_folder(base, tmp_path / "st", "mean", [dense, models.Normalize()])
    expected = st.SentenceTransformer(
        modules=[
            models.Transformer(str(base), max_seq_length=40),
            models.Pooling(32, pooling_mode=mode),
            dense,
            models.Normalize(),
        ],
        device="cpu",
    ).encode(TINY_TEXTS)
    encoder = distilkit.load(folder)
    ours = encoder.embed(TINY_TEXTS, pooling=override, batch_size=2)
    assert ours.shape == expected.shape == (len(TINY_TEXTS), 17)
    assert np.abs(ours - expected).max() <= 1e-5
    assert np.abs(ours - encoder.embed(TINY_TEXTS)).max() > 1e-3  # the override does pool anew
    raw = encoder.embed(TINY_TEXTS, pooling=override, normalize=False)  # Dense, no Normalize
    assert np.abs(raw / np.linalg.norm(raw, axis=1, keepdims=True) - expected).max() <= 1e-5
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_a_pooling_override_that_does_not_fit_the_dense_layer_is_an_error(
    hf_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    dense = models.Dense(64, 17, activation_function=torch.nn.Tanh())  # cls+mean: 2 x 32 wide
    folder = st_folder(hf_checkpoint("BertModel"), tmp_path / "st", ("cls", "mean"), [dense])
    message = r"gives 32-wide vectors but the model's Dense layer takes 64"
    with pytest.raises(ValueError, match=message) as error:
        distilkit.load(folder).embed(TINY_TEXTS, pooling="cls")
    assert "\n" not in str(error.value)


def test_search_indexes_with_the_folders_own_pooling(
    hf_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    from distilkit.deploy.search import SearchIndex

    folder = st_folder(hf_checkpoint("BertModel"), tmp_path / "st", "cls")
    index = SearchIndex.build(distilkit.load(folder), TINY_TEXTS)
    expected = reference(folder, TINY_TEXTS, normalize_embeddings=True)
    assert np.abs(np.asarray(index.vectors) - expected).max() <= 1e-5


def test_a_student_inherits_its_teachers_recipe(
    hf_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    folder = st_folder(
        hf_checkpoint("BertModel"), tmp_path / "st", "cls", [models.Normalize()], max_seq_length=33
    )
    teacher = load_model(folder)
    student, _ = build_student(teacher, num_layers=2)
    out = save_model(student, tmp_path / "student", tokenizer=Tokenizer.from_folder(folder))
    modules = read_sentence_modules(out)
    assert modules.pooling == ("cls",) and modules.normalize and modules.max_seq_length == 33
    expected = reference(out, TINY_TEXTS)
    assert np.abs(distilkit.load(out).embed(TINY_TEXTS) - expected).max() <= 1e-5
    assert np.allclose(np.linalg.norm(expected, axis=1), 1.0, atol=1e-5)
    transformers = pytest.importorskip("transformers")
    assert transformers.AutoModel.from_pretrained(str(out)).config.num_hidden_layers == 2


def test_dimensions_cut_as_sentence_transformers_truncate_dim_does(
    hf_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    dense = models.Dense(32, 23, activation_function=torch.nn.Tanh())
    folder = st_folder(
        hf_checkpoint("BertModel"), tmp_path / "st", "mean", [dense, models.Normalize()]
    )
    encoder = distilkit.load(folder)
    for width in (23, 11, 4):
        ours = encoder.embed(TINY_TEXTS, dimensions=width)
        expected = reference(folder, TINY_TEXTS, truncate_dim=width, normalize_embeddings=True)
        assert ours.shape == expected.shape == (len(TINY_TEXTS), width)
        assert np.abs(ours - expected).max() <= 1e-5
        assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # renormalised
    # unnormalised: a plain cut after the Dense stage, as sentence-transformers' own
    raw = encoder.embed(TINY_TEXTS, dimensions=4, normalize=False)
    assert np.abs(raw - encoder.embed(TINY_TEXTS, normalize=False)[:, :4]).max() <= 1e-6
    with pytest.raises(ValueError, match="between 1 and 23"):
        encoder.embed(TINY_TEXTS, dimensions=24)
    # the folder's truncate_dim is the default cut (sentence-transformers reads the same
    # key); matryoshka_dims, ours, is kept and ignored by sentence-transformers
    settings = json.loads((folder / "config_sentence_transformers.json").read_text())
    settings |= {"truncate_dim": 11, "matryoshka_dims": [23, 11, 4]}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(settings))
    theirs = st.SentenceTransformer(str(folder), device="cpu")
    assert theirs.truncate_dim == 11
    expected = theirs.encode(TINY_TEXTS, normalize_embeddings=True)
    reloaded = distilkit.load(folder)
    assert reloaded.sentence.matryoshka_dims == (23, 11, 4)
    assert np.abs(reloaded.embed(TINY_TEXTS) - expected).max() <= 1e-5
    assert reloaded.embed(TINY_TEXTS, dimensions=23).shape == (len(TINY_TEXTS), 23)
    saved = json.loads(
        (reloaded.save(tmp_path / "again") / "config_sentence_transformers.json").read_text()
    )
    assert (saved["truncate_dim"], saved["matryoshka_dims"]) == (11, [23, 11, 4])
    settings["matryoshka_dims"] = [23, "11"]
    (folder / "config_sentence_transformers.json").write_text(json.dumps(settings))
    with pytest.raises(CheckpointError, match="matryoshka_dims must be a list of positive"):
        distilkit.load(folder)


def test_unknown_module_is_a_one_line_error(
    hf_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    folder = st_folder(hf_checkpoint("BertModel"), tmp_path / "st", "mean")
    listing = json.loads((folder / "modules.json").read_text())
    listing.append(
        {"idx": 2, "name": "2", "path": "2_LSTM", "type": "sentence_transformers.models.LSTM"}
    )
    (folder / "modules.json").write_text(json.dumps(listing))
    with pytest.raises(CheckpointError, match=r"LSTM.*does not run") as error:
        distilkit.load(folder)
    assert "\n" not in str(error.value)


def test_cards_never_replace_a_users_readme(
    hf_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    model = load_model(hf_checkpoint("BertModel"))
    target = save_model(model, tmp_path / "model")
    facts = CardFacts(name="tiny", teacher="teacher-x", num_layers=3, hidden_size=32, steps=5)
    card = write_card(target, facts)
    assert card is not None and MARKER in card.read_text()
    assert "library_name: sentence-transformers" in card.read_text()
    save_model(model, target)  # our card of the old model is replaced by the new model's
    assert "teacher-x" not in (target / "README.md").read_text()
    assert MARKER in (target / "README.md").read_text()
    (target / "README.md").write_text("my notes\n")
    save_model(model, target)  # the user's README survives a save over the folder
    assert (target / "README.md").read_text() == "my notes\n"
    assert write_card(target, facts) is None
    assert (target / "README.md").read_text() == "my notes\n"


@pytest.mark.slow
def test_minilm_round_trip_through_sentence_transformers(
    minilm_folder: Path, tmp_path: Path
) -> None:
    texts = ["A man is playing a guitar.", "The cat sleeps.", "Distillation makes it small."]
    encoder = distilkit.load("all-MiniLM-L6-v2")
    ours = encoder.embed(texts)  # normalize=None follows the folder's Normalize
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert np.abs(ours - reference(minilm_folder, texts)).max() <= 1e-5
    saved = encoder.save(tmp_path / "saved")
    theirs = reference(saved, texts)
    assert np.abs(ours - theirs).max() <= 1e-5
    assert np.allclose(np.linalg.norm(theirs, axis=1), 1.0, atol=1e-5)
    assert st.SentenceTransformer(str(saved), device="cpu").max_seq_length == 256
    # a 3-layer student cut from it: sentence-transformers embeds it as distilkit does
    student, _ = build_student(encoder.model, layers=[0, 2, 5])
    out = save_model(student, tmp_path / "student", tokenizer=encoder.tokenizer)
    expected = reference(out, texts)
    assert np.allclose(np.linalg.norm(expected, axis=1), 1.0, atol=1e-5)
    assert np.abs(distilkit.load(out).embed(texts) - expected).max() <= 1e-5
