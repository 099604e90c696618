"""``distilkit compress``: build candidate students of a teacher, score and time each in
its deployable forms, and keep the fastest that holds the target quality.

teacher + corpus -> corpus split (training lines / held-out lines) -> the teacher scored on
the dev suite (the reference) -> candidates built one by one (static tables, then students
trained by the main job for a planned share of the time) -> each form scored (dev-suite
retention, agreement on the held-out lines) -> every form and the teacher timed in turns,
in a fresh process (:mod:`distilkit.methods.compress.timing`) ->
the rule (:func:`distilkit.methods.compress.scoring.pick`) -> the picked form copied to
``OUT/picked/``, ``report.md``, ``frontier.png``, ``results.json``.

The whole search keeps to ``time_budget`` (:mod:`distilkit.methods.compress.budget`): each
step is estimated before it runs and skipped, with a note, when it does not fit. Every
finished step is recorded in ``OUT/state.json``, so a search stopped at any point and
started again with the same ``OUT`` goes on where it stopped (a student's training resumes
from its last checkpoint).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from distilkit.encoder import load
from distilkit.evaluate import suite
from distilkit.methods.compress import candidates as build
from distilkit.methods.compress.budget import REPORT_SECONDS, CostModel, Deadline, training_share
from distilkit.methods.compress.config import STATIC_FORM, TRANSFORMER_FORMS, CompressConfig
from distilkit.methods.compress.folder import (
    CONFIG_FILE,
    LOG_FILE,
    STATE_FILE,
    check_out_dir,
    save_picked,
    split_corpus,
)
from distilkit.methods.compress.report import summary, table, write_report
from distilkit.methods.compress.scoring import (
    OutOfTime,
    agreement,
    embed_function,
    pick,
    same_function,
    score_on_suite,
    suite_settings,
)
from distilkit.methods.compress.timing import TEACHER, time_forms
from distilkit.model.hub import resolve
from distilkit.settings import ConfigError, save_json, to_dict
from distilkit.train.distributed import say
from distilkit.train.run_folder import RunLock

TIMING_REQUEST_FILE = "timing_request.json"


# --------------------------------------------------------------------------- the search
class CompressSearch:
    """One invocation of compress over ``out_dir``: its deadline, estimates and state."""

    def __init__(
        self, config: CompressConfig, out_dir: Path, data: suite.SuiteData, retime: bool = False
    ):
        self.config, self.out, self.data = config, out_dir, data
        self.retime = retime  # time every form again even when an earlier run timed them
        self.deadline = Deadline(config.time_budget)
        self.started = time.perf_counter()
        self.settings = suite_settings(config.suite)
        self.state = self._load_state()
        self.specs = build.candidate_specs(config)
        self.notes: list[str] = []

    # ----------------------------------------------------------------- bookkeeping
    def _load_state(self) -> dict:
        path = self.out / STATE_FILE
        state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        state.setdefault("candidates", {})
        state.setdefault("rows", {})
        return state

    def _save(self) -> None:
        save_json(self.state, self.out / STATE_FILE)

    def _log(self, event: str, **values) -> None:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": event, **values}
        with open(self.out / LOG_FILE, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(entry) + "\n")

    def _note(self, text: str) -> None:
        say(f"note: {text}")
        self.notes.append(text)
        self._log("note", text=text)

    def _vectors_path(self, name: str) -> Path:
        return self.out / "vectors" / (name.replace(" / ", "__") + ".npy")

    def _save_vectors(self, name: str, vectors: np.ndarray) -> None:
        path = self._vectors_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)

    # ----------------------------------------------------------------- steps
    def run(self) -> dict:
        save_json(to_dict(self.config), self.out / CONFIG_FILE)
        self._log("start", time_budget=self.config.time_budget)
        self.train_path, self.heldout = split_corpus(self.config, self.out / "data")
        teacher = load(self.config.teacher, head=None, device="cpu")
        self.costs = self._measure_teacher(teacher)
        self._score_teacher(teacher)
        del teacher
        built = {}
        for index, spec in enumerate(self.specs):  # every candidate built, its first form scored
            folder = self._build(spec, index)
            if folder is not None:
                built[spec] = folder
                self._measure_speed(spec, folder)
                self._score_form(spec, folder, build.forms_of(spec, self.config)[0])
        for spec, folder in built.items():  # then the other forms, while they fit
            for form in build.forms_of(spec, self.config)[1:]:
                self._score_form(spec, folder, form)
        rows = self._timed_rows()
        return self._finish(rows)

    def _measure_teacher(self, teacher) -> CostModel:
        """The teacher's seconds per sentence on the timing lines, now: every estimate's unit."""
        lines = self.heldout[: self.config.timing_lines]
        embed = embed_function(teacher, self.config.batch_size)
        embed(lines[: self.config.batch_size])  # warm-up
        started = time.perf_counter()
        embed(lines)
        unit = (time.perf_counter() - started) / len(lines)
        costs = CostModel(
            unit=unit,
            teacher_layers=teacher.config.num_layers,
            suite_sentences=len(self.data.texts()),
            heldout_lines=len(self.heldout),
            timing_lines=len(lines),
            timing_repeats=self.config.timing_repeats,
            probe_seconds=self.state.get(TEACHER, {}).get("probe_seconds", 0.0),
        )
        self.vocab_size = teacher.tokenizer.vocab_size
        self.max_len = min(self.config.max_len, teacher.config.max_tokens)
        self.width = teacher.config.hidden_size
        say(f"teacher: {1 / unit:,.1f} sentences/s here (the unit of every time estimate)")
        return costs

    def _score_teacher(self, teacher) -> None:
        if TEACHER in self.state:
            return
        estimate = self.costs.scoring("layers", self.costs.teacher_layers, "fp32")
        left = self.deadline.left() - REPORT_SECONDS
        if estimate > left:
            raise ConfigError(
                f"--time-budget leaves {max(left, 0):.0f} s, but scoring the teacher on the dev "
                f"suite alone takes about {estimate:.0f} s here: give more time"
            )
        say(f"scoring the teacher on the {self.config.suite} dev suite (the reference)...")
        embed = embed_function(teacher, self.config.batch_size)
        try:
            result = score_on_suite(
                embed, self.data, self.settings, stop_at=self.deadline.end - REPORT_SECONDS
            )
        except OutOfTime as stopped:
            raise ConfigError(
                f"scoring the teacher on the dev suite did not fit in --time-budget ({stopped}): "
                "give more time; the next run with this --out starts the teacher again"
            ) from None
        started = time.perf_counter()
        self._save_vectors(TEACHER, embed(self.heldout))
        took = time.perf_counter() - started + result["embed_seconds"]
        self.costs.record(estimate, took)  # embedding only: the probes were not estimated
        self.costs.probe_seconds = result["probe_seconds"]
        folder = resolve(self.config.teacher)
        self.state[TEACHER] = {
            "scores": result["scores"],
            "probe_seconds": result["probe_seconds"],
            "folder": str(folder),
            "size_bytes": build.form_size_bytes(folder, "fp32"),
        }
        self._save()
        self._log("scored", row=TEACHER, seconds=took, estimated=estimate)

    def _remaining_cost(self, index: int, every_form: bool = True) -> float:
        """Scaled estimate of everything after training candidate ``index``: scoring the
        unscored forms of it, of later candidates and of those built before it (every form,
        or only the first of each), later students' overheads, the timing of those forms,
        the report."""
        total, relatives = REPORT_SECONDS, []
        for position, spec in enumerate(self.specs):
            built = self.state["candidates"].get(spec.name, {}).get("built")
            if position < index and not built:
                continue  # skipped for want of time: nothing more to do for it
            forms = build.forms_of(spec, self.config)
            for form in forms if every_form else forms[:1]:
                if f"{spec.name} / {form}" not in self.state["rows"]:
                    relatives.append(self.costs.relative(spec.kind, spec.size, form, spec.name))
                    cost = self.costs.scoring(spec.kind, spec.size, form, spec.name)
                    total += self.costs.scaled(cost) + self.costs.export(form)
            if spec.trained and position > index:
                total += self.costs.scaled(self.costs.student_overhead())
        for row in self.state["rows"].values():
            relatives.append(self._relative(row))
        return total + self.costs.scaled(self.costs.timing(relatives))

    def _build(self, spec: build.CandidateSpec, index: int) -> Path | None:
        """The candidate's model folder, built now unless an earlier run built it; None
        when it does not fit in the budget."""
        record = self.state["candidates"].get(spec.name, {})
        if record.get("built"):
            return Path(record["folder"])
        folder = self.out / "candidates" / spec.name
        widest = self._widest_static()
        started = time.perf_counter()
        if spec.kind == "static":
            estimate = self.costs.static_build(0 if widest else self.vocab_size)
            after = self.costs.scoring(spec.kind, spec.size, build.STATIC_FORM)
            if self.costs.scaled(estimate + after) > self.deadline.left() - self._reserve([]):
                self._note(f"{spec.name} not built: about {estimate:.0f} s did not fit")
                return None
            say(f"building {spec.name}...")
            build.build_static(spec, widest, self.config, folder)
            model_folder = folder
        else:
            seconds = record.get("planned_seconds")
            if seconds is None:
                seconds = self._training_share(index)
                if seconds is None:
                    self._note(
                        f"{spec.name} not trained: its share of the time left would be under "
                        f"{self.config.min_training_seconds:g} s"
                    )
                    return None
                self.state["candidates"][spec.name] = {"planned_seconds": seconds}
                self._save()
            estimate = self.costs.student_overhead() + seconds
            say(f"training {spec.name} for {seconds:.0f} s with the main job's recipe...")
            model_folder = build.build_trained(
                spec, self.config, self.train_path, seconds, folder, self.max_len, self.width
            )
        took = time.perf_counter() - started
        if spec.kind == "static":
            self.costs.record(estimate, took)
        else:  # training time is what was asked for: calibrate on the overhead alone
            self.costs.record(self.costs.student_overhead(), max(took - seconds, 0.0))
        self.state["candidates"][spec.name] = {
            **self.state["candidates"].get(spec.name, {}),
            "built": True,
            "folder": str(model_folder),
            "build_seconds": took,
        }
        self._save()
        self._log("built", candidate=spec.name, seconds=took, estimated=estimate)
        return model_folder

    def _training_share(self, index: int) -> float | None:
        """Seconds of training for the student at ``index``: an equal share of what is left
        after scoring every form of every remaining candidate; when that is under the
        floor, after scoring only each one's first form (the others then get what time is
        left at the end); None when even that is under the floor."""
        students = len([s for s in self.specs[index:] if s.trained])
        overhead = self.costs.scaled(self.costs.student_overhead())
        for every_form in (True, False):
            committed = self._remaining_cost(index, every_form) + overhead
            share = training_share(
                self.deadline.left(),
                committed,
                students,
                self.config.max_training_seconds,
                self.config.min_training_seconds,
            )
            if share is not None:
                if not every_form:
                    self._note(
                        f"{self.specs[index].name} trained for {share:.0f} s with only "
                        "its first form's scoring planned: the budget cannot score every form"
                    )
                return share
        return None

    def _reserve(self, extra: list[float]) -> float:
        """Scaled seconds kept for the end: timing every form scored so far and ``extra``
        ones (relative costs), and the report."""
        relatives = [self._relative(row) for row in self._rows()]
        return REPORT_SECONDS + self.costs.scaled(self.costs.timing([*relatives, *extra]))

    def _widest_static(self) -> Path | None:
        for spec in self.specs:
            record = self.state["candidates"].get(spec.name, {})
            if spec.kind == "static" and record.get("built"):
                return Path(record["folder"])
        return None

    def _score_form(self, spec: build.CandidateSpec, folder: Path, form: str) -> None:
        name = f"{spec.name} / {form}"
        if name in self.state["rows"]:
            return
        estimate = self.costs.scoring(spec.kind, spec.size, form, spec.name)
        exporting = form.startswith("onnx-") and not build.onnx_file(folder, form).is_file()
        export = self.costs.export(form) if exporting else 0.0
        reserve = self._reserve([self.costs.relative(spec.kind, spec.size, form, spec.name)])
        if self.costs.scaled(estimate) + export > self.deadline.left() - reserve:
            needed = self.costs.scaled(estimate) + export
            self._note(f"{name} not scored: about {needed:.0f} s did not fit")
            return
        say(f"scoring {name}...")
        started = time.perf_counter()
        model = build.load_form(folder, form)
        loaded = time.perf_counter()
        if exporting:
            self.costs.export_seconds[form] = loaded - started
        embed = embed_function(model, self.config.batch_size)
        heldout = embed(self.heldout)
        twin = next(
            (
                row
                for row in self._rows()
                if row["candidate"] == spec.name
                and row["scores_from"] is None
                and same_function(heldout, np.load(self._vectors_path(row["name"])))
            ),
            None,
        )
        if twin is None:
            reference = self.state[TEACHER]["scores"]
            try:
                result = score_on_suite(
                    embed, self.data, self.settings, reference, self.deadline.end - reserve
                )
            except OutOfTime as stopped:
                self._note(f"{name} not scored: {stopped}")
                return
        else:  # the same vectors (ONNX fp32 of eager fp32): the same scores
            result = {k: twin[k] for k in ("scores", "retention", "mean_retention")}
        self._save_vectors(name, heldout)
        agreed = agreement(heldout, np.load(self._vectors_path(TEACHER)))
        took = time.perf_counter() - started
        if twin is None:
            self.costs.record(estimate, time.perf_counter() - loaded)
        self.state["rows"][name] = {
            "name": name,
            "candidate": spec.name,
            "form": form,
            "kind": spec.kind,
            "size": spec.size,
            "scores": result["scores"],
            "retention": result["retention"],
            "mean_retention": result["mean_retention"],
            "scores_from": None if twin is None else twin["name"],
            "agreement_cosine": agreed["cosine"],
            "agreement_similarity": agreed["similarity_spearman"],
            "size_bytes": build.form_size_bytes(folder, form),
            "model_folder": str(folder),
            "score_seconds": took,
        }
        self._save()
        self._log("scored", row=name, seconds=took, estimated=estimate, shared=twin is not None)
        say(f"  mean retention {result['mean_retention']:.2f}% ({took:.0f} s)")

    def _relative(self, row: dict) -> float:
        return self.costs.relative(row["kind"], row["size"], row["form"], row["candidate"])

    def _measure_speed(self, spec: build.CandidateSpec, folder: Path) -> None:
        """The candidate's eager fp32 seconds per sentence over the teacher's, on the first
        timing lines, so that its forms' estimates come from what it is, not its depth."""
        if spec.kind == "static" or spec.name in self.costs.speed:
            return
        lines = self.heldout[: min(64, self.config.timing_lines)]
        embed = embed_function(build.load_form(folder, "fp32"), self.config.batch_size)
        embed(lines[:8])  # warm-up
        started = time.perf_counter()
        embed(lines)
        per_sentence = (time.perf_counter() - started) / len(lines)
        self.costs.speed[spec.name] = per_sentence / self.costs.unit

    def _rows(self) -> list[dict]:
        """Every scored form, by candidate (in build order) and form."""
        order = [spec.name for spec in self.specs]
        forms = [STATIC_FORM, *TRANSFORMER_FORMS]
        return sorted(
            self.state["rows"].values(),
            key=lambda row: (
                order.index(row["candidate"]) if row["candidate"] in order else len(order),
                forms.index(row["form"]),
            ),
        )

    def _timed_rows(self) -> list[dict]:
        """The teacher's row and every scored form's, with sentences/s from one timing
        of all of them in turns (reused when an earlier run timed the same forms, unless
        ``retime``)."""
        rows = self._rows()
        names = [TEACHER, *(row["name"] for row in rows)]
        timing = self.state.get("timing", {})
        if timing.get("names") != names or self.retime:
            if self.retime and timing:
                self._log("timing replaced", timing=timing)
                load = timing.get("load_average_1min")
                self._note(
                    "timed again (--retime); the earlier timing"
                    + (f" (load average {load:.2f})" if load is not None else "")
                    + f" is kept in {LOG_FILE}"
                )
            timing = self._time(rows, names)
        teacher_speed = timing["sentences_per_s"][TEACHER]
        teacher = self.state[TEACHER]
        reference = {
            "name": f"{TEACHER} / fp32",
            "candidate": TEACHER,
            "form": "fp32",
            "kind": TEACHER,
            "scores": teacher["scores"],
            "retention": dict.fromkeys(suite.TASKS, 100.0),
            "mean_retention": 100.0,
            "agreement_cosine": 1.0,
            "agreement_similarity": 100.0,
            "size_bytes": teacher["size_bytes"],
            "model_folder": teacher["folder"],
        }
        out = []
        for row in [reference, *rows]:
            key = TEACHER if row is reference else row["name"]
            speed = timing["sentences_per_s"][key]
            out.append({**row, "sentences_per_s": speed, "x_teacher": speed / teacher_speed})
        return out

    def _time(self, rows: list[dict], names: list[str]) -> dict:
        """Time the teacher and every form on the same held-out lines, in turns."""
        lines = self.heldout[: self.config.timing_lines]
        relatives = [self._relative(row) for row in rows]
        per_pass = self.costs.scaled(self.costs.timing(relatives)) / (
            self.config.timing_repeats + 1
        )
        fits = int((self.deadline.left() - REPORT_SECONDS) // max(per_pass, 1e-9)) - 1
        repeats = max(1, min(self.config.timing_repeats, fits))
        if repeats < self.config.timing_repeats:
            self._note(f"timed with {repeats} pass(es) instead of {self.config.timing_repeats}")
        say(
            f"timing the teacher and {len(rows)} forms in turns on {len(lines)} held-out lines "
            "in a fresh process..."
        )
        request = {
            "teacher": self.config.teacher,
            "forms": [[row["name"], row["model_folder"], row["form"]] for row in rows],
            "lines": lines,
            "batch_size": self.config.batch_size,
            "repeats": repeats,
        }
        started = time.perf_counter()
        timeout = max(self.deadline.left() - REPORT_SECONDS, 60.0)
        results, fallback = time_forms(request, self.out / TIMING_REQUEST_FILE, timeout)
        if fallback:
            self._note(f"{fallback}: timed in this process instead")
        took = time.perf_counter() - started
        passes = (repeats + 1) / (self.config.timing_repeats + 1)
        self.costs.record(self.costs.timing(relatives) * passes, took)
        timing = {
            "names": names,
            "sentences_per_s": {name: results[name]["sentences_per_s"] for name in names},
            "repeats": repeats,
            "lines": len(lines),
            "batch_size": self.config.batch_size,
            "threads": torch.get_num_threads(),
            "load_average_1min": results[TEACHER]["load_average_1min"],
            "fresh_process": fallback is None,
        }
        self.state["timing"] = timing
        self._save()
        self._log("timed", seconds=took, forms=len(rows), timing=timing)
        return timing

    def _finish(self, rows: list[dict]) -> dict:
        candidates = [row for row in rows if row["kind"] != TEACHER]
        for row in candidates:
            if row["scores_from"]:
                self.notes.append(
                    f"{row['name']} has the suite scores of {row['scores_from']}: their vectors "
                    "of every held-out line agree to cosine >= 0.99999, so it was not rescored"
                )
        picked, kept = pick(candidates, self.config.keep)
        for row in rows:
            row["picked"] = picked is not None and row["name"] == picked["name"]
        result = {
            "config": to_dict(self.config),
            "picked": picked,
            "kept": kept,
            "saved": None,
            "load": None,
            "seconds": time.perf_counter() - self.started,
            "notes": self.notes,
            "timing": self.state["timing"],
        }
        if picked is not None:
            result["saved"], result["load"] = save_picked(self.out, picked)
        say(table(rows))
        say(summary(result))
        result["seconds"] = time.perf_counter() - self.started
        report = write_report(self.out, rows, result)
        self._log("finished", seconds=result["seconds"], picked=picked and picked["name"])
        say(f"report: {report}; took {result['seconds']:.0f} s of {self.config.time_budget:.0f} s")
        return {**result, "rows": rows}


def run_compress(
    config: CompressConfig, out_dir: str | Path, resume: bool = True, retime: bool = False
) -> dict:
    """Run (or continue) the search in ``out_dir``; returns the results (also written to
    ``results.json``): rows (the teacher first), picked, kept, saved, load, notes.
    ``retime``: time every form again on this machine now, and pick again (a finished
    search rebuilds and rescores nothing; its earlier timing stays in the log)."""
    out = Path(out_dir)
    if retime and not (out / STATE_FILE).is_file():
        raise ConfigError(f"--retime times an earlier search again, but {out} holds none")
    check_out_dir(out, config, resume)
    resolve(config.teacher)  # a missing teacher: an error before any work
    data = suite.load_suite_data(suite_settings(config.suite), config.data_root)
    with RunLock(out):
        return CompressSearch(config, out, data, retime).run()


__all__ = [
    "CONFIG_FILE",
    "STATE_FILE",
    "CompressSearch",
    "check_out_dir",
    "run_compress",
    "split_corpus",
]
