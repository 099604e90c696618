"""The distillation job end to end on a tiny random teacher, and its errors on bad input."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_VOCAB
from distill_helpers import random_teacher, tiny_tokenizer, write_text_corpus

import distilkit
from distilkit.cli.distill import add_distill_parser, distill_config_from_args
from distilkit.data.corpus import CorpusError
from distilkit.methods.general import job as job_module
from distilkit.methods.general.config import DistillConfig
from distilkit.methods.general.job import run_distillation
from distilkit.model.checkpoint import load_model, save_model
from distilkit.model.hub import ModelNotFoundError
from distilkit.model.student import StudentError
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import ConfigError
from distilkit.train.trainer import STATE_FILE, TrainingConfig


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5-layer random BERT teacher with a masked-LM head, saved in Hugging Face format."""
    root = tmp_path_factory.mktemp("teacher")
    folder = root / "teacher"
    save_model(random_teacher(num_layers=5, seed=0), folder, tokenizer=tiny_tokenizer(root))
    return folder


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_text_corpus(tmp_path_factory.mktemp("corpus") / "text.txt", paragraphs=120)


def tiny_job(teacher: Path, corpus: list[Path], **overrides) -> DistillConfig:
    training = TrainingConfig(
        max_steps=4,
        batch_size=4,
        learning_rate=1e-3,
        log_every=1,
        eval_every=2,
        checkpoint_every=2,
        progress=False,
    )
    settings = {
        "teacher": str(teacher),
        "corpus": [str(p) for p in corpus],
        "num_layers": 2,
        "strategy": "auto",
        "max_len": 24,
        "heldout_fraction": 0.1,
        "training": training,
        **overrides,
    }
    return DistillConfig(**settings)


