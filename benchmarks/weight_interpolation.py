"""STS-B dev of students whose weights lie on the line from the untrained cut to a trained one.

For each ``--alpha`` the student is ``cut + alpha * (trained - cut)``, parameter by
parameter (alpha 0: the cut, 1: the trained student, above 1: extrapolation past it),
scored like the main job (mean-pooled STS-B dev Spearman, retention against the
teacher). Weight interpolation toward the starting point is known to trade in-domain fit
for robustness off the training text (Wortsman et al., 2022, WiSE-FT), which is what a
student distilled on one kind of text and scored on another needs.

    python benchmarks/weight_interpolation.py runs/cut-045 runs/sweep/gut-cos-5e-5/student
"""

from __future__ import annotations

import argparse
import json

import torch

from distilkit.encoder import load
from distilkit.evaluate.sentence import stsb_spearman


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cut", help="the untrained student (distilkit init-student)")
    parser.add_argument("trained", help="the same student after distillation")
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.0, 0.5, 0.75, 1.0, 1.25, 1.5])
    parser.add_argument("--teacher", default="all-MiniLM-L6-v2")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cut, trained = load(args.cut, head=None), load(args.trained, head=None)
    # copies: loading a mix into the cut model writes into its own state_dict tensors
    start = {key: value.clone() for key, value in cut.model.state_dict().items()}
    end = trained.model.state_dict()
    if start.keys() != end.keys() or any(start[k].shape != end[k].shape for k in start):
        parser.error(f"{args.cut} and {args.trained} are not the same architecture")
    teacher = stsb_spearman(load(args.teacher, head=None))
    print(f"teacher {args.teacher}: STS-B dev {teacher:.2f}")
    print("| alpha | STS-B dev | retention % |")
    print("|---:|---:|---:|")
    for alpha in args.alpha:
        mixed = {
            key: start[key] + alpha * (end[key] - start[key])
            if start[key].is_floating_point()
            else end[key]
            for key in start
        }
        cut.model.load_state_dict(mixed)
        score = stsb_spearman(cut)
        print(f"| {alpha:g} | {score:.2f} | {100 * score / teacher:.2f} |", flush=True)
        print(json.dumps({"alpha": alpha, "stsb": score, "retention_pct": 100 * score / teacher}))


if __name__ == "__main__":
    main()
