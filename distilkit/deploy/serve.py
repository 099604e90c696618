"""``distilkit serve``: an embedding and classification server with dynamic batching.

FastAPI on uvicorn. Routes (shapes in :mod:`distilkit.deploy.schemas`):

* ``POST /v1/embeddings`` (OpenAI), ``POST /embed`` (text-embeddings-inference),
  ``POST /classify`` (sequence-classification heads; early exit when the folder has
  branches), ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus).

Every text goes through one :class:`~distilkit.deploy.batcher.DynamicBatcher`. Under
abuse the server answers instead of falling over: 429 with Retry-After when the queue
is full, 413 for a body, a list or a text over the limits, 422 naming the field for bad
input, 401 without the ``--api-key`` (compared in constant time), 500 for the requests
of a forward batch that raised (the server keeps serving), 503 while draining. A client
that disconnects stops waiting and its texts are skipped if not yet taken. SIGTERM
stops new connections, finishes the requests in flight, then drains the queue.

With ``--workers N`` each process loads its own model and batcher, and ``/metrics``
reports the process that answered the scrape.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import os
import time
import warnings
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

try:  # the `serve` extra; without it the module still imports and serve() says what to install
    import orjson
    from fastapi import FastAPI, Request
    from fastapi.responses import Response
except ImportError:  # pragma: no cover - exercised only without the extra
    FastAPI = None

from distilkit.deploy.batcher import (
    BatchFailed,
    BatchStats,
    DynamicBatcher,
    InputTooLong,
    QueueFull,
    ShuttingDown,
)
from distilkit.deploy.runner import CLASSIFY, EMBED, ModelRunner
from distilkit.deploy.schemas import (
    MAX_INPUTS,
    ApiError,
    classify_response,
    embeddings_response,
    error_body,
    finish_vectors,
    parse_classify,
    parse_embed,
    parse_embeddings,
    parse_json,
)

CONFIG_ENV = "DISTILKIT_SERVE_CONFIG"  # how --workers hands the config to each process
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class ServeConfig:
    """Everything ``distilkit serve`` takes; see ``distilkit serve --help``."""

    model: str = "all-MiniLM-L6-v2"
    host: str = "127.0.0.1"
    port: int = 8080
    dtype: str = "fp32"
    device: str = "auto"  # auto: the GPU when there is one
    pooling: str | None = None  # None: the model folder's own recipe
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    max_input_tokens: int | None = None
    max_body_bytes: int = 2_000_000
    api_key: str | None = None
    workers: int = 1
    instances: int | None = None  # forward batches in flight per process; None: see plan()
    threads: int | None = None  # intra-op threads per instance; None: cores / instances
    served_model_name: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.max_batch_size >= 1, f"--max-batch-size must be >= 1, got {self.max_batch_size}"),
            (self.max_wait_ms >= 0, f"--max-wait-ms must be >= 0, got {self.max_wait_ms}"),
            (self.max_queue >= 1, f"--max-queue must be >= 1, got {self.max_queue}"),
            (self.max_body_bytes >= 1024, "--max-body-bytes must be at least 1024"),
            (self.workers >= 1, f"--workers must be >= 1, got {self.workers}"),
            (
                self.instances is None or self.instances >= 1,
                f"--instances must be >= 1, got {self.instances}",
            ),
            (
                self.threads is None or self.threads >= 1,
                f"--threads must be >= 1, got {self.threads}",
            ),
            (0 <= self.port <= 65535, f"--port must be from 0 to 65535, got {self.port}"),
            (
                self.max_input_tokens is None or self.max_input_tokens >= 3,
                "--max-input-tokens must be at least 3 ([CLS], a token, [SEP])",
            ),
            (self.api_key is None or len(self.api_key) > 0, "--api-key must not be empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ----------------------------------------------------------------------------- metrics
class Metrics:
    """Prometheus metrics in a registry of their own (one per app)."""

    def __init__(self, batcher_depth, max_batch_size: int):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "distilkit_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "distilkit_request_duration_seconds",
            "request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        sizes = sorted({1, *(2**i for i in range(12) if 2**i <= max_batch_size), max_batch_size})
        self.batch_size = Histogram(
            "distilkit_batch_size", "texts per forward batch", buckets=sizes, registry=registry
        )
        self.batch_seconds = Histogram(
            "distilkit_batch_duration_seconds",
            "seconds per forward batch",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "distilkit_queue_wait_seconds",
            "time a request waited in the queue",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter("distilkit_tokens", "input tokens run", registry=registry)
        self.padded_tokens = Counter(
            "distilkit_padded_tokens", "token slots run, padding included", registry=registry
        )
        self.disconnects = Counter(
            "distilkit_client_disconnects", "clients gone before their answer", registry=registry
        )
        self.batch_failures = Counter(
            "distilkit_batch_failures",
            "requests failed by their forward batch",
            registry=registry,
        )
        depth = Gauge("distilkit_queue_depth", "texts waiting for a batch", registry=registry)
        depth.set_function(batcher_depth)

    def observe_batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.rows)
        self.batch_seconds.observe(stats.seconds)
        self.tokens.inc(stats.tokens)
        self.padded_tokens.inc(stats.padded_tokens)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# ----------------------------------------------------------------------------- ASGI guard
class Guard:
    """Pure ASGI middleware: the API key (401), the body limit (413), and per-request
    metrics (route, status, latency). Buffers the body up to the limit, then replays it."""

    OPEN_ROUTES = ("/health",)

    def __init__(self, app, state: ServerState):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        started = time.perf_counter()
        status_seen = {"status": 500}

        async def send_watching(message):
            if message["type"] == "http.response.start":
                status_seen["status"] = message["status"]
            await send(message)

        try:
            denied = self._denied(scope)
            if denied is not None:
                await _send_error(send_watching, denied, path)
                return
            body_receive = await self._read_body(scope, receive)
            if isinstance(body_receive, ApiError):
                await _send_error(send_watching, body_receive, path)
                return
            await self.app(scope, body_receive, send_watching)
        finally:
            metrics = self.state.metrics
            if metrics is not None and path in KNOWN_ROUTES:
                metrics.requests.labels(path, str(status_seen["status"])).inc()
                metrics.latency.labels(path).observe(time.perf_counter() - started)

    def _denied(self, scope) -> ApiError | None:
        key = self.state.config.api_key
        if key is None or scope["path"] in self.OPEN_ROUTES:
            return None
        headers = dict(scope["headers"])
        given = headers.get(b"authorization", b"")
        token = given[7:] if given[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
        if hmac.compare_digest(token, key.encode("utf-8")):
            return None
        error = ApiError(
            401, "missing or wrong API key: send 'Authorization: Bearer KEY'", "authorization"
        )
        error.headers["www-authenticate"] = "Bearer"
        return error

    async def _read_body(self, scope, receive):
        limit = self.state.config.max_body_bytes
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        too_big = ApiError(
            413, f"the body is over {limit:,} bytes, the most this server takes", "body"
        )
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return too_big
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return receive  # let the app see the disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return replay


async def _send_error(send, error: ApiError, path: str) -> None:
    body = json.dumps(error_body(error, path.startswith("/v1/"))).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


KNOWN_ROUTES = {"/v1/embeddings", "/embed", "/classify", "/health", "/metrics", "/v1/models"}


# ----------------------------------------------------------------------------- the app
class ServerState:
    """What the routes share: the config, the runner, and (while running) the batcher."""

    def __init__(self, config: ServeConfig, runner: ModelRunner):
        self.config = config
        self.runner = runner
        self.batcher: DynamicBatcher | None = None
        self.metrics: Metrics | None = None
        limit = runner.max_tokens
        if config.max_input_tokens is not None:
            limit = min(limit, config.max_input_tokens)
        self.token_limit = limit
        self.max_inputs = min(MAX_INPUTS, config.max_queue)
        self.model_name = config.served_model_name or Path(str(config.model)).name

    def start(self) -> None:
        config = self.config
        instances, threads = self.runner.plan(config.instances, config.threads, config.workers)
        self.batcher = DynamicBatcher(
            self.runner,
            max_batch_size=config.max_batch_size,
            max_wait=config.max_wait_ms / 1000,
            max_queue=config.max_queue,
            token_limit=self.token_limit,
            instances=instances,
            on_start=lambda: self.runner.start_instance(threads),
        )
        self.metrics = Metrics(lambda: self.batcher.queued_texts, config.max_batch_size)
        self.batcher.on_batch = self.metrics.observe_batch
        self.batcher.on_wait = self.metrics.queue_wait.observe

    async def submit(self, request, texts: list[str], key, truncate: bool):
        """Run texts through the batcher, giving up when the client disconnects."""
        work = asyncio.ensure_future(self.batcher.submit(texts, key, truncate))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if work not in done:
            work.cancel()
            self.metrics.disconnects.inc()
            raise ApiError(499, "the client closed the connection", kind="client_closed")
        try:
            return work.result()
        except QueueFull as error:
            raised = ApiError(429, str(error))
            raised.headers["retry-after"] = str(error.retry_after)
            raise raised from None
        except InputTooLong as error:
            where = "input" if request.url.path.startswith("/v1/") else "inputs"
            raise ApiError(413, str(error), f"{where}[{error.index}]") from None
        except BatchFailed as error:
            self.metrics.batch_failures.inc()
            raise ApiError(500, f"the model failed on this request's batch: {error}") from None
        except ShuttingDown as error:
            raise ApiError(503, str(error)) from None


def json_response(body, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``body`` (dicts, lists, numbers, numpy arrays) as JSON bytes, written by orjson
    straight into the response: no ``jsonable_encoder`` walk over every float (a float32
    array is written with the shortest digits that read back to the same float32)."""
    content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, status_code=status, headers=headers, media_type="application/json")


