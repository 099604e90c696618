from __future__ import annotations

import json

import pytest

from distilkit.model.layer_map import (
    LayerMap,
    LayerMapError,
    LayerMatch,
    build_layer_map,
    explicit_map,
    last_map,
    skip_map,
    uniform_map,
)

# Expected pairs written out by hand from the papers' rules (not computed).
UNIFORM_WITH_EMBEDDINGS = {
    (3, 6): [[0, 0], [1, 2], [2, 4], [3, 6]],
    (6, 12): [[0, 0], [1, 2], [2, 4], [3, 6], [4, 8], [5, 10], [6, 12]],
    (4, 12): [[0, 0], [1, 3], [2, 6], [3, 9], [4, 12]],
    (2, 6): [[0, 0], [1, 3], [2, 6]],
}
SKIP = {
    (3, 6): [[1, 2], [2, 4]],
    (6, 12): [[1, 2], [2, 4], [3, 6], [4, 8], [5, 10]],
    (4, 12): [[1, 3], [2, 6], [3, 9]],
    (2, 6): [[1, 3]],
}
LAST = {
    (3, 6): [[1, 4], [2, 5]],
    (6, 12): [[1, 7], [2, 8], [3, 9], [4, 10], [5, 11]],
    (4, 12): [[1, 9], [2, 10], [3, 11]],
    (2, 6): [[1, 5]],
}


@pytest.mark.parametrize(("depths", "expected"), UNIFORM_WITH_EMBEDDINGS.items())
def test_uniform_map_with_embeddings(depths: tuple[int, int], expected: list[list[int]]) -> None:
    n_student, n_teacher = depths
    layer_map = uniform_map(n_student, n_teacher)
    assert layer_map.to_list() == expected
    assert layer_map.kind == "uniform"


@pytest.mark.parametrize(("depths", "expected"), UNIFORM_WITH_EMBEDDINGS.items())
def test_uniform_map_without_embeddings(depths: tuple[int, int], expected: list[list[int]]) -> None:
    layer_map = uniform_map(*depths, include_embeddings=False)
    assert layer_map.to_list() == expected[1:]
    assert uniform_map(*depths).without_embeddings() == layer_map


def test_uniform_map_rounds_half_up_for_non_divisible_depths() -> None:
    # 12 -> 5: m * 12 / 5 = 2.4, 4.8, 7.2, 9.6, 12
    assert uniform_map(5, 12, include_embeddings=False).to_list() == [
        [1, 2],
        [2, 5],
        [3, 7],
        [4, 10],
        [5, 12],
    ]
    # 6 -> 4: m * 6 / 4 = 1.5, 3, 4.5, 6 (halves go up)
    assert uniform_map(4, 6).teacher_layers == (0, 2, 3, 5, 6)


@pytest.mark.parametrize(("depths", "expected"), SKIP.items())
def test_skip_map(depths: tuple[int, int], expected: list[list[int]]) -> None:
    layer_map = skip_map(*depths)
    assert layer_map.to_list() == expected
    assert layer_map.kind == "skip"


@pytest.mark.parametrize(("depths", "expected"), LAST.items())
def test_last_map(depths: tuple[int, int], expected: list[list[int]]) -> None:
    layer_map = last_map(*depths)
    assert layer_map.to_list() == expected
    assert layer_map.kind == "last"


def test_pkd_maps_exclude_the_final_layer() -> None:
    for builder in (skip_map, last_map):
        layer_map = builder(6, 12)
        assert 6 not in layer_map.student_layers
        assert 12 not in layer_map.teacher_layers


def test_student_and_teacher_layers() -> None:
    layer_map = skip_map(6, 12)
    assert layer_map.student_layers == (1, 2, 3, 4, 5)
    assert layer_map.teacher_layers == (2, 4, 6, 8, 10)


def test_build_layer_map_dispatches() -> None:
    assert build_layer_map("uniform", 3, 6).to_list() == UNIFORM_WITH_EMBEDDINGS[(3, 6)]
    assert build_layer_map("skip", 4, 12).to_list() == SKIP[(4, 12)]
    assert build_layer_map("last", 2, 6).to_list() == LAST[(2, 6)]
    explicit = build_layer_map("explicit", 3, 12, pairs=[(1, 4), (3, 12)])
    assert explicit.to_list() == [[1, 4], [3, 12]]
    assert explicit.kind == "explicit"


