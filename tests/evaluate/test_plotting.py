"""Projections, parameter grouping and figures (drawn to PNG files and read back)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_drawn
from sklearn.decomposition import PCA

from distilkit.evaluate.model_figure import _drawn, model_stages, plot_model_summary
from distilkit.evaluate.plotting import (
    PlotError,
    human_count,
    parameter_groups,
    pca_2d,
    plot_embedding_report,
    plot_embeddings,
    plot_token_heatmap,
    project_2d,
    spread_out,
)
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel
from distilkit.model.summary import model_info

HIDDEN, FFN, VOCAB, POSITIONS = 32, 37, 99, 64


@pytest.fixture(scope="module")
def tiny_info() -> dict:
    config = ModelConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_layers=2,
        num_heads=4,
        intermediate_size=FFN,
        max_position_embeddings=POSITIONS,
        head="masked_lm",
    )
    return model_info(TransformerModel(config))


# ----------------------------------------------------------------------------- numbers
def test_pca_matches_scikit_learn_up_to_sign() -> None:
    vectors = np.random.default_rng(0).normal(size=(40, 7)) * np.arange(1, 8)
    points, explained = pca_2d(vectors)
    reference = PCA(n_components=2).fit(vectors)
    expected = reference.transform(vectors)
    signs = np.sign((points * expected).sum(axis=0))
    np.testing.assert_allclose(points, expected * signs, atol=1e-9)
    np.testing.assert_allclose(explained, reference.explained_variance_ratio_, atol=1e-12)


def test_pca_signs_do_not_depend_on_row_order() -> None:
    vectors = np.random.default_rng(1).normal(size=(30, 5))
    order = np.random.default_rng(2).permutation(30)
    points, _ = pca_2d(vectors)
    permuted, _ = pca_2d(vectors[order])
    np.testing.assert_allclose(permuted, points[order], atol=1e-9)


def test_pca_of_identical_vectors_and_bad_shapes() -> None:
    points, explained = pca_2d(np.ones((4, 3)))
    np.testing.assert_allclose(points, 0.0, atol=1e-12)
    np.testing.assert_array_equal(explained, [0.0, 0.0])
    with pytest.raises(PlotError, match="at least 2 vectors"):
        pca_2d(np.ones((1, 3)))


def test_project_2d_pca_labels_and_tsne_seed() -> None:
    vectors = np.random.default_rng(3).normal(size=(12, 6))
    projection = project_2d(vectors, "pca")
    assert (
        projection.axis_labels[0].startswith("PC1 (")
        and "% of variance" in projection.axis_labels[1]
    )
    first = project_2d(vectors, "tsne", seed=5)
    second = project_2d(vectors, "tsne", seed=5)
    assert first.points.shape == (12, 2)
    np.testing.assert_array_equal(first.points, second.points)
    with pytest.raises(PlotError, match="at least 5"):
        project_2d(vectors[:4], "tsne")
    with pytest.raises(PlotError, match="umap"):
        project_2d(vectors, "umap")


def test_spread_out_picks_the_far_corners_first() -> None:
    rng = np.random.default_rng(4)
    middle = rng.uniform(0.4, 0.6, size=(50, 2))
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    points = np.concatenate([middle, corners])
    chosen = spread_out(points, 4)
    assert sorted(chosen.tolist()) == [50, 51, 52, 53]
    many = spread_out(points, 20)
    assert len(set(many.tolist())) == 20
    assert len(spread_out(points, 100)) == len(points)


def test_parameter_groups_follow_the_architecture(tiny_info: dict) -> None:
    groups = parameter_groups(tiny_info)
    assert list(groups) == ["embeddings", "layer 0", "layer 1", "pooler", "head"]
    # word + position + token-type embeddings and their LayerNorm
    assert groups["embeddings"] == VOCAB * HIDDEN + POSITIONS * HIDDEN + 2 * HIDDEN + 2 * HIDDEN
    # Q, K, V, output projections; FFN in and out; two LayerNorms
    per_layer = 4 * (HIDDEN * HIDDEN + HIDDEN) + (HIDDEN * FFN + FFN) + (FFN * HIDDEN + HIDDEN)
    assert groups["layer 0"] == groups["layer 1"] == per_layer + 2 * 2 * HIDDEN
    assert groups["pooler"] == HIDDEN * HIDDEN + HIDDEN
    # MLM head: transform dense + LayerNorm + output bias (decoder tied to embeddings)
    assert groups["head"] == HIDDEN * HIDDEN + HIDDEN + 2 * HIDDEN + VOCAB
    assert sum(groups.values()) == tiny_info["total_params"]


def test_parameter_groups_of_unknown_names() -> None:
    info = {"arrays": {"encoder.layer.1.w": {"count": 5}, "lstm.weight": {"count": 7}}}
    assert parameter_groups(info) == {"layer 1": 5, "lstm": 7}


def test_human_count() -> None:
    assert [human_count(n) for n in (37, 1536, 22_713_216, 3e9)] == ["37", "1.5k", "22.7M", "3.0G"]


# ----------------------------------------------------------------------------- figures
def test_model_summary_png(tiny_info: dict, tmp_path: Path) -> None:
    path = plot_model_summary(tiny_info, tmp_path / "sub" / "summary.png", title="tiny")
    assert path == tmp_path / "sub" / "summary.png"
    assert_drawn(path)


def test_network_stages_add_up_and_name_their_shapes(tiny_info: dict) -> None:
    stages = model_stages(tiny_info, recipe="mean pooling", output_dim=HIDDEN)
    titles = [stage.title for stage in stages]
    assert titles == ["input ids", "embeddings", "block 0", "block 1", "pooler",
                      "head: masked_lm", "sentence vector"]  # fmt: skip
    assert sum(stage.count for stage in stages) == tiny_info["total_params"]
    assert (
        stages[1].detail
        == f"word {VOCAB}x{HIDDEN} + position {POSITIONS}x{HIDDEN} + type 2x{HIDDEN}, LayerNorm"
    )
    assert stages[2].shape == f"(batch, tokens, {HIDDEN})" and "4 heads x 8" in stages[2].detail
    assert stages[5].shape.startswith(f"(batch, tokens, {VOCAB})")
    assert (
        stages[6].shape == f"(batch, {HIDDEN})" and "of block 1's token vectors" in stages[6].detail
    )
    deep = dict(tiny_info, arrays={**tiny_info["arrays"]})
    for index in range(2, 12):  # a 12-block net shows blocks 0, 1, ..., 10, 11
        deep["arrays"][f"backbone.layers.{index}.w"] = {"count": 5, "shape": [5]}
    drawn = [None if s is None else s.title for s in _drawn(model_stages(deep))]
    assert drawn[2:7] == ["block 0", "block 1", None, "block 10", "block 11"]


def test_embeddings_png_with_and_without_labels(tmp_path: Path) -> None:
    points = np.random.default_rng(5).normal(size=(60, 2))
    labels = ["neg", "pos", "neutral"] * 20
    texts = [f"sentence number {i} which is rather long for a label" for i in range(60)]
    assert_drawn(plot_embeddings(points, labels, texts, tmp_path / "a.png", title="map"))
    assert_drawn(plot_embeddings(points, None, None, tmp_path / "b.png"))
    with pytest.raises(PlotError, match="60 points but 3 labels"):
        plot_embeddings(points, labels[:3], None, tmp_path / "c.png")
    with pytest.raises(PlotError, match="shape"):
        plot_embeddings(points[:, :1], None, None, tmp_path / "c.png")


def test_token_heatmap_png_and_errors(tmp_path: Path) -> None:
    features = np.random.default_rng(6).normal(size=(9, 384))
    features[:, 7] = 40.0  # an outlier dimension, as BERT-class models have
    tokens = ["[CLS]", "the", "movie", "was", "un", "##believ", "##able", "!", "[SEP]"]
    assert_drawn(plot_token_heatmap(features, tokens, tmp_path / "heat.png"))
    with pytest.raises(PlotError, match="9 feature rows but 2 tokens"):
        plot_token_heatmap(features, tokens[:2], tmp_path / "heat.png")
    with pytest.raises(PlotError, match=r"\.png"):
        plot_token_heatmap(features, tokens, tmp_path / "heat.unknown")


def test_embedding_report_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    projection = project_2d(rng.normal(size=(8, 16)), "pca")
    texts = [f"text {i}" for i in range(8)]
    path = plot_embedding_report(
        projection,
        ["0", "1"] * 4,
        texts,
        rng.normal(size=(5, 16)),
        list("abcde"),
        tmp_path / "report.png",
        title="report",
        heatmap_title="features",
    )
    assert_drawn(path, min_width=1500)


def test_importing_the_cli_does_not_import_matplotlib() -> None:
    code = (
        "import sys, distilkit.cli.main, distilkit.evaluate.plotting; "
        "print('matplotlib' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
