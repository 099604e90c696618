"""Every tensor of a training step is on the run's device: the student, the teacher, the
batch, the losses and the gradients. Checked on PyTorch's ``meta`` device (shapes only,
no data), which the trainer treats as any accelerator; ``load(device=...)`` and
``--device`` reach the model; the CUDA tests run where there is a GPU."""

from __future__ import annotations

import pytest
import torch
from distill_helpers import RunSettings, make_trainer, tiny_tokenizer

from distilkit.cli.distill import distill_config_from_args
from distilkit.cli.main import build_parser
from distilkit.model.device import resolve_device

NO_RANDOMNESS = {"dropout": 0.0, "mask_inputs": False, "weights": {"cos": 1.0, "mse": 1.0}}


def test_every_tensor_of_a_step_is_on_the_chosen_device(tmp_path):
    settings = RunSettings(**NO_RANDOMNESS, training={"device": "meta", "max_steps": 2})
    trainer = make_trainer(tmp_path, tiny_tokenizer(tmp_path), settings)
    assert trainer.device == torch.device("meta")
    objective = trainer.objective
    models = [objective, *objective.frozen_models()]
    assert all(p.device.type == "meta" for model in models for p in model.parameters())
    batch = next(trainer.feed.batches())
    assert all(value.device.type == "meta" for value in batch.values())
    losses, total = trainer._micro_step(batch, sync=True)
    assert set(losses) == {"cos", "mse"}
    assert all(value.device.type == "meta" for value in [*losses.values(), total])
    grads = [p.grad for p in trainer.trainable if p.grad is not None]
    assert len(grads) > len(trainer.trainable) // 2  # (the pooler takes no part in the loss)
    assert all(grad.device.type == "meta" for grad in grads)
    assert trainer.meter.counts["tokens"] > 0  # counted on the host, before the batch moved


def test_the_cpu_run_stays_on_the_cpu(tmp_path):
    trainer = make_trainer(tmp_path, tiny_tokenizer(tmp_path), RunSettings(**NO_RANDOMNESS))
    if not torch.cuda.is_available():
        assert trainer.device == torch.device("cpu") and trainer.precision == "fp32"
        assert trainer.num_workers == 0 and trainer.eager_checks


def test_resolve_device_and_its_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="--device must be"):
        resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            resolve_device("cuda:1")


def test_load_and_device_flag_reach_the_model(tmp_path, hf_checkpoint):
    import distilkit

    folder = hf_checkpoint("BertModel")
    encoder = distilkit.load(folder, device="cpu")
    assert encoder.device.type == "cpu"
    assert encoder.to("meta").device.type == "meta"
    args = build_parser().parse_args(
        ["embed", str(folder), "--input", "x", "--output", "y.npy", "--device", "cpu"]
    )
    assert args.device == "cpu"
    args = build_parser().parse_args(["distill", "--device", "meta", "--max-steps", "3"])
    assert distill_config_from_args(args).training.device == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.cuda
def test_a_cuda_run_trains_in_bf16_and_equals_itself_resumed(tmp_path):
    settings = RunSettings(training={"device": "cuda", "max_steps": 6, "checkpoint_every": 3})
    tokenizer = tiny_tokenizer(tmp_path)
    full = make_trainer(tmp_path / "full", tokenizer, settings)
    full.run()
    assert full.precision in ("bf16", "fp16")
    assert next(full.objective.frozen_models()[0].parameters()).dtype != torch.float32
    half = make_trainer(tmp_path / "half", tokenizer, settings)
    half.run(stop_after_steps=3)
    resumed = make_trainer(tmp_path / "half", tokenizer, settings)
    resumed.run()
    for (name, a), b in zip(
        full.objective.state_dict().items(), resumed.objective.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.cuda
def test_load_on_cuda_embeds_like_the_cpu(hf_checkpoint):
    import distilkit

    folder = hf_checkpoint("BertModel")
    cpu = distilkit.load(folder, device="cpu").embed(["a text", "another one"])
    gpu = distilkit.load(folder, device="cuda").embed(["a text", "another one"])
    assert abs(cpu - gpu).max() < 1e-3
