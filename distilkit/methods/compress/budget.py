"""The time budget of ``compress``: a deadline, and estimates of what each step costs.

Every estimate is in *teacher sentence-passes* (how many sentences the teacher could embed
in the same time) times the teacher's seconds per sentence, measured on this machine when
the search starts; the ratio of what steps really took to what they were estimated to take
(``scale``) corrects every later estimate, so a slow or busy machine is planned for as soon
as it shows. Before a step, the search checks that its estimate fits in what is left after
the reserve for the final timing and report; training shares are planned from the same
estimates (:func:`training_share`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# Cost of embedding one sentence in each form, relative to the same model in eager fp32.
FORM_COST = {"fp32": 1.0, "bf16": 1.0, "int8": 0.8, "onnx-fp32": 0.8, "onnx-int8": 0.5}
STATIC_COST = 0.01  # a static table: tokenization and a sparse mean, per teacher pass
ENTRY_COST = 0.25  # embedding one 1-3 token vocabulary entry, per teacher sentence
STUDENT_OVERHEAD = 2000.0  # corpus tokenization, layer choice, saving: teacher sentences
REPORT_SECONDS = 10.0  # picking, copying the picked model, report and plot


class Deadline:
    """Seconds left of a budget that started when this was made."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


@dataclass
class CostModel:
    """Estimates in seconds, from the teacher's measured seconds per sentence (``unit``)."""

    unit: float  # teacher seconds per sentence, eager fp32, batch as configured
    teacher_layers: int
    suite_sentences: int  # distinct sentences the dev suite embeds per form
    heldout_lines: int
    timing_lines: int
    timing_repeats: int
    probe_seconds: float = 0.0  # fitting the suite's probes once (measured on the teacher)
    # seconds to write a form's ONNX file (tracing does not scale with the model's speed):
    # a guess until the first export of that form is measured
    export_seconds: dict[str, float] = field(
        default_factory=lambda: {"onnx-fp32": 30.0, "onnx-int8": 10.0}
    )
    measured: list[tuple[float, float]] = field(default_factory=list)  # (estimated, took)
    # candidate name -> its eager fp32 seconds per sentence over the teacher's, measured
    # once it is built (before that, estimated from its depth)
    speed: dict[str, float] = field(default_factory=dict)

    @property
    def scale(self) -> float:
        """What steps took over what they were estimated to take (1 before any step)."""
        estimated = sum(e for e, _ in self.measured)
        return 1.0 if estimated <= 0 else sum(t for _, t in self.measured) / estimated

    def record(self, estimated: float, took: float) -> None:
        """Remember a step's unscaled estimate and how long it took."""
        self.measured.append((estimated, took))

    def relative(self, kind: str, size: int, form: str, name: str | None = None) -> float:
        """Seconds per sentence of a candidate form over the teacher's: the candidate's
        measured fp32 ratio (:attr:`speed`) when known, else one from its depth (MobileBERT
        counted as deep as the teacher), times the form's :data:`FORM_COST`."""
        if kind == "static":
            return STATIC_COST
        if name in self.speed:
            return self.speed[name] * FORM_COST[form]
        layers = size if kind == "layers" else self.teacher_layers
        return (layers + 1) / (self.teacher_layers + 1) * FORM_COST[form]

    def scoring(self, kind: str, size: int, form: str, name: str | None = None) -> float:
        """Unscaled seconds to score one form: the suite and the held-out lines embedded,
        the probes fitted."""
        sentences = self.suite_sentences + self.heldout_lines
        relative = self.relative(kind, size, form, name)
        return sentences * self.unit * relative + self.probe_seconds

    def export(self, form: str) -> float:
        """Seconds to write the ONNX file of ``form`` (0 for the other forms)."""
        return self.export_seconds.get(form, 0.0)

    def timing(self, relatives: list[float]) -> float:
        """Unscaled seconds to time the teacher and forms of these relative costs in turns
        (one warm-up pass and the timed passes each)."""
        passes = (self.timing_repeats + 1) * self.timing_lines * self.unit
        return passes * (1.0 + sum(relatives))

    def static_build(self, entries: int) -> float:
        """Unscaled seconds to embed ``entries`` vocabulary entries with the teacher."""
        return entries * ENTRY_COST * self.unit

    def student_overhead(self) -> float:
        """Unscaled seconds a trained student costs besides its training time."""
        return STUDENT_OVERHEAD * self.unit

    def scaled(self, seconds: float) -> float:
        return seconds * self.scale


def training_share(
    left: float, committed: float, students: int, cap: float | None, floor: float
) -> float | None:
    """Seconds of training for the next of ``students`` students still to train: what is
    ``left`` after the ``committed`` (estimated, scaled) cost of every other remaining step,
    shared equally, at most ``cap``; None when that is under ``floor``."""
    share = (left - committed) / max(students, 1)
    if cap is not None:
        share = min(share, cap)
    return share if share >= floor else None


__all__ = ["FORM_COST", "REPORT_SECONDS", "CostModel", "Deadline", "training_share"]
