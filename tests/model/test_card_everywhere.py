"""Every folder distilkit writes a model into carries a model card: ``Encoder.save``,
static students (``distill-static``, ``StaticEncoder.save``), task heads, BiLSTM and
seq2seq students. Each card's front matter parses (yaml and huggingface_hub's
``ModelCard``) and names the library and pipeline that fit the folder; the code blocks of
its "Use" section run as written and give the vectors distilkit gives; a user's own
README.md in the target folder is never overwritten."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from cmlm_helpers import tiny_seq2seq

import distilkit
from distilkit.methods.general.job import init_student
from distilkit.methods.static import Config as StaticConfig
from distilkit.methods.static import run as run_static
from distilkit.model.bilstm import BiLSTMClassifier
from distilkit.model.card import MARKER, CardFacts, read_facts, write_card
from distilkit.model.checkpoint import load_model, save_model
from distilkit.model.st_folder import SentenceModules

USER_README = "# my own notes about this model\n"


def front_matter(folder: Path) -> dict:
    """The card's YAML front matter, parsed by yaml and (when installed) huggingface_hub."""
    yaml = pytest.importorskip("yaml")
    text = (folder / "README.md").read_text(encoding="utf-8")
    found = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert found is not None, "the card has no front matter"
    data = yaml.safe_load(found.group(1))
    try:
        from huggingface_hub import ModelCard
    except ImportError:
        return data
    card = ModelCard.load(folder / "README.md")
    assert card.data.to_dict() == data
    return data


def code_blocks(folder: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S)


def run_block(code: str) -> dict:
    namespace: dict = {}
    exec(compile(code, "<card>", "exec"), namespace)  # the card's code, as a user pastes it
    return namespace


@pytest.fixture(scope="module")
def teacher_folder(hf_checkpoint) -> Path:
    """A folder transformers wrote (3 layers of 32, masked-LM head): no card of ours."""
    return hf_checkpoint("BertForMaskedLM")


def test_encoder_save_writes_a_card_whose_code_gives_the_same_vectors(
    teacher_folder: Path, tmp_path: Path
):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("transformers")
    encoder = distilkit.load(teacher_folder)
    encoder.sentence = SentenceModules(pooling=("cls",), stages=["normalize"])
    out = encoder.save(tmp_path / "saved")
    meta = front_matter(out)
    assert meta["library_name"] == "sentence-transformers"
    assert meta["pipeline_tag"] == "sentence-similarity"
    assert {"sentence-transformers", "fill-mask", "distilkit"} <= set(meta["tags"])
    card = (out / "README.md").read_text()
    assert MARKER in card and f"saved with distilkit from `{teacher_folder}`" in card
    assert (
        "| architecture | BertForMaskedLM |" in card and "| layers, hidden size | 3, 32 |" in card
    )
    assert "| sentence vector | cls pooling, unit length, at most 64 tokens |" in card
    blocks = code_blocks(out)
    assert len(blocks) == 4  # distilkit, sentence-transformers, transformers, fill-mask
    ours = run_block(blocks[0])["vectors"]
    theirs = run_block(blocks[1])["vectors"]
    by_hand = run_block(blocks[2])["vectors"].detach().numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(ours[:1], by_hand, atol=1e-5)  # CLS + normalise, by hand
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    run_block(blocks[3])  # fill-mask in distilkit and in transformers' pipeline


def test_a_carded_students_card_is_kept_and_refreshed_by_encoder_save(
    teacher_folder: Path, tmp_path: Path
):
    student = tmp_path / "student"
    init_student(str(teacher_folder), student, num_layers=2, strategy="uniform")
    encoder = distilkit.load(student)
    encoder.sentence = SentenceModules(pooling=("max",))
    out = encoder.save(tmp_path / "copy")
    facts = read_facts(out)
    assert facts is not None and facts.teacher == str(teacher_folder)
    assert facts.teacher_layers == [0, 2] and facts.num_layers == 2
    assert facts.pooling == "max"  # refreshed from the encoder, not the old card
    card = (out / "README.md").read_text()
    assert "teacher layers it started from | [0, 2]" in card
    blocks = code_blocks(out)  # the code loads the new folder
    assert all(f'"{out}"' in code and str(student) not in code for code in blocks)
    pytest.importorskip("transformers")
    by_hand = run_block(blocks[2])["vectors"].detach().numpy()  # max pooling, by hand
    np.testing.assert_allclose(run_block(blocks[0])["vectors"][:1], by_hand, atol=1e-5)


def test_encoder_save_never_overwrites_a_users_readme(teacher_folder: Path, tmp_path: Path):
    target = tmp_path / "mine"
    encoder = distilkit.load(teacher_folder)
    encoder.save(target)
    (target / "README.md").write_text(USER_README)
    encoder.save(target)
    assert (target / "README.md").read_text() == USER_README
    assert read_facts(target) is None


def test_static_student_card_names_its_recipe_and_loads_in_three_libraries(
    hf_checkpoint, tmp_path: Path
):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("model2vec")
    teacher = hf_checkpoint("BertModel")
    out = tmp_path / "static"
    run_static(StaticConfig(teacher=str(teacher), dims=6, evaluate=False), out)
    meta = front_matter(out)
    assert meta["library_name"] == "sentence-transformers"
    assert meta["pipeline_tag"] == "sentence-similarity"
    assert {"static-embeddings", "model2vec", "knowledge-distillation"} <= set(meta["tags"])
    card = (out / "README.md").read_text()
    assert f"| teacher | `{teacher}` |" in card and "| vocabulary | 99 entries |" in card
    assert "| dimensions | 6 |" in card and "| token weighting | zipf (SIF, a = 0.0001) |" in card
    assert "% of the variance kept" in card and "| training | none" in card
    assert "STS-B dev Spearman |" not in card  # not measured, so no figures
    assert "Not evaluated when saved" in card
    blocks = code_blocks(out)
    assert len(blocks) == 3  # distilkit, sentence-transformers, model2vec
    ours, st, m2v = (run_block(code)["vectors"] for code in blocks)
    np.testing.assert_allclose(ours, st, atol=1e-5)
    np.testing.assert_allclose(ours, m2v, atol=1e-5)


