"""GLUE TSV readers, the task registry, encoding and batching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distilkit.model.tokenizer import Tokenizer
from distilkit.tasks.glue import (
    encode_text_examples,
    iterate_batches,
    read_sst2,
    read_stsb,
    read_tsv_task,
)
from distilkit.tasks.registry import CONLL_LABELS, TASKS, get_task
from distilkit.tasks.spec import TaskDataError, TextExample, data_root

SHARED_DATA = Path("/work/shared/data")
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason="the shared data sets are not at /work/shared/data"
)

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "film", "is", "."]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    folder = tmp_path_factory.mktemp("vocab")
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    return Tokenizer.from_vocab(folder / "vocab.txt")


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_read_sst2_train_and_test_layouts(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.tsv", ["sentence\tlabel", "a good film \t1", "bad .\t0"])
    examples = read_sst2(train)
    assert examples == [
        TextExample(text="a good film ", text_pair=None, label=1, id="0"),
        TextExample(text="bad .", text_pair=None, label=0, id="1"),
    ]
    test = _write(tmp_path / "test.tsv", ["index\tsentence", "7\ta film"])
    assert read_sst2(test) == [TextExample(text="a film", text_pair=None, label=None, id="7")]


def test_read_sst2_errors_name_the_line(tmp_path: Path) -> None:
    extra_column = _write(tmp_path / "a.tsv", ["sentence\tlabel", "fine\t1", "broken\t0\tx"])
    with pytest.raises(TaskDataError, match=r"a\.tsv:3: expected 2 tab-separated columns"):
        read_sst2(extra_column)
    bad_label = _write(tmp_path / "b.tsv", ["sentence\tlabel", "fine\tpositive"])
    with pytest.raises(TaskDataError, match=r"b\.tsv:2: label 'positive' is not an integer"):
        read_sst2(bad_label)
    wrong_header = _write(tmp_path / "c.tsv", ["text\tlabel", "fine\t1"])
    with pytest.raises(TaskDataError, match="does not look like GLUE SST-2"):
        read_sst2(wrong_header)
    with pytest.raises(FileNotFoundError, match="DISTILKIT_DATA"):
        read_sst2(tmp_path / "missing.tsv")


def test_read_stsb_columns(tmp_path: Path) -> None:
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
    row = "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA man.\tA person."
    dev = _write(tmp_path / "dev.tsv", [header + "\tscore", row + "\t4.250"])
    assert read_stsb(dev) == [TextExample("A man.", "A person.", 4.25, "0")]
    test = _write(tmp_path / "test.tsv", [header, row])
    assert read_stsb(test)[0].label is None
    short = _write(tmp_path / "short.tsv", [header + "\tscore", row])
    with pytest.raises(TaskDataError, match=r"short\.tsv:2: expected 10"):
        read_stsb(short)


def test_read_tsv_task_by_name_or_position(tmp_path: Path) -> None:
    path = _write(tmp_path / "pairs.tsv", ["id\tfirst\tsecond\tgold", "x1\tone\ttwo\t0.5"])
    by_name = read_tsv_task(path, "first", "second", "gold", label_type=float, id_col="id")
    by_position = read_tsv_task(path, 1, 2, -1, label_type=float, id_col=0)
    assert by_name == by_position == [TextExample("one", "two", 0.5, "x1")]
    with pytest.raises(TaskDataError, match="no column 'third'"):
        read_tsv_task(path, "third")
    with pytest.raises(TaskDataError, match="no column 4"):
        read_tsv_task(path, 4)


def test_registry_labels_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(TASKS) == {"sst2", "stsb", "conll2003", "squad"}
    assert TASKS["sst2"].label_names == ["negative", "positive"]
    assert CONLL_LABELS == [
        "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC",
    ]  # fmt: skip
    assert TASKS["conll2003"].label_names == CONLL_LABELS
    assert [TASKS[name].num_labels for name in ("sst2", "stsb", "conll2003")] == [2, 1, 9]
    assert {spec.kind for spec in TASKS.values()} == {
        "classification", "regression", "token_classification", "question_answering",
    }  # fmt: skip

    monkeypatch.delenv("DISTILKIT_DATA", raising=False)
    assert data_root() == Path(__file__).resolve().parents[3] / "shared" / "data"
    monkeypatch.setenv("DISTILKIT_DATA", str(tmp_path))
    assert get_task("stsb").path("dev") == tmp_path / "stsb" / "dev.tsv"
    assert get_task("stsb").path("dev", root="/elsewhere") == Path("/elsewhere/stsb/dev.tsv")
    with pytest.raises(TaskDataError, match=r"unknown task .*: use one of"):
        get_task("mnli")
    with pytest.raises(TaskDataError, match=r"no split 'train'; it has \['dev'\]"):
        get_task("squad").path("train")
    with pytest.raises(FileNotFoundError, match="DISTILKIT_DATA"):
        get_task("sst2").load("dev")


@needs_shared_data
def test_real_glue_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILKIT_DATA", str(SHARED_DATA))
    sst2_dev = get_task("sst2").load("dev")
    assert len(sst2_dev) == 872
    assert sum(example.label == 0 for example in sst2_dev) == 428
    stsb_dev = get_task("stsb").load("dev")
    assert len(stsb_dev) == 1500
    assert sum(example.label for example in stsb_dev) / 1500 == pytest.approx(2.36, abs=0.005)
    assert len(get_task("stsb").load("test")) == 1379


def test_encode_text_examples(tokenizer: Tokenizer) -> None:
    ids = {token: index for index, token in enumerate(TINY_VOCAB)}
    single = encode_text_examples(
        tokenizer, [TextExample("a good film", None, 1, "s1"), TextExample("bad", None, 0, "s2")]
    )
    cls, sep, pad = ids["[CLS]"], ids["[SEP]"], ids["[PAD]"]
    assert single.input_ids.tolist() == [
        [cls, ids["a"], ids["good"], ids["film"], sep],
        [cls, ids["bad"], sep, pad, pad],
    ]
    assert single.labels.dtype == torch.int64 and single.labels.tolist() == [1, 0]
    assert single.ids == ["s1", "s2"]

    pair = encode_text_examples(tokenizer, [TextExample("a film", "is bad", 0.5, "p")])
    assert pair.token_type_ids.tolist() == [[0, 0, 0, 0, 1, 1, 1]]
    assert pair.labels.dtype == torch.float32 and pair.labels.tolist() == [0.5]
    assert set(pair.model_inputs()) == {"input_ids", "attention_mask", "token_type_ids"}

    unlabelled = encode_text_examples(tokenizer, [TextExample("film", None, None, "u")])
    assert unlabelled.labels is None
    with pytest.raises(TaskDataError, match="text_pair"):
        encode_text_examples(
            tokenizer, [TextExample("a", "b", 1, "x"), TextExample("a", None, 1, "y")]
        )


def test_iterate_batches_order_and_seed() -> None:
    items = list(range(10))
    assert list(iterate_batches(items, 4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert list(iterate_batches(items, 4, drop_last=True)) == [[0, 1, 2, 3], [4, 5, 6, 7]]

    shuffled = [item for batch in iterate_batches(items, 3, shuffle=True, seed=7) for item in batch]
    assert sorted(shuffled) == items and shuffled != items
    again = [item for batch in iterate_batches(items, 3, shuffle=True, seed=7) for item in batch]
    other = [item for batch in iterate_batches(items, 3, shuffle=True, seed=8) for item in batch]
    assert again == shuffled and other != shuffled
    with pytest.raises(ValueError, match="needs a seed"):
        list(iterate_batches(items, 3, shuffle=True))
    with pytest.raises(ValueError, match="batch_size"):
        list(iterate_batches(items, 0))
