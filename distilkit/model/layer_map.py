"""Which student layer learns from which teacher layer, written as data.

Index convention (used by every map here and by the losses that consume them):

- hidden states: index 0 is the embeddings output, index i in 1..N is the output of
  transformer block i, so an N-layer model has N + 1 hidden states;
- attention maps: index i in 1..N is the attention of block i (there is no index 0;
  use :meth:`LayerMap.without_embeddings` to drop the embedding pair from a map).

A map is a tuple of ``LayerMatch(student, teacher)`` pairs plus the name of the rule
that built it. Each student layer appears at most once; a teacher layer may serve
several student layers. Maps go to and from JSON as ``[[student, teacher], ...]``.

Builders (M = student blocks, N = teacher blocks):

- ``uniform`` (TinyBERT): student layer m learns from teacher layer g(m) = m * N / M,
  for m in 0..M (0..M includes the embeddings; 1..M without). When M does not divide
  N, g(m) is rounded half up (12 -> 5: 2, 5, 7, 10, 12).
- ``skip`` (Patient KD, PKD-Skip): student blocks 1..M-1 learn from every
  (N / M)-th teacher block (12 -> 6: 2, 4, 6, 8, 10), rounded half up as above.
- ``last`` (Patient KD, PKD-Last): student blocks 1..M-1 learn from the M-1 teacher
  blocks just below the top one (12 -> 6: 7, 8, 9, 10, 11).
- ``explicit``: any list of pairs.

The PKD maps leave out the final student layer: its output feeds the prediction head
and is trained by the prediction loss (soft targets), not by the patient loss.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

KINDS = ("uniform", "skip", "last", "explicit")


class LayerMapError(ValueError):
    """A layer map names a layer that does not exist, or is malformed."""


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class LayerMatch:
    """Student layer ``student`` learns from teacher layer ``teacher`` (indices as above)."""

    student: int
    teacher: int

    def __post_init__(self) -> None:
        if not (_is_index(self.student) and _is_index(self.teacher)):
            raise LayerMapError(
                f"layer match ({self.student!r}, {self.teacher!r}) must hold two integers"
            )
        if self.student < 0 or self.teacher < 0:
            raise LayerMapError(
                f"layer match (student {self.student}, teacher {self.teacher}) has a negative "
                "index: layers are numbered from 0 (the embeddings)"
            )


@dataclass(frozen=True)
class LayerMap:
    """A set of student-teacher layer pairs and the rule (``kind``) that produced it."""

    matches: tuple[LayerMatch, ...]
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LayerMapError(f"unknown layer map kind {self.kind!r}; choose one of {KINDS}")
        if not isinstance(self.matches, tuple) or not all(
            isinstance(match, LayerMatch) for match in self.matches
        ):
            raise LayerMapError("LayerMap.matches must be a tuple of LayerMatch")
        seen: dict[int, int] = {}
        for match in self.matches:
            if match.student in seen:
                raise LayerMapError(
                    f"student layer {match.student} is matched twice (to teacher layers "
                    f"{seen[match.student]} and {match.teacher}): each student layer learns "
                    "from one teacher layer"
                )
            seen[match.student] = match.teacher

    @property
    def student_layers(self) -> tuple[int, ...]:
        """Student indices, in map order."""
        return tuple(match.student for match in self.matches)

    @property
    def teacher_layers(self) -> tuple[int, ...]:
        """Teacher indices, in map order (aligned with :attr:`student_layers`)."""
        return tuple(match.teacher for match in self.matches)

    def validate(
        self, n_student_layers: int, n_teacher_layers: int, allow_embeddings: bool = True
    ) -> None:
        """Raise unless every index exists in models of these depths (numbers of blocks).

        Valid hidden-state indices are 0..n_layers; with ``allow_embeddings=False``
        (attention maps) they are 1..n_layers.
        """
        lowest = 0 if allow_embeddings else 1
        for match in self.matches:
            for side, index, depth in (
                ("student", match.student, n_student_layers),
                ("teacher", match.teacher, n_teacher_layers),
            ):
                if not lowest <= index <= depth:
                    raise LayerMapError(
                        f"{self.kind} layer map pair (student {match.student}, teacher "
                        f"{match.teacher}): {side} index {index} is out of range; a "
                        f"{depth}-layer {side} has indices {lowest}..{depth}"
                    )

    def without_embeddings(self) -> LayerMap:
        """The same map without pairs that involve index 0 (for attention losses)."""
        kept = tuple(m for m in self.matches if m.student > 0 and m.teacher > 0)
        return LayerMap(kept, self.kind)

    def to_list(self) -> list[list[int]]:
        """``[[student, teacher], ...]``, ready for JSON."""
        return [[match.student, match.teacher] for match in self.matches]

    @classmethod
    def from_list(cls, pairs: Sequence[Sequence[int]], kind: str = "explicit") -> LayerMap:
        """Inverse of :meth:`to_list`. A bare list of pairs is an explicit map by default."""
        matches = []
        for position, pair in enumerate(pairs):
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise LayerMapError(
                    f"layer map entry {position} is {pair!r}: each entry must be a "
                    "[student, teacher] pair"
                )
            matches.append(LayerMatch(pair[0], pair[1]))
        return cls(tuple(matches), kind)


def _check_depths(n_student: int, n_teacher: int) -> None:
    for side, depth in (("n_student", n_student), ("n_teacher", n_teacher)):
        if not _is_index(depth) or depth < 1:
            raise LayerMapError(f"{side} must be a positive number of layers, got {depth!r}")


def _scaled_index(student_index: int, n_student: int, n_teacher: int) -> int:
    """round_half_up(student_index * n_teacher / n_student), in exact integer arithmetic."""
    return (2 * student_index * n_teacher + n_student) // (2 * n_student)


def uniform_map(n_student: int, n_teacher: int, include_embeddings: bool = True) -> LayerMap:
    """TinyBERT's uniform map g(m) = m * N / M (rounded half up), m = 0 or 1 .. M."""
    _check_depths(n_student, n_teacher)
    first = 0 if include_embeddings else 1
    matches = tuple(
        LayerMatch(m, _scaled_index(m, n_student, n_teacher)) for m in range(first, n_student + 1)
    )
    return LayerMap(matches, "uniform")


