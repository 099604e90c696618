"""MobileBERT's layer-wise transfer: the two losses against hand computations, the
student shaped to a teacher, progressive stages that touch only their own block, a
resumed run equal to an uninterrupted one, and teacher -> student -> transformers."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from distill_helpers import random_teacher, tiny_tokenizer, write_text_corpus

from distilkit.methods import mobilebert
from distilkit.methods.general.config import DistillConfig
from distilkit.model.checkpoint import load_model, save_model
from distilkit.settings import ConfigError
from distilkit.train.losses import attention_prob_kl, feature_map_transfer_loss
from distilkit.train.trainer import TrainingConfig


# ----------------------------------------------------------------------------- losses by hand
def test_feature_map_transfer_matches_a_hand_computation() -> None:
    student = torch.tensor([[[1.0, 2.0, 4.0], [0.0, 0.0, 3.0], [9.0, 9.0, 9.0]]])  # (1, 3, 3)
    teacher = torch.tensor([[[2.0, 2.0, 2.0], [1.0, -1.0, 0.0], [5.0, -5.0, 1.0]]])
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding and must not count
    eps = 1e-5

    def token_loss(s: list[float], t: list[float]) -> float:
        mean_s, mean_t = sum(s) / 3, sum(t) / 3
        var_s = sum((x - mean_s) ** 2 for x in s) / 3
        var_t = sum((x - mean_t) ** 2 for x in t) / 3
        normalised = sum(
            ((a - mean_s) / math.sqrt(var_s + eps) - (b - mean_t) / math.sqrt(var_t + eps)) ** 2
            for a, b in zip(s, t, strict=True)
        )
        return normalised / 3 + 0.5 * ((mean_s - mean_t) ** 2 + abs(var_s - var_t))

    expected = (token_loss([1, 2, 4], [2, 2, 2]) + token_loss([0, 0, 3], [1, -1, 0])) / 2
    got = feature_map_transfer_loss(student, teacher, mask, statistics_weight=0.5, eps=eps)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # equal maps cost nothing; a shifted map costs only the mean term
    assert float(feature_map_transfer_loss(teacher, teacher, mask)) == pytest.approx(0, abs=1e-9)
    shifted = feature_map_transfer_loss(teacher + 2.0, teacher, mask)
    assert float(shifted) == pytest.approx(4.0, rel=1e-5)


def test_attention_transfer_is_kl_per_head_and_ignores_padded_keys() -> None:
    generator = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0]])  # the last token is padding
    logits_s = torch.randn(1, 2, 4, 4, generator=generator)
    logits_t = torch.randn(1, 2, 4, 4, generator=generator)
    keys = mask.bool()[:, None, None, :]
    student = logits_s.masked_fill(~keys, -1e9).softmax(-1)
    teacher = logits_t.masked_fill(~keys, -1e9).softmax(-1)
    expected = 0.0
    for head in range(2):
        for query in range(3):  # real queries only
            expected += sum(
                float(teacher[0, head, query, key])
                * math.log(float(teacher[0, head, query, key] / student[0, head, query, key]))
                for key in range(3)  # real keys only
            )
    expected /= 2 * 3
    got = attention_prob_kl(student, teacher, mask)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # whatever sits at padded keys and padded queries changes nothing
    noisy = student.clone()
    noisy[..., 3] = 0.7
    noisy[:, :, 3] = 0.1
    assert float(attention_prob_kl(noisy, teacher, mask)) == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- the student
def test_student_is_shaped_to_the_teacher_and_starts_from_its_embeddings() -> None:
    teacher = random_teacher(num_layers=3, seed=1, head=None)
    config = mobilebert.mobilebert_config(
        teacher.config, bottleneck_size=12, ffn_stack=2, embedding_size=13, intermediate_size=27
    )
    assert (config.num_layers, config.hidden_size, config.num_heads) == (3, 32, 4)
    assert config.true_hidden_size == 12 and config.normalization_type == "no_norm"
    student = mobilebert.build_mobilebert_student(teacher, config, seed=0)
    words = teacher.backbone.embeddings.word_embeddings.weight.detach()
    embeddings = student.backbone.embeddings
    # word vectors through the transformation: the teacher's, projected on 13 of 32 directions
    rebuilt = (
        embeddings.word_embeddings.weight @ embeddings.embedding_transformation.weight[:, 13:26].t()
    )
    _, singular, _ = torch.linalg.svd(words.double())
    residual = float((rebuilt - words).detach().pow(2).sum())
    assert residual == pytest.approx(float(singular[13:].pow(2).sum()), rel=1e-4)
    positions = teacher.backbone.embeddings.position_embeddings.weight
    assert torch.equal(embeddings.position_embeddings.weight, positions)
    with pytest.raises(ConfigError, match="not divisible by the teacher's 4 attention heads"):
        mobilebert.mobilebert_config(teacher.config, bottleneck_size=13)
    default = mobilebert.mobilebert_config(teacher.config, embedding_size=13)
    assert default.intra_bottleneck_size == 128  # 128 is a multiple of 4 heads


# ----------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def teacher_and_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mobile")
    folder = root / "teacher"
    teacher = random_teacher(num_layers=3, seed=0, head=None)
    save_model(teacher, folder, tokenizer=tiny_tokenizer(root))
    return folder, write_text_corpus(root / "corpus.txt", paragraphs=80)


def tiny_config(paths: tuple[Path, Path], transfer: str, max_steps: int) -> mobilebert.Config:
    teacher, corpus = paths
    training = TrainingConfig(
        max_steps=max_steps, batch_size=8, learning_rate=1e-3, eval_every=1000,
        checkpoint_every=2, progress=False, warmup_fraction=0.0,
    )  # fmt: skip
    distill = DistillConfig(
        teacher=str(teacher), corpus=[str(corpus)], max_len=32, training=training
    )
    return mobilebert.Config(
        distill=distill, bottleneck_size=12, ffn_stack=2, embedding_size=13,
        intermediate_size=27, transfer=transfer, transfer_fraction=0.8,
    )  # fmt: skip


def stage_students(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {
        folder.name.split("-", 1)[1]: load_model(folder / "student").state_dict()
        for folder in sorted((out / "stages").iterdir())
    }


def test_progressive_stages_change_only_their_own_block(teacher_and_corpus, tmp_path) -> None:
    config = tiny_config(teacher_and_corpus, "progressive", max_steps=20)  # 4 steps a stage
    assert mobilebert.stage_plan("progressive", 3) == [
        "embeddings", "block-1", "block-2", "block-3", "distill",
    ]  # fmt: skip
    mobilebert.run(config, tmp_path, evaluate=False)
    states = stage_students(tmp_path)
    names = list(states)
    assert names == mobilebert.stage_plan("progressive", 3)
    for before, after in itertools.pairwise(names):
        changed = {
            ".".join(key.split(".")[1 : 3 if key.startswith("backbone.layers") else 2])
            for key in states[after]
            if not torch.equal(states[before][key], states[after][key])
        }
        if after.startswith("block-"):
            assert changed == {f"layers.{int(after.split('-')[1]) - 1}"}, (after, changed)
        else:  # general distillation trains the whole student (not the unused pooler)
            assert {"embeddings", "layers.0", "layers.2"} <= changed
            assert "pooler" not in changed
    first = load_model(tmp_path / "stages" / "00-embeddings" / "student").state_dict()
    initial = mobilebert.build_mobilebert_student(
        load_model(teacher_and_corpus[0]),
        mobilebert.mobilebert_config(
            load_model(teacher_and_corpus[0]).config, 12, 2, embedding_size=13, intermediate_size=27
        ),
        seed=config.distill.training.seed,
    ).state_dict()
    moved = {key.split(".")[1] for key in first if not torch.equal(first[key], initial[key])}
    assert moved == {"embeddings"}


def test_a_run_killed_in_stage_3_resumes_there_and_equals_an_uninterrupted_one(
    teacher_and_corpus, tmp_path
) -> None:
    config = tiny_config(teacher_and_corpus, "progressive", max_steps=25)  # 5 steps a stage
    mobilebert.run(config, tmp_path / "whole", evaluate=False)
    stopped = mobilebert.run(config, tmp_path / "killed", evaluate=False, stop_at=("block-2", 3))
    assert stopped == {"stopped_at": ["block-2", 3]}
    assert not (tmp_path / "killed" / "stages" / "02-block-2" / "done.json").exists()
    mobilebert.run(config, tmp_path / "killed", evaluate=False)
    whole = load_model(tmp_path / "whole" / "student").state_dict()
    resumed = load_model(tmp_path / "killed" / "student").state_dict()
    assert max(float((whole[k] - resumed[k]).abs().max()) for k in whole) <= 1e-6


@pytest.mark.parametrize("transfer", ["joint", "auxiliary"])
def test_tiny_end_to_end_loads_in_transformers(teacher_and_corpus, tmp_path, transfer) -> None:
    transformers = pytest.importorskip("transformers")
    config = tiny_config(teacher_and_corpus, transfer, max_steps=6)
    metrics = mobilebert.run(config, tmp_path, evaluate=False)
    losses = metrics["training"]["stages"][0]["final_losses"]
    assert {"feature", "attention"} <= set(losses)
    ours = load_model(tmp_path / "student")
    theirs = transformers.MobileBertModel.from_pretrained(tmp_path / "student").eval()
    ids = torch.tensor([[2, 40, 41, 42, 3, 0], [2, 50, 51, 3, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        mine = ours(ids, mask).last_hidden_state * mask[..., None]
        expected = theirs(ids, mask).last_hidden_state * mask[..., None]
    torch.testing.assert_close(mine, expected, atol=1e-5, rtol=0)
    assert ours.config.layout == "mobilebert" and ours.config.num_layers == 3


def test_cli_names_a_bottleneck_the_heads_do_not_divide(teacher_and_corpus, tmp_path, capsys):
    from distilkit.cli.main import main

    teacher, corpus = teacher_and_corpus
    code = main(
        ["distill", "--student-architecture", "mobilebert", "--bottleneck-size", "13",
         "--teacher", str(teacher), "--corpus", str(corpus), "--max-steps", "2",
         "--no-eval", "--no-progress", "--out", str(tmp_path / "run")]
    )  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err
    assert "--bottleneck-size 13 is not divisible by the teacher's 4 attention heads" in error
    assert "use 12 or 16" in error and "Traceback" not in error


def test_the_student_keeps_the_teachers_sentence_recipe_and_gets_a_card(
    teacher_and_corpus, tmp_path
) -> None:
    """A teacher that pools [CLS], normalises and reads 33 tokens gives a MobileBERT
    student folder that says the same to sentence-transformers, and a model card."""
    from distilkit.model.card import MARKER
    from distilkit.model.st_folder import SentenceModules, read_sentence_modules

    folder, corpus = teacher_and_corpus
    teacher = tmp_path / "teacher"
    recipe = SentenceModules(pooling=("cls",), stages=["normalize"], max_seq_length=33)
    save_model(load_model(folder), teacher, tokenizer=tiny_tokenizer(tmp_path), sentence=recipe)
    config = tiny_config((teacher, corpus), "joint", max_steps=4)
    mobilebert.run(config, tmp_path / "run", evaluate=False)
    saved = read_sentence_modules(tmp_path / "run" / "student")
    assert (saved.pooling, saved.stages, saved.max_seq_length) == (("cls",), ["normalize"], 33)
    card = (tmp_path / "run" / "student" / "README.md").read_text()
    assert MARKER in card and str(teacher) in card and "cls pooling, unit length" in card
    assert "SentenceTransformer(" in card and "AutoModel.from_pretrained(" in card


def test_auxiliary_transfer_runs_each_model_once_and_equals_the_two_objectives(
    teacher_and_corpus,
) -> None:
    """The auxiliary stage's losses are general distillation's plus the layer-wise ones,
    computed from one forward of the student and one of the teacher (it ran both twice)."""
    from distilkit.methods.mobilebert.job import _objective
    from distilkit.methods.mobilebert.student import build_mobilebert_student, mobilebert_config

    config = tiny_config(teacher_and_corpus, "auxiliary", max_steps=1)
    teacher = load_model(teacher_and_corpus[0])
    student_config = mobilebert_config(
        teacher.config, bottleneck_size=12, ffn_stack=2, embedding_size=13, intermediate_size=27
    )
    student = build_mobilebert_student(teacher, student_config, seed=3).eval()  # no dropout
    tokenizer = tiny_tokenizer(teacher_and_corpus[0].parent)
    auxiliary = _objective("auxiliary", config, teacher, student, tokenizer)
    assert isinstance(auxiliary, mobilebert.AuxiliaryTransfer)
    ids = torch.tensor([[2, 40, 41, 42, 43, 3, 0], [2, 50, 51, 3, 0, 0, 0]])  # padded rows
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    calls = {"student": 0, "teacher": 0}
    hooks = [
        model.backbone.register_forward_hook(
            lambda *_, name=name: calls.__setitem__(name, calls[name] + 1)
        )
        for name, model in (("student", student), ("teacher", teacher))
    ]
    together = auxiliary(batch, torch.Generator().manual_seed(0))
    for hook in hooks:
        hook.remove()
    assert calls == {"student": 1, "teacher": 1}
    apart = {
        **auxiliary.general(batch, torch.Generator().manual_seed(0)),
        **auxiliary.layers(batch),
    }
    assert set(together) == set(apart) == {"cos", "feature", "attention"}
    for name, value in apart.items():
        torch.testing.assert_close(together[name], value, atol=1e-6, rtol=1e-6)
    together["feature"].backward()  # the shared student output carries the gradient
    assert student.backbone.layers[0].attention.query.weight.grad is not None


def test_joint_transfer_and_two_ffns_are_the_defaults_of_the_job_and_the_cli() -> None:
    import argparse

    from distilkit.cli.distill import add_distill_parser

    parser = argparse.ArgumentParser()
    add_distill_parser(parser.add_subparsers())
    args = parser.parse_args(["distill", "--student-architecture", "mobilebert"])
    assert args.transfer == mobilebert.Config().transfer == "joint"
    assert args.ffn_stack == mobilebert.Config().ffn_stack == 2


def test_resuming_with_other_settings_names_them_and_keeps_the_run(
    teacher_and_corpus, tmp_path
) -> None:
    """A run started with other options (say, before a default changed) is refused with
    the settings that differ named; nothing of it is touched."""
    config = tiny_config(teacher_and_corpus, "joint", max_steps=2)
    mobilebert.run(config, tmp_path, evaluate=False)
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    config.ffn_stack = 3
    config.distill.training.learning_rate = 2e-3
    with pytest.raises(ConfigError) as refused:
        mobilebert.run(config, tmp_path, evaluate=False)
    message = str(refused.value)
    assert "ffn_stack=2, but this one asks for 3 (--ffn-stack)" in message
    assert "distill.training.learning_rate=0.001, but this one asks for 0.002 (--lr)" in message
    assert "\n" not in message
    after = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    assert after == before
