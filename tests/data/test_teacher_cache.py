"""Teacher-logit cache (distilkit.data.teacher_cache): labels once, reuses after.

The required property: a second run over the same teacher and data does not call (or even
load) the teacher. Also: logits land in the examples' order although batches are sorted by
length, the cache is keyed by both teacher and data, an interrupted labelling leaves no
entry, and a checkpoint folder's cached logits equal the teacher's own, computed directly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distilkit.data import teacher_cache as teacher_cache_module
from distilkit.data.teacher_cache import (
    TeacherCacheError,
    TeacherLogitCache,
    cached_teacher_logits,
    data_fingerprint,
    model_fingerprint,
    teacher_fingerprint,
)
from distilkit.encoder import Encoder, load
from distilkit.model.checkpoint import save_model
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel

TEXTS = [
    "the cat sat on the mat.",
    "hello world",
    "a big red dog jumped over this small blue house, and it ran to the tree!",
    "book",
    "this is that; it was read.",
    "the bird",
    "it was a small cafe with a red tree",
]
PAIRS = ["it", "the world is big", "run", "read the book and the other book", "x", "a", "bird"]


def features(texts: list[str], pairs: list[str] | None) -> np.ndarray:
    """A stand-in teacher: logits computed from each text alone."""
    second = pairs or [""] * len(texts)
    return np.array(
        [[len(t), t.count(" "), len(p)] for t, p in zip(texts, second, strict=True)], np.float32
    )


class CountingTeacher:
    def __init__(self):
        self.calls = 0
        self.texts_seen = 0

    def __call__(self, texts: list[str], pairs: list[str] | None) -> np.ndarray:
        self.calls += 1
        self.texts_seen += len(texts)
        return features(texts, pairs)


@pytest.mark.parametrize("pairs", [None, PAIRS])
def test_second_run_does_not_call_the_teacher(tmp_path, pairs):
    teacher = CountingTeacher()
    first = TeacherLogitCache(tmp_path).get_or_compute("t1", TEXTS, pairs, teacher, batch_size=3)
    assert teacher.calls == 3 and teacher.texts_seen == len(TEXTS)  # batches of 3, 3, 1
    np.testing.assert_array_equal(first, features(TEXTS, pairs))  # back in the original order
    again = TeacherLogitCache(tmp_path).get_or_compute("t1", TEXTS, pairs, teacher, batch_size=3)
    assert teacher.calls == 3  # not called again
    assert isinstance(again, np.memmap) and again.dtype == np.float32
    np.testing.assert_array_equal(again, first)


def test_batches_are_sorted_by_length(tmp_path):
    seen: list[list[int]] = []

    def teacher(texts, pairs):
        seen.append([len(t) for t in texts])
        return features(texts, pairs)

    TeacherLogitCache(tmp_path).get_or_compute("t", TEXTS, None, teacher, batch_size=2)
    flat = [n for batch in seen for n in batch]
    assert flat == sorted(len(t) for t in TEXTS)


def test_cache_is_keyed_by_teacher_and_data(tmp_path):
    teacher = CountingTeacher()
    cache = TeacherLogitCache(tmp_path)
    cache.get_or_compute("teacher-a", TEXTS, None, teacher, batch_size=100)
    cache.get_or_compute("teacher-b", TEXTS, None, teacher, batch_size=100)
    edited = [*TEXTS[:-1], TEXTS[-1] + "!"]
    cache.get_or_compute("teacher-a", edited, None, teacher, batch_size=100)
    cache.get_or_compute("teacher-a", TEXTS, PAIRS, teacher, batch_size=100)
    assert teacher.calls == 4
    assert len(list(tmp_path.glob("*.npy"))) == 4 and len(list(tmp_path.glob("*.json"))) == 4
    cache.get_or_compute("teacher-b", TEXTS, None, teacher, batch_size=100)
    assert teacher.calls == 4
    assert data_fingerprint(["ab", "c"]) != data_fingerprint(["a", "bc"])
    assert data_fingerprint(["a"], ["b"]) != data_fingerprint(["a"], None)


def test_interrupted_labelling_leaves_no_entry(tmp_path):
    class Crash(RuntimeError):
        pass

    def teacher(texts, pairs):
        if len(texts) == 3 and teacher.started:
            raise Crash("killed")
        teacher.started = True
        return features(texts, pairs)

    teacher.started = False
    with pytest.raises(Crash):
        TeacherLogitCache(tmp_path).get_or_compute("t", TEXTS, None, teacher, batch_size=3)
    assert list(tmp_path.iterdir()) == []  # no entry and no temporary file
    counting = CountingTeacher()
    TeacherLogitCache(tmp_path).get_or_compute("t", TEXTS, None, counting, batch_size=3)
    assert counting.calls == 3


def test_bad_teacher_output_is_a_clear_error(tmp_path):
    cache = TeacherLogitCache(tmp_path)
    with pytest.raises(TeacherCacheError, match=r"expected \(texts, num_labels\)"):
        cache.get_or_compute("t", TEXTS, None, lambda t, p: np.zeros(len(t)), batch_size=2)
    with pytest.raises(TeacherCacheError, match="must not change"):
        cache.get_or_compute(
            "t", TEXTS, None, lambda t, p: np.zeros((len(t), len(t))), batch_size=3
        )
    with pytest.raises(TeacherCacheError, match="one per text"):
        cache.get_or_compute("t", TEXTS, PAIRS[:2], CountingTeacher())
    with pytest.raises(TeacherCacheError, match="not a single string"):
        cache.get_or_compute("t", "a text", None, CountingTeacher())
    with pytest.raises(TeacherCacheError, match="no texts"):
        cache.get_or_compute("t", [], None, CountingTeacher())
    assert not list(tmp_path.glob("*.npy"))


def test_a_corrupt_entry_is_labelled_afresh(tmp_path):
    cache = TeacherLogitCache(tmp_path)
    cache.get_or_compute("t", TEXTS, None, CountingTeacher())
    cache.path("t", data_fingerprint(TEXTS)).write_bytes(b"not numpy")
    teacher = CountingTeacher()
    np.testing.assert_array_equal(
        cache.get_or_compute("t", TEXTS, None, teacher), features(TEXTS, None)
    )
    assert teacher.calls == 1


# ----------------------------------------------------------------------------- real teachers
def classifier(seed: int) -> TransformerModel:
    config = ModelConfig(
        vocab_size=99,
        hidden_size=32,
        num_heads=4,
        intermediate_size=37,
        num_layers=2,
        max_position_embeddings=64,
        head="sequence_classification",
        num_labels=3,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    torch.manual_seed(seed)
    return TransformerModel(config)


def test_folder_teacher_is_loaded_and_run_once(tmp_path, tiny_tokenizer, monkeypatch):
    folder = save_model(classifier(1), tmp_path / "teacher", tokenizer=tiny_tokenizer)
    expected = load(folder).logits(TEXTS, PAIRS)  # direct, unsorted batches
    calls = []
    original = Encoder.logits

    def counting(self, texts, pairs=None, batch_size=64):
        calls.append(len(texts))
        return original(self, texts, pairs, batch_size)

    monkeypatch.setattr(Encoder, "logits", counting)
    cache_dir = tmp_path / "cache"
    first = cached_teacher_logits(folder, TEXTS, PAIRS, cache_dir, batch_size=4, progress=False)
    np.testing.assert_allclose(first, expected, atol=1e-5)
    assert calls == [4, 3]

    def refuse(*args, **kwargs):
        raise AssertionError("the teacher was loaded although its logits are cached")

    monkeypatch.setattr(teacher_cache_module, "load", refuse)
    second = cached_teacher_logits(folder, TEXTS, PAIRS, cache_dir, batch_size=4, progress=False)
    assert calls == [4, 3]
    np.testing.assert_array_equal(second, first)
    monkeypatch.undo()

    save_model(classifier(2), folder, tokenizer=tiny_tokenizer)  # new weights, same folder
    third = cached_teacher_logits(folder, TEXTS, PAIRS, cache_dir, progress=False)
    np.testing.assert_allclose(third, load(folder).logits(TEXTS, PAIRS), atol=1e-5)
    assert not np.allclose(third, first)


def test_teacher_without_classifier_head_is_refused(tmp_path, tiny_tokenizer):
    model = classifier(1)
    model.config.head = None
    bare = TransformerModel(model.config)
    folder = save_model(bare, tmp_path / "bare", tokenizer=tiny_tokenizer)
    with pytest.raises(TeacherCacheError, match="no sequence-classification head"):
        cached_teacher_logits(folder, TEXTS, None, tmp_path / "cache", progress=False)


def test_fingerprints_follow_the_bytes(tmp_path, tiny_tokenizer):
    folder = save_model(classifier(1), tmp_path / "teacher", tokenizer=tiny_tokenizer)
    key = teacher_fingerprint(folder)
    assert teacher_fingerprint(folder) == key
    assert teacher_fingerprint(folder, max_length=32) != key
    (folder / "vocab.txt").write_text((folder / "vocab.txt").read_text() + "extra\n")
    assert teacher_fingerprint(folder) != key
    (folder / "model.safetensors").unlink()
    with pytest.raises(TeacherCacheError, match="holds no weights"):
        teacher_fingerprint(folder)
    model = classifier(3)
    before = model_fingerprint(model)
    assert model_fingerprint(classifier(3)) == before
    with torch.no_grad():
        model.head.classifier.bias[0] += 1e-3
    assert model_fingerprint(model) != before
