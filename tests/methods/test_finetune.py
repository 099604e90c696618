"""Fine-tuning: task losses against their formulas, task features and batches, the best
epoch kept, label names saved for `transformers`, and tiny models that learn tiny tasks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from task_helpers import (
    save_tiny_model,
    tiny_tokenizer_in,
    write_all_tasks,
)

from distilkit.methods.finetune.job import FineTuneConfig, evaluate_task, run_finetune
from distilkit.model.checkpoint import load_model, save_model
from distilkit.model.hub import ModelNotFoundError
from distilkit.settings import ConfigError, from_dict
from distilkit.tasks.features import (
    DataSettings,
    TaskDataError,
    collate_features,
    load_examples,
    load_split,
)
from distilkit.tasks.registry import CONLL_LABELS, get_task
from distilkit.train.task_training import (
    BestCheckpoint,
    load_task_model,
    schedule_for_epochs,
    task_loss,
)
from distilkit.train.trainer import TrainingConfig

QUICK = {"batch_size": 16, "learning_rate": 3e-3, "progress": False, "log_every": 5}


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(-log_softmax(logits)[np.arange(len(labels)), labels].mean())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    data = write_all_tasks(root / "data")
    settings = DataSettings(data_root=str(data), max_len=64, doc_stride=16, max_question_length=8)
    return {
        "root": root,
        "settings": settings,
        "model": save_tiny_model(root / "base", num_layers=2),
        "tokenizer": tiny_tokenizer_in(root / "vocab"),
    }


def finetune(workspace, task: str, epochs: float = 6, name: str | None = None) -> tuple:
    out = workspace["root"] / (name or f"run-{task}")
    config = FineTuneConfig(
        model=str(workspace["model"]),
        task=task,
        epochs=epochs,
        data=workspace["settings"],
        training=TrainingConfig(**QUICK),
    )
    return run_finetune(config, out), out


@pytest.fixture(scope="module")
def sst2_run(workspace):
    return finetune(workspace, "sst2")


# ----------------------------------------------------------------------------- losses
def test_task_losses_match_their_formulas():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=generator)
    labels = torch.tensor([0, 2, 1, 1, 0])
    loss = task_loss("classification", logits, {"labels": labels})
    assert float(loss) == pytest.approx(cross_entropy(logits.double().numpy(), labels.numpy()))

    scores, targets = torch.randn(5, 1, generator=generator), torch.rand(5, generator=generator) * 5
    loss = task_loss("regression", scores, {"labels": targets})
    expected = ((scores[:, 0].double() - targets.double()) ** 2).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)

    token_logits = torch.randn(2, 6, 4, generator=generator)
    token_labels = torch.tensor([[-100, 1, -100, 3, -100, -100], [-100, 0, 2, -100, 1, -100]])
    loss = task_loss("token_classification", token_logits, {"labels": token_labels})
    kept = (token_labels != -100).numpy()
    expected = cross_entropy(token_logits.double().numpy()[kept], token_labels.numpy()[kept])
    assert float(loss) == pytest.approx(expected)
    unlabelled = torch.full_like(token_labels, -100)
    assert float(task_loss("token_classification", token_logits, {"labels": unlabelled})) == 0.0

    qa_logits = torch.randn(3, 7, 2, generator=generator)
    starts, ends = torch.tensor([1, 0, 4]), torch.tensor([2, 0, 6])
    loss = task_loss(
        "question_answering", qa_logits, {"start_positions": starts, "end_positions": ends}
    )
    array = qa_logits.double().numpy()
    expected = (
        cross_entropy(array[..., 0], starts.numpy()) + cross_entropy(array[..., 1], ends.numpy())
    ) / 2
    assert float(loss) == pytest.approx(expected)


# ----------------------------------------------------------------------------- data
def test_collate_pads_and_keeps_labels_and_indices():
    items = [
        {
            "input_ids": np.array([2, 7, 3]),
            "token_type_ids": np.array([0, 0, 0]),
            "labels": np.array([-100, 4, -100]),
            "index": 5,
        },
        {
            "input_ids": np.array([2, 3]),
            "token_type_ids": np.array([0, 0]),
            "labels": np.array([-100, -100]),
            "index": 1,
        },
    ]
    batch = collate_features(items, pad_id=0)
    assert batch["input_ids"].tolist() == [[2, 7, 3], [2, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 4, -100], [-100, -100, -100]]
    assert batch["index"].tolist() == [5, 1]
    scores = collate_features([{**items[0], "labels": 2.5, "index": 0}], pad_id=0)
    assert scores["labels"].dtype == torch.float32


def test_sentence_and_ner_features(workspace):
    tokenizer, settings = workspace["tokenizer"], workspace["settings"]
    sst2 = load_split(get_task("sst2"), "dev", tokenizer, settings)
    first = sst2.examples[0]
    expected = [tokenizer.cls_id, *tokenizer.encode_ids([first.text])[0], tokenizer.sep_id]
    assert sst2[0]["input_ids"].tolist() == expected and sst2[0]["labels"] == first.label
    stsb = load_split(get_task("stsb"), "dev", tokenizer, settings)
    assert set(stsb[0]["token_type_ids"].tolist()) == {0, 1} and isinstance(
        stsb[0]["labels"], float
    )
    conll = load_split(get_task("conll2003"), "dev", tokenizer, settings)
    for index, sentence in enumerate(conll.examples):  # one label per word, none elsewhere
        labels = conll[index]["labels"]
        assert [CONLL_LABELS[i] for i in labels[labels != -100]] == sentence.tags


def test_qa_features_point_at_the_answer(workspace):
    tokenizer = workspace["tokenizer"]
    squad = load_split(get_task("squad"), "dev", tokenizer, workspace["settings"])
    assert len(squad) >= len(squad.examples)
    for feature, example_index, offsets in zip(
        squad.features, squad.qa_features.example_index, squad.qa_features.offsets, strict=True
    ):
        start, end = feature["start_positions"], feature["end_positions"]
        if start == 0:  # the answer is not in this window
            continue
        example = squad.examples[example_index]
        assert example.context[offsets[start][0] : offsets[end][1]] == example.answers[0][0]


def test_squad_split_by_article_and_subsets(workspace):
    task, settings = get_task("squad"), workspace["settings"]
    train, dev = load_examples(task, "train", settings), load_examples(task, "dev", settings)
    assert not {e.title for e in train} & {e.title for e in dev}
    assert len(train) + len(dev) == 80 and len(dev) == 16  # 2 of 10 articles held out
    subset = load_examples(get_task("sst2"), "train", settings, limit=30)
    again = load_examples(get_task("sst2"), "train", settings, limit=30)
    everything = load_examples(get_task("sst2"), "train", settings)
    assert [e.id for e in subset] == [e.id for e in again] and len(subset) == 30
    positions = [int(e.id) for e in subset]
    assert positions == sorted(positions) and len(everything) == 160
    with pytest.raises(TaskDataError, match="'train' and 'dev'"):
        load_examples(task, "test", settings)


# ----------------------------------------------------------------------------- fine-tuning
def test_tiny_model_learns_separable_sst2(workspace, sst2_run):
    metrics, out = sst2_run
    assert metrics["best_dev"] >= 0.95
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    scores = [record["eval/accuracy"] for record in log if "eval/accuracy" in record]
    assert len(scores) == 6  # one evaluation per epoch
    assert metrics["best_dev"] == max(scores)
    reloaded = evaluate_task(out / "model", "sst2", settings=workspace["settings"])
    assert reloaded["accuracy"] == metrics["best_dev"]
    saved = json.loads((out / "finetune_config.json").read_text())
    assert from_dict(FineTuneConfig, saved).task == "sst2"


def test_label_names_reach_transformers(workspace, sst2_run):
    transformers = pytest.importorskip("transformers")
    _, out = sst2_run
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert hf.config.id2label == {0: "negative", 1: "positive"}
    ours = load_model(out / "model")
    batch = workspace["tokenizer"](["the red cat", "blue is the mat"])
    with torch.no_grad():
        expected = hf(**batch.model_inputs()).logits
        got = ours(**batch.model_inputs()).logits
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("task", "metric", "floor"),
    [("stsb", "spearman", 0.8), ("conll2003", "entity_f1", 0.5), ("squad", "squad_f1", 50.0)],
)
def test_every_task_kind_fine_tunes(workspace, task, metric, floor):
    metrics, out = finetune(workspace, task, epochs=12 if task == "stsb" else 6)
    assert metrics["metric"] == metric and metrics["best_dev"] >= floor
    reloaded = evaluate_task(out / "model", task, settings=workspace["settings"])
    assert reloaded[metric] == pytest.approx(metrics["best_dev"], abs=1e-9)
    config = json.loads((out / "model" / "config.json").read_text())
    if task == "conll2003":
        assert [config["id2label"][str(i)] for i in range(9)] == CONLL_LABELS
    if task == "stsb":
        assert config["problem_type"] == "regression" and len(config["id2label"]) == 1


def test_finished_run_resumes_without_losing_its_best(workspace, sst2_run):
    metrics, out = sst2_run
    config = FineTuneConfig.load(out / "finetune_config.json")
    again = run_finetune(config, out)
    assert again["best_dev"] == metrics["best_dev"] and again["steps"] == metrics["steps"]
    # the training time survives the no-op rerun (it was once overwritten by the rerun's)
    assert again["seconds"] == pytest.approx(metrics["seconds"], rel=0.2)
    assert metrics["seconds"] > 0


def test_best_checkpoint_keeps_the_best_offer(tmp_path, workspace):
    model = load_model(workspace["model"], head="sequence_classification")
    best = BestCheckpoint(tmp_path / "best", "accuracy", workspace["tokenizer"])
    kept = None
    for score in (0.5, 0.7, 0.6, float("nan")):
        with torch.no_grad():
            model.head.classifier.bias.fill_(score)
        if best.offer(model, {"accuracy": score}):
            kept = model.head.classifier.bias.clone()
    assert best.score == 0.7 and best.evaluations == 4
    assert torch.equal(load_model(tmp_path / "best").head.classifier.bias, kept)
    best.save_state(tmp_path)
    restored = BestCheckpoint(None, "accuracy")
    restored.load_state(tmp_path)
    assert (restored.score, restored.evaluations) == (0.7, 4)


def test_a_checkpoint_with_other_labels_is_refused(tmp_path, workspace):
    model = load_model(
        workspace["model"], head="sequence_classification", label_names=["positive", "negative"]
    )
    save_model(model, tmp_path / "swapped", tokenizer=workspace["tokenizer"])
    with pytest.raises(TaskDataError, match="the same names in another order"):
        load_task_model(tmp_path / "swapped", get_task("sst2"))
    with pytest.raises(TaskDataError, match="needs a 'token_classification' head"):
        evaluate_task(tmp_path / "swapped", "conll2003", settings=workspace["settings"])
    with pytest.raises(ModelNotFoundError):
        load_task_model(tmp_path / "missing", get_task("sst2"))


def test_config_is_strict_and_schedules_follow_epochs():
    with pytest.raises(ConfigError, match="epoch"):
        from_dict(FineTuneConfig, {"epoch": 3})
    with pytest.raises(ConfigError, match=r"training\.lr"):
        from_dict(FineTuneConfig, {"training": {"lr": 1e-4}})
    with pytest.raises(TaskDataError, match="unknown task"):
        FineTuneConfig(task="sst-2")
    training = TrainingConfig(max_steps=77, grad_accumulation=2, progress=False)
    fitted = schedule_for_epochs(training, batches_per_epoch=10, epochs=1.5, evals_per_epoch=1)
    assert (fitted.max_steps, fitted.eval_every, fitted.checkpoint_every) == (8, 5, 5)
    twice = schedule_for_epochs(training, batches_per_epoch=10, epochs=None, evals_per_epoch=2)
    assert (twice.max_steps, twice.eval_every) == (77, 2)
