"""ONNX through ``distilkit.load`` against eager PyTorch, sentence-transformers and a plain
onnxruntime wrapper, side by side in one process.

Engines, all on the same checkpoint (default: the embedded all-MiniLM-L6-v2), the same
sentences (SST-2 dev), batch 64 and the same thread count, tokenization included:

* ``eager fp32`` / ``eager int8``: ``distilkit.load(folder[, dtype="int8"]).embed``;
* ``onnx fp32`` / ``onnx int8``: ``distilkit.load("model[.int8].onnx").embed`` (the exported
  graph holds pooling and normalisation; the wrapper is tokenizer + onnxruntime + numpy);
* ``plain ort fp32``: the least a user would write: the ``tokenizers`` library with padding
  over the texts in their order, one onnxruntime session with default options, the
  graph's ``sentence_embedding`` output;
* ``sentence-transformers fp32``: ``SentenceTransformer(folder).encode``;
* ``sentence-transformers onnx fp32``: sentence-transformers' own ONNX backend,
  ``SentenceTransformer(copy, backend="onnx")`` on a copy of the folder, which
  sentence-transformers exports with optimum (when ``optimum-onnx`` is installed; it pins
  transformers < 4.58, so it may need an environment of its own).

Ratios are against ``eager fp32`` (throughput) and cosines against its vectors.
``python benchmarks/onnx_wrapper.py [--limit 400] [--repeats 3] [--threads N]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from tokenizers import Tokenizer

import distilkit
from distilkit.deploy.export import export_onnx, quantize_int8
from distilkit.deploy.onnx_runtime import load_onnx
from distilkit.evaluate.report import machine_info
from distilkit.evaluate.sentence import read_sst2
from distilkit.evaluate.timing import time_embedders
from distilkit.model.hub import resolve


def plain_session(path: Path, folder: Path, batch_size: int, threads: int):
    """tokenizers + a default onnxruntime session: what any onnxruntime user writes."""
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0)
    tokenizer.enable_truncation(256)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def embed(texts):
        out = []
        for start in range(0, len(texts), batch_size):
            encodings = tokenizer.encode_batch(list(texts[start : start + batch_size]))
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            feeds = {
                "input_ids": ids,
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.zeros_like(ids),
            }
            out.append(session.run(["sentence_embedding"], feeds)[0])
        return np.concatenate(out)

    return embed


def sentence_transformers_onnx(folder: Path, temp: Path, threads: int):
    """sentence-transformers' ONNX backend on a copy of ``folder`` (None, with a note,
    when sentence-transformers or optimum is missing)."""
    import shutil

    try:
        import optimum.onnxruntime  # noqa: F401
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        print(f"no sentence-transformers ONNX row: {error}")
        return None
    copy = temp / "st-onnx"
    shutil.copytree(folder, copy)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    model = SentenceTransformer(
        str(copy), device="cpu", backend="onnx", model_kwargs={"session_options": options}
    )
    print(f"sentence-transformers ONNX backend: {type(model[0].auto_model).__name__}")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-texts", type=int, default=50)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = read_sst2()[0][: args.limit]
    folder = resolve(args.model)
    batch = args.batch_size
    temp = Path(tempfile.mkdtemp(prefix="onnx-wrapper-"))
    fp32_path, int8_path = temp / "model.onnx", temp / "model.int8.onnx"
    export_onnx(folder, fp32_path, check_limit=0, verbose=False)
    quantize_int8(fp32_path, int8_path)
    eager = distilkit.load(folder)
    eager_int8 = distilkit.load(folder, dtype="int8")
    onnx_fp32 = load_onnx(fp32_path, num_threads=args.threads, spinning=False)
    onnx_int8 = load_onnx(int8_path, num_threads=args.threads, spinning=False)
    engines = {
        "eager fp32": lambda t: eager.embed(list(t), batch_size=batch),
        "onnx fp32": lambda t: onnx_fp32.embed(list(t), batch_size=batch),
        "plain ort fp32": plain_session(fp32_path, folder, batch, args.threads),
        "eager int8": lambda t: eager_int8.embed(list(t), batch_size=batch),
        "onnx int8": lambda t: onnx_int8.embed(list(t), batch_size=batch),
    }
    try:
        from sentence_transformers import SentenceTransformer

        st_model = SentenceTransformer(str(folder), device="cpu")
        engines["sentence-transformers fp32"] = lambda t: st_model.encode(
            list(t), batch_size=batch, show_progress_bar=False
        )
    except ImportError:
        print("sentence-transformers not installed: no reference row")
    st_onnx = sentence_transformers_onnx(folder, temp, args.threads)
    if st_onnx is not None:
        engines["sentence-transformers onnx fp32"] = lambda t: st_onnx.encode(
            list(t), batch_size=batch, show_progress_bar=False
        )
    vectors = {name: embed(texts) for name, embed in engines.items()}
    timings = time_embedders(
        engines,
        texts,
        batch_size=batch,
        repeats=args.repeats,
        warmup=0,
        latency_texts=args.latency_texts,
    )
    base = vectors["eager fp32"].astype(np.float64)
    rows = []
    for name, timing in timings.items():
        got = vectors[name].astype(np.float64)
        cosine = (got * base).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(base, axis=1)
        rows.append(
            {
                "engine": name,
                "embeddings_per_s": timing["sentences_per_s"],
                "x eager fp32": timing["sentences_per_s"]
                / timings["eager fp32"]["sentences_per_s"],
                "p50_ms": timing["latency_ms_p50"],
                "cos_mean": float(cosine.mean()),
                "cos_min": float(cosine.min()),
            }
        )
    print(f"{len(texts)} SST-2 dev sentences, batch {batch}, {args.threads} threads, "
          f"{args.repeats} interleaved passes; distilkit's sessions do not spin")  # fmt: skip
    header = ("engine", "emb/s", "x eager fp32", "p50 ms", "cos mean", "cos min")
    print("{:32} {:>8} {:>13} {:>8} {:>9} {:>9}".format(*header))
    for row in rows:
        print(f"{row['engine']:32} {row['embeddings_per_s']:8.1f} {row['x eager fp32']:12.2f}x "
              f"{row['p50_ms']:8.2f} {row['cos_mean']:9.5f} {row['cos_min']:9.5f}")  # fmt: skip
    pairs = [("onnx fp32", "plain ort fp32"), ("onnx int8", "eager int8")]
    if "sentence-transformers onnx fp32" in timings:
        pairs.append(("onnx fp32", "sentence-transformers onnx fp32"))
    for a, b in pairs:
        ratio = timings[a]["sentences_per_s"] / timings[b]["sentences_per_s"]
        print(f"{a} / {b}: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "machine": machine_info()}, indent=2))


if __name__ == "__main__":
    main()
