"""BiLSTM student (distilkit.model.bilstm) and its training pieces (distilkit.methods.bilstm.job).

The student is checked against an independent step-by-step computation (an unpacked LSTM
over each sentence alone, then a max over time), learns a tiny separable set through the
real training loop, and round-trips through save/load with identical predictions.
Sizes are odd (embedding 32 over the 99-entry vocabulary, LSTM 7 per direction, MLP 11).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distilkit.data.augment.operations import paper_augmentation
from distilkit.data.batching import LengthGroupedSampler
from distilkit.data.transfer import (
    DistillationDataset,
    collate_items,
    encode_for_student,
    fixed_batches,
)
from distilkit.encoder import Encoder
from distilkit.methods.bilstm.job import BiLSTMDistillConfig, LogitDistillation
from distilkit.model.bilstm import (
    BiLSTMClassifier,
    BiLSTMError,
    is_bilstm_folder,
    load_bilstm,
    load_classifier,
    pair_features,
    tokenize_texts,
)
from distilkit.model.checkpoint import save_model
from distilkit.model.config import ModelConfig
from distilkit.model.modeling import TransformerModel
from distilkit.settings import ConfigError
from distilkit.train.logit_distillation import distillation_losses
from distilkit.train.trainer import Trainer, TrainingConfig

SIZES = {"hidden_size": 7, "mlp_size": 11, "dropout": 0.0, "max_length": 24}
TEXTS = ["the cat sat on the mat.", "hello world", "a big red dog ran to the tree!", "book"]
PAIRS = ["it was small", "the blue house", "read this book", "bird"]
POSITIVE = ["big", "red", "house", "tree", "book", "read", "run"]
NEGATIVE = ["small", "blue", "cat", "dog", "mat", "sat", "jump"]


def embeddings(seed: int = 0) -> torch.Tensor:
    return torch.randn(99, 32, generator=torch.Generator().manual_seed(seed)) * 0.5


def student(tokenizer, seed: int = 0, **settings) -> BiLSTMClassifier:
    return BiLSTMClassifier.from_teacher(embeddings(), tokenizer, seed=seed, **(SIZES | settings))


def reference_sentence_vector(model: BiLSTMClassifier, ids: list[int]) -> torch.Tensor:
    """Max over time of an LSTM run on one sentence without padding or packing."""
    encoder = model.encoder
    vectors = encoder.embeddings(torch.tensor([ids]))  # (1, T, E)
    hidden, _ = encoder.lstm(vectors)  # (1, T, 2H)
    return hidden[0].max(dim=0).values


# ----------------------------------------------------------------------------- the model
def test_embeddings_are_a_copy_of_the_teachers(tiny_tokenizer):
    teacher_embeddings = embeddings(3)
    model = BiLSTMClassifier.from_teacher(teacher_embeddings, tiny_tokenizer, **SIZES)
    assert torch.equal(model.encoder.embeddings.weight, teacher_embeddings)
    model.encoder.embeddings.weight.data.add_(1.0)
    assert not torch.equal(model.encoder.embeddings.weight, teacher_embeddings)  # a copy


def test_sentence_vectors_match_a_step_by_step_lstm(tiny_tokenizer):
    model = student(tiny_tokenizer).eval()
    sequences = model.tokenize(TEXTS)
    batch = model.collate(sequences)
    with torch.no_grad():
        pooled = model.encoder(batch["input_ids"], batch["attention_mask"])
        for row, ids in enumerate(sequences):
            expected = reference_sentence_vector(model, ids.tolist())
            torch.testing.assert_close(pooled[row], expected, atol=1e-6, rtol=1e-5)
    assert pooled.shape == (len(TEXTS), 14)


def test_inference_path_equals_the_packed_lstm_and_follows_weight_changes(tiny_tokenizer):
    model = student(tiny_tokenizer, seed=6).eval()
    texts = [*TEXTS, "the", "a small cafe with a red tree, a big house and a blue bird."]
    batch = model.collate(model.tokenize(texts))
    lengths = batch["attention_mask"].sum(1)
    encoder = model.encoder
    with torch.no_grad():
        for _ in range(2):
            packed = encoder.forward_packed(batch["input_ids"], lengths)
            fast = encoder.forward_inference(batch["input_ids"], lengths)
            torch.testing.assert_close(fast, packed, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(
                encoder(batch["input_ids"], batch["attention_mask"]), fast, atol=0, rtol=0
            )
            encoder.lstm.weight_hh_l0_reverse.add_(0.3)  # the cached gate table must follow
            encoder.embeddings.weight.mul_(1.5)
    model.train()
    with torch.enable_grad():
        trained = encoder(batch["input_ids"], batch["attention_mask"])  # packed, with autograd
    assert trained.requires_grad


def test_pair_variant_reads_u_v_difference_and_product(tiny_tokenizer):
    model = student(tiny_tokenizer, pair=True, num_labels=1).eval()
    first, second = model.tokenize(TEXTS), model.tokenize(PAIRS)
    with torch.no_grad():
        logits = model(**model.collate(first, second))
        u = torch.stack([reference_sentence_vector(model, ids.tolist()) for ids in first])
        v = torch.stack([reference_sentence_vector(model, ids.tolist()) for ids in second])
        by_hand = model.head(torch.cat([u, v, (u - v).abs(), u * v], dim=-1))
    torch.testing.assert_close(logits, by_hand, atol=1e-6, rtol=1e-5)
    assert model.head[1].in_features == 4 * 14
    features = pair_features(torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 5.0]]))
    assert features.tolist() == [[1.0, -2.0, 3.0, 5.0, 2.0, 7.0, 3.0, -10.0]]


def test_predictions_do_not_depend_on_batch_neighbours(tiny_tokenizer):
    model = student(tiny_tokenizer)
    together = model.predict_logits(TEXTS, batch_size=4)
    alone = np.concatenate([model.predict_logits([text]) for text in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_max_length_cuts_sentences_like_the_tokenizer(tiny_tokenizer):
    """predict_logits(max_length=n) equals the model on ids cut to n tokens, and never
    reads more than the model's own max_length."""
    model = student(tiny_tokenizer)
    cut = tokenize_texts(tiny_tokenizer, TEXTS, 4)
    assert max(len(ids) for ids in cut) == 4
    with torch.inference_mode():
        expected = model.eval()(**model.collate(cut)).numpy()
    np.testing.assert_allclose(model.predict_logits(TEXTS, max_length=4), expected, atol=1e-6)
    np.testing.assert_allclose(
        model.predict_logits(TEXTS, max_length=10_000), model.predict_logits(TEXTS), atol=0
    )
    with pytest.raises(BiLSTMError, match="max_length must be >= 3"):
        model.predict_logits(TEXTS, max_length=2)


