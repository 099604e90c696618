"""Why distil: decoding speed of the C-MLM student vs generating with the C-MLM teacher
itself by iterative mask-predict, side by side in one process on the same sources.

    PYTHONPATH=. python benchmarks/cmlm_decoding_speed.py \
        --student runs/cmlm-qg/alpha0.5-seed1/student --teacher runs/cmlm-qg/teacher/teacher

The teacher is given each question's gold length (its best case: a real system would also
have to predict lengths); the student decodes until its own end-of-sequence.
"""

from __future__ import annotations

import argparse
import time

import torch

from distilkit.methods.cmlm.data import ANSWER_OPEN, squad_question_generation
from distilkit.methods.cmlm.job import decode_texts
from distilkit.methods.cmlm.metrics import generation_metrics
from distilkit.methods.cmlm.seq2seq import load_seq2seq
from distilkit.methods.cmlm.student import truncate_around
from distilkit.methods.cmlm.teacher import mask_predict
from distilkit.model.checkpoint import load_model
from distilkit.model.tokenizer import Tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--student", required=True)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--max-source-length", type=int, default=32)
    parser.add_argument("--max-target-length", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    tokenizer = Tokenizer.from_folder(args.teacher)
    data = squad_question_generation(heldout_articles=8, seed=0)
    anchor = tokenizer.token_to_id(ANSWER_OPEN)
    sources = [
        truncate_around(ids, anchor, args.max_source_length)
        for ids in tokenizer.encode_ids(data.eval_sources[: args.pairs])
    ]
    targets = [ids[: args.max_target_length] for ids in
               tokenizer.encode_ids(data.eval_targets[: args.pairs])]  # fmt: skip
    references = [t.lower() for t in data.eval_targets[: args.pairs]]
    student = load_seq2seq(args.student)
    teacher = load_model(args.teacher).eval()

    def run_student(beam: int) -> list[str]:
        return decode_texts(student, tokenizer, sources, beam, args.max_target_length + 2, 1.0,
                            args.batch_size)  # fmt: skip

    def run_teacher(iterations: int) -> list[str]:
        out = []
        for start in range(0, len(sources), args.batch_size):
            chunk = slice(start, start + args.batch_size)
            lengths = [len(t) for t in targets[chunk]]
            for ids in mask_predict(teacher, sources[chunk], lengths, tokenizer, iterations):
                out.append(tokenizer.decode(ids))
        return out

    systems = {
        "student greedy": lambda: run_student(1),
        "student beam 4": lambda: run_student(4),
        "teacher mask-predict 4 it. (gold length)": lambda: run_teacher(4),
        "teacher mask-predict 10 it. (gold length)": lambda: run_teacher(10),
    }
    best: dict[str, float] = {}
    outputs: dict[str, list[str]] = {}
    with torch.inference_mode():
        for _ in range(args.repeats):  # interleaved, best of the repeats
            for name, system in systems.items():
                started = time.perf_counter()
                outputs[name] = system()
                seconds = time.perf_counter() - started
                best[name] = min(best.get(name, float("inf")), seconds)
    base = best["student greedy"]
    print(
        f"{len(sources)} held-out SQuAD sources, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, best of {args.repeats}"
    )
    for name, seconds in best.items():
        scores = generation_metrics(outputs[name], references)
        print(
            f"{name:45s} {len(sources) / seconds:8.1f} sentences/s  "
            f"{seconds / base:6.2f}x the student's greedy time  "
            f"BLEU {scores['bleu']:.2f} ROUGE-L {scores['rouge_l']:.2f}"
        )


if __name__ == "__main__":
    main()
