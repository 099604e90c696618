"""`distilkit serve` through real uvicorn servers on 127.0.0.1 (free ports), with tiny
random models: response shapes against recorded OpenAI / TEI examples, the `openai`
client, batching correctness under 200 concurrent clients, every abuse case with its
status, the API key, a disconnecting client, a crashing batch, and a SIGTERM drain."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from distilkit.cli import main as cli  # noqa: E402
from distilkit.deploy import serve as serve_module  # noqa: E402
from distilkit.deploy.runner import ModelRunner  # noqa: E402
from distilkit.deploy.serve import ServeConfig, create_app, is_loopback  # noqa: E402
from distilkit.encoder import load  # noqa: E402

# Recorded examples of the documented shapes (OpenAI API reference, "Create embeddings";
# text-embeddings-inference README and openapi.json), vectors shortened.
OPENAI_REQUEST = {
    "input": "The food was delicious and the waiter...",
    "model": "text-embedding-ada-002",
    "encoding_format": "float",
}
OPENAI_RESPONSE = {
    "object": "list",
    "data": [
        {
            "object": "embedding",
            "embedding": [0.0023064255, -0.009327292, -0.0028842222],
            "index": 0,
        }
    ],
    "model": "text-embedding-ada-002",
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}
OPENAI_ERROR = {
    "error": {
        "message": "'$.input' is invalid.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}
TEI_REQUEST = {"inputs": "What is Deep Learning?"}
TEI_RESPONSE = [[0.00030903306, -0.06356524, 0.0025573731]]
TEI_ERROR = {
    "error": "Input validation error: `inputs` cannot be empty",
    "error_type": "Validation",
}

TEXTS = [
    "the cat sat on the mat.",
    "hello world",
    "a big red dog jumped over this small blue house, and it ran to the tree!",
    "book",
    "this is that; it was read.",
    "the bird and the cat read a book in the house with the dog",
    "run",
    "small blue tree",
]


def _shape(value):
    """The JSON structure of a value: dict keys and value kinds, list element kinds."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


# ----------------------------------------------------------------------------- servers
class GatedRunner(ModelRunner):
    """The real runner, but each forward first waits for ``gate`` (when set up), records
    its texts' token ids, and raises on a row holding ``poison`` (a token id)."""

    def __init__(self, base: ModelRunner, poison: int | None = None):
        super().__init__(base.model, base.early_exit, base.pooling)
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.poison = poison
        self.seen: list[list[int]] = []

    def run(self, key, ids):
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        self.seen.append([len(row) for row in ids])
        if self.poison is not None and any(self.poison in row for row in ids):
            raise RuntimeError("poisoned batch")
        return super().run(key, ids)


@contextlib.contextmanager
def running(config: ServeConfig, runner: ModelRunner | None = None):
    """A uvicorn server on a free loopback port in a thread; yields (base URL, app)."""
    app = create_app(config, runner)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def tiny_folder(hf_checkpoint) -> Path:
    return hf_checkpoint("BertModel")


@pytest.fixture(scope="module")
def tiny_runner(tiny_folder) -> ModelRunner:
    return ModelRunner.load(tiny_folder)


@pytest.fixture(scope="module")
def reference(tiny_folder):
    return load(tiny_folder)


@pytest.fixture(scope="module")
def server(tiny_folder, tiny_runner):
    config = ServeConfig(model=str(tiny_folder), max_wait_ms=20, max_body_bytes=4096)
    with running(config, tiny_runner) as (url, _):
        yield url


# ----------------------------------------------------------------------------- shapes
def test_openai_shape_matches_the_recorded_example(server, reference):
    response = httpx.post(f"{server}/v1/embeddings", json=OPENAI_REQUEST)
    assert response.status_code == 200
    body = response.json()
    assert _shape(body) == _shape(OPENAI_RESPONSE)
    expected = reference.embed(OPENAI_REQUEST["input"], normalize=True)[0]
    np.testing.assert_allclose(body["data"][0]["embedding"], expected, atol=1e-5)
    tokens = len(reference.tokens(OPENAI_REQUEST["input"]))
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    bad = httpx.post(f"{server}/v1/embeddings", json={"input": 3})
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert set(bad.json()) == set(OPENAI_ERROR) and set(error) == set(OPENAI_ERROR["error"])
    assert isinstance(error["message"], str) and error["type"] == "invalid_request_error"
    assert error["param"] == "input"