def test_bad_inputs_are_clear_errors(tiny_tokenizer):
    single = student(tiny_tokenizer)
    with pytest.raises(BiLSTMError, match="single sentences"):
        single.predict_logits(TEXTS, PAIRS)
    pair = student(tiny_tokenizer, pair=True)
    with pytest.raises(BiLSTMError, match="sentence pairs"):
        pair.predict_logits(TEXTS)
    with pytest.raises(BiLSTMError, match=r"token ids must lie in \[0, 99\)"):
        single(torch.tensor([[2, 120]]), torch.ones(1, 2, dtype=torch.long))
    with pytest.raises(BiLSTMError, match="at least one token"):
        single(torch.tensor([[0, 0]]), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ConfigError, match="hidden_size"):
        student(tiny_tokenizer, hidden_size=0)
    with pytest.raises(BiLSTMError, match=r"\(vocab, dim\)"):
        BiLSTMClassifier.from_teacher(torch.zeros(5), tiny_tokenizer)
    with pytest.raises(BiLSTMError, match="tokenizer must be the teacher's own"):
        BiLSTMClassifier.from_teacher(torch.zeros(50, 8), tiny_tokenizer)


def test_parameter_counts_by_formula(tiny_tokenizer):
    counts = student(tiny_tokenizer).parameter_counts()
    embedding, hidden, lstm_input, mlp = 99 * 32, 7, 32, 11
    # per direction: input and hidden weights of 4 gates plus two bias vectors
    lstm = 2 * (4 * hidden * lstm_input + 4 * hidden * hidden + 2 * 4 * hidden)
    head = (2 * hidden) * mlp + mlp + mlp * 2 + 2
    assert counts == {
        "total": embedding + lstm + head,
        "embedding": embedding,
        "non_embedding": lstm + head,
    }


