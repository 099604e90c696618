"""MobileBERT students against their teacher and the 3-layer cut, on the CPU, side by side.

Prints parameters, weights-file size and sentence throughput (STS-B dev sentences,
mean pooling, batch 64) of, in one process, timed in turns (``distilkit.timing``):

* the teacher (default all-MiniLM-L6-v2) and its 3-layer cut (teacher layers 0, 2, 4);
* a MobileBERT student shaped to the teacher with NoNorm + ReLU (the paper's choice) and
  the same with LayerNorm + GELU, in fp32; the NoNorm one also in bf16 (where the CPU
  has native bf16), int8 (``distilkit.int8``) and ONNX fp32 (onnxruntime), and with its
  NoNorms left unfolded (``unfolded``: the eager path LayerNorm blocks take), which
  measures what folding them into the matmuls buys.

Speed does not depend on the weights, so the students are freshly built (blocks random,
embeddings from the teacher); pass ``--student FOLDER`` to time a trained one instead.

Usage::

    OMP_WAIT_POLICY=passive python benchmarks/mobilebert_speed.py [--texts 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
from pathlib import Path

import torch

from distilkit.deploy.export import export_onnx
from distilkit.deploy.onnx_runtime import load_onnx
from distilkit.encoder import Encoder, load
from distilkit.evaluate.sentence import default_throughput_texts
from distilkit.evaluate.timing import time_embedders
from distilkit.methods.mobilebert.student import build_mobilebert_student, mobilebert_config
from distilkit.model.checkpoint import load_model, save_model
from distilkit.model.hub import DEFAULT_MODEL, resolve
from distilkit.model.student import build_student
from distilkit.model.summary import model_info
from distilkit.model.tokenizer import Tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=DEFAULT_MODEL)
    parser.add_argument("--student", type=Path, help="a trained MobileBERT student folder")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    folder = resolve(args.teacher)
    teacher = load_model(folder, head=None)
    work = Path(tempfile.mkdtemp(prefix="mobilebert-speed-"))
    tokenizer = Tokenizer.from_folder(folder)
    models = {"teacher": folder}
    cut, _ = build_student(teacher, layers=[0, 2, 4])
    models["cut-3"] = save_model(cut, work / "cut-3", tokenizer=tokenizer)
    for name, norm, act in (("mobile-nonorm-relu", "nonorm", "relu"),
                            ("mobile-layernorm-gelu", "layernorm", "gelu")):  # fmt: skip
        if name == "mobile-nonorm-relu" and args.student is not None:
            models[name] = args.student
            continue
        config = mobilebert_config(teacher.config, norm=norm, act=act)
        student = build_mobilebert_student(teacher, config)
        models[name] = save_model(student, work / name, tokenizer=tokenizer)
    encoders: dict[str, Encoder] = {name: load(path, head=None) for name, path in models.items()}
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        encoders["mobile-nonorm-relu bf16"] = load(models["mobile-nonorm-relu"], head=None).to(
            "bfloat16"
        )
    unfolded = load(models["mobile-nonorm-relu"], head=None)
    for module in unfolded.model.modules():
        if hasattr(module, "foldable"):  # the embeddings and every block
            module.foldable = False
    encoders["mobile-nonorm-relu unfolded"] = unfolded
    encoders["mobile-nonorm-relu int8"] = load(models["mobile-nonorm-relu"], head=None).to("int8")
    encoders["cut-3 int8"] = load(models["cut-3"], head=None).to("int8")
    onnx_path = work / "mobile.onnx"
    export_onnx(models["mobile-nonorm-relu"], onnx_path, check_limit=0, verbose=False)
    onnx_encoder = load_onnx(onnx_path, num_threads=args.threads)
    texts = default_throughput_texts(args.texts)
    embedders = {name: (lambda t, e=e: e.embed(t, batch_size=64)) for name, e in encoders.items()}
    embedders["mobile-nonorm-relu onnx"] = lambda t: onnx_encoder.embed(t, batch_size=64)
    with torch.inference_mode():
        timings = time_embedders(
            embedders, texts, batch_size=64, repeats=args.repeats, latency_texts=0,
            num_threads=args.threads,
        )  # fmt: skip
    stamp = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    threads = args.threads or torch.get_num_threads()
    print(f"# {stamp}, {platform.processor()}, torch threads {threads}, {len(texts)} sentences")
    teacher_params = model_info(encoders["teacher"].model)["total_params"]
    base = timings["teacher"]["sentences_per_s"]
    print(f"{'model':28s} {'params':>11s} {'% teacher':>9s} {'MB':>7s} {'sent/s':>8s} {'x':>6s}")
    for name, timing in timings.items():
        plain = name.split()[0]
        params = model_info(encoders[plain].model)["total_params"] if plain in encoders else 0
        size = (Path(models[plain]) / "model.safetensors").stat().st_size / 1e6
        rate = timing["sentences_per_s"]
        print(f"{name:28s} {params:11,d} {100 * params / teacher_params:8.1f}% {size:7.1f} "
              f"{rate:8.1f} {rate / base:6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
