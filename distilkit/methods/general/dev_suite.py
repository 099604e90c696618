"""The main job's dev-suite rows: teacher, the untrained cut it started from, and student.

A job with a deadline scores the teacher and the cut *before* training
(:func:`score_references`): their rows do not depend on training, and timing the cut's
scoring, embedding and probe fitting both, tells the deadline what the student's will
cost at the end (it has the cut's shape). The student is scored after training
(:func:`dev_suite`), against the rows scored before.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from distilkit.encoder import Encoder
from distilkit.evaluate import suite
from distilkit.evaluate.comparison import cut_of, suite_or_note
from distilkit.train.distributed import say

TASK_LIST = "STS-B, SICK-R, SICK-E, SST-2, TREC, MRPC"


@dataclass
class ReferenceRows:
    """Suite rows scored before training and what scoring one more model costs."""

    rows: list[dict]  # the teacher's, then the untrained cut's when the student is a cut
    student_seconds: float  # the cut's scoring time (the teacher's when there is no cut)


def cut_name(layers: list[int]) -> str:
    return "untrained cut " + ",".join(map(str, layers))


def _timed_rows(name: str, encoder: Encoder) -> tuple[list[dict] | None, str | None, float]:
    start = time.perf_counter()
    rows, note = suite_or_note({name: encoder}, quick=True, root=None)
    return rows, note, time.perf_counter() - start


def score_references(teacher: Encoder, layers: list[int] | None) -> ReferenceRows | None:
    """The quick suite's teacher row and (when ``layers`` is set) the untrained cut's,
    timed; None, with a note, when the suite's files are absent."""
    say(
        f"scoring the teacher{' and the untrained cut' if layers else ''} on the quick dev "
        f"suite ({TASK_LIST}) before training..."
    )
    rows, note, seconds = _timed_rows("teacher", teacher)
    if rows is None:
        say(note)
        return None
    if layers:
        cut_rows, _, seconds = _timed_rows(cut_name(layers), cut_of(teacher, layers))
        rows = rows + (cut_rows or [])
    return ReferenceRows(suite.add_retention(rows), seconds)


def dev_suite(
    encoders: dict[str, Encoder],
    layers: list[int] | None,
    references: ReferenceRows | None = None,
) -> list[dict] | None:
    """The quick dev suite for teacher, the untrained cut the student started from (when
    it was cut from the teacher) and student; ``references``: the teacher's and cut's rows
    scored before training (only the student is scored now). None, with a note, when the
    suite's files are absent."""
    if references is not None:
        say(f"scoring the student on the quick dev suite ({TASK_LIST})...")
        rows, note = suite_or_note({"student": encoders["student"]}, quick=True, root=None)
        rows = None if rows is None else suite.add_retention(references.rows + rows)
    else:
        scored = {"teacher": encoders["teacher"]}
        if layers:
            scored[cut_name(layers)] = cut_of(encoders["teacher"], layers)
        scored["student"] = encoders["student"]
        say(f"scoring the quick dev suite ({TASK_LIST})...")
        rows, note = suite_or_note(scored, quick=True, root=None)
    if rows is None:
        say(note)
        return None
    say(suite.format_suite_table(rows))
    if layers and len(rows) == 3:
        gained = rows[-1]["mean_retention"] - rows[1]["mean_retention"]
        say(
            f"training moved the mean retention over the six tasks by {gained:+.2f} points "
            f"from the untrained cut ({rows[1]['mean_retention']:.2f}% -> "
            f"{rows[-1]['mean_retention']:.2f}%)"
        )
    return rows
