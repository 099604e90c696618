"""Compare saved encoders the main job's way: one call behind ``distilkit compare``.

The table of :func:`distilkit.evaluate.sentence.evaluate_side_by_side` (size, speed,
STS-B, SST-2 probe), each student's vector agreement with the reference, and the dev
suite (:mod:`distilkit.evaluate.suite`) with an untrained cut of the reference as a row
when its layers are given, so the table shows what training added.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from distilkit.deploy.retrieval import asymmetric_retrieval, stsb_retrieval_set
from distilkit.encoder import Encoder, load
from distilkit.evaluate import report, suite
from distilkit.evaluate import sentence as evaluation
from distilkit.evaluate.sentence import EvaluationDataError
from distilkit.model.student import build_student


def cut_of(teacher: Encoder, layers: list[int]) -> Encoder:
    """The untrained student made of ``teacher``'s blocks ``layers`` (what training starts from)."""
    model, _ = build_student(teacher.model, layers=layers)
    name = f"untrained cut {','.join(map(str, layers))} of {teacher.name}"
    return Encoder(model, teacher.tokenizer, name=name)


def suite_or_note(
    encoders: dict[str, Encoder], quick: bool, root: str | Path | None, pooling: str = "mean"
) -> tuple[list[dict] | None, str | None]:
    """The dev suite's rows, or None and a note saying why its files were not found."""
    try:
        return suite.evaluate_suite(encoders, quick=quick, root=root, pooling=pooling), None
    except EvaluationDataError as error:
        return None, f"no dev suite: {error}"


def compare_models(
    names: list[str],
    quick: bool = False,
    static_baseline: bool = False,
    threads: int | None = None,
    pooling: str = "mean",
    cut_layers: list[int] | None = None,
    dev_suite: bool = True,
    data_root: str | Path | None = None,
    json_path: str | Path | None = None,
    say: Callable[[str], None] = print,
    progress: bool = False,
    device: str = "auto",
    asymmetric: bool = False,
) -> dict:
    """Score ``names`` (the reference first) and ``say`` the tables; returns the payload
    (also written to ``json_path`` when given): rows, against_first, agreement, suite.
    ``progress``: a bar of the evaluation steps on stderr; ``device``: where the models run;
    ``asymmetric``: also search the first model's documents with each other model's queries
    (:func:`asymmetric_rows`)."""
    encoders = {name: load(name, head=None, device=device) for name in names}
    protocol = dataclasses.replace(
        evaluation.QUICK_PROTOCOL if quick else evaluation.FULL_PROTOCOL, num_threads=threads
    )
    rows = evaluation.evaluate_side_by_side(
        encoders,
        static_baseline_of=names[0] if static_baseline else None,
        protocol=protocol,
        pooling=pooling,
        progress=progress,
        # after scoring the dev suite, this process timed the teacher 27% slower than a
        # fresh one (403 against 550 sentences/s) and its students less so: docs/RESULTS.md
        fresh_process=True,
    )
    if rows[0].get("timed_in", "").startswith("this process:"):
        say(f"note: speeds measured in {rows[0]['timed_in']}")
    say(report.format_table(rows))
    reference = encoders[names[0]]
    agreement = {}
    for name in names[1:]:
        found = evaluation.stsb_teacher_agreement(
            encoders[name], reference, pooling=pooling, limit=protocol.stsb_pairs
        )
        agreement[name] = found
        cosine = found["sentence_cosine"]  # None when the widths differ
        say(
            f"{name} vs {names[0]}: "
            + (
                "widths differ, no sentence cosine"
                if cosine is None
                else f"sentence cosine {cosine:.3f} on STS-B dev sentences"
            )
            + "; the reference's ranking of the pairs kept at Spearman "
            f"{found['similarity_spearman']:.1f}"
        )
    suite_rows = None
    if dev_suite:
        scored = dict(encoders)
        if cut_layers is not None:
            cut = cut_of(reference, cut_layers)
            scored = {names[0]: reference, cut.name: cut, **encoders}
        suite_rows, note = suite_or_note(scored, quick, data_root, pooling)
        if suite_rows is not None:
            say(suite.suite_protocol_line(quick))
            say(suite.format_suite_table(suite_rows))
        else:
            say(note)
    payload = {
        "rows": rows,
        "against_first": [evaluation.compare(rows[0], row) for row in rows],
        "agreement": agreement,
        "suite": suite_rows,
    }
    if asymmetric:
        payload["asymmetric"] = asymmetric_rows(encoders, names, say)
    if json_path is not None:
        output = Path(json_path)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(payload, indent=2, default=str) + "\n", "utf-8")
        say(f"wrote {output}")
    return payload


def asymmetric_rows(encoders: dict, names: list[str], say: Callable[[str], None] = print) -> dict:
    """Recall@10 and MRR of the first model alone, each other alone, and each other's queries
    against the first model's documents; printed and returned by student name."""
    data = stsb_retrieval_set()
    reference = encoders[names[0]]
    alone = asymmetric_retrieval(reference, reference, data)
    say(
        f"asymmetric search ({len(data.queries)} STS-B dev paraphrase queries, "
        f"{len(data.collection)} texts): {names[0]} alone recall@10 "
        f"{100 * alone['recall@10']:.1f}%, MRR {alone['mrr']:.4f}"
    )
    found = {}
    for name in names[1:]:
        student = encoders[name]
        own = asymmetric_retrieval(student, student, data)
        try:
            mixed = asymmetric_retrieval(reference, student, data)
        except ValueError as error:
            say(f"{name}: {error}")
            continue
        found[name] = {"reference_alone": alone, "student_alone": own, "asymmetric": mixed}
        say(
            f"{name}: alone recall@10 {100 * own['recall@10']:.1f}%, MRR {own['mrr']:.4f}; "
            f"queries against {names[0]}'s documents recall@10 {100 * mixed['recall@10']:.1f}%, "
            f"MRR {mixed['mrr']:.4f}"
        )
    return found
