"""distilkit's distillation step against the loop users write with ``transformers``,
side by side in one process, on the same device, batches and losses.

The reference: ``AutoModel`` teacher (eval, no_grad) and student (eager attention),
torch's AdamW, bf16 autocast on CUDA, DistilBERT's ``cos`` + ``mse`` losses on the last
hidden state (the same loss functions distilkit's objective uses). distilkit: the
:class:`~distilkit.train.trainer.Trainer` with the ``GeneralDistillation`` objective on
the same weights (converted once). Both report tokens/s and MFU against the dense
matmul rate measured in the same run (:mod:`distilkit.evaluate.mfu`).

    python benchmarks/distill_reference.py --device cuda --layers 12 --hidden 768 \\
        --heads 12 --student-layers 6 --seq 128 --batch 64 --steps 300
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from distilkit.data.batching import LengthGroupedSampler, collate_sequences
from distilkit.evaluate.mfu import distillation_flops, distillation_mfu, peak_matmul_flops
from distilkit.methods.general.objectives import (
    DistillationWeights,
    GeneralDistillation,
    GeneralDistillationConfig,
)
from distilkit.model.checkpoint import load_model, save_model
from distilkit.model.device import resolve_device, synchronize
from distilkit.model.student import build_student
from distilkit.model.tokenizer import Tokenizer
from distilkit.train.losses import cosine_hidden_loss, hidden_mse_loss
from distilkit.train.trainer import Trainer, TrainingConfig

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(995)]


def make_models(args: argparse.Namespace, folder: Path):
    """A random BERT teacher (transformers) saved to ``folder/teacher``, its distilkit
    copy, and a student of ``student_layers`` cut from it (saved to ``folder/student``)."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden,
        max_position_embeddings=max(512, args.seq),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder / "teacher")
    (folder / "teacher" / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    teacher = load_model(folder / "teacher")
    student, _ = build_student(teacher, num_layers=args.student_layers)
    tokenizer = Tokenizer.from_vocab(folder / "teacher" / "vocab.txt", max_length=args.seq)
    save_model(student, folder / "student", tokenizer=tokenizer)
    return teacher, student, tokenizer


def batches(args: argparse.Namespace) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    count = args.batch * (args.steps + 2)
    body = rng.integers(5, len(VOCAB), size=(count, args.seq - 2))
    return [np.concatenate([[2], row, [3]]).astype(np.int32) for row in body]


def run_distilkit(args, teacher, student, tokenizer, sequences, out: Path) -> dict:
    config = GeneralDistillationConfig(
        weights=DistillationWeights(ce=0.0, mlm=0.0, cos=1.0, mse=1.0), mask_inputs=False
    )
    objective = GeneralDistillation(teacher, student, tokenizer, config)
    training = TrainingConfig(
        max_steps=args.steps,
        batch_size=args.batch,
        learning_rate=1e-4,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        log_every=max(args.steps, 1),
        eval_every=10**9,
        checkpoint_every=10**9,
        progress=False,
    )
    sampler = LengthGroupedSampler([len(s) for s in sequences], args.batch, seed=0)
    trainer = Trainer(
        objective,
        sequences,
        sampler,
        lambda items: collate_sequences(items, tokenizer.pad_id),
        training,
        out,
    )
    result = trainer.run(resume=False)
    return {
        "counts": result.throughput,
        "precision": trainer.precision,
        "losses": result.last_losses,
    }


def run_reference(args, folder: Path, sequences, device: torch.device, precision: str) -> dict:
    """The loop a transformers user writes; returns the same counts as the trainer."""
    import transformers

    teacher = (
        transformers.AutoModel.from_pretrained(folder / "teacher", attn_implementation="eager")
        .to(device)
        .eval()
    )
    student = (
        transformers.AutoModel.from_pretrained(folder / "student", attn_implementation="eager")
        .to(device)
        .train()
    )
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (
        torch.autocast(device.type, dtype=dtype) if dtype else torch.autocast("cpu", enabled=False)
    )
    counts = {"tokens": 0, "padded": 0, "pairs": 0, "seconds": 0.0, "steps": 0}
    warmup = min(5, max(args.steps // 4, 1))
    start = time.perf_counter()
    for step in range(args.steps):
        chunk = sequences[step * args.batch : (step + 1) * args.batch]
        batch = {k: v.to(device) for k, v in collate_sequences(chunk, 0).items()}
        with autocast:
            with torch.no_grad():
                target = teacher(**batch).last_hidden_state
            hidden = student(**batch).last_hidden_state
            loss = cosine_hidden_loss(hidden, target, batch["attention_mask"]) + hidden_mse_loss(
                hidden, target, batch["attention_mask"]
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 5.0)
        optimizer.step()
        optimizer.zero_grad()
        if step + 1 == warmup:
            synchronize(device)
            start = time.perf_counter()
        elif step + 1 > warmup:
            mask = batch["attention_mask"]
            counts["tokens"] += mask.numel()  # no padding: every position is real
            counts["padded"] += mask.numel()
            counts["pairs"] += mask.numel() * mask.shape[-1]
            counts["steps"] += 1
    synchronize(device)
    counts["seconds"] = time.perf_counter() - start
    return {"counts": counts, "loss": float(loss.detach())}


def compare(args: argparse.Namespace) -> dict:
    """Both loops on the same batches; tokens/s, MFU and the ratio."""
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        teacher, student, tokenizer = make_models(args, folder)
        sequences = batches(args)
        ours = run_distilkit(args, teacher, student, tokenizer, sequences, folder / "run")
        precision = ours["precision"]
        reference = run_reference(args, folder, sequences, device, precision)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    peak = peak_matmul_flops(device, dtype, seconds=1.0 if device.type == "cuda" else 0.3)
    t_config, s_config = teacher.config, student.config
    rows = {
        "distilkit": distillation_mfu(t_config, s_config, ours["counts"], peak),
        "transformers": distillation_mfu(t_config, s_config, reference["counts"], peak),
    }
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision,
        "shape": {
            k: getattr(args, k)
            for k in ("layers", "hidden", "heads", "student_layers", "seq", "batch", "steps")
        },
        "flops_per_step": distillation_flops(
            t_config, s_config, args.batch * args.seq, args.batch * args.seq * args.seq
        ),
        "rows": rows,
        "speedup_vs_transformers": rows["distilkit"]["tokens_per_s"]
        / max(rows["transformers"]["tokens_per_s"], 1e-9),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--student-layers", type=int, default=6)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--json", type=Path)
    return p


def main() -> None:
    args = parser().parse_args()
    result = compare(args)
    for name, row in result["rows"].items():
        print(
            f"{name:>12}: {row['tokens_per_s']:>10,.0f} tokens/s  MFU {100 * row['mfu']:5.1f}%  "
            f"({row['achieved_tflops']:.2f} of {row['peak_tflops']:.2f} TFLOP/s)"
        )
    print(
        f"distilkit / transformers: {result['speedup_vs_transformers']:.2f}x on {result['device']}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
