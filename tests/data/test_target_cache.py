"""The teacher-target cache: rows equal the teacher run on each sequence alone, keys follow
teacher, corpus and settings, fills resume after a kill, torn files are rebuilt."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from distill_helpers import random_teacher, tiny_tokenizer, write_text_corpus

from distilkit.data import target_cache
from distilkit.data.batching import IndexedSequences
from distilkit.data.corpus import CorpusSettings, build_corpus
from distilkit.data.target_cache import (
    TargetCache,
    TargetCacheError,
    TargetCollate,
    complete_targets,
    corpus_fingerprint,
    fill_target_cache,
    target_cache_key,
)
from distilkit.data.teacher_cache import model_fingerprint


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("targets")
    tokenizer = tiny_tokenizer(root / "vocab", max_length=24)
    text = write_text_corpus(root / "text.txt", paragraphs=45, seed=3)
    settings = CorpusSettings(max_len=24, min_tokens=3, unit="sentence", pack=False)
    corpus = build_corpus([text], tokenizer, settings, cache_dir=root / "cache", progress=False)
    teacher = random_teacher(num_layers=3, seed=5, head=None)
    return tokenizer, corpus, teacher


def teacher_last(teacher):
    @torch.inference_mode()
    def run(input_ids, attention_mask):
        return teacher.backbone(input_ids, attention_mask).last_hidden_state

    return run


def alone(teacher, sequence) -> np.ndarray:
    """The reference: the teacher on one sequence, no padding, ``(length, hidden)``."""
    ids = torch.as_tensor(np.asarray(sequence, dtype=np.int64))[None]
    with torch.inference_mode():
        return teacher.backbone(ids, torch.ones_like(ids)).last_hidden_state[0].numpy()


def open_cache(folder: Path, corpus, teacher, key: str = "k" * 64, **options) -> TargetCache:
    return TargetCache.open(folder, key, corpus.offsets, teacher.config.hidden_size, **options)


def test_a_filled_cache_holds_the_teachers_last_hidden_state_of_every_sequence(setup, tmp_path):
    _, corpus, teacher = setup
    cache = open_cache(tmp_path, corpus, teacher)
    assert cache.num_done == 0 and cache.num_sequences == len(corpus) > 40
    assert fill_target_cache(cache, corpus, teacher_last(teacher), 0, 7, False) == len(corpus)
    assert fill_target_cache(cache, corpus, teacher_last(teacher), 0, 7, False) == 0
    reopened = open_cache(tmp_path, corpus, teacher)
    assert reopened.num_done == len(corpus)
    rows = reopened.lookup(range(len(corpus)))
    for index in range(len(corpus)):
        assert rows[index].shape == (len(corpus[index]), 32)
        np.testing.assert_allclose(rows[index], alone(teacher, corpus[index]), atol=1e-5)
    # float32 on disk: the bytes the teacher gave
    assert reopened.full_bytes == corpus.num_tokens * 32 * 4
    hidden = np.load(reopened.folder / "hidden.npy", mmap_mode="r")
    assert hidden.dtype == np.float32 and hidden.shape == (corpus.num_tokens, 32)


def test_the_key_follows_teacher_corpus_and_settings(setup, tmp_path):
    tokenizer, corpus, teacher = setup
    corpus_key = corpus_fingerprint(corpus)
    key = target_cache_key(model_fingerprint(teacher), corpus_key, 24, "fp32")
    changed = random_teacher(num_layers=3, seed=5, head=None)
    assert model_fingerprint(changed) == model_fingerprint(teacher)
    with torch.no_grad():
        changed.backbone.layers[1].attention.query.weight[0, 0] += 1e-3
    assert target_cache_key(model_fingerprint(changed), corpus_key, 24, "fp32") != key
    assert target_cache_key(model_fingerprint(teacher), corpus_key, 32, "fp32") != key
    assert target_cache_key(model_fingerprint(teacher), corpus_key, 24, "bf16") != key
    assert target_cache_key(model_fingerprint(teacher), corpus_key, 24, "fp32", "float16") != key
    # another corpus (one more paragraph) has other ids, so another key
    text = write_text_corpus(tmp_path / "other.txt", paragraphs=46, seed=3)
    settings = CorpusSettings(max_len=24, min_tokens=3, unit="sentence", pack=False)
    other = build_corpus([text], tokenizer, settings, cache_dir=tmp_path / "c", progress=False)
    assert corpus_fingerprint(other) != corpus_key
    # a changed teacher is never served the old teacher's rows: its key opens an empty entry
    cache = open_cache(tmp_path, corpus, teacher, key)
    fill_target_cache(cache, corpus, teacher_last(teacher), 0, 8, False)
    changed_key = target_cache_key(model_fingerprint(changed), corpus_key, 24, "fp32")
    fresh = open_cache(tmp_path, corpus, changed, changed_key)
    assert fresh.folder != cache.folder and fresh.num_done == 0
    assert fresh.lookup(range(len(corpus))) == [None] * len(corpus)


def test_a_killed_fill_marks_only_flushed_rows_done_and_resumes_to_the_same_cache(
    setup, tmp_path, monkeypatch
):
    _, corpus, teacher = setup
    monkeypatch.setattr(target_cache, "FLUSH_EVERY", 3)
    whole = open_cache(tmp_path / "whole", corpus, teacher)
    fill_target_cache(whole, corpus, teacher_last(teacher), 0, 4, False)
    calls = []

    def dies_at_batch_six(input_ids, attention_mask):
        calls.append(len(input_ids))
        if len(calls) == 6:
            raise KeyboardInterrupt  # the run is killed while batch 6 is computed
        return teacher_last(teacher)(input_ids, attention_mask)

    killed = open_cache(tmp_path / "killed", corpus, teacher)
    with pytest.raises(KeyboardInterrupt):
        fill_target_cache(killed, corpus, dies_at_batch_six, 0, 4, False)
    # 5 batches were written, 3 of them flushed and marked done; the other 2 are not claimed
    after_kill = open_cache(tmp_path / "killed", corpus, teacher)
    assert after_kill.num_done == 12
    computed = fill_target_cache(after_kill, corpus, teacher_last(teacher), 0, 4, False)
    assert computed == len(corpus) - 12
    for name in ("hidden.npy", "done.npy", "checksums.npy"):
        resumed = np.load(tmp_path / "killed" / whole.folder.name / name)
        np.testing.assert_array_equal(resumed, np.load(whole.folder / name))


def test_torn_files_are_rebuilt_and_a_damaged_row_is_computed_again(setup, tmp_path):
    tokenizer, corpus, teacher = setup
    run = teacher_last(teacher)
    cache = open_cache(tmp_path, corpus, teacher)
    fill_target_cache(cache, corpus, run, 0, 8, False)
    cache.close()
    folder = cache.folder

    # a truncated data file (a copy or a disk that ran out) is not trusted
    with open(folder / "hidden.npy", "r+b") as handle:
        handle.truncate((folder / "hidden.npy").stat().st_size - 100)
    rebuilt = open_cache(tmp_path, corpus, teacher)
    assert rebuilt.rebuilt.startswith("hidden.npy is") and rebuilt.num_done == 0
    fill_target_cache(rebuilt, corpus, run, 0, 8, False)
    rebuilt.close()

    # a done file with garbage in it, a done file cut short, an unreadable meta.json
    done = np.load(folder / "done.npy")
    done[3] = 7
    np.save(folder / "done.npy", done)
    assert "done.npy holds values" in open_cache(tmp_path, corpus, teacher).rebuilt
    fill_target_cache(open_cache(tmp_path, corpus, teacher), corpus, run, 0, 8, False)
    np.save(folder / "done.npy", np.ones(len(corpus) - 1, dtype=np.uint8))
    assert open_cache(tmp_path, corpus, teacher).rebuilt.startswith("done.npy holds")
    (folder / "meta.json").write_text("{", "utf-8")
    assert "meta.json" in open_cache(tmp_path, corpus, teacher).rebuilt
    with pytest.raises(TargetCacheError, match="missing"):
        open_cache(tmp_path / "nowhere", corpus, teacher, writable=False)

    # one row altered on disk: only that sequence is a miss, computed live and rewritten
    cache = open_cache(tmp_path, corpus, teacher)
    fill_target_cache(cache, corpus, run, 0, 8, False)
    hidden = np.load(folder / "hidden.npy", mmap_mode="r+")
    start = int(corpus.offsets[5])
    hidden[start + 1, 7] += 0.5
    hidden.flush()
    del hidden
    cache = open_cache(tmp_path, corpus, teacher)
    assert cache.rebuilt is None
    collate = TargetCollate(tokenizer.pad_id, cache)
    dataset = IndexedSequences(corpus)
    batch = collate([dataset[i] for i in (4, 5, 6)])
    assert batch["teacher_missing"] == [1]
    assert batch["sequence_index"].tolist() == [4, 5, 6]
    targets = complete_targets(cache, batch, run)
    live = run(batch["input_ids"], batch["attention_mask"])
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(targets[mask], live[mask], atol=1e-5, rtol=0)
    cache.flush()
    np.testing.assert_allclose(cache.lookup([5])[0], alone(teacher, corpus[5]), atol=1e-5)


def test_a_batch_with_nothing_cached_runs_the_teacher_as_without_a_cache(setup, tmp_path):
    tokenizer, corpus, teacher = setup
    train, _ = corpus.split(0.2, seed=0)
    cache = open_cache(tmp_path, corpus, teacher)
    dataset = IndexedSequences(train)
    assert dataset[0][0] == int(train.rows[0]) and np.array_equal(dataset[0][1], train[0])
    batch = TargetCollate(tokenizer.pad_id, cache)([dataset[i] for i in range(5)])
    assert batch["teacher_missing"] == list(range(5))
    live = teacher_last(teacher)(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(complete_targets(cache, batch, teacher_last(teacher)), live)
    # what the batch computed is cached under the corpus's own sequence numbers
    assert cache.num_done == 5
    again = TargetCollate(tokenizer.pad_id, cache)([dataset[i] for i in range(5)])
    assert again["teacher_missing"] == []
    mask = again["attention_mask"].bool()
    assert torch.equal(again["teacher_hidden"][mask], live[mask])
    assert float(again["teacher_hidden"][~mask].abs().sum()) == 0.0
    # a worker's copy reads, never writes, and sees only rows flushed and marked done
    assert pickle_roundtrip(cache).num_done == 0
    cache.flush()
    worker = pickle_roundtrip(cache)
    assert not worker.writable and worker.num_done == 5
    worker.write([9], [np.zeros((len(corpus[9]), 32), np.float32)])
    assert not worker.has(9)


def test_a_float16_cache_halves_the_disk_and_rounds_to_half_precision(setup, tmp_path):
    _, corpus, teacher = setup
    cache = open_cache(tmp_path, corpus, teacher, dtype="float16")
    fill_target_cache(cache, corpus, teacher_last(teacher), 0, 8, False)
    assert cache.full_bytes == corpus.num_tokens * 32 * 2
    assert np.load(cache.folder / "hidden.npy", mmap_mode="r").dtype == np.float16
    row = cache.lookup([2])[0]
    reference = alone(teacher, corpus[2])
    np.testing.assert_allclose(row.astype(np.float32), reference, rtol=2**-10, atol=1e-4)
    assert json.loads((cache.folder / "meta.json").read_text())["dtype"] == "float16"
    with pytest.raises(TargetCacheError, match="dtype"):
        open_cache(tmp_path, corpus, teacher, dtype="bfloat16")


def pickle_roundtrip(value):
    return pickle.loads(pickle.dumps(value))


def test_two_runs_creating_the_same_entry_share_it(setup, tmp_path):
    _, corpus, teacher = setup
    first = open_cache(tmp_path, corpus, teacher)
    fill_target_cache(first, corpus, teacher_last(teacher), 0, 8, False)
    # a second run found no folder, built its own, and lost the race to rename it into place
    target_cache._create(first.folder, first.meta)
    assert open_cache(tmp_path, corpus, teacher).num_done == len(corpus)
    assert [p.name for p in tmp_path.iterdir()] == [first.folder.name]