def test_an_auto_job_writes_config_log_checkpoints_and_a_loadable_student(
    teacher_folder, corpus_file, tmp_path
):
    out_dir = tmp_path / "run"
    metrics = run_distillation(tiny_job(teacher_folder, [corpus_file]), out_dir, evaluate=False)
    assert metrics["training"]["steps"] == 4
    assert metrics["training"]["stopped_by"] == "max_steps"
    assert set(metrics["training"]["final_losses"]) == {"ce", "mlm", "cos", "total"}
    assert json.loads((out_dir / "metrics.json").read_text())["training"]["steps"] == 4

    saved = DistillConfig.load(out_dir / "distill_config.json")
    assert saved.strategy == "auto" and saved.num_layers == 2
    layers = saved.layers  # the auto choice, resolved
    assert len(layers) == 2 and layers == sorted(layers) and all(0 <= i < 5 for i in layers)

    records = [json.loads(line) for line in (out_dir / "train_log.jsonl").open()]
    assert [r["step"] for r in records if "loss/total" in r] == [1, 2, 3, 4]
    evals = [r for r in records if "eval/token_cosine" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(0.0 <= r["eval/mlm_accuracy"] <= 1.0 for r in evals)

    checkpoints = out_dir / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "step-0000004"
    assert (checkpoints / "step-0000004" / STATE_FILE).is_file()
    run_config = json.loads((checkpoints / "step-0000004" / "run_config.json").read_text())
    assert run_config["distill"]["layers"] == layers

    encoder = distilkit.load(out_dir / "student")
    assert encoder.config.num_layers == 2 and encoder.config.head == "masked_lm"
    vectors = encoder.embed(["the cat sat on the mat.", "hello world"])
    assert tuple(vectors.shape) == (2, 32) and bool(torch.isfinite(torch.as_tensor(vectors)).all())
    # the saved student is the trained one: it equals the last checkpoint
    student = load_model(out_dir / "student").state_dict()
    checkpoint = load_model(checkpoints / "step-0000004" / "model").state_dict()
    assert all(torch.equal(student[k], checkpoint[k]) for k in checkpoint)
    teacher = load_model(teacher_folder).state_dict()
    copied_from = f"backbone.layers.{layers[0]}.attention.query.weight"
    assert not torch.equal(
        student["backbone.layers.0.attention.query.weight"], teacher[copied_from]
    )

    # running the finished job again resumes at its end and keeps the same layers
    again = run_distillation(tiny_job(teacher_folder, [corpus_file]), out_dir, evaluate=False)
    assert again["training"]["steps"] == 4
    assert DistillConfig.load(out_dir / "distill_config.json").layers == layers


def test_a_distilbert_layout_job_with_smoothed_masking(teacher_folder, corpus_file, tmp_path):
    config = tiny_job(
        teacher_folder,
        [corpus_file],
        strategy="uniform",
        layout="distilbert",
        objective={"masking": {"smoothing": 0.7}},
        training=TrainingConfig(max_steps=2, batch_size=4, checkpoint_every=2, progress=False),
    )
    run_distillation(config, tmp_path / "run", evaluate=False)
    assert DistillConfig.load(tmp_path / "run" / "distill_config.json").layers == [0, 4]
    student = load_model(tmp_path / "run" / "student")
    assert student.config.layout == "distilbert" and student.config.num_layers == 2


def test_frozen_embeddings_stay_the_teachers_and_sentence_losses_train(
    teacher_folder, corpus_file, tmp_path
):
    config = tiny_job(
        teacher_folder,
        [corpus_file],
        strategy="uniform",
        freeze_embeddings=True,
        objective={"weights": {"ce": 0, "mlm": 0, "cos": 1, "sentence": 1, "similarity": 2}},
        training=TrainingConfig(max_steps=3, batch_size=4, checkpoint_every=3, progress=False),
    )
    metrics = run_distillation(config, tmp_path / "run", evaluate=False)
    assert set(metrics["training"]["final_losses"]) == {"cos", "sentence", "similarity", "total"}
    student = load_model(tmp_path / "run" / "student").state_dict()
    teacher = load_model(teacher_folder).state_dict()
    for name in ("word_embeddings", "position_embeddings", "layer_norm"):
        key = next(k for k in student if f"embeddings.{name}" in k and k.endswith("weight"))
        assert torch.equal(student[key], teacher[key]), key
    block = "backbone.layers.0.attention.query.weight"
    assert not torch.equal(student[block], teacher[block])  # layer 0 = teacher layer 0, trained


def test_a_sentence_unit_job_trains_on_one_sentence_per_sequence(
    teacher_folder, corpus_file, tmp_path
):
    config = tiny_job(
        teacher_folder,
        [corpus_file],
        strategy="uniform",
        corpus_unit="sentence",
        pack=False,
        training=TrainingConfig(max_steps=2, batch_size=4, checkpoint_every=2, progress=False),
    )
    metrics = run_distillation(config, tmp_path / "run", evaluate=False)
    assert metrics["training"]["steps"] == 2
    saved = DistillConfig.load(tmp_path / "run" / "distill_config.json")
    assert saved.corpus_unit == "sentence" and saved.pack is False
    with pytest.raises(ConfigError, match="corpus_unit must be one of"):
        tiny_job(teacher_folder, [corpus_file], corpus_unit="word")


def test_train_blocks_leaves_the_other_blocks_as_copied(teacher_folder, corpus_file, tmp_path):
    config = tiny_job(
        teacher_folder,
        [corpus_file],
        layers=[0, 2, 4],
        train_blocks=[1],
        training=TrainingConfig(max_steps=2, batch_size=4, checkpoint_every=2, progress=False),
    )
    run_distillation(config, tmp_path / "run", evaluate=False)
    student = load_model(tmp_path / "run" / "student").state_dict()
    teacher = load_model(teacher_folder).state_dict()
    weight = "backbone.layers.{}.attention.query.weight"
    assert torch.equal(student[weight.format(0)], teacher[weight.format(0)])
    assert not torch.equal(student[weight.format(1)], teacher[weight.format(2)])
    assert torch.equal(student[weight.format(2)], teacher[weight.format(4)])
    with pytest.raises(ConfigError, match=r"train_blocks \[3\] must name student blocks 0..2"):
        run_distillation(
            dataclasses.replace(config, train_blocks=[3]), tmp_path / "bad", evaluate=False
        )


# --------------------------------------------------------------------------- bad input
def test_an_empty_corpus_is_a_clear_error(teacher_folder, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n", encoding="utf-8")
    with pytest.raises(CorpusError, match="the corpus is empty"):
        run_distillation(tiny_job(teacher_folder, [empty]), tmp_path / "run", evaluate=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x7fELF\x02\x01\x01\x00\x00\x00 a binary", "contains NUL bytes and looks like a binary"),
        ("the cat sat".encode("utf-16"), "is not valid UTF-8"),
        (b"caf\xe9 au lait, latin-1 text", "is not valid UTF-8"),
    ],
)
def test_a_binary_or_non_utf8_corpus_file_is_a_clear_error(
    teacher_folder, tmp_path, content, message
):
    path = tmp_path / "data.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        run_distillation(tiny_job(teacher_folder, [path]), tmp_path / "run", evaluate=False)


def test_a_missing_corpus_or_teacher_is_a_clear_error(teacher_folder, corpus_file, tmp_path):
    with pytest.raises(CorpusError, match="corpus path not found"):
        run_distillation(
            tiny_job(teacher_folder, [tmp_path / "nowhere.txt"]), tmp_path / "a", evaluate=False
        )
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        run_distillation(tiny_job(tmp_path / "no-teacher", [corpus_file]), tmp_path / "b")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"layers": [0, 7]}, r"layer\(s\) \[7\] out of range: the teacher has layers 0..4"),
        ({"layers": [3, 1]}, "must be in increasing order"),
        ({"num_layers": 6, "strategy": "uniform"}, "between 1 and 5"),
        ({"num_layers": 6}, "between 1 and 5"),  # auto: checked before any scoring
        ({"strategy": "middle"}, "unknown layer strategy 'middle'"),
    ],
)
def test_an_impossible_layer_choice_is_a_clear_error(
    teacher_folder, corpus_file, tmp_path, overrides, message
):
    config = tiny_job(teacher_folder, [corpus_file], **overrides)
    with pytest.raises(StudentError, match=message):
        run_distillation(config, tmp_path / "run", evaluate=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_tokenizer_that_does_not_fit_the_teacher_is_a_clear_error(corpus_file, tmp_path):
    """A teacher folder whose vocabulary (120 entries) is larger than its embedding
    matrix (99 rows): teacher and student would disagree about what the ids mean."""
    extra = [f"word{i}" for i in range(21)]
    vocab = tmp_path / "vocab" / "vocab.txt"
    vocab.parent.mkdir()
    vocab.write_text("".join(t + "\n" for t in [*TINY_VOCAB, *extra]), encoding="utf-8")
    folder = tmp_path / "teacher"
    save_model(random_teacher(3, seed=1), folder, tokenizer=Tokenizer.from_vocab(vocab))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        corpus_file.read_text(encoding="utf-8") + "\n\n" + " ".join(extra) + "\n",
        encoding="utf-8",
    )
    with pytest.raises(
        ValueError, match=r"has 120 entries but the teacher's embedding matrix has 99 rows"
    ):
        run_distillation(tiny_job(folder, [corpus]), tmp_path / "run", evaluate=False)