# ----------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("pair", [False, True])
def test_save_load_round_trip(tiny_tokenizer, tmp_path, pair):
    model = student(tiny_tokenizer, seed=5, pair=pair, num_labels=3, label_names=["a", "b", "c"])
    with torch.no_grad():  # move away from the initialisation, so loading must copy everything
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    pairs = PAIRS if pair else None
    before = model.predict_logits(TEXTS, pairs)
    folder = model.save(tmp_path / "student")
    assert is_bilstm_folder(folder)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "distilkit-bilstm"
    assert {"model.safetensors", "vocab.txt", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()
    }
    loaded = load_bilstm(folder)
    assert loaded.config == model.config
    assert np.array_equal(loaded.predict_logits(TEXTS, pairs), before)
    assert np.array_equal(load_classifier(folder).logits(TEXTS, pairs), before)
    model.save(folder)  # overwriting an existing folder works
    assert not list(tmp_path.glob(".student*"))


def test_load_classifier_dispatches_and_refuses_non_bilstm(tiny_tokenizer, tmp_path):
    config = ModelConfig(
        vocab_size=99,
        hidden_size=32,
        num_heads=4,
        intermediate_size=37,
        num_layers=1,
        max_position_embeddings=64,
        head="sequence_classification",
    )
    folder = save_model(TransformerModel(config), tmp_path / "transformer", tiny_tokenizer)
    assert not is_bilstm_folder(folder)
    assert isinstance(load_classifier(folder), Encoder)
    with pytest.raises(BiLSTMError, match="not a BiLSTM student"):
        load_bilstm(folder)
    bilstm = student(tiny_tokenizer).save(tmp_path / "bilstm")
    (bilstm / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(BiLSTMError, match="cannot read"):
        load_bilstm(bilstm)


# ----------------------------------------------------------------------------- training
def separable_set(count: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Sentences of 3-6 words from one of two disjoint word groups; the group is the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    texts = [
        " ".join(rng.choice(POSITIVE if label else NEGATIVE, rng.integers(3, 7)))
        for label in labels
    ]
    return texts, labels.astype(np.int64)


def test_learns_a_tiny_separable_set(tiny_tokenizer, tmp_path):
    texts, labels = separable_set(64, seed=0)
    test_texts, test_labels = separable_set(40, seed=1)
    model = student(tiny_tokenizer, seed=2)
    untrained = (model.predict_logits(test_texts).argmax(-1) == test_labels).mean()
    dataset = DistillationDataset(
        encode_for_student(model, tiny_tokenizer, texts, None, 24), None, labels
    )
    dev = DistillationDataset(
        encode_for_student(model, tiny_tokenizer, test_texts, None, 24), None, test_labels
    )
    objective = LogitDistillation(model, tiny_tokenizer, {"hard": 1.0})
    config = TrainingConfig(
        max_steps=60, batch_size=16, learning_rate=3e-2, warmup_fraction=0.0, progress=False
    )
    trainer = Trainer(
        objective,
        dataset,
        LengthGroupedSampler(dataset.lengths, 16, seed=0),
        lambda items: collate_items(items, tiny_tokenizer.pad_id),
        config,
        tmp_path / "run",
        eval_batches=fixed_batches(dev, tiny_tokenizer.pad_id),
    )
    trainer.run()
    accuracy = (model.predict_logits(test_texts).argmax(-1) == test_labels).mean()
    assert untrained < 0.8
    assert accuracy == 1.0
    assert trainer.evaluate()["eval/accuracy"] == 1.0
    saved = load_bilstm(tmp_path / "run" / "checkpoints" / "step-0000060" / "model")
    assert np.array_equal(saved.predict_logits(test_texts), model.predict_logits(test_texts))


def test_regressing_teacher_logits_fits_them(tiny_tokenizer, tmp_path):
    texts, labels = separable_set(48, seed=3)
    teacher_logits = np.stack([2.0 * labels - 1.0, 1.0 - 2.0 * labels], axis=1).astype(np.float32)
    model = student(tiny_tokenizer, seed=4)
    dataset = DistillationDataset(
        encode_for_student(model, tiny_tokenizer, texts, None, 24), teacher_logits, labels
    )
    before = float(np.mean((model.predict_logits(texts) - teacher_logits) ** 2))
    objective = LogitDistillation(model, tiny_tokenizer, {"mse": 1.0})
    config = TrainingConfig(
        max_steps=60, batch_size=16, learning_rate=3e-2, warmup_fraction=0.0, progress=False
    )
    Trainer(
        objective,
        dataset,
        LengthGroupedSampler(dataset.lengths, 16, seed=0),
        lambda items: collate_items(items, tiny_tokenizer.pad_id),
        config,
        tmp_path / "run",
    ).run()
    after = float(np.mean((model.predict_logits(texts) - teacher_logits) ** 2))
    assert after < 0.1 * before


def test_losses_against_hand_computation():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=generator, requires_grad=True)
    targets = torch.randn(5, 3, generator=generator)
    labels = torch.tensor([2, 0, 1, 1, 0])
    label_mask = torch.tensor([True, False, True, False, False])
    batch = {"targets": targets, "labels": labels, "label_mask": label_mask}
    losses = distillation_losses(logits, batch, {"mse": 1.0, "hard": 1.0, "kl": 1.0}, 2.0)
    torch.testing.assert_close(losses["mse"], ((logits - targets) ** 2).mean())
    torch.testing.assert_close(
        losses["hard"], F.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    )  # the unlabelled rows (augmented copies) do not count
    teacher_probs = (targets / 2).softmax(-1)
    kl = (teacher_probs * (teacher_probs.log() - (logits / 2).log_softmax(-1))).sum(-1).mean()
    torch.testing.assert_close(losses["kl"], kl * 4)
    none = distillation_losses(
        logits, batch | {"label_mask": torch.zeros(5, dtype=torch.bool)}, {"hard": 1.0}
    )
    assert float(none["hard"].detach()) == 0.0 and none["hard"].requires_grad
    scores = torch.tensor([0.5, 4.0])
    regression = distillation_losses(
        torch.tensor([[1.0], [3.0]]),
        {"labels": scores, "label_mask": torch.tensor([True, True])},
        {"hard": 1.0},
        regression=True,
    )
    assert float(regression["hard"]) == pytest.approx((0.25 + 1.0) / 2)


def test_encoding_and_collate_equal_the_tokenizer_padding(tiny_tokenizer):
    model = student(tiny_tokenizer, pair=True)
    encoded = encode_for_student(model, tiny_tokenizer, TEXTS, PAIRS, 24, chunk=3)  # 2 chunks
    assert sorted(encoded) == ["input_ids", "pair_input_ids"]
    dataset = DistillationDataset(encoded, np.ones((4, 2), np.float32), np.array([1, 0]))
    batch = collate_items([dataset[i] for i in range(4)], tiny_tokenizer.pad_id)
    first, second = tiny_tokenizer(TEXTS, max_length=24), tiny_tokenizer(PAIRS, max_length=24)
    assert torch.equal(batch["input_ids"], first.input_ids)
    assert torch.equal(batch["attention_mask"], first.attention_mask)
    assert torch.equal(batch["pair_input_ids"], second.input_ids)
    assert torch.equal(batch["pair_attention_mask"], second.attention_mask)
    assert batch["label_mask"].tolist() == [True, True, False, False]
    assert batch["labels"][:2].tolist() == [1, 0]
    assert batch["targets"].shape == (4, 2) and int(batch["task_index"]) == 0
    assert (
        dataset.lengths.tolist()
        == (first.attention_mask.sum(1) + second.attention_mask.sum(1)).tolist()
    )
    transformer = TransformerModel(
        ModelConfig(vocab_size=99, hidden_size=32, num_heads=4, intermediate_size=37,
                    num_layers=1, max_position_embeddings=64, head="sequence_classification")
    )  # fmt: skip
    joint = DistillationDataset(
        encode_for_student(transformer, tiny_tokenizer, TEXTS, PAIRS, 12, chunk=3), None, None
    )
    joint_batch = collate_items([joint[i] for i in range(4)], tiny_tokenizer.pad_id)
    reference = tiny_tokenizer(TEXTS, PAIRS, max_length=12, warn_on_truncation=False)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(joint_batch[name], getattr(reference, name)), name
    with pytest.raises(ConfigError, match="no texts"):
        encode_for_student(model, tiny_tokenizer, [], None, 24)


def test_config_refuses_impossible_combinations():
    with pytest.raises(ConfigError, match="teacher is required"):
        BiLSTMDistillConfig()
    with pytest.raises(ConfigError, match="no gold labels"):
        BiLSTMDistillConfig(teacher="t", targets="labels", augment=True)
    with pytest.raises(ConfigError, match="leave it at 0"):
        BiLSTMDistillConfig(teacher="t", targets="labels", augment=False, hard_label_weight=0.5)
    with pytest.raises(ConfigError, match="targets"):
        BiLSTMDistillConfig(teacher="t", targets="logit")
    assert (paper_augmentation("sst2").n_iter, paper_augmentation("stsb").n_iter) == (20, 10)
    assert (paper_augmentation("sst2").p_mask, paper_augmentation("sst2").p_pos) == (0.1, 0.1)
    mixed = BiLSTMDistillConfig(teacher="t", hard_label_weight=0.25)
    assert mixed.loss_weights == {"mse": 0.75, "hard": 0.25}
    assert BiLSTMDistillConfig(teacher="t", targets="labels", augment=False).loss_weights == {
        "hard": 1.0
    }


def test_objective_refuses_unknown_or_meaningless_losses(tiny_tokenizer):
    model = student(tiny_tokenizer)
    with pytest.raises(ConfigError, match="loss weights"):
        LogitDistillation(model, tiny_tokenizer, {"ce": 1.0})
    with pytest.raises(ConfigError, match="regression"):
        LogitDistillation(model, tiny_tokenizer, {"kl": 1.0}, regression=True)


def test_saved_student_folder_is_self_contained(tiny_tokenizer, tmp_path: Path):
    model = student(tiny_tokenizer)
    folder = model.save(tmp_path / "s")
    config = json.loads((folder / "config.json").read_text())
    assert config["vocab_size"] == 99 and config["embedding_dim"] == 32
    assert config["hidden_size"] == 7 and config["pad_token_id"] == tiny_tokenizer.pad_id


def test_classify_pipeline_reads_a_bilstm_folder(tiny_tokenizer, tmp_path):
    """`pipelines.classify` serves a saved BiLSTM student like a transformer classifier."""
    from distilkit.deploy.pipelines import classify

    model = student(tiny_tokenizer, seed=2, num_labels=2, label_names=["neg", "pos"])
    folder = model.save(tmp_path / "student")
    logits = model.predict_logits(TEXTS)
    results = classify(folder, TEXTS)
    expected = torch.softmax(torch.from_numpy(logits).double(), dim=-1).numpy()
    assert [r["label"] for r in results] == [["neg", "pos"][i] for i in expected.argmax(1)]
    assert np.allclose([r["scores"]["pos"] for r in results], expected[:, 1], atol=1e-6)
    assert classify(model, TEXTS[:1])[0]["label"] == results[0]["label"]
