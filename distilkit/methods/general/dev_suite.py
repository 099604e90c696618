"""The main job's dev-suite rows: teacher, the untrained cut it started from, and student.

A job with a deadline plans the suite before training (:func:`plan_suite`): the
teacher's and the cut's rows do not depend on training, so they are read from the suite
cache (:mod:`distilkit.evaluate.suite_cache`) or scored now, and scoring the cut (the
student's shape) times what the student's scoring will cost at the end. When the suite
cannot fit the deadline at the machine's speed now, it is left out of the job, with a
note saying how to score it afterwards. The student is scored after training
(:func:`dev_suite`), against the rows scored before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distilkit.encoder import Encoder
from distilkit.evaluate import suite
from distilkit.evaluate.comparison import cut_of, suite_or_note
from distilkit.evaluate.sentence import EvaluationDataError
from distilkit.evaluate.suite_cache import ScoredRow, cached_row, score_row
from distilkit.train.distributed import say

TASK_LIST = "STS-B, SICK-R, SICK-E, SST-2, TREC, MRPC"


# A model's suite time over its embedding time alone (the probes' fitting is the rest):
# the untrained cut took 194 s at a teacher speed of 47 sentences/s, of which 147 s
# embedding its 12,057 sentences at 4/7 of the teacher's cost (docs/RESULTS.md).
SUITE_PROBE_FACTOR = 1.5


@dataclass
class ReferenceRows:
    """Suite rows scored before training and what scoring the student will cost."""

    rows: list[dict]  # the teacher's, then the untrained cut's when the student is a cut
    student_seconds: float  # the student's scoring time, at the speed measured now
    cached: list[str] = field(default_factory=list)  # rows read from the suite cache


@dataclass
class SuitePlan:
    """The dev suite's part in a job with a deadline: rows scored ahead, or why none."""

    references: ReferenceRows | None
    note: str | None = None  # why the suite is left out of this job


def cut_name(layers: list[int]) -> str:
    return "untrained cut " + ",".join(map(str, layers))


def estimated_seconds(sentences: int, share: float, rate: float) -> float:
    """A model's suite time, before any was measured: its embedding of ``sentences`` at
    ``share`` of the teacher's cost per sentence, teacher at ``rate`` sentences/s, times
    :data:`SUITE_PROBE_FACTOR`."""
    return SUITE_PROBE_FACTOR * sentences * share / rate


def scaled_seconds(scored: ScoredRow, rate: float, fallback: float) -> float:
    """A cached entry's scoring time at the speed now (its time x its rate / ``rate``);
    ``fallback`` when the entry has no rate."""
    return scored.seconds * scored.rate / rate if scored.rate else fallback


def plan_suite(
    teacher: Encoder,
    layers: list[int] | None,
    rate: float,
    student_share: float,
    seconds_left: float,
    cache: bool = True,
    models_named: str = "TEACHER STUDENT",
) -> SuitePlan:
    """Score (or read from the cache) the teacher's and the cut's rows when the whole suite,
    those rows now and the student's after training, fits in ``seconds_left`` at the
    teacher's speed now (``rate`` sentences/s; the student costs ``student_share`` of a
    teacher sentence); otherwise leave it out, with a note naming the ``distilkit compare``
    command that scores it afterwards (``models_named``: its teacher and student)."""
    try:
        sentences = suite.suite_sentences(quick=True)
    except EvaluationDataError as error:
        return SuitePlan(None, f"no dev suite: {error}")
    models: list[tuple[str, Encoder, float]] = [("teacher", teacher, 1.0)]
    if layers:
        models.append((cut_name(layers), cut_of(teacher, layers), student_share))
    found = {name: cached_row(name, encoder, cache=cache) for name, encoder, _ in models}
    now = sum(
        estimated_seconds(sentences, share, rate)
        for name, _, share in models
        if found[name] is None
    )
    prior = estimated_seconds(sentences, student_share, rate)
    cut_entry = found.get(cut_name(layers)) if layers else None
    later = scaled_seconds(cut_entry, rate, prior) if cut_entry is not None else prior
    if now + later > seconds_left:
        cut_flag = f" --cut {','.join(map(str, layers))}" if layers else ""
        return SuitePlan(
            None,
            f"dev suite left out to keep the job's deadline: at the speed measured now "
            f"(teacher {rate:.0f} sentences/s) it would take about {now + later:.0f} s and "
            f"{max(seconds_left, 0):.0f} s can go to it; score it afterwards with "
            f"`distilkit compare {models_named}{cut_flag}`",
        )
    from_cache = [name for name, scored in found.items() if scored is not None]
    say(
        f"dev suite ({TASK_LIST}) for the teacher"
        + (" and the untrained cut" if layers else "")
        + " before training"
        + (f" ({', '.join(from_cache)} from the suite cache)" if from_cache else "")
        + "..."
    )
    rows, student_seconds = [], later
    for name, encoder, _ in models:
        scored = found[name] or score_row(name, encoder, rate=rate, cache=cache)
        rows.append(scored.row)
        if name != "teacher" and not scored.cached:
            student_seconds = scored.seconds  # measured now on the student's shape
    return SuitePlan(ReferenceRows(suite.add_retention(rows), student_seconds, from_cache))


def dev_suite(
    encoders: dict[str, Encoder],
    layers: list[int] | None,
    references: ReferenceRows | None = None,
    cache: bool = True,
) -> list[dict] | None:
    """The quick dev suite for teacher, the untrained cut the student started from (when
    it was cut from the teacher) and student; ``references``: the teacher's and cut's rows
    scored before training (else they are read from the suite cache or scored now). Only
    the student is always scored. None, with a note, when the suite's files are absent."""
    say(f"scoring the student on the quick dev suite ({TASK_LIST})...")
    try:
        if references is None:
            models = {"teacher": encoders["teacher"]}
            if layers:
                models[cut_name(layers)] = cut_of(encoders["teacher"], layers)
            references = ReferenceRows(
                [score_row(n, e, cache=cache).row for n, e in models.items()], 0.0
            )
    except EvaluationDataError as error:
        say(f"no dev suite: {error}")
        return None
    rows, note = suite_or_note({"student": encoders["student"]}, quick=True, root=None)
    if rows is None:
        say(note)
        return None
    rows = suite.add_retention(references.rows + rows)
    say(suite.format_suite_table(rows))
    if layers and len(rows) == 3:
        gained = rows[-1]["mean_retention"] - rows[1]["mean_retention"]
        say(
            f"training moved the mean retention over the six tasks by {gained:+.2f} points "
            f"from the untrained cut ({rows[1]['mean_retention']:.2f}% -> "
            f"{rows[-1]['mean_retention']:.2f}%)"
        )
    return rows