def test_fit_mlm_head_gives_a_headless_teacher_a_trained_head(corpus_file, tmp_path):
    """A teacher saved without a head gets one: training lowers the held-out
    masked-token loss, the result loads as a masked-LM teacher, and only the head (and
    the unfrozen top block) changed."""
    from distilkit.methods.general.mlm_head import MLMHeadConfig, fit_mlm_head

    root = tmp_path / "bare"
    bare = random_teacher(num_layers=3, seed=4)
    bare.config.head = None
    headless = type(bare)(bare.config)
    headless.backbone.load_state_dict(bare.backbone.state_dict())
    save_model(headless, root / "teacher", tokenizer=tiny_tokenizer(root))
    config = MLMHeadConfig(
        teacher=str(root / "teacher"),
        corpus=[str(corpus_file)],
        train_layers=1,
        max_len=24,
        heldout_fraction=0.1,
        training=TrainingConfig(
            max_steps=30,
            batch_size=8,
            learning_rate=3e-3,
            eval_every=30,
            checkpoint_every=30,
            progress=False,
        ),
    )
    metrics = fit_mlm_head(config, tmp_path / "run")
    assert metrics["after"]["eval/mlm_loss"] < metrics["before"]["eval/mlm_loss"]
    fitted = load_model(tmp_path / "run" / "teacher")
    assert fitted.config.head == "masked_lm"
    before, after = headless.state_dict(), fitted.state_dict()
    for name in before:  # frozen blocks and embeddings are untouched
        if not name.startswith("backbone.layers.2."):
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(
        before["backbone.layers.2.ffn.output.weight"], after["backbone.layers.2.ffn.output.weight"]
    )


