"""Sentence-embedding throughput: distilkit against Hugging Face `transformers`, side by side.

Both sides get the same SST-2 dev sentences, cut into the same length-sorted batches
(longest first, by characters, as sentence-transformers' ``encode`` and
``Encoder.embed`` do) by the same tokenizer, and both mean-pool the last hidden state
over real tokens. Tokenization happens once, before any timing, so the figures are
for the model step only (the tokenizer is shared, so its cost would be the same on
both sides; its time per pass is printed for scale).

Engines (one process, same thread count, inference mode):

* ``transformers fp32`` - ``AutoModel.from_pretrained(folder)``: the reference (ratio 1.0);
* ``transformers bf16`` - the same with ``dtype=torch.bfloat16``: a second peer;
* ``distilkit fp32`` - ``distilkit.load(folder)``;
* ``distilkit bf16`` - ``distilkit.load(folder, dtype="bfloat16")``.

The machine may be shared, so engines are timed interleaved: each round runs one
full pass per engine (rotating who goes first), and the reported ratio is the median
over rounds of ``reference seconds / engine seconds`` from the same round.

Usage::

    python benchmarks/encode_throughput.py                      # full run
    python benchmarks/encode_throughput.py --quick              # 128 sentences, 3 rounds
    python benchmarks/encode_throughput.py --json results.json --threads 2

On a machine shared with other jobs, run it with ``OMP_WAIT_POLICY=passive``: OpenMP
threads that spin at every barrier while a core is taken by someone else make each of
the hundreds of small parallel regions of a forward pass wait for a time slice, and
the figures then measure the scheduler (10x slower passes at batch 1 were seen here).
The setting applies to both sides alike; it is recorded in the JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import distilkit
from distilkit.model.hub import resolve
from distilkit.model.tokenizer import Batch, Tokenizer

DEFAULT_DATA = Path("/work/shared/data/sst2/dev.tsv")
REFERENCE = "transformers fp32"
Engine = Callable[[Batch], torch.Tensor]  # batch -> (batch, hidden) float32 embeddings


class BenchmarkError(ValueError):
    """Bad benchmark input (missing data file, wrong header, unknown option)."""


# ----------------------------------------------------------------------------- data
def read_sentences(path: Path, limit: int | None = None) -> list[str]:
    """Sentences of a GLUE-style TSV whose header starts with ``sentence``."""
    if not path.is_file():
        raise BenchmarkError(f"data file not found: {path} (pass --data PATH to an SST-2 TSV)")
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t") if lines else []
    if not header or header[0] != "sentence":
        raise BenchmarkError(
            f"{path} must start with a header whose first column is 'sentence' "
            f"(SST-2 train/dev format), got {lines[0][:60]!r}"
            if lines
            else f"{path} is empty"
        )
    sentences = [line.split("\t")[0] for line in lines[1:] if line.strip()]
    return sentences[:limit] if limit else sentences


def sorted_batches(tokenizer: Tokenizer, sentences: list[str], batch_size: int) -> list[Batch]:
    """Length-sorted (longest first, by characters), tokenized batches."""
    order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
    return [
        tokenizer([sentences[i] for i in order[start : start + batch_size]])
        for start in range(0, len(order), batch_size)
    ]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(batch, seq, hidden)`` -> ``(batch, hidden)`` mean over real tokens, as float32."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).float()


# ----------------------------------------------------------------------------- engines
def transformers_engine(folder: Path, dtype: torch.dtype) -> tuple[Engine, str]:
    """The reference: a plain ``AutoModel`` (returns the engine and its attention kind)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model = transformers.AutoModel.from_pretrained(str(folder), dtype=dtype).eval()

    def embed(batch: Batch) -> torch.Tensor:
        output = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            token_type_ids=batch.token_type_ids,
        )
        return mean_pool(output.last_hidden_state, batch.attention_mask)

    return embed, str(model.config._attn_implementation)


def distilkit_engine(folder: Path, dtype: str) -> Engine:
    encoder = distilkit.load(folder, dtype=dtype, head=None)

    def embed(batch: Batch) -> torch.Tensor:
        return encoder.embed_batch(batch, pooling="mean")

    return embed


# ----------------------------------------------------------------------------- timing
def run_pass(engine: Engine, batches: list[Batch]) -> float:
    """Seconds for one pass over all batches."""
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            engine(batch)
    return time.perf_counter() - start


def embed_all(engine: Engine, batches: list[Batch]) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([engine(batch) for batch in batches])


@dataclass
class Row:
    """One engine at one batch size."""

    engine: str
    batch_size: int
    sentences_per_second: float
    ratio_vs_reference: float
    ratio_min: float
    ratio_max: float
    seconds_per_round: list[float] = field(default_factory=list)