def test_tei_shape_matches_the_recorded_example(server, reference):
    response = httpx.post(f"{server}/embed", json=TEI_REQUEST)
    assert response.status_code == 200
    assert _shape(response.json()) == _shape(TEI_RESPONSE)
    expected = reference.embed(TEI_REQUEST["inputs"], normalize=True)
    np.testing.assert_allclose(response.json(), expected, atol=1e-5)
    raw = httpx.post(f"{server}/embed", json={"inputs": TEXTS, "normalize": False}).json()
    np.testing.assert_allclose(raw, reference.embed(TEXTS), atol=1e-5)
    bad = httpx.post(f"{server}/embed", json={"inputs": []})
    assert bad.status_code == 422
    error = bad.json()
    assert _shape({key: error[key] for key in TEI_ERROR}) == _shape(TEI_ERROR)
    assert error["field"] == "inputs"


def test_base64_and_dimensions(server, reference):
    body = httpx.post(
        f"{server}/v1/embeddings",
        json={"input": TEXTS[:3], "encoding_format": "base64", "dimensions": 7},
    ).json()
    import base64

    vectors = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in body["data"]]
    full = reference.embed(TEXTS[:3])[:, :7]
    expected = full / np.linalg.norm(full, axis=1, keepdims=True)
    np.testing.assert_allclose(np.stack(vectors), expected, atol=1e-5)
    assert [d["index"] for d in body["data"]] == [0, 1, 2]


def test_the_openai_client_embeds_through_the_server(tiny_folder, tiny_runner, reference):
    openai = pytest.importorskip("openai")
    config = ServeConfig(model=str(tiny_folder), api_key="s3cret")
    with running(config, tiny_runner) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        result = client.embeddings.create(model="tiny", input=TEXTS)  # base64 on the wire
        floats = client.embeddings.create(model="tiny", input=TEXTS[0], encoding_format="float")
        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.embeddings.create(model="tiny", input="hello")
    vectors = np.array([item.embedding for item in result.data])
    np.testing.assert_allclose(vectors, reference.embed(TEXTS, normalize=True), atol=1e-5)
    np.testing.assert_allclose(floats.data[0].embedding, vectors[0], atol=1e-5)
    assert result.usage.prompt_tokens == sum(len(reference.tokens(t)) for t in TEXTS)


# ----------------------------------------------------------------------------- batching
@pytest.mark.parametrize("instances", [1, 3])
def test_200_concurrent_requests_get_exactly_their_own_rows(
    tiny_folder, tiny_runner, reference, instances
):
    generator = np.random.default_rng(7)
    words = ["the", "cat", "sat", "mat", "hello", "world", "big", "red", "dog", "run", "jump"]
    texts = [" ".join(generator.choice(words, generator.integers(1, 40))) for _ in range(200)]
    config = ServeConfig(
        model=str(tiny_folder), max_batch_size=16, max_wait_ms=10, instances=instances
    )

    async def fire(url):
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=200)) as c:
            requests = []
            for index, text in enumerate(texts):
                if index % 5 == 0:  # some requests carry a list: rows must stay in order
                    payload = {"inputs": [text, texts[(index + 1) % 200]], "normalize": False}
                else:
                    payload = {"inputs": text, "normalize": False}
                requests.append(c.post("/embed", json=payload, timeout=60))
            return await asyncio.gather(*requests), (await c.get("/metrics")).text

    with running(config, tiny_runner) as (url, _):
        responses, metrics = asyncio.run(fire(url))
    assert [r.status_code for r in responses] == [200] * 200
    expected = reference.embed(texts)
    for index, response in enumerate(responses):
        rows = response.json()
        want = [expected[index]] + ([expected[(index + 1) % 200]] if index % 5 == 0 else [])
        np.testing.assert_allclose(rows, want, atol=1e-5)
    # batching happened: fewer forward batches than requests, none over the size
    batches = float(_metric(metrics, "distilkit_batch_size_count"))
    assert batches < 200
    assert float(_metric(metrics, 'distilkit_batch_size_bucket{le="16.0"}')) == batches