def test_distill_flags_set_the_corpus_unit_and_packing():
    parser = argparse.ArgumentParser()
    add_distill_parser(parser.add_subparsers())

    def config(*flags: str) -> DistillConfig:
        return distill_config_from_args(parser.parse_args(["distill", *flags]))

    default = config()
    assert (default.corpus_unit, default.pack) == ("sentence", False)
    packed = config("--corpus-unit", "paragraph", "--pack")
    assert (packed.corpus_unit, packed.pack) == ("paragraph", True)
    with pytest.raises(SystemExit):
        config("--corpus-unit", "word")


def test_distill_saves_local_corpus_paths_absolute(tmp_path, monkeypatch):
    parser = argparse.ArgumentParser()
    add_distill_parser(parser.add_subparsers())
    monkeypatch.chdir(tmp_path)
    args = parser.parse_args(
        ["distill", "--corpus", "books", "rows.tsv:text", "hf:wikitext:train:text"]
    )
    config = distill_config_from_args(args)
    assert config.corpus == [str(tmp_path / "books"), str(tmp_path / "rows.tsv:text"),
                             "hf:wikitext:train:text"]  # fmt: skip


@pytest.mark.filterwarnings("ignore:.*were truncated")  # the tiny vocabulary's [UNK]s
def test_the_evaluated_job_reports_how_closely_the_student_follows_the_teacher(
    teacher_folder, corpus_file, tmp_path
):
    out_dir = tmp_path / "run"
    run_distillation(
        tiny_job(teacher_folder, [corpus_file]), out_dir, evaluate=True, quick_eval=True
    )
    metrics = json.loads((out_dir / "metrics.json").read_text())
    agreement = metrics["agreement"]
    log = [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]
    last_eval = [record for record in log if "eval/sentence_cosine" in record][-1]
    # the held-out figure is the trainer's own evaluation of the final weights
    assert agreement["heldout_sentence_cosine"] == pytest.approx(last_eval["eval/sentence_cosine"])
    assert -1.0 <= agreement["stsb_sentence_cosine"] <= 1.0
    assert agreement["domain_gap"] == pytest.approx(
        agreement["heldout_sentence_cosine"] - agreement["stsb_sentence_cosine"]
    )
    # speeds come from a fresh process, not this one's heap after training
    assert [row["timed_in"] for row in metrics["rows"]] == ["a fresh process"] * 3
    report = (out_dir / "report.md").read_text()
    assert "## How closely the student follows the teacher" in report
    assert f"| STS-B dev sentences | {agreement['stsb_sentence_cosine']:.4f} |" in report


# --------------------------------------------------------------------------- job deadline
def test_training_budget_fits_the_deadline():
    from distilkit.methods.general.deadline import (
        MIN_TRAINING_SECONDS,
        SETTLING_SECONDS,
        fit_training_budget,
    )

    assert fit_training_budget(840, 40, 100, 600) == 600  # room to spare: the budget stands
    assert fit_training_budget(840, 40, 100, 600) <= 840 - 40 - 100 - SETTLING_SECONDS
    assert fit_training_budget(840, 40, 300, 600) == 840 - 40 - 300 - SETTLING_SECONDS
    assert fit_training_budget(840, 40, 300, None) == 840 - 40 - 300 - SETTLING_SECONDS
    assert fit_training_budget(100, 40, 300, 600) == MIN_TRAINING_SECONDS  # never below it
    assert fit_training_budget(100, 40, 300, 30) == 30


def test_evaluation_work_counts_what_the_evaluation_embeds():
    from distilkit.evaluate import sentence as evaluation
    from distilkit.methods.general.deadline import LATENCY_COST, evaluation_work

    protocol = evaluation.FULL_PROTOCOL
    pairs = len(evaluation.read_stsb(protocol.stsb_path)[0])
    probe = len(evaluation.read_sst2(protocol.sst2_train_path)[0]) + len(
        evaluation.read_sst2(protocol.sst2_dev_path)[0]
    )
    timing = (protocol.throughput_repeats + 1) * protocol.throughput_texts
    per_model = 2 * pairs + probe + timing + LATENCY_COST * protocol.latency_texts
    # the teacher, a 3-of-6 student at 4/7 of its cost, and the agreement pass over STS-B
    expected = (per_model + 2 * pairs) * (1 + 4 / 7)
    assert evaluation_work(protocol, 6, 3) == pytest.approx(expected)
    quick = evaluation_work(evaluation.QUICK_PROTOCOL, 6, 3)
    assert 0 < quick < evaluation_work(protocol, 6, 3) / 3


