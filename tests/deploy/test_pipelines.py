"""Pipelines: classify, ner and answer on tiny fine-tuned models, checked against the model's
own logits, seqeval's entity reading and the SQuAD post-processing of ``tasks.qa``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from seqeval.metrics.sequence_labeling import get_entities
from task_helpers import save_tiny_model, write_all_tasks

from distilkit.deploy.pipelines import answer, best_span, classify, group_entities, ner
from distilkit.encoder import load
from distilkit.methods.finetune.job import FineTuneConfig, run_finetune
from distilkit.model.checkpoint import load_model, save_model
from distilkit.tasks.features import DataSettings
from distilkit.tasks.qa import QAExample, make_features, postprocess
from distilkit.train.trainer import TrainingConfig

TRAINING = {"batch_size": 16, "learning_rate": 3e-3, "progress": False}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny 2-layer models fine-tuned on the tiny sst2, conll2003 and squad sets."""
    root = tmp_path_factory.mktemp("pipelines")
    data = write_all_tasks(root / "data")
    base = save_tiny_model(root / "base", num_layers=2)
    settings = DataSettings(data_root=str(data), max_len=64, doc_stride=16, max_question_length=8)
    folders = {"base": base}
    for task in ("sst2", "conll2003", "squad"):
        config = FineTuneConfig(
            model=str(base), task=task, epochs=6, data=settings, training=TrainingConfig(**TRAINING)
        )
        run_finetune(config, root / task)
        folders[task] = root / task / "model"
    return folders


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ----------------------------------------------------------------------------- classify
def test_classify_labels_and_probabilities(models):
    texts = ["the red cat", "blue is it", "a dog on the mat with red"]
    results = classify(models["sst2"], texts)
    assert [r["label"] for r in results] == ["positive", "negative", "positive"]
    encoder = load(models["sst2"])
    batch = encoder.tokenizer(texts)
    with torch.no_grad():
        logits = encoder.model(**batch.model_inputs()).logits.double().numpy()
    for result, expected in zip(results, softmax(logits), strict=True):
        assert [result["scores"]["negative"], result["scores"]["positive"]] == pytest.approx(
            expected
        )
        assert result["score"] == pytest.approx(expected.max())
    assert classify(encoder, "the red cat")[0]["label"] == "positive"


def test_classify_regression_and_errors(models, tmp_path):
    regression = load_model(models["base"], head="sequence_classification", num_labels=1)
    save_model(regression, tmp_path / "regression", tokenizer=load(models["base"]).tokenizer)
    results = classify(tmp_path / "regression", ["the cat", "a dog"], pairs=["the cat", "the mat"])
    encoder = load(tmp_path / "regression")
    expected = encoder.logits(["the cat", "a dog"], ["the cat", "the mat"])[:, 0]
    assert [r["score"] for r in results] == pytest.approx(expected.tolist())
    with pytest.raises(ValueError, match="needs a 'sequence_classification' head"):
        classify(models["conll2003"], ["the cat"])
    with pytest.raises(ValueError, match="must pair up"):
        classify(models["sst2"], ["a", "b"], pairs=["c"])


# ----------------------------------------------------------------------------- ner
def test_entities_are_read_as_conlleval_reads_them():
    """group_entities agrees with seqeval's chunking (the CoNLL reading) on random tags."""
    rng = np.random.default_rng(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    for _ in range(200):
        sequence = [str(t) for t in rng.choice(tags, size=int(rng.integers(1, 12)))]
        spans = [(3 * i, 3 * i + 2) for i in range(len(sequence))]
        text = " ".join(f"w{i % 10}" for i in range(len(sequence)))
        entities = group_entities(text, sequence, spans, [1.0] * len(sequence))
        expected = [
            (kind, spans[start][0], spans[end][1]) for kind, start, end in get_entities(sequence)
        ]
        assert [(e["entity"], e["start"], e["end"]) for e in entities] == expected, sequence
        assert all(e["text"] == text[e["start"] : e["end"]] for e in entities)
    scored = group_entities("ab cd", ["B-PER", "I-PER"], [(0, 2), (3, 5)], [0.5, 1.0])
    assert scored == [{"entity": "PER", "text": "ab cd", "start": 0, "end": 5, "score": 0.75}]


def test_ner_finds_entities_with_character_spans(models):
    text = "the cats sat on the big house. a dog and cat in the tree!"
    entities = ner(models["conll2003"], text)
    found = [(e["entity"], e["text"]) for e in entities]
    assert found == [
        ("PER", "cats"),
        ("LOC", "house"),
        ("PER", "dog"),
        ("PER", "cat"),
        ("LOC", "tree"),
    ]
    for entity in entities:  # "cats" is two pieces (cat ##s): the span covers the word
        assert text[entity["start"] : entity["end"]] == entity["text"]
        assert 0 < entity["score"] <= 1
    assert ner(models["conll2003"], "") == []


def test_ner_needs_label_names(models, tmp_path):
    unnamed = load_model(models["base"], head="token_classification", num_labels=3)
    save_model(unnamed, tmp_path / "unnamed", tokenizer=load(models["base"]).tokenizer)
    with pytest.raises(ValueError, match="no label names"):
        ner(tmp_path / "unnamed", "the cat")


# ----------------------------------------------------------------------------- answer
def test_best_span_respects_the_rules():
    start = np.array([9.0, 1.0, 5.0, 0.0, 2.0])
    end = np.array([9.0, 0.0, 1.0, 4.0, 3.0])
    context = np.array([False, True, True, True, True])  # token 0 is [CLS]
    assert best_span(start, end, context) == (9.0, 2, 3)
    assert best_span(start, end, context, max_answer_length=1) == (6.0, 2, 2)
    assert best_span(start, end, np.zeros(5, dtype=bool)) is None


def test_answer_agrees_with_squad_postprocessing(models):
    encoder = load(models["squad"])
    question = "what is big?"
    contexts = [
        "it was the big dog on the mat.",
        "it was the mat of this " * 8 + "and the big bird sat on it. " + "this is the mat " * 6,
    ]
    for context in contexts:
        result = answer(encoder, question, context)
        assert context[result["start"] : result["end"]] == result["answer"]
        example = QAExample("q", "", question, context, [])
        features = make_features(encoder.tokenizer, [example], 64, 16, 16)
        with torch.no_grad():
            logits = encoder.model(**features.model_inputs()).logits.numpy()
        expected = postprocess(logits[..., 0], logits[..., 1], features, [example], n_best=1000)
        assert result["answer"] == expected["q"]
        assert 0 < result["score"] <= 1
    assert len(features) > 1  # the long context was read in several windows
    assert answer(encoder, question, contexts[0])["answer"] == "dog"


def test_answer_rejects_empty_input(models):
    with pytest.raises(ValueError, match="context must be a non-empty string"):
        answer(models["squad"], "what is big?", "  ")
    with pytest.raises(ValueError, match="needs a 'question_answering' head"):
        answer(models["sst2"], "what is big?", "the big cat")