def test_instances_run_forward_batches_at_the_same_time(tiny_folder, tiny_runner, reference):
    """With two instances a second batch runs while the first is still in its forward:
    both forwards are entered before either may finish, and each request gets its rows."""
    runner = GatedRunner(tiny_runner)
    runner.gate = threading.Event()
    inside, most = [0], [0]
    lock = threading.Lock()
    base_run = runner.run

    def counting_run(key, ids):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            return base_run(key, ids)
        finally:
            with lock:
                inside[0] -= 1

    runner.run = counting_run
    config = ServeConfig(model=str(tiny_folder), max_batch_size=1, max_wait_ms=0, instances=2)

    async def fire(url):
        async with httpx.AsyncClient(base_url=url) as c:
            posts = [
                asyncio.ensure_future(c.post("/embed", json={"inputs": t, "normalize": False}))
                for t in TEXTS[:4]
            ]
            deadline = time.monotonic() + 10
            while most[0] < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            runner.gate.set()
            return await asyncio.gather(*posts)

    with running(config, runner) as (url, _):
        responses = asyncio.run(fire(url))
    assert most[0] == 2  # two forwards in flight at once, never more than the instances
    for text, response in zip(TEXTS[:4], responses, strict=True):
        np.testing.assert_allclose(response.json(), reference.embed([text]), atol=1e-5)


def test_instances_and_threads_follow_the_cores(tiny_runner, monkeypatch):
    monkeypatch.setattr("distilkit.deploy.runner.physical_cores", lambda: 8)
    assert tiny_runner.plan(None, None) == (2, 4)  # two batches in flight, cores shared
    assert tiny_runner.plan(None, None, processes=4) == (2, 1)
    assert tiny_runner.plan(None, None, processes=8) == (1, 1)  # one core each: one instance
    assert tiny_runner.plan(3, None) == (3, 2)
    assert tiny_runner.plan(1, 5) == (1, 5)  # what the user asked for
    monkeypatch.setattr("distilkit.deploy.runner.physical_cores", lambda: 1)
    assert tiny_runner.plan(None, None) == (1, 1)


def test_an_instance_sets_its_own_threads_only():
    """OpenMP's thread count is per thread: an instance's setting leaves the caller's."""
    before = torch.get_num_threads()
    seen = []

    def instance():
        ModelRunner.start_instance(1)
        seen.append(torch.get_num_threads())

    thread = threading.Thread(target=instance)
    thread.start()
    thread.join()
    assert seen == [1]
    assert torch.get_num_threads() == before


def _metric(text: str, name: str) -> str:
    line = next(line for line in text.splitlines() if line.startswith(name))
    return line.rsplit(" ", 1)[1]


def test_batches_are_length_sorted_and_bounded(tiny_folder, tiny_runner):
    runner = GatedRunner(tiny_runner)
    runner.gate = threading.Event()
    config = ServeConfig(model=str(tiny_folder), max_batch_size=3, max_wait_ms=0, instances=1)

    async def fire(url, state):
        async with httpx.AsyncClient(base_url=url) as c:
            first = asyncio.ensure_future(c.post("/embed", json={"inputs": "run"}))
            await asyncio.to_thread(runner.entered.wait, 10)
            rest = asyncio.ensure_future(c.post("/embed", json={"inputs": TEXTS}))
            while state.batcher.queued_texts < len(TEXTS):
                await asyncio.sleep(0.01)
            runner.gate.set()
            return await first, await rest

    with running(config, runner) as (url, app):
        first, rest = asyncio.run(fire(url, app.state))
    assert first.status_code == rest.status_code == 200
    sizes = [len(batch) for batch in runner.seen[1:]]
    assert sizes == [3, 3, 2]
    lengths = [n for batch in runner.seen[1:] for n in batch]
    assert lengths == sorted(lengths, reverse=True)