def test_the_default_job_has_a_deadline_and_explicit_limits_lift_it(tmp_path):
    from distilkit.methods.general.config import BUDGET_ONLY_MAX_STEPS, DEFAULT_JOB_BUDGET

    parser = argparse.ArgumentParser()
    add_distill_parser(parser.add_subparsers())

    def config(*flags: str) -> DistillConfig:
        return distill_config_from_args(parser.parse_args(["distill", *flags]))

    assert config().job_time_budget == DEFAULT_JOB_BUDGET
    assert config().training.time_budget is None  # training takes what the deadline leaves
    assert config("--corpus", "books").job_time_budget == DEFAULT_JOB_BUDGET
    assert config("--job-time-budget", "300").training.time_budget is None
    assert config("--time-budget", "60", "--job-time-budget", "300").training.time_budget == 60
    # the MobileBERT job does not fit its training to the deadline: it keeps its budget
    assert config("--student-architecture", "mobilebert").training.time_budget == 600
    assert config("--time-budget", "6300").job_time_budget is None  # the long run
    # a time budget alone sets the length: the default step cap would end it early
    assert config("--time-budget", "6300").training.max_steps == BUDGET_ONLY_MAX_STEPS
    assert config("--time-budget", "60", "--max-steps", "50").training.max_steps == 50
    assert config().training.max_steps == DistillConfig().training.max_steps
    capped = tmp_path / "capped.json"
    capped.write_text(json.dumps({"training": {"max_steps": 7}}))
    assert config("--config", str(capped), "--time-budget", "60").training.max_steps == 7
    assert config("--max-steps", "50").job_time_budget is None
    assert config("--job-time-budget", "300").job_time_budget == 300
    assert config("--time-budget", "60", "--job-time-budget", "300").job_time_budget == 300
    saved = tmp_path / "distill_config.json"
    saved.write_text(json.dumps({"training": {"max_steps": 10}}))
    assert config("--config", str(saved)).job_time_budget is None
    with pytest.raises(
        ConfigError,
        match=r"job_time_budget \(--job-time-budget\) must be a finite number of seconds > 0",
    ):
        config("--job-time-budget", "0")


@pytest.mark.filterwarnings("ignore:.*were truncated")  # the tiny vocabulary's [UNK]s
def test_an_evaluated_job_with_a_deadline_records_its_estimate_and_what_it_took(
    teacher_folder, corpus_file, tmp_path
):
    from distilkit.methods.general.deadline import MIN_TRAINING_SECONDS

    for job_budget, out in ((10_000.0, "roomy"), (1.0, "tight")):
        config = tiny_job(teacher_folder, [corpus_file], job_time_budget=job_budget)
        metrics = run_distillation(config, tmp_path / out, evaluate=True, quick_eval=True)
        deadline = metrics["deadline"]
        assert deadline["teacher_sentences_per_s"] > 0
        assert deadline["evaluation_seconds_estimate"] > 0
        # a roomy deadline keeps the dev suite (the student's part timed on the cut before
        # training); an impossible one leaves it out, with a note in the report
        if out == "roomy":
            assert deadline["suite"] == "kept"
            assert deadline["suite_seconds_student_estimate"] > 0
            estimate = deadline["evaluation_seconds_estimate"]
            assert estimate > 1.1 * deadline["suite_seconds_student_estimate"]
        else:
            assert deadline["suite"] == "left out"
            report = (tmp_path / out / "report.md").read_text()
            assert "dev suite left out to keep the job's deadline" in report
            assert f"{tmp_path / out / 'student'} --cut " in report  # the command to run
        saved = json.loads((tmp_path / out / "metrics.json").read_text())
        recorded = saved["extra"]["training"]["deadline"]
        if out == "roomy":
            names = [row["name"] for row in saved["suite"]]
            assert names[0] == "teacher" and names[-1] == "student" and len(names) == 3
            assert names[1].startswith("untrained cut ")
        else:
            assert saved["suite"] is None
        assert recorded["evaluation_seconds"] > 0
        assert recorded["job_seconds"] >= recorded["evaluation_seconds"]
        if out == "roomy":  # no time budget set: training gets what the deadline leaves
            assert deadline["training_budget"] > 5_000
        else:  # an impossible deadline still trains for the minimum, never zero
            assert deadline["training_budget"] == MIN_TRAINING_SECONDS
        assert metrics["training"]["stopped_by"] == "max_steps"  # 4 steps, well within either