async def _disconnected(request) -> None:
    """Return when the client has gone (the body was already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def create_app(config: ServeConfig, runner: ModelRunner | None = None):
    """The FastAPI app serving ``runner`` (default: loaded from ``config``)."""
    if FastAPI is None:
        raise ImportError(
            "distilkit serve needs FastAPI and uvicorn: pip install 'distilkit[serve]'"
        )
    runner = runner or ModelRunner.load(config.model, config.dtype, config.device, config.pooling)
    state = ServerState(config, runner)

    @asynccontextmanager
    async def lifespan(app):
        state.start()
        yield
        await asyncio.to_thread(state.batcher.close)

    app = FastAPI(title="distilkit serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serve = state

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        body = error_body(error, request.url.path.startswith("/v1/"))
        return json_response(body, status=error.status, headers=error.headers)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        parsed = parse_embeddings(
            parse_json(await request.body()), runner.hidden_size, state.max_inputs
        )
        result = await state.submit(request, parsed.texts, EMBED, truncate=False)
        vectors = finish_vectors(result.outputs["vectors"], True, parsed.dimensions)
        return json_response(embeddings_response(vectors, parsed, state.model_name, result.tokens))

    @app.post("/embed")
    async def embed(request: Request):
        parsed = parse_embed(parse_json(await request.body()), state.max_inputs)
        result = await state.submit(request, parsed.texts, EMBED, parsed.truncate)
        vectors = finish_vectors(result.outputs["vectors"], parsed.normalize, None)
        return json_response(vectors)

    @app.post("/classify")
    async def classify(request: Request):
        if not runner.is_classifier:
            raise ApiError(
                404,
                f"{state.model_name} has no sequence-classification head: serve a classifier "
                "(distilkit finetune) for /classify",
                kind="not_found",
            )
        parsed = parse_classify(parse_json(await request.body()), state.max_inputs)
        threshold = parsed.threshold if parsed.threshold is not None else runner.default_threshold
        key = (CLASSIFY, threshold if runner.early_exit is not None else None)
        result = await state.submit(request, parsed.texts, key, parsed.truncate)
        return json_response(
            classify_response(
                result.outputs["logits"], runner.label_names, result.outputs.get("exit_layers")
            )
        )

    @app.get("/v1/models")
    async def models():
        entry = {"id": state.model_name, "object": "model", "created": 0, "owned_by": "distilkit"}
        return {"object": "list", "data": [entry]}

    @app.get("/health")
    async def health():
        if state.batcher is None or state.batcher.stopping:
            raise ApiError(503, "the server is starting or shutting down")
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return Guard(app, state)


def app_from_environment():
    """The app factory each ``--workers`` process calls (config from the environment)."""
    return create_app(ServeConfig(**json.loads(os.environ[CONFIG_ENV])))


def serve(config: ServeConfig) -> None:
    """Load the model and serve until SIGTERM / Ctrl-C (then drain and stop)."""
    import uvicorn

    if not is_loopback(config.host) and config.api_key is None:
        warnings.warn(
            f"serving on {config.host}, reachable from other machines, without --api-key",
            stacklevel=2,
        )
    settings = {
        "host": config.host,
        "port": config.port,
        "log_level": "warning",
        "timeout_graceful_shutdown": None,
    }
    if config.workers == 1:
        uvicorn.run(create_app(config), **settings)
        return
    ModelRunner.load(config.model, config.dtype, config.device, config.pooling)  # fail early
    os.environ[CONFIG_ENV] = json.dumps(asdict(config))
    uvicorn.run(
        "distilkit.deploy.serve:app_from_environment",
        factory=True,
        workers=config.workers,
        **settings,
    )
