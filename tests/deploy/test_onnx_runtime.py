"""The ONNX file as a complete sentence encoder: the folder's sentence-transformers recipe
(pooling, Dense, Normalize) exported into the graph gives eager's vectors for padded
batches and single texts, a plain onnxruntime session fed only the tokenizer's ids
reproduces them, and the numpy-only wrapper's pieces (pooling, threads) follow their
references."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TEXTS

import distilkit
from distilkit.cli import main as cli
from distilkit.deploy.export import export_onnx
from distilkit.deploy.onnx_runtime import (
    load_onnx,
    other_threads_running,
    physical_cores,
    pool_numpy,
)
from distilkit.deploy.runner import ModelRunner
from distilkit.model.st_folder import POOLING_MODES, pool_mode

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
st = pytest.importorskip("sentence_transformers")
models = pytest.importorskip("sentence_transformers.models")

TEXTS = [*TINY_TEXTS, "the dog ran to the house and read a book in the tree, and it was red.", "a"]
RECIPES = {
    "mean+normalize": ("mean", ("normalize",)),
    "cls": ("cls", ()),
    "max+dense+normalize": ("max", ("dense", "normalize")),
    "cls,mean+dense": (("cls", "mean"), ("dense",)),
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def build(recipe: str, hf_checkpoint: Callable[..., Path], tmp_path_factory) -> tuple[Path, Path]:
    """A sentence-transformers folder built with its own classes, and its ONNX export."""
    pooling, stages = RECIPES[recipe]
    width = 32 * (len(pooling) if isinstance(pooling, tuple) else 1)
    torch.manual_seed(0)
    built = [
        models.Normalize()
        if s == "normalize"
        else models.Dense(width, 17, activation_function=torch.nn.Tanh())
        for s in stages
    ]
    out = tmp_path_factory.mktemp("st")
    transformer = models.Transformer(str(hf_checkpoint("BertModel")), max_seq_length=40)
    modules = [transformer, models.Pooling(32, pooling_mode=pooling), *built]
    st.SentenceTransformer(modules=modules, device="cpu").save(str(out / "folder"))
    path = out / "model.onnx"
    report = export_onnx(out / "folder", path, check_texts=TEXTS, verbose=False)
    assert report.max_abs_diff["sentence_embedding"] < 1e-5
    return out / "folder", path


@pytest.fixture(scope="module", params=list(RECIPES))
def exported(request, hf_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    return build(request.param, hf_checkpoint, tmp_path_factory)


@pytest.fixture(scope="module")
def mean_normalize(hf_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    return build("mean+normalize", hf_checkpoint, tmp_path_factory)


def test_the_graph_holds_the_recipe_padded_and_single(exported) -> None:
    folder, path = exported
    eager = distilkit.load(folder)
    onnx_encoder = distilkit.load(path)
    expected = eager.embed(TEXTS, batch_size=3)
    reference = st.SentenceTransformer(str(folder), device="cpu").encode(TEXTS)
    assert np.abs(expected - reference).max() < 1e-5  # eager is the reference's twin
    assert onnx_encoder.dim == expected.shape[1]
    assert np.abs(onnx_encoder.embed(TEXTS, batch_size=3) - expected).max() < 1e-5
    assert np.abs(onnx_encoder.embed(TEXTS, batch_size=64) - expected).max() < 1e-5
    for index, text in enumerate(TEXTS):  # single texts: no padding at all
        assert np.abs(onnx_encoder.embed(text)[0] - expected[index]).max() < 1e-5
    # the token vectors stay available, and other poolings run in numpy; the graph's Dense
    # layers follow its own pooling only, so another pooling on a recipe with Dense is an
    # error (eager runs the Dense layers after the new pooling)
    has_dense = bool(onnx_encoder.recipe.get("dense_layers"))
    for pooling in ("mean", "cls", "max", "last"):
        if has_dense:
            with pytest.raises(ValueError, match="Dense layers out of reach"):
                onnx_encoder.embed(TEXTS, pooling=pooling)
            continue
        for normalize in (None, True, False):
            want = eager.embed(TEXTS, pooling=pooling, normalize=normalize)
            got = onnx_encoder.embed(TEXTS, pooling=pooling, normalize=normalize, batch_size=3)
            assert np.abs(got - want).max() < 1e-5, (pooling, normalize)


def test_a_plain_onnxruntime_session_with_only_the_tokenizer(exported) -> None:
    """What any onnxruntime user does: the folder's tokenizer.json, padding, one run."""
    from tokenizers import Tokenizer

    folder, path = exported
    expected = distilkit.load(folder).embed(TEXTS)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0)
    tokenizer.enable_truncation(40)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    encodings = tokenizer.encode_batch(TEXTS)
    feeds = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
    (vectors,) = session.run(["sentence_embedding"], feeds)
    assert np.abs(vectors - expected).max() < 1e-5
    (hidden,) = session.run(["last_hidden_state"], feeds)
    features = distilkit.load(folder).features(TEXTS[0])
    assert np.abs(hidden[0, : len(features)] - features).max() < 1e-5