# ----------------------------------------------------------------------------- abuse
@pytest.mark.parametrize(
    ("route", "payload", "field"),
    [
        ("/v1/embeddings", {"input": [["a"], "b"]}, "input[0]"),
        ("/v1/embeddings", {"input": []}, "input"),
        ("/v1/embeddings", {"input": {"text": "a"}}, "input"),
        ("/v1/embeddings", {"input": "a", "dimensions": 0}, "dimensions"),
        ("/v1/embeddings", {"input": "a", "encoding_format": "int8"}, "encoding_format"),
        ("/v1/embeddings", {"model": "x"}, "input"),
        ("/embed", {"inputs": ["fine", 3]}, "inputs[1]"),
        ("/embed", {"inputs": "  "}, "inputs"),
        ("/embed", {"inputs": "a", "normalize": "yes"}, "normalize"),
        ("/embed", {"inputs": "a", "colour": "red"}, "colour"),
        ("/embed", [1, 2], "body"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(server, route, payload, field):
    response = httpx.post(f"{server}{route}", json=payload)
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["param"] if isinstance(error, dict) else response.json()["field"]) == field


@pytest.mark.parametrize("body", [b"\xff\xfe{}", b'{"inputs": "a"', b"\x00"])
def test_undecodable_bodies_are_a_422(server, body):
    response = httpx.post(f"{server}/embed", content=body)
    assert response.status_code == 422
    assert response.json()["field"] == "body"


def test_limits_are_a_413(server, tiny_folder, tiny_runner):
    big = httpx.post(f"{server}/embed", content=b'{"inputs": "' + b"a " * 4000 + b'"}')
    assert big.status_code == 413 and big.json()["field"] == "body"

    def chunks():  # no Content-Length: the limit counts the bytes as they come
        yield b'{"inputs": "'
        for _ in range(50):
            yield b"cat " * 25
        yield b'"}'

    assert httpx.post(f"{server}/embed", content=chunks()).status_code == 413
    long_text = " ".join(["cat"] * 70)  # over the tiny model's 64 tokens
    too_long = httpx.post(f"{server}/embed", json={"inputs": ["cat", long_text]})
    assert too_long.status_code == 413 and too_long.json()["field"] == "inputs[1]"
    cut = httpx.post(f"{server}/embed", json={"inputs": long_text, "truncate": True})
    assert cut.status_code == 200
    config = ServeConfig(model=str(tiny_folder), max_input_tokens=5, max_queue=4)
    with running(config, tiny_runner) as (url, _):
        assert httpx.post(f"{url}/embed", json={"inputs": "the cat sat on mat"}).status_code == 413
        assert httpx.post(f"{url}/embed", json={"inputs": "the cat sat"}).status_code == 200
        many = httpx.post(f"{url}/v1/embeddings", json={"input": ["a"] * 5})
        assert many.status_code == 413 and many.json()["error"]["param"] == "input"


def test_a_full_queue_is_a_429_with_retry_after(tiny_folder, tiny_runner, reference):
    runner = GatedRunner(tiny_runner)
    runner.gate = threading.Event()
    config = ServeConfig(
        model=str(tiny_folder), max_queue=4, max_batch_size=2, max_wait_ms=0, instances=1
    )

    async def fire(url, state):
        async with httpx.AsyncClient(base_url=url) as c:
            first = asyncio.ensure_future(c.post("/embed", json={"inputs": TEXTS[0]}))
            await asyncio.to_thread(runner.entered.wait, 10)
            queued = [
                asyncio.ensure_future(c.post("/embed", json={"inputs": t})) for t in TEXTS[1:5]
            ]
            while state.batcher.queued_texts < 4:
                await asyncio.sleep(0.01)
            refused = await c.post("/embed", json={"inputs": TEXTS[5]})
            runner.gate.set()
            return refused, [await first, *[await q for q in queued]]

    with running(config, runner) as (url, app):
        refused, served = asyncio.run(fire(url, app.state))
        after = httpx.post(f"{url}/embed", json={"inputs": TEXTS[5]})
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert [r.status_code for r in served] == [200] * 5
    np.testing.assert_allclose(
        [r.json()[0] for r in served], reference.embed(TEXTS[:5], normalize=True), atol=1e-5
    )
    assert after.status_code == 200


def test_a_crashing_batch_fails_only_its_own_requests(tiny_folder, tiny_runner, reference):
    poison = reference.tokenizer.token_to_id("jump")
    runner = GatedRunner(tiny_runner, poison=poison)
    runner.gate = threading.Event()
    config = ServeConfig(model=str(tiny_folder), max_batch_size=4, max_wait_ms=0, instances=1)
    texts = ["the cat", "we jump", "hello", "red dog", "a tree", "small", "book", "blue mat"]

    async def fire(url, state):
        async with httpx.AsyncClient(base_url=url) as c:
            first = asyncio.ensure_future(c.post("/embed", json={"inputs": "run"}))
            await asyncio.to_thread(runner.entered.wait, 10)
            queued = []
            for count, text in enumerate(texts, start=1):  # queued in a known order
                queued.append(asyncio.ensure_future(c.post("/embed", json={"inputs": text})))
                while state.batcher.queued_texts < count:
                    await asyncio.sleep(0.005)
            runner.gate.set()
            return (
                await first,
                [await q for q in queued],
                await c.post("/embed", json={"inputs": "the cat"}),
            )

    with running(config, runner) as (url, app):
        first, queued, after = asyncio.run(fire(url, app.state))
        metrics = httpx.get(f"{url}/metrics").text
    assert first.status_code == 200
    assert [r.status_code for r in queued] == [500] * 4 + [200] * 4
    assert "poisoned batch" in queued[0].json()["error"]
    np.testing.assert_allclose(
        [r.json()[0] for r in queued[4:]], reference.embed(texts[4:], normalize=True), atol=1e-5
    )
    assert after.status_code == 200
    assert float(_metric(metrics, "distilkit_batch_failures_total")) == 4


def test_the_api_key(tiny_folder, tiny_runner, monkeypatch):
    calls = []
    real = serve_module.hmac.compare_digest
    monkeypatch.setattr(
        serve_module.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b)
    )
    config = ServeConfig(model=str(tiny_folder), api_key="k-123")
    with running(config, tiny_runner) as (url, _):
        payload = {"inputs": "hello"}
        assert httpx.post(f"{url}/embed", json=payload).status_code == 401
        wrong = httpx.post(f"{url}/embed", json=payload, headers={"Authorization": "Bearer k-12"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        right = httpx.post(f"{url}/embed", json=payload, headers={"Authorization": "Bearer k-123"})
        assert right.status_code == 200
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200
    assert len(calls) == 4  # every keyed request, none for /health


def test_a_disconnecting_client_does_not_poison_the_batch(tiny_folder, tiny_runner, reference):
    runner = GatedRunner(tiny_runner)
    runner.gate = threading.Event()
    config = ServeConfig(model=str(tiny_folder), max_batch_size=8, max_wait_ms=0, instances=1)
    gone_text = "the bird read the book in the house and it was big and red"

    async def fire(url, state):
        async with httpx.AsyncClient(base_url=url) as c:
            first = asyncio.ensure_future(c.post("/embed", json={"inputs": "run"}))
            await asyncio.to_thread(runner.entered.wait, 10)
            body = json.dumps({"inputs": gone_text}).encode()
            _, writer = await asyncio.open_connection(*url[7:].split(":"))
            writer.write(
                b"POST /embed HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            stay = asyncio.ensure_future(c.post("/embed", json={"inputs": TEXTS[:2]}))
            while state.batcher.queued_texts < 3:
                await asyncio.sleep(0.01)
            writer.close()  # the client goes away while its request is queued
            metrics = ""
            for _ in range(200):
                metrics = (await c.get("/metrics")).text
                if float(_metric(metrics, "distilkit_client_disconnects_total")) == 1:
                    break
                await asyncio.sleep(0.01)
            runner.gate.set()
            return await first, await stay, metrics

    with running(config, runner) as (url, app):
        first, stay, metrics = asyncio.run(fire(url, app.state))
        after = httpx.post(f"{url}/embed", json={"inputs": TEXTS[2]})
    assert float(_metric(metrics, "distilkit_client_disconnects_total")) == 1
    assert first.status_code == stay.status_code == after.status_code == 200
    np.testing.assert_allclose(stay.json(), reference.embed(TEXTS[:2], normalize=True), atol=1e-5)
    gone_length = len(reference.tokens(gone_text))
    assert gone_length not in [n for batch in runner.seen for n in batch]  # skipped


SLOW_SERVER = """
import sys, time
from distilkit.deploy import runner, serve

real = runner.ModelRunner.run


def slow(self, key, ids):  # each forward takes 0.25 s: requests are still in flight at SIGTERM
    time.sleep(0.25)
    return real(self, key, ids)


runner.ModelRunner.run = slow
config = serve.ServeConfig(model=sys.argv[1], port=int(sys.argv[2]), max_batch_size=2,
                           instances=1)
serve.serve(config)
"""


def test_shutdown_on_sigterm_drains_the_requests_in_flight(tiny_folder, reference):
    """SIGTERM while 8 requests are queued or running (one forward of at most 2 texts at a
    time, 0.25 s each): every request still gets its 200, some after the signal."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_SERVER, str(tiny_folder), str(port)],
        env=env,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read().decode()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.1)

        async def fire():
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:

                async def post(text):
                    response = await c.post("/embed", json={"inputs": text})
                    return response, time.monotonic()

                requests = [asyncio.ensure_future(post(t)) for t in TEXTS]
                await asyncio.sleep(0.3)  # the first forwards run, the rest are queued
                signalled = time.monotonic()
                process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*requests), signalled

        answered, signalled = asyncio.run(fire())
        # uvicorn re-raises the signal once it has shut down gracefully
        assert process.wait(30) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
    responses = [response for response, _ in answered]
    assert [r.status_code for r in responses] == [200] * len(TEXTS)
    assert sum(done > signalled for _, done in answered) >= 2  # drained after the signal
    assert b"Traceback" not in process.stderr.read()
    np.testing.assert_allclose(
        [r.json()[0] for r in responses], reference.embed(TEXTS, normalize=True), atol=1e-5
    )


def test_an_idle_server_answers_at_once(tiny_folder, tiny_runner, reference):
    """--max-wait-ms is 5 s, but with no forward running a request starts at once."""
    config = ServeConfig(model=str(tiny_folder), max_wait_ms=5000, instances=2)
    with running(config, tiny_runner) as (url, _):
        httpx.post(f"{url}/embed", json={"inputs": "warm"})
        started = time.monotonic()
        response = httpx.post(f"{url}/embed", json={"inputs": TEXTS[0]})
        seconds = time.monotonic() - started
    assert response.status_code == 200
    np.testing.assert_allclose(
        response.json(), reference.embed(TEXTS[:1], normalize=True), atol=1e-5
    )
    assert seconds < 2.5  # 5 s if it had waited for company


def test_the_hot_routes_bypass_fastapi(tiny_folder, tiny_runner):
    """POST /embed, /v1/embeddings and /classify are answered without the FastAPI app;
    FastAPI still answers the rest: 405 for another method, a redirect for /embed/,
    404 for an unknown path."""
    config = ServeConfig(model=str(tiny_folder))
    with running(config, tiny_runner) as (url, app):
        embed = httpx.post(f"{url}/embed", json={"inputs": "hello"})
        openai = httpx.post(f"{url}/v1/embeddings", json={"input": "hello"})
        fastapi_app, calls = app.app, []

        async def counting(scope, receive, send):
            calls.append(scope["path"])
            await fastapi_app(scope, receive, send)

        app.app = counting
        again = httpx.post(f"{url}/embed", json={"inputs": "hello"})
        classify = httpx.post(f"{url}/classify", json={"inputs": "hello"})
        bad = httpx.post(f"{url}/v1/embeddings", json={"input": []})
        assert calls == []
        wrong_method = httpx.get(f"{url}/embed")
        slash = httpx.post(f"{url}/embed/", json={"inputs": "hello"})
        unknown = httpx.post(f"{url}/nope", json={})
        assert calls == ["/embed", "/embed/", "/nope"]
        app.app = fastapi_app
        metrics = httpx.get(f"{url}/metrics").text
    assert embed.status_code == openai.status_code == again.status_code == 200
    assert embed.json() == again.json()
    assert classify.status_code == 404 and classify.json()["error_type"] == "not_found"
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "input"
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert slash.status_code == 307 and slash.headers["location"].endswith("/embed")
    assert unknown.status_code == 404
    counted = {  # every request to a known route, by status; /embed/ and /nope are not routes
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(("distilkit_requests_total", "distilkit_request_duration_seconds_count"))
    }
    assert counted == {
        'distilkit_requests_total{route="/embed",status="200"}': 2,
        'distilkit_requests_total{route="/embed",status="405"}': 1,
        'distilkit_requests_total{route="/v1/embeddings",status="200"}': 1,
        'distilkit_requests_total{route="/v1/embeddings",status="422"}': 1,
        'distilkit_requests_total{route="/classify",status="404"}': 1,
        'distilkit_request_duration_seconds_count{route="/embed"}': 3,
        'distilkit_request_duration_seconds_count{route="/v1/embeddings"}': 2,
        'distilkit_request_duration_seconds_count{route="/classify"}': 1,
    }


# ----------------------------------------------------------------------------- classify
def test_classify_matches_the_pipeline(hf_checkpoint):
    from distilkit.deploy.pipelines import classify

    folder = hf_checkpoint("BertForSequenceClassification")
    config = ServeConfig(model=str(folder))
    with running(config) as (url, _):
        served = httpx.post(f"{url}/classify", json={"inputs": TEXTS}).json()
    expected = classify(folder, TEXTS)
    assert [r["label"] for r in served] == [r["label"] for r in expected]
    np.testing.assert_allclose(
        [list(r["scores"].values()) for r in served],
        [list(r["scores"].values()) for r in expected],
        atol=1e-5,
    )


def test_classify_takes_the_early_exit_path(hf_checkpoint, tmp_path):
    import torch
    from conftest import randomize_

    from distilkit.methods.early_exit.model import BranchConfig, EarlyExitModel, normalized_entropy
    from distilkit.model.checkpoint import load_model

    source = hf_checkpoint("BertForSequenceClassification")
    early = EarlyExitModel(load_model(source), BranchConfig(width=22, num_heads=2))
    randomize_(early.branches, seed=5)
    tokenizer = load(source).tokenizer
    with torch.inference_mode():  # a threshold between the first branch's entropies
        batch = tokenizer(TEXTS)
        first = normalized_entropy(early.eval().layer_logits(**batch.model_inputs())[0])
    early.threshold = float(first.median()) + 1e-6
    folder = early.save(tmp_path / "early", tokenizer=tokenizer)
    with running(ServeConfig(model=str(folder))) as (url, _):
        served = httpx.post(f"{url}/classify", json={"inputs": TEXTS}).json()
        never = httpx.post(f"{url}/classify", json={"inputs": TEXTS, "threshold": 0}).json()
        bad = httpx.post(f"{url}/classify", json={"inputs": "a", "threshold": 2})
    early.eval()
    with torch.inference_mode():
        for text, result in zip(TEXTS, served, strict=True):
            output = early(**tokenizer([text]).model_inputs())
            assert result["exit_layer"] == int(output.exit_layers[0])
            probabilities = output.logits[0].double().softmax(-1).numpy()
            np.testing.assert_allclose(list(result["scores"].values()), probabilities, atol=1e-5)
    assert {r["exit_layer"] for r in never} == {3}
    assert len({r["exit_layer"] for r in served}) > 1  # some exit early, some do not
    assert bad.status_code == 422 and bad.json()["field"] == "threshold"


@pytest.mark.slow  # the ONNX export takes ~15 s
def test_an_onnx_file_serves(tiny_folder, tmp_path):
    pytest.importorskip("onnxruntime")
    from distilkit.deploy.export import export_onnx

    path = tmp_path / "tiny.onnx"
    export_onnx(load(tiny_folder), path, check_limit=0, verbose=False)
    with running(ServeConfig(model=str(path))) as (url, _):
        served = httpx.post(f"{url}/embed", json={"inputs": TEXTS, "normalize": False}).json()
    np.testing.assert_allclose(served, load(path).embed(TEXTS), atol=1e-5)


def test_the_folders_own_recipe_is_served(hf_checkpoint, tmp_path):
    """A sentence-transformers folder with CLS pooling and a Dense layer: /v1/embeddings
    returns what sentence-transformers' encode gives (normalised), /embed without
    normalize the raw Dense output; `dimensions` is checked against the Dense width."""
    st = pytest.importorskip("sentence_transformers")
    models = pytest.importorskip("sentence_transformers.models")
    import torch

    folder = tmp_path / "st"
    modules = [
        models.Transformer(str(hf_checkpoint("BertModel")), max_seq_length=40),
        models.Pooling(32, pooling_mode="cls"),
        models.Dense(32, 19, activation_function=torch.nn.Tanh()),
    ]
    st.SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    reference_model = st.SentenceTransformer(str(folder), device="cpu")
    expected = reference_model.encode(TEXTS, normalize_embeddings=True)
    raw = reference_model.encode(TEXTS)
    with running(ServeConfig(model=str(folder), max_wait_ms=20)) as (url, _):
        openai = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS}).json()
        tei = httpx.post(f"{url}/embed", json={"inputs": TEXTS, "normalize": False}).json()
        too_wide = httpx.post(f"{url}/v1/embeddings", json={"input": "a", "dimensions": 20})
    served = np.array([item["embedding"] for item in openai["data"]])
    assert served.shape == (len(TEXTS), 19)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    np.testing.assert_allclose(tei, raw, atol=1e-5)
    assert too_wide.status_code == 422


def test_the_folders_truncate_dim_is_the_served_width(hf_checkpoint, tmp_path):
    """A folder saved with ``truncate_dim`` (sentence-transformers' default cut) is served
    at that width on both routes, as ``Encoder.embed`` gives it; the OpenAI ``dimensions``
    still asks for any width up to the whole vector."""
    folder = load(hf_checkpoint("BertModel")).save(tmp_path / "cut")
    settings_path = folder / "config_sentence_transformers.json"
    settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    settings_path.write_text(json.dumps(settings | {"truncate_dim": 7}))
    encoder = load(folder)
    expected = encoder.embed(TEXTS, normalize=True)
    raw = encoder.embed(TEXTS, normalize=False)
    assert expected.shape == (len(TEXTS), 7)
    with running(ServeConfig(model=str(folder), max_wait_ms=20)) as (url, _):
        openai = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS}).json()
        tei = httpx.post(f"{url}/embed", json={"inputs": TEXTS}).json()
        tei_raw = httpx.post(f"{url}/embed", json={"inputs": TEXTS, "normalize": False}).json()
        wider = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS, "dimensions": 20}).json()
    np.testing.assert_allclose([d["embedding"] for d in openai["data"]], expected, atol=1e-5)
    np.testing.assert_allclose(tei, expected, atol=1e-5)
    np.testing.assert_allclose(tei_raw, raw, atol=1e-5)
    np.testing.assert_allclose(
        [d["embedding"] for d in wider["data"]],
        encoder.embed(TEXTS, dimensions=20, normalize=True),
        atol=1e-5,
    )
    settings_path.write_text(json.dumps(settings | {"truncate_dim": 99}))  # wider than 32
    with pytest.raises(ValueError, match="truncate_dim 99 is wider than the served vector"):
        create_app(ServeConfig(model=str(folder)))


# ----------------------------------------------------------------------------- config, CLI
def test_binds_to_loopback_unless_told(capsys):
    args = cli.build_parser().parse_args(["serve", "m"])
    assert args.host == "127.0.0.1" and ServeConfig().host == "127.0.0.1"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--max-batch-size", "0"], "--max-batch-size"),
        (["--max-queue", "0"], "--max-queue"),
        (["--max-input-tokens", "2"], "--max-input-tokens"),
        (["--dtype", "int8", "--device", "cuda"], "--dtype int8"),
        (["--instances", "0"], "--instances"),
        (["--threads", "-1"], "--threads"),
    ],
)
def test_bad_flags_are_one_line_errors(tiny_folder, capsys, flags, named):
    assert cli.main(["serve", str(tiny_folder), *flags]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and named in error and "\n" not in error


def test_json_response_writes_float32_vectors_that_read_back_exactly():
    """The server writes numpy rows with orjson: the shortest digits that read back to the
    same float32, the same JSON as the plain dict with Python floats once parsed."""
    rng = np.random.default_rng(7)
    vectors = (rng.standard_normal((5, 37)) * 10.0 ** rng.integers(-8, 4, (5, 37))).astype(
        np.float32
    )
    body = {"data": [{"embedding": row, "index": i} for i, row in enumerate(vectors)], "n": 5}
    response = serve_module.json_response(body, status=201, headers={"x-a": "b"})
    assert response.status_code == 201 and response.headers["x-a"] == "b"
    assert response.headers["content-type"] == "application/json"
    parsed = json.loads(response.body)
    back = np.array([item["embedding"] for item in parsed["data"]], dtype=np.float32)
    assert np.array_equal(back, vectors)  # bit for bit after the float32 cast
    assert [item["index"] for item in parsed["data"]] == list(range(5)) and parsed["n"] == 5
