"""`distilkit bench --device`: eager fp32, bf16 and the reference on the chosen device
(checked on PyTorch's ``meta`` device: shapes only, no data), int8, ONNX and early exit on
the CPU; the table, the notes and the JSON name the device; a CPU run's table keeps its
columns. The CUDA test runs where there is a GPU."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_TEXTS

import distilkit
from distilkit.deploy.bench import BENCH_COLUMNS, device_notes, run_bench
from distilkit.deploy.bench_embed import (
    EMBED_COLUMNS,
    ENCODER_MODES,
    REFERENCE_MODE,
    build_embed_engines,
    run_embed_bench,
)
from distilkit.deploy.bench_engines import (
    DEVICE_MODES,
    MODES,
    BenchSettings,
    _torch_step,
    build_engines,
)
from distilkit.model.tokenizer import Batch

pytest.importorskip("onnxruntime")

TEXTS = [*TINY_TEXTS, "the dog ran to the house and read a book in the tree.", "red bird"]
LABELS = np.arange(len(TEXTS)) % 3
FAST = {"repeats": 1, "latency_texts": 2, "ceiling_seconds": 0.05, "batch_size": 4}


@pytest.fixture(scope="module")
def classifier(hf_checkpoint):
    return hf_checkpoint("BertForSequenceClassification")


@pytest.fixture(scope="module")
def encoder_folder(hf_checkpoint, tmp_path_factory):
    """A tiny sentence-transformers folder (mean pooling, Normalize)."""
    st = pytest.importorskip("sentence_transformers")
    models = pytest.importorskip("sentence_transformers.models")
    out = tmp_path_factory.mktemp("st") / "encoder"
    transformer = models.Transformer(str(hf_checkpoint("BertModel")), max_seq_length=40)
    modules = [transformer, models.Pooling(32, pooling_mode="mean"), models.Normalize()]
    st.SentenceTransformer(modules=modules, device="cpu").save(str(out))
    return out


def test_the_device_reaches_every_eager_classifier_mode_and_the_peer(classifier, tmp_path):
    pytest.importorskip("transformers")
    engines = build_engines(
        {"teacher": classifier}, MODES, BenchSettings(device="meta"), tmp_path, lambda _: None
    )
    placed = {engine.mode.split(" (")[0]: engine.device for engine in engines}
    # (the tiny checkpoint has no early-exit branches: those modes are skipped)
    assert placed == {
        "transformers fp32": "meta",
        "eager fp32": "meta",
        "bf16": "meta",
        "eager int8": "cpu",
        "onnx fp32": "cpu",
        "onnx int8": "cpu",
    }


def test_the_step_sends_the_inputs_to_the_device_and_the_logits_home():
    """``_torch_step`` on a model that records where its inputs are."""
    seen: list[set[str]] = []

    class Recorder(torch.nn.Module):
        def forward(self, **inputs: torch.Tensor) -> SimpleNamespace:
            seen.append({value.device.type for value in inputs.values()})
            return SimpleNamespace(logits=torch.ones(2, 3, dtype=torch.bfloat16))

    ids = torch.tensor([[2, 7, 3], [2, 3, 0]])
    batch = Batch(input_ids=ids, attention_mask=(ids > 0).long(), token_type_ids=ids * 0)
    logits = _torch_step(Recorder(), torch.device("meta"))(batch)
    assert seen == [{"meta"}]
    assert isinstance(logits, np.ndarray) and logits.dtype == np.float32


def test_the_device_reaches_every_eager_encoder_mode_and_the_reference(encoder_folder, tmp_path):
    engines = build_embed_engines(
        {"tiny": encoder_folder},
        ENCODER_MODES,
        BenchSettings(device="meta"),
        tmp_path,
        lambda _: None,
    )
    placed = {engine.mode: engine.device for engine in engines}
    on_device = {REFERENCE_MODE, *DEVICE_MODES}
    assert placed == {mode: "meta" if mode in on_device else "cpu" for mode in placed}
    assert set(placed) == {REFERENCE_MODE, *ENCODER_MODES}


def test_a_cpu_run_names_its_device_and_keeps_its_columns(classifier, encoder_folder, tmp_path):
    result = run_bench(
        {"teacher": classifier},
        ["eager fp32", "onnx fp32"],
        TEXTS,
        LABELS,
        BenchSettings(**FAST, peer=False, device="cpu"),
        work_dir=tmp_path,
        say=lambda _: None,
    )
    assert (
        result.table().splitlines()[0].split()
        == " ".join(header for header, _, _ in BENCH_COLUMNS).split()
    )
    assert not any(note.startswith("device:") for note in result.notes)
    saved = json.loads(result.save_json(tmp_path / "bench.json").read_text())
    assert saved["settings"]["device"] == "cpu"
    assert {row["device"] for row in saved["rows"]} == {"cpu"}
    assert set(saved["ceilings_gflops"]) == {"fp32", "bf16"}  # the CPU's alone

    embedded = run_embed_bench(
        {"tiny": encoder_folder},
        ["eager fp32"],
        TEXTS,
        BenchSettings(**FAST, device="cpu"),
        say=lambda _: None,
    )
    assert {row["device"] for row in embedded.rows} == {"cpu"}
    header = embedded.table().splitlines()[0]
    assert header.split() == " ".join(header for header, _, _ in EMBED_COLUMNS).split()
    assert "device" not in header and "tokens/s" in header
    tokenizer = distilkit.load(encoder_folder, device="cpu").tokenizer
    tokens = sum(min(len(ids) + 2, tokenizer.max_length) for ids in tokenizer.encode_ids(TEXTS))
    for row in embedded.rows:  # tokens/s: real tokens (with [CLS] and [SEP]) per second
        assert row["tokens_per_s"] == pytest.approx(tokens * row["embeddings_per_s"] / len(TEXTS))


def test_a_device_run_names_its_device_in_the_table_and_notes(classifier, tmp_path):
    result = run_bench(
        {"teacher": classifier},
        ["eager fp32", "onnx fp32"],
        TEXTS,
        LABELS,
        BenchSettings(**FAST | {"ceiling_seconds": 0}, peer=False, device="cpu"),
        work_dir=tmp_path,
        say=lambda _: None,
    )
    for row in result.rows:  # as a GPU run records them
        row["device"] = "cuda:0" if row["mode"] == "eager fp32" else "cpu"
    lines = result.table().splitlines()
    assert lines[0].split()[:2] == ["engine", "device"]
    assert "cuda:0" in lines[2] and lines[3].split(" / ")[1].split()[2] == "cpu"
    markdown = result.table(markdown=True).splitlines()
    assert markdown[0].startswith("| engine | device |")
    engines = [
        SimpleNamespace(mode=mode, device=device, dtype="fp32")
        for mode, device in (("eager fp32", "cuda:0"), ("bf16", "cuda:0"), ("onnx int8", "cpu"))
    ]
    [note] = device_notes(torch.device("cuda:0"), engines, threads=3)
    assert note.startswith("device: bf16, eager fp32 ran on cuda:0")
    assert "onnx int8 are CPU modes, run on the CPU (3 threads)" in note


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.cuda
def test_bench_on_cuda_agrees_with_the_cpu_and_measures_the_gpu(
    classifier, encoder_folder, tmp_path
):
    settings = BenchSettings(**FAST, device="cuda")
    result = run_bench(
        {"teacher": classifier},
        ["eager fp32", "bf16", "eager int8"],
        TEXTS,
        LABELS,
        settings,
        work_dir=tmp_path,
        say=lambda _: None,
    )
    rows = {row["mode"]: row for row in result.rows}
    gpu = str(torch.device("cuda", torch.cuda.current_device()))
    assert rows["transformers fp32"]["device"] == rows["eager fp32"]["device"] == gpu
    assert rows["eager int8"]["device"] == "cpu"
    assert rows["transformers fp32"]["agreement"] == 1.0  # same weights, same device
    roof = result.ceilings_gflops[f"{gpu} fp32"]
    assert rows["eager fp32"]["ceiling_fraction"] == pytest.approx(
        rows["eager fp32"]["gflops_per_s"] / roof
    )
    assert rows["eager int8"]["ceiling_fraction"] == pytest.approx(
        rows["eager int8"]["gflops_per_s"] / result.ceilings_gflops["fp32"]
    )
    [note] = [note for note in result.notes if note.startswith("device:")]
    assert "bf16, eager fp32, transformers fp32 ran on " + gpu in note
    assert "eager int8 are CPU modes" in note
    embedded = run_embed_bench(
        {"tiny": encoder_folder}, ["eager fp32", "onnx fp32"], TEXTS, settings, say=print
    )
    by_mode = {row["mode"]: row for row in embedded.rows}
    assert by_mode[REFERENCE_MODE]["device"] == by_mode["eager fp32"]["device"] == gpu
    assert by_mode[REFERENCE_MODE]["cosine_min"] > 0.999  # to our eager fp32 on the GPU
    assert by_mode["onnx fp32"]["device"] == "cpu" and by_mode["onnx fp32"]["cosine_min"] > 0.999