def time_batch_size(
    engines: dict[str, Engine], batches: list[Batch], sentences: int, rounds: int, warmup: int
) -> list[Row]:
    """Interleaved rounds; the ratio is the median of per-round ``t_reference / t_engine``."""
    names = list(engines)
    for _ in range(warmup):
        for name in names:
            run_pass(engines[name], batches[: max(1, len(batches) // 4)])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)  # rotate who goes first
        for name in names[shift:] + names[:shift]:
            seconds[name].append(run_pass(engines[name], batches))
        passes = ", ".join(f"{name} {seconds[name][-1]:.2f}s" for name in names)
        print(f"  round {round_index + 1}/{rounds}: {passes}", file=sys.stderr, flush=True)
    rows = []
    for name in names:
        ratios = [ref / own for ref, own in zip(seconds[REFERENCE], seconds[name], strict=True)]
        rows.append(
            Row(
                engine=name,
                batch_size=0,
                sentences_per_second=sentences / statistics.median(seconds[name]),
                ratio_vs_reference=statistics.median(ratios),
                ratio_min=min(ratios),
                ratio_max=max(ratios),
                seconds_per_round=[round(s, 4) for s in seconds[name]],
            )
        )
    return rows


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Smallest per-row cosine similarity of two ``(n, hidden)`` tensors."""
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).min())


# ----------------------------------------------------------------------------- report
def machine_info(threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    flags = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line
    import transformers

    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "distilkit": distilkit.__version__,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "environment": {
            name: os.environ[name]
            for name in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "DISTILKIT_ONEDNN")
            if name in os.environ
        },
    }


def print_table(rows: list[Row]) -> None:
    print(f"{'engine':<20} {'batch':>5} {'sent/s':>9} {'ratio':>6}  {'(min-max over rounds)':<20}")
    for row in rows:
        print(
            f"{row.engine:<20} {row.batch_size:>5} {row.sentences_per_second:>9.1f} "
            f"{row.ratio_vs_reference:>6.2f}  ({row.ratio_min:.2f}-{row.ratio_max:.2f})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="checkpoint folder or name")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SST-2 style TSV")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up passes (a quarter each)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N sentences")
    parser.add_argument("--quick", action="store_true", help="short run: 128 sentences, 3 rounds")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.limit = args.limit or 128
        args.rounds = min(args.rounds, 3)
        args.warmup = 1
    if args.threads < 1 or args.rounds < 1 or min(args.batch_sizes) < 1:
        raise BenchmarkError("--threads, --rounds and every --batch-sizes value must be >= 1")

    torch.set_num_threads(args.threads)
    folder = resolve(args.model)
    sentences = read_sentences(args.data, args.limit)
    tokenizer = Tokenizer.from_folder(folder)
    reference, attention = transformers_engine(folder, torch.float32)
    peer_bf16, _ = transformers_engine(folder, torch.bfloat16)
    engines: dict[str, Engine] = {
        REFERENCE: reference,
        "transformers bf16": peer_bf16,
        "distilkit fp32": distilkit_engine(folder, "float32"),
        "distilkit bf16": distilkit_engine(folder, "bfloat16"),
    }
    info = machine_info(args.threads)
    load = info["load_average"] or (0.0,)
    print(
        f"{info['cpu']}, {args.threads} threads, torch {info['torch']}, transformers "
        f"{info['transformers']} (attention: {attention}), {len(sentences)} sentences from "
        f"{args.data}, load average {load[0]:.2f}, environment {info['environment']}"
    )
    if load[0] > (os.cpu_count() or 1) and "OMP_WAIT_POLICY" not in os.environ:
        print(
            "warning: the machine is busier than its cores; spinning OpenMP threads will "
            "make the timings noisy and slow: consider OMP_WAIT_POLICY=passive",
            file=sys.stderr,
        )

    # Agreement first (batch 64 batches): distilkit vs the reference, and bf16 vs fp32.
    check_batches = sorted_batches(tokenizer, sentences, 64)
    embeddings = {name: embed_all(engine, check_batches) for name, engine in engines.items()}
    cosines = {
        "distilkit fp32 vs transformers fp32": min_cosine(
            embeddings["distilkit fp32"], embeddings[REFERENCE]
        ),
        "distilkit bf16 vs distilkit fp32": min_cosine(
            embeddings["distilkit bf16"], embeddings["distilkit fp32"]
        ),
        "transformers bf16 vs transformers fp32": min_cosine(
            embeddings["transformers bf16"], embeddings[REFERENCE]
        ),
    }
    for label, value in cosines.items():
        print(f"min cosine over sentences, {label}: {value:.6f}")

    rows: list[Row] = []
    tokenize_seconds: dict[int, float] = {}
    for batch_size in args.batch_sizes:
        start = time.perf_counter()
        batches = sorted_batches(tokenizer, sentences, batch_size)
        tokenize_seconds[batch_size] = time.perf_counter() - start
        print(f"batch {batch_size}: {len(batches)} batches", file=sys.stderr, flush=True)
        for row in time_batch_size(engines, batches, len(sentences), args.rounds, args.warmup):
            row.batch_size = batch_size
            rows.append(row)
        print(
            f"batch {batch_size}: done (tokenizing all sentences took "
            f"{tokenize_seconds[batch_size]:.3f} s, not timed)",
            file=sys.stderr,
            flush=True,
        )
    print()
    print_table(rows)
    if args.json is not None:
        result = {
            "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "machine": info,
            "reference": REFERENCE,
            "reference_attention": attention,
            "model": str(args.model),
            "data": str(args.data),
            "sentences": len(sentences),
            "rounds": args.rounds,
            "tokenize_seconds": tokenize_seconds,
            "min_cosine": cosines,
            "rows": [asdict(row) for row in rows],
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as error:
        sys.exit(f"error: {error}")