def test_build_layer_map_rejects_unknown_kind() -> None:
    with pytest.raises(LayerMapError, match=r"'unifrom'.*uniform"):
        build_layer_map("unifrom", 3, 6)


def test_build_layer_map_pairs_only_for_explicit() -> None:
    with pytest.raises(LayerMapError, match="needs pairs"):
        build_layer_map("explicit", 3, 6)
    with pytest.raises(LayerMapError, match="only used with kind 'explicit'"):
        build_layer_map("skip", 3, 6, pairs=[(1, 2)])


def test_build_layer_map_validates_explicit_pairs() -> None:
    with pytest.raises(LayerMapError, match=r"teacher 7.*0\.\.6"):
        build_layer_map("explicit", 3, 6, pairs=[(1, 2), (2, 7)])


def test_explicit_map_keeps_order_and_allows_shared_teacher() -> None:
    layer_map = explicit_map([(2, 6), (0, 0), (1, 6)])
    assert layer_map.student_layers == (2, 0, 1)
    assert layer_map.teacher_layers == (6, 0, 6)
    assert layer_map.matches[0] == LayerMatch(student=2, teacher=6)


def test_validate_out_of_range_names_pair_and_range() -> None:
    layer_map = explicit_map([(1, 2), (4, 8)])
    with pytest.raises(LayerMapError, match=r"student 4, teacher 8.*student index 4.*0\.\.3"):
        layer_map.validate(3, 12)
    with pytest.raises(LayerMapError, match=r"teacher index 8.*0\.\.6"):
        layer_map.validate(4, 6)
    layer_map.validate(4, 8)


def test_validate_without_embeddings_rejects_index_zero() -> None:
    layer_map = uniform_map(3, 6)
    layer_map.validate(3, 6, allow_embeddings=True)
    with pytest.raises(LayerMapError, match=r"1\.\.3"):
        layer_map.validate(3, 6, allow_embeddings=False)
    layer_map.without_embeddings().validate(3, 6, allow_embeddings=False)


def test_negative_index_is_an_error() -> None:
    with pytest.raises(LayerMapError, match="negative"):
        explicit_map([(1, -1)])
    with pytest.raises(LayerMapError, match="negative"):
        LayerMatch(-2, 3)


def test_duplicate_student_is_an_error() -> None:
    with pytest.raises(LayerMapError, match=r"student layer 1 is matched twice.*2 and 4"):
        explicit_map([(1, 2), (1, 4)])


def test_malformed_entries_are_errors() -> None:
    with pytest.raises(LayerMapError, match="entry 1"):
        LayerMap.from_list([[1, 2], [3]])
    with pytest.raises(LayerMapError, match="two integers"):
        LayerMap.from_list([[1, 2.0]])
    with pytest.raises(LayerMapError, match="two integers"):
        LayerMap.from_list([[True, 2]])
    with pytest.raises(LayerMapError, match="unknown layer map kind"):
        LayerMap((LayerMatch(1, 2),), "diagonal")


def test_last_map_needs_shallower_student() -> None:
    with pytest.raises(LayerMapError, match="no deeper"):
        last_map(6, 3)


def test_depths_must_be_positive() -> None:
    with pytest.raises(LayerMapError, match="n_student"):
        uniform_map(0, 6)
    with pytest.raises(LayerMapError, match="n_teacher"):
        build_layer_map("explicit", 3, 0, pairs=[])


@pytest.mark.parametrize(
    "layer_map",
    [uniform_map(4, 12), skip_map(6, 12), last_map(3, 6), explicit_map([(3, 9), (0, 0)])],
)
def test_json_round_trip(layer_map: LayerMap) -> None:
    text = json.dumps({"kind": layer_map.kind, "pairs": layer_map.to_list()})
    loaded = json.loads(text)
    assert LayerMap.from_list(loaded["pairs"], kind=loaded["kind"]) == layer_map


def test_from_list_defaults_to_explicit() -> None:
    assert LayerMap.from_list([[1, 3]]) == explicit_map([(1, 3)])