def skip_map(n_student: int, n_teacher: int) -> LayerMap:
    """PKD-Skip: student blocks 1..M-1 to teacher blocks g, 2g, ... with g = N / M."""
    _check_depths(n_student, n_teacher)
    matches = tuple(
        LayerMatch(m, _scaled_index(m, n_student, n_teacher)) for m in range(1, n_student)
    )
    return LayerMap(matches, "skip")


def last_map(n_student: int, n_teacher: int) -> LayerMap:
    """PKD-Last: student blocks 1..M-1 to teacher blocks N-M+1 .. N-1."""
    _check_depths(n_student, n_teacher)
    if n_student > n_teacher:
        raise LayerMapError(
            f"a last map needs a student no deeper than the teacher; got {n_student} student "
            f"layers and {n_teacher} teacher layers"
        )
    offset = n_teacher - n_student
    return LayerMap(tuple(LayerMatch(m, m + offset) for m in range(1, n_student)), "last")


def explicit_map(pairs: Iterable[Sequence[int]]) -> LayerMap:
    """A map from ``[(student, teacher), ...]`` exactly as given."""
    return LayerMap.from_list(list(pairs), kind="explicit")


def build_layer_map(
    kind: str,
    n_student: int,
    n_teacher: int,
    pairs: Iterable[Sequence[int]] | None = None,
) -> LayerMap:
    """Build a map by name (``uniform``, ``skip``, ``last`` or ``explicit``) and validate it.

    ``pairs`` is required for ``explicit`` and rejected for the other kinds. A uniform
    map built here includes the embeddings (index 0).
    """
    if kind not in KINDS:
        raise LayerMapError(f"unknown layer map kind {kind!r}; choose one of {KINDS}")
    _check_depths(n_student, n_teacher)
    if kind == "explicit":
        if pairs is None:
            raise LayerMapError("kind 'explicit' needs pairs=[[student, teacher], ...]")
        layer_map = explicit_map(pairs)
    elif pairs is not None:
        raise LayerMapError(
            f"pairs are only used with kind 'explicit'; kind {kind!r} computes its own pairs"
        )
    elif kind == "uniform":
        layer_map = uniform_map(n_student, n_teacher)
    elif kind == "skip":
        layer_map = skip_map(n_student, n_teacher)
    else:
        layer_map = last_map(n_student, n_teacher)
    layer_map.validate(n_student, n_teacher)
    return layer_map
