"""Load test of ``distilkit serve`` on loopback: batching on, batching off, and a naive
sentence-transformers server, side by side in one run; then 2x overload; then the
3-layer student against the teacher's naive server.

Everything listens on 127.0.0.1 only, every phase is bounded in requests and seconds,
and the script stops its servers itself. Phases:

1. the engine's own offline throughput: ``Encoder.embed`` at batch 64 on the sentences
   (tokenization included), the ceiling for a server;
2. closed-loop clients (1, 8, 64, 256 at once), each sending one sentence per request
   to ``POST /v1/embeddings`` and the next as soon as the answer is back, against
   (a) ``distilkit serve`` (batch 64, wait 5 ms), (b) the same with
   ``--max-batch-size 1``, (c) a naive FastAPI server calling
   ``SentenceTransformer.encode([text])`` once per request on the same weights folder;
3. overload: open-loop arrivals at twice (a)'s throughput at 64 clients for a few
   seconds against (a) restarted with a small ``--max-queue`` (so that the queue fills
   within the phase); every request must come back 200 or 429 (none lost or hung); the
   server's resident memory is read before and after;
4. the student (``--student``, served with ``--dtype int8`` by default) at 64 clients
   against the teacher's naive server figure from phase 2.

The load generator is a minimal keep-alive HTTP/1.1 client on asyncio, so that the
client costs little CPU beside the server on a small machine.

Usage::

    python -m distilkit init-student all-MiniLM-L6-v2 --out /tmp/student3 --num-layers 3
    python benchmarks/serve_load.py --student /tmp/student3
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- naive server
def naive_server(folder: str, port: int) -> None:
    """One ``SentenceTransformer.encode`` per request, in FastAPI's thread pool: what a
    user writes without a batcher."""
    import uvicorn
    from fastapi import FastAPI
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(folder, device="cpu")
    app = FastAPI()

    @app.post("/v1/embeddings")
    def embeddings(request: dict) -> dict:
        texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
        vectors = model.encode(texts, normalize_embeddings=True)
        data = [
            {"object": "embedding", "embedding": v.tolist(), "index": i}
            for i, v in enumerate(vectors)
        ]
        return {"object": "list", "data": data, "model": "naive"}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ----------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(command: list[str], port: int, name: str, pythonpath: Path = REPO):
    """Start a server process, wait for /health, yield its pid, stop it with SIGTERM."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not _healthy(port):
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited: {process.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start in 120 s")
            time.sleep(0.2)
        yield process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured_level(pid: int, port: int, sentences, clients: int, seconds, limit) -> tuple:
    """A closed-loop level, with the CPU each side spent per request (server from /proc,
    this client from its process time): (requests/s, latencies, errors, server ms, client ms)."""
    server_before, client_before = cpu_seconds(pid), time.process_time()
    rate, latencies, errors = asyncio.run(closed_loop(port, sentences, clients, seconds, limit))
    served = max(len(latencies), 1)
    server_ms = 1000 * (cpu_seconds(pid) - server_before) / served
    client_ms = 1000 * (time.process_time() - client_before) / served
    return rate, latencies, errors, server_ms, client_ms


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ----------------------------------------------------------------------------- client
class Connection:
    """One keep-alive HTTP/1.1 connection: POST JSON, read status and body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, body: bytes) -> int:
        self.writer.write(
            b"POST /v1/embeddings HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"content-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()

    def closed_by_server(self) -> bool:
        """The server closed this idle keep-alive connection (uvicorn does after 5 s idle):
        a client must not send on it, as HTTP clients' pools check before reuse."""
        return self.reader.at_eof() or self.writer.is_closing()


def _body(sentence: str) -> bytes:
    return json.dumps({"input": sentence, "model": "m"}).encode()


async def closed_loop(port: int, sentences: list[str], clients: int, seconds: float, limit: int):
    """``clients`` clients, each sending the next sentence when its answer is back, until
    ``seconds`` or ``limit`` requests; returns (requests/s, latencies in s, errors)."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    stop = time.perf_counter() + seconds

    async def client(index: int) -> None:
        nonlocal errors, sent
        connection = await Connection.open(port)
        position = index
        try:
            while time.perf_counter() < stop and sent < limit:
                sent += 1
                body = _body(sentences[position % len(sentences)])
                position += clients
                start = time.perf_counter()
                status = await connection.post(body)
                latencies.append(time.perf_counter() - start)
                errors += status != 200
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, np.array(latencies), errors


async def open_loop(port: int, sentences: list[str], rate: float, seconds: float, pool: int):
    """Requests arriving at ``rate`` per second for ``seconds`` whatever the answers,
    over up to ``pool`` connections; counts every outcome."""
    counts = {"sent": 0, "200": 0, "429": 0, "other": 0, "lost": 0, "reopened": 0}
    idle: list[Connection] = []
    opened = 0
    free = asyncio.Condition()

    async def one(index: int) -> None:
        nonlocal opened
        async with free:
            while not idle and opened >= pool:
                await free.wait()
            connection = None
            while idle and connection is None:
                connection = idle.pop()
                if connection.closed_by_server():  # idle too long: a new one instead
                    connection.close()
                    counts["reopened"] += 1
                    opened -= 1
                    connection = None
            if connection is None:
                opened += 1
        try:
            if connection is None:
                connection = await Connection.open(port)
            status = await asyncio.wait_for(
                connection.post(_body(sentences[index % len(sentences)])), 60
            )
            counts[str(status) if status in (200, 429) else "other"] += 1
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            counts["lost"] += 1
            if connection is not None:
                connection.close()
            async with free:
                opened -= 1
                free.notify()
            return
        async with free:
            idle.append(connection)
            free.notify()

    tasks = []
    start = time.perf_counter()
    total = int(rate * seconds)
    for index in range(total):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        counts["sent"] += 1
        tasks.append(asyncio.ensure_future(one(index)))
    await asyncio.gather(*tasks)
    for connection in idle:
        connection.close()
    counts["seconds"] = round(time.perf_counter() - start, 2)
    return counts


# ----------------------------------------------------------------------------- phases
def offline_ceiling(folder: str, sentences: list[str], seconds: float) -> float:
    """Sentences per second of ``Encoder.embed`` at batch 64 (tokenization included),
    whole passes over ``sentences`` for at least ``seconds``."""
    import distilkit

    encoder = distilkit.load(folder)
    encoder.embed(sentences[:64], batch_size=64, progress=False)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        encoder.embed(sentences, batch_size=64, progress=False)
        done += len(sentences)
    return done / (time.perf_counter() - start)


def row(name: str, clients: int, rate: float, latencies: np.ndarray, errors: int,
        server_ms: float, client_ms: float) -> dict:  # fmt: skip
    p50, p95, p99 = (float(np.percentile(latencies, q)) * 1000 for q in (50, 95, 99))
    return {"server": name, "clients": clients, "requests": len(latencies), "rps": rate,
            "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "errors": errors,
            "server_cpu_ms": server_ms, "client_cpu_ms": client_ms}  # fmt: skip


def print_row(r: dict) -> None:
    print(
        f"{r['server']:<28} {r['clients']:>7} {r['requests']:>8} {r['rps']:>9.1f} "
        f"{r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['errors']:>6} "
        f"{r['server_cpu_ms']:>8.2f} {r['client_cpu_ms']:>8.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="teacher folder (default: embedded MiniLM)")
    parser.add_argument("--student", help="a student folder (e.g. a 3-layer init-student cut)")
    parser.add_argument("--student-dtype", default="int8", choices=("fp32", "bf16", "int8"))
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--seconds", type=float, default=6.0, help="per closed-loop level")
    parser.add_argument("--max-requests", type=int, default=4000, help="per closed-loop level")
    parser.add_argument("--overload-seconds", type=float, default=8.0)
    parser.add_argument("--overload-queue", type=int, default=64, help="--max-queue in phase 3")
    parser.add_argument("--sentences", type=int, default=512, help="STS-B dev sentences used")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--naive-server", metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_server:
        naive_server(args.naive_server, args.port)
        return

    # OpenMP threads spinning at barriers while other jobs hold the cores measure the
    # scheduler, not the model (see encode_throughput.py); every process inherits this.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from distilkit.evaluate.sentence import read_stsb
    from distilkit.model.hub import resolve

    folder = str(resolve(args.model or "all-MiniLM-L6-v2"))
    first, second, _ = read_stsb()
    sentences = list(dict.fromkeys(first + second))[: args.sentences]
    python = sys.executable
    started = time.perf_counter()
    print(f"# serve_load.py  {datetime.datetime.now().isoformat(timespec='seconds')}  "
          f"{platform.node()}  {os.cpu_count()} CPUs  torch threads default, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")  # fmt: skip
    print(f"# teacher {folder}; {len(sentences)} STS-B dev sentences, one per request")
    ceiling = offline_ceiling(folder, sentences, args.seconds)
    print(f"offline Encoder.embed at batch 64 (the ceiling): {ceiling:.1f} sentences/s\n")
    header = f"{'server':<28} {'clients':>7} {'requests':>8} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6} {'srv cpu':>8} {'cli cpu':>8}"  # noqa: E501
    print(header)
    print("(srv cpu / cli cpu: CPU milliseconds per request spent by the server process and by "
          "this load generator)")  # fmt: skip
    results: list[dict] = []
    servers = {
        "distilkit serve (batch 64)": ["--max-batch-size", "64", "--max-wait-ms", "5"],
        "distilkit serve (batch 1)": ["--max-batch-size", "1"],
        "naive sentence-transformers": None,
    }
    overload = None
    for name, flags in servers.items():
        port = free_port()
        if flags is None:
            command = [python, __file__, "--naive-server", folder, "--port", str(port)]
        else:
            command = [python, "-m", "distilkit", "serve", folder, "--port", str(port), *flags]
        with server(command, port, name) as pid:
            asyncio.run(closed_loop(port, sentences, 8, 1.0, 200))  # warm-up
            for clients in args.clients:
                measured = measured_level(
                    pid, port, sentences, clients, args.seconds, args.max_requests
                )
                results.append(row(name, clients, *measured))
                print_row(results[-1])
    batched = next(iter(servers))
    capacity = next((r["rps"] for r in results if r["server"] == batched and r["clients"] == 64), 0)
    if capacity > 0:
        port = free_port()
        command = [python, "-m", "distilkit", "serve", folder, "--port", str(port),
                   "--max-queue", str(args.overload_queue)]  # fmt: skip
        with server(command, port, "overload") as pid:
            asyncio.run(closed_loop(port, sentences, 8, 1.0, 200))
            before = rss_mb(pid)
            overload = asyncio.run(
                open_loop(port, sentences, 2 * capacity, args.overload_seconds, pool=2000)
            )
            overload |= {"rate": round(2 * capacity, 1), "rss_before_mb": round(before, 1),
                         "rss_after_mb": round(rss_mb(pid), 1)}  # fmt: skip
    student = None
    if args.student:
        port = free_port()
        command = [python, "-m", "distilkit", "serve", args.student, "--port", str(port),
                   "--dtype", args.student_dtype]  # fmt: skip
        with server(command, port, "student") as pid:
            asyncio.run(closed_loop(port, sentences, 8, 1.0, 200))
            measured = measured_level(pid, port, sentences, 64, args.seconds, args.max_requests)
            student = row(f"student 3L {args.student_dtype} (batch 64)", 64, *measured)
            print_row(student)

    again = offline_ceiling(folder, sentences, args.seconds)
    print(f"\noffline ceiling measured again at the end: {again:.1f} sentences/s; the higher "
          "one is used below")  # fmt: skip
    ceiling = max(ceiling, again)
    print("\n# goals")
    by = {(r["server"], r["clients"]): r for r in results}
    batched, unbatched, naive = (list(servers)[i] for i in range(3))
    if (batched, 64) in by:
        at64 = by[(batched, 64)]["rps"]
        print(f"64 clients: {at64:.1f} req/s = {100 * at64 / ceiling:.1f}% of the offline "
              f"ceiling (goal >= 80%); {at64 / by[(unbatched, 64)]['rps']:.2f}x batching off "
              f"(goal >= 1.5x); {at64 / by[(naive, 64)]['rps']:.2f}x the naive server")  # fmt: skip
    if (batched, 8) in by and (batched, 1) in by:
        ratio = by[(batched, 8)]["p99_ms"] / by[(batched, 1)]["p50_ms"]
        print(f"p99 at 8 clients = {ratio:.2f}x the single-client latency (p50; goal <= 3x)")
    if overload is not None:
        accounted = overload["200"] + overload["429"] + overload["other"] + overload["lost"]
        print(f"overload (--max-queue {args.overload_queue}) at {overload['rate']} req/s for "
              f"{args.overload_seconds:.0f} s: "
              f"sent {overload['sent']}, 200 {overload['200']}, 429 {overload['429']}, other "
              f"{overload['other']}, lost {overload['lost']} (accounted {accounted}; "
              f"{overload['reopened']} idle connections the server had closed were replaced, "
              "not reused); server RSS "
              f"{overload['rss_before_mb']} -> {overload['rss_after_mb']} MB")  # fmt: skip
    if student is not None and (naive, 64) in by:
        print(f"student 3L {args.student_dtype} served: {student['rps']:.1f} req/s = "
              f"{student['rps'] / by[(naive, 64)]['rps']:.2f}x the teacher's naive server at 64 "
              "clients (goal >= 4x)")  # fmt: skip
    print(f"# total {time.perf_counter() - started:.0f} s")
    if args.json:
        payload = {"ceiling": ceiling, "rows": results, "overload": overload, "student": student}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