def test_static_cards_show_figures_only_when_measured_and_spare_a_users_readme(
    hf_checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from suite_helpers import write_data_root

    monkeypatch.setenv("DISTILKIT_DATA", str(write_data_root(tmp_path / "data")))
    teacher = hf_checkpoint("BertModel")
    out = tmp_path / "static"
    metrics = run_static(StaticConfig(teacher=str(teacher), dims=5), out)
    card = (out / "README.md").read_text()
    row = metrics["evaluation"]
    assert f"{row['stsb_spearman']:.4f} | {row['sst2_probe_accuracy']:.4f}" in card
    copy = distilkit.load(out)
    copy.save(tmp_path / "copy")  # StaticEncoder.save keeps the card and its figures
    assert f"{row['stsb_spearman']:.4f}" in (tmp_path / "copy" / "README.md").read_text()
    (tmp_path / "copy" / "README.md").write_text(USER_README)
    copy.save(tmp_path / "copy")
    assert (tmp_path / "copy" / "README.md").read_text() == USER_README


def test_a_classifier_card_names_transformers_text_classification(hf_checkpoint, tmp_path: Path):
    pytest.importorskip("transformers")
    model = load_model(
        hf_checkpoint("BertForSequenceClassification", num_labels=3),
        label_names=["negative", "neutral", "positive"],
    )
    tokenizer = distilkit.Tokenizer.from_folder(hf_checkpoint("BertModel"))
    out = save_model(model, tmp_path / "clf", tokenizer=tokenizer)
    meta = front_matter(out)
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-classification"
    card = (out / "README.md").read_text()
    assert "| labels | `negative`, `neutral`, `positive` |" in card
    assert "SentenceTransformer(" not in card and "Quality and speed" not in card
    ours, theirs = code_blocks(out)
    from distilkit.deploy.pipelines import classify

    expected = classify(out, ["A sentence.", "Another one."])
    namespace = run_block(ours.replace('classify("', 'result = classify("'))
    assert namespace["result"] == expected
    pipe = run_block(theirs.replace('pipeline("', 'result = pipeline("', 1))["result"]
    assert [p["label"] for p in pipe] == [e["label"] for e in expected]
    np.testing.assert_allclose([p["score"] for p in pipe], [e["score"] for e in expected], 1e-5)


@pytest.mark.parametrize(
    ("architecture", "pipeline_tag"),
    [
        ("BertForTokenClassification", "token-classification"),
        ("BertForQuestionAnswering", "question-answering"),
    ],
)
def test_task_head_cards_name_their_pipeline(hf_checkpoint, tmp_path, architecture, pipeline_tag):
    model = load_model(hf_checkpoint(architecture))
    out = save_model(model, tmp_path / "task")
    meta = front_matter(out)
    assert (meta["library_name"], meta["pipeline_tag"]) == ("transformers", pipeline_tag)
    assert f'pipeline("{pipeline_tag}", model="{out}"' in (out / "README.md").read_text()


def test_bilstm_save_writes_a_card_and_keeps_the_users_files(tiny_tokenizer, tmp_path: Path):
    table = torch.randn(99, 32, generator=torch.Generator().manual_seed(0))
    model = BiLSTMClassifier.from_teacher(table, tiny_tokenizer, hidden_size=7, mlp_size=11)
    out = model.save(tmp_path / "bilstm")
    meta = front_matter(out)
    assert (meta["library_name"], meta["pipeline_tag"]) == ("distilkit", "text-classification")
    card = (out / "README.md").read_text()
    assert "| embeddings, LSTM units per direction, MLP | 32, 7, 11 |" in card
    assert "AutoModel" not in card and "SentenceTransformer" not in card
    (out / "README.md").write_text(USER_README)
    (out / "notes.txt").write_text("mine\n")
    model.save(out)
    assert (out / "README.md").read_text() == USER_README
    assert (out / "notes.txt").read_text() == "mine\n"


def test_seq2seq_save_writes_a_card_but_spares_a_users_readme(tmp_path: Path):
    model = tiny_seq2seq()
    out = model.save(tmp_path / "seq2seq")
    meta = front_matter(out)
    assert (meta["library_name"], meta["pipeline_tag"]) == ("distilkit", "text2text-generation")
    assert "| decoder layers, heads, FFN | 2, 4, 37 |" in (out / "README.md").read_text()
    (out / "README.md").write_text(USER_README)
    model.save(out)
    assert (out / "README.md").read_text() == USER_README


def test_card_facts_survive_the_card_and_bad_kinds_are_refused(tmp_path: Path):
    facts = CardFacts(
        name="odd --> name",
        teacher="org/teacher",
        corpus=["/data/a-->b.txt"],
        settings={"note": "x > y"},
        rows=[{"name": "teacher", "stsb_spearman": 81.5}],
    )
    write_card(tmp_path, facts)
    assert read_facts(tmp_path) == facts
    assert front_matter(tmp_path)["base_model"] == "org/teacher"
    with pytest.raises(ValueError, match="card kind"):
        CardFacts(name="x", kind="speech")
