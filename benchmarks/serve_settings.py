"""``distilkit serve`` batching settings side by side: each setting's server started in
turn, closed-loop clients at each level, on loopback (a quick sweep, not the full load
test of ``serve_load.py``). Each cell gives requests/s, p50 and p99 latency (ms) and the
server's CPU milliseconds per request. ``--checkout NAME=PATH`` runs every setting with
the distilkit package of each checkout in turn (e.g. main against a branch).

Usage::

    python benchmarks/serve_settings.py --rounds 1 --seconds 5 --clients 1 8 64 \\
        --setting "--max-batch-size 64 --max-wait-ms 5" \\
        --setting "--max-batch-size 32 --max-wait-ms 2"
    git archive main distilkit | tar -x -C /tmp/base
    python benchmarks/serve_settings.py --checkout main=/tmp/base --checkout new=. \\
        --setting ""
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0, help="per level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--setting", action="append", required=True, help="serve flags")
    parser.add_argument(
        "--checkout", action="append", metavar="NAME=PATH", help="the distilkit to serve"
    )
    args = parser.parse_args()
    checkouts = dict(item.split("=", 1) for item in args.checkout or [])
    checkouts = checkouts or {"": str(serve_load.REPO)}
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from distilkit.evaluate.sentence import read_stsb
    from distilkit.model.hub import resolve

    folder = str(resolve(args.model))
    first, second, _ = read_stsb()
    sentences = list(dict.fromkeys(first + second))[:512]
    for round_ in range(args.rounds):
        for setting in args.setting:
            for name, checkout in checkouts.items():
                port = serve_load.free_port()
                command = [sys.executable, "-m", "distilkit", "serve", folder, "--port", str(port)]
                command += shlex.split(setting)
                with serve_load.server(command, port, setting, Path(checkout).resolve()) as pid:
                    asyncio.run(serve_load.closed_loop(port, sentences, 8, 2, 10**9))  # warm-up
                    cells = []
                    for clients in args.clients:
                        rate, latencies, _, server_ms, _ = serve_load.measured_level(
                            pid, port, sentences, clients, args.seconds, 10**9
                        )
                        p50, p99 = np.percentile(latencies, [50, 99]) * 1000
                        cells.append(
                            f"c{clients}: {rate:6.1f}/s p50 {p50:6.1f} p99 {p99:6.1f} "
                            f"cpu {server_ms:5.2f}"
                        )
                print(round_, name, setting, " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