def test_a_deadline_without_evaluation_still_bounds_training(
    teacher_folder, corpus_file, tmp_path, capsys
):
    """--no-eval (and several processes) skip the deadline's evaluation estimate; with no
    training budget of its own, training still gets the deadline less setup and margin."""
    from distilkit.methods.general.deadline import MIN_TRAINING_SECONDS

    config = tiny_job(teacher_folder, [corpus_file], job_time_budget=1.0)
    assert config.training.time_budget is None
    metrics = run_distillation(config, tmp_path / "run", evaluate=False)
    out = capsys.readouterr().out
    assert f"job deadline 1 s: training gets {MIN_TRAINING_SECONDS:.0f} s" in out
    assert metrics["training"]["stopped_by"] == "max_steps"


def test_resuming_with_another_student_is_a_clear_error(teacher_folder, corpus_file, tmp_path):
    out_dir = tmp_path / "run"
    run_distillation(
        tiny_job(teacher_folder, [corpus_file], layers=[0, 2]), out_dir, evaluate=False
    )
    for overrides, named in (
        ({"layers": [1, 2]}, r"layers \[1, 2\] \(the run there: \[0, 2\]\)"),
        ({"num_layers": 1}, r"num_layers 1 \(the run there: 2\)"),
    ):
        with pytest.raises(ConfigError, match=named + r".*--no-resume"):
            run_distillation(tiny_job(teacher_folder, [corpus_file], **overrides), out_dir)
    # the same student (layers not named) resumes; --no-resume starts another
    run_distillation(tiny_job(teacher_folder, [corpus_file]), out_dir, evaluate=False)
    config = tiny_job(teacher_folder, [corpus_file], layers=[1, 2])
    run_distillation(config, out_dir, resume=False, evaluate=False)
    assert DistillConfig.load(out_dir / "distill_config.json").layers == [1, 2]


def test_layer_flags_are_checked(tmp_path):
    parser = argparse.ArgumentParser()
    add_distill_parser(parser.add_subparsers())

    def config(*flags: str) -> DistillConfig:
        return distill_config_from_args(parser.parse_args(["distill", *flags]))

    assert config("--layers", "0,4,5").layers == [0, 4, 5]
    assert config("--layers", "0,4,5", "--num-layers", "3").num_layers == 3
    with pytest.raises(ConfigError, match="names 2 layers but --num-layers is 3"):
        config("--layers", "0,1", "--num-layers", "3")
    for bad in ("1,,2", "1,", "a,b"):
        with pytest.raises(SystemExit):
            config("--layers", bad)
    with pytest.raises(ConfigError, match="temperature must be a finite number > 0"):
        config("--temperature", "0")
    with pytest.raises(ConfigError, match="auto_sample must be at least 8"):
        DistillConfig(auto_sample=0)


def test_auto_choice_on_too_little_held_out_text_is_a_clear_error(teacher_folder, tmp_path):
    corpus = write_text_corpus(tmp_path / "small.txt", 30)
    with pytest.raises(ConfigError, match=r"only [0-9] held-out sequence.*--layers"):
        run_distillation(tiny_job(teacher_folder, [corpus]), tmp_path / "run", evaluate=False)


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_a_dropout_outside_its_range_is_a_config_error(rate):
    with pytest.raises(ConfigError, match="dropout must be in"):
        DistillConfig(dropout=rate)


def test_the_dropout_key_sets_the_students_training_dropout_only(
    teacher_folder, corpus_file, tmp_path, monkeypatch
):
    seen = []
    original = job_module.set_dropout

    def recording(model, rate):
        original(model, rate)
        seen.append((rate, {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}))

    monkeypatch.setattr(job_module, "set_dropout", recording)
    config = tiny_job(
        teacher_folder,
        [corpus_file],
        strategy="uniform",
        dropout=0.0,
        training=TrainingConfig(max_steps=1, batch_size=4, checkpoint_every=1, progress=False),
    )
    run_distillation(config, tmp_path / "run", evaluate=False)
    assert seen == [(0.0, {0.0})]
    saved = load_model(tmp_path / "run" / "student").config
    teacher = load_model(teacher_folder).config
    assert (saved.hidden_dropout, saved.attention_dropout) == (
        teacher.hidden_dropout,
        teacher.attention_dropout,
    )
    assert DistillConfig.load(tmp_path / "run" / "distill_config.json").dropout == 0.0