def test_int8_file_runs_the_recipe_too(mean_normalize, tmp_path: Path) -> None:
    folder, _ = mean_normalize
    path = tmp_path / "model.int8.onnx"
    export_onnx(folder, path, int8=True, check_texts=TEXTS, verbose=False)
    expected = distilkit.load(folder).embed(TEXTS)
    int8 = load_onnx(path)
    assert int8.precision == "int8"
    vectors = int8.embed(TEXTS, batch_size=3)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # Normalize in the graph
    assert (vectors * expected).sum(1).mean() > 0.98  # cosine to fp32 (random tiny weights)


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_numpy_pooling_follows_the_torch_pooling(mode: str) -> None:
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(4, 7, 5, generator=generator)
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] + [0] * 6, [1] * 5 + [0] * 2])
    expected = pool_mode(hidden, mask, mode).numpy()
    assert np.abs(pool_numpy(hidden.numpy(), mask.numpy(), mode) - expected).max() < 1e-6


def test_thread_settings_follow_the_machine(mean_normalize) -> None:
    _, path = mean_normalize
    cores = physical_cores()
    assert 1 <= cores <= len(__import__("os").sched_getaffinity(0))
    assert load_onnx(path).threads == cores
    assert load_onnx(path, num_threads=1).threads == 1
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:  # another thread in the process: idle onnxruntime workers must not spin
        assert other_threads_running()
        assert load_onnx(path).spinning is False
        assert load_onnx(path, spinning=True).spinning is True
    finally:
        stop.set()
        worker.join()


def test_the_embed_command_runs_an_onnx_files_own_recipe(exported, tmp_path) -> None:
    """`distilkit embed model.onnx` without --pooling runs the graph's recipe (its Dense
    layers too) and writes the checkpoint folder's vectors."""
    folder, path = exported
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    output = tmp_path / "vectors.npy"
    argv = ["embed", str(path), "--input", str(texts), "--output", str(output), "--no-progress"]
    assert cli.main(argv) == 0
    expected = distilkit.load(folder).embed(TEXTS)
    assert np.abs(np.load(output) - expected).max() < 1e-5


def test_the_folders_truncate_dim_travels_in_the_file(mean_normalize, tmp_path) -> None:
    """A folder saved with ``truncate_dim`` exports it: the ONNX wrapper, the embed command
    and the server's runner cut the vectors where eager does (renormalised when
    normalised), and ``dimensions`` picks another width as eager's does."""
    source, _ = mean_normalize
    folder = tmp_path / "cut"
    shutil.copytree(source, folder)
    settings_path = folder / "config_sentence_transformers.json"
    settings = json.loads(settings_path.read_text())
    settings_path.write_text(json.dumps(settings | {"truncate_dim": 9}))
    path = tmp_path / "cut.onnx"
    export_onnx(folder, path, check_texts=TEXTS, verbose=False)
    eager, onnx_encoder = distilkit.load(folder), load_onnx(path)
    assert onnx_encoder.truncate_dim == 9 and ModelRunner.load(path).default_dimensions == 9
    expected = eager.embed(TEXTS)
    assert expected.shape == (len(TEXTS), 9)
    assert np.abs(onnx_encoder.embed(TEXTS, batch_size=3) - expected).max() < 1e-5
    for width, normalize in ((5, None), (32, None), (5, False), (9, True)):
        want = eager.embed(TEXTS, dimensions=width, normalize=normalize)
        got = onnx_encoder.embed(TEXTS, dimensions=width, normalize=normalize)
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-5, (width, normalize)
    with pytest.raises(ValueError, match="between 1 and 32"):
        onnx_encoder.embed(TEXTS, dimensions=33)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    output = tmp_path / "vectors.npy"
    argv = ["embed", str(path), "--input", str(texts), "--output", str(output), "--no-progress"]
    assert cli.main([*argv, "--dimensions", "5"]) == 0
    assert np.abs(np.load(output) - eager.embed(TEXTS, dimensions=5)).max() < 1e-5
