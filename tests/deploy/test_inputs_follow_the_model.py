"""Every inference path outside the trainer feeds the model on the model's own device:
the model is put on PyTorch's ``meta`` device (shapes only, no data), its first call
records the devices of the tensors it was given and stops the run. Without this a model
loaded on a GPU (``--device cuda``, or ``auto`` on a GPU machine) is fed CPU tensors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from cmlm_helpers import tiny_seq2seq

from distilkit.deploy.pipelines import answer, classify, ner
from distilkit.encoder import load
from distilkit.methods.cmlm.job import decode_texts
from distilkit.methods.static.job import entry_vectors
from distilkit.model.bilstm import BiLSTMClassifier, BiLSTMConfig
from distilkit.model.checkpoint import load_model
from distilkit.tasks.features import predict


class Stop(Exception):
    """Raised by the recording call, once the inputs' devices are known."""


def recorder(devices: list[str]) -> Callable:
    def call(*args, **kwargs):
        devices.extend(
            str(value.device) for value in [*args, *kwargs.values()] if torch.is_tensor(value)
        )
        raise Stop

    return call


def inputs_of(run: Callable[[], object], devices: list[str]) -> list[str]:
    with pytest.raises(Stop):
        run()
    assert devices, "the model was never called"
    return sorted(set(devices))


@pytest.mark.parametrize(
    ("architecture", "pipeline"),
    [
        ("BertForSequenceClassification", lambda m: classify(m, ["the cat", "a dog"])),
        ("BertForTokenClassification", lambda m: ner(m, "the cat sat in the house")),
        ("BertForQuestionAnswering", lambda m: answer(m, "who sat?", "the cat sat down.")),
    ],
)
def test_pipelines_feed_the_model_on_its_device(hf_checkpoint, architecture, pipeline):
    encoder = load(hf_checkpoint(architecture), device="cpu").to("meta")
    devices: list[str] = []
    encoder.model.forward = recorder(devices)
    assert inputs_of(lambda: pipeline(encoder), devices) == ["meta"]


def test_task_scoring_feeds_the_model_on_its_device(hf_checkpoint):
    model = load_model(hf_checkpoint("BertForSequenceClassification")).to("meta")
    devices: list[str] = []
    model.forward = recorder(devices)
    batch = {
        "input_ids": torch.tensor([[2, 7, 3]]),
        "attention_mask": torch.ones(1, 3, dtype=torch.long),
        "token_type_ids": torch.zeros(1, 3, dtype=torch.long),
        "index": torch.tensor([0]),
    }
    assert inputs_of(lambda: predict(model, None, [batch]), devices) == ["meta"]


def test_static_distillation_feeds_the_teacher_on_its_device(hf_checkpoint):
    teacher = load(hf_checkpoint("BertModel"), head=None, device="cpu").to("meta")
    devices: list[str] = []
    teacher.model.backbone.forward = recorder(devices)
    assert inputs_of(lambda: entry_vectors(teacher, [[5], [6, 7]]), devices) == ["meta"]


def test_generation_feeds_the_student_on_its_device(tiny_tokenizer):
    model = tiny_seq2seq().to("meta")
    devices: list[str] = []
    model.encode = recorder(devices)
    run = lambda: decode_texts(model, tiny_tokenizer, [[5, 6]], 2, 4, 1.0)  # noqa: E731
    assert inputs_of(run, devices) == ["meta"]


def test_a_bilstm_student_is_fed_on_its_device(tiny_tokenizer):
    config = BiLSTMConfig(vocab_size=tiny_tokenizer.vocab_size, embedding_dim=8, hidden_size=5)
    model = BiLSTMClassifier(config, tiny_tokenizer).to("meta")
    devices: list[str] = []
    model.forward = recorder(devices)
    assert inputs_of(lambda: model.predict_logits(["the cat", "a dog"]), devices) == ["meta"]
