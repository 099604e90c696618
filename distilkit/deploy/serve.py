"""``distilkit serve``: an embedding and classification server with dynamic batching.

An ASGI app on uvicorn. Routes (shapes in :mod:`distilkit.deploy.schemas`):

* ``POST /v1/embeddings`` (OpenAI), ``POST /embed`` (text-embeddings-inference),
  ``POST /classify`` (sequence-classification heads; early exit when the folder has
  branches), ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus).

The three POST routes are the hot path: :class:`ServeApp` answers them itself, straight
from the ASGI messages (the body parsed by orjson and checked by hand in
:mod:`~distilkit.deploy.schemas`, the response written by orjson), because FastAPI's
request objects, middleware stack and routing cost about as much CPU per request as the
rest of the server's own work together, and on a small CPU that time is taken from the
model. Everything else (health, metrics, models, 404 and 405 answers) goes to a FastAPI
app; both share the API key, body limit and metrics of :class:`ServeApp`.

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
    from starlette.routing import Route
except ImportError:  # pragma: no cover - exercised only without the extra
    FastAPI = None

from distilkit.deploy.batcher import (
    BatchFailed,
    DynamicBatcher,
    InputTooLong,
    Job,
    QueueFull,
    Result,
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
from distilkit.deploy.serve_metrics import Metrics

CONFIG_ENV = "DISTILKIT_SERVE_CONFIG"  # how --workers hands the config to each process
KNOWN_ROUTES = {"/v1/embeddings", "/embed", "/classify", "/health", "/metrics", "/v1/models"}


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


# ----------------------------------------------------------------------------- the state
class ClientGone(Exception):
    """The client closed the connection before its answer."""


class ServerState:
    """What the routes share: the config, the runner, and (while running) the batcher.
    Its ``embeddings`` / ``embed`` / ``classify`` methods are the hot routes: the raw
    body in, the response's JSON bytes out, an :class:`ApiError` for any other answer."""

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
        self.hidden_size = runner.hidden_size  # a property that walks the recipe: once
        self.default_dimensions = runner.default_dimensions  # the folder's truncate_dim
        if self.default_dimensions is not None and self.default_dimensions > self.hidden_size:
            raise ValueError(
                f"{config.model}: truncate_dim {self.default_dimensions} is wider than the "
                f"served vector ({self.hidden_size}); fix config_sentence_transformers.json"
            )

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

    async def submit(self, receive, path: str, texts: list[str], key, truncate: bool) -> Result:
        """Run texts through the batcher, giving up when the client disconnects."""
        try:
            job = self.batcher.enqueue(texts, key, truncate)
        except QueueFull as error:
            raised = ApiError(429, str(error))
            raised.headers["retry-after"] = str(error.retry_after)
            raise raised from None
        except ShuttingDown as error:
            raise ApiError(503, str(error)) from None
        watch = asyncio.ensure_future(_watch_disconnect(receive, job))
        try:
            return await job.future
        except ClientGone:
            self.metrics.disconnects.inc()
            raise ApiError(499, "the client closed the connection", kind="client_closed") from None
        except InputTooLong as error:
            where = "input" if path.startswith("/v1/") else "inputs"
            raise ApiError(413, str(error), f"{where}[{error.index}]") from None
        except BatchFailed as error:
            self.metrics.batch_failures.inc()
            raise ApiError(500, f"the model failed on this request's batch: {error}") from None
        except asyncio.CancelledError:
            job.cancelled = True
            raise
        finally:
            watch.cancel()

    # ------------------------------------------------------------------ the hot routes
    async def embeddings(self, body: bytes, receive, path: str) -> bytes:
        parsed = parse_embeddings(parse_json(body), self.hidden_size, self.max_inputs)
        result = await self.submit(receive, path, parsed.texts, EMBED, truncate=False)
        dimensions = parsed.dimensions if parsed.dimensions is not None else self.default_dimensions
        vectors = finish_vectors(result.outputs["vectors"], True, dimensions)
        return json_bytes(embeddings_response(vectors, parsed, self.model_name, result.tokens))

    async def embed(self, body: bytes, receive, path: str) -> bytes:
        parsed = parse_embed(parse_json(body), self.max_inputs)
        result = await self.submit(receive, path, parsed.texts, EMBED, parsed.truncate)
        vectors = finish_vectors(
            result.outputs["vectors"], parsed.normalize, self.default_dimensions
        )
        return json_bytes(vectors)

    async def classify(self, body: bytes, receive, path: str) -> bytes:
        runner = self.runner
        if not runner.is_classifier:
            raise ApiError(
                404,
                f"{self.model_name} has no sequence-classification head: serve a classifier "
                "(distilkit finetune) for /classify",
                kind="not_found",
            )
        parsed = parse_classify(parse_json(body), self.max_inputs)
        threshold = parsed.threshold if parsed.threshold is not None else runner.default_threshold
        key = (CLASSIFY, threshold if runner.early_exit is not None else None)
        result = await self.submit(receive, path, parsed.texts, key, parsed.truncate)
        return json_bytes(
            classify_response(
                result.outputs["logits"], runner.label_names, result.outputs.get("exit_layers")
            )
        )


async def _watch_disconnect(receive, job: Job) -> None:
    """Drop ``job`` when the client goes away (its body was already read; the next
    message is the disconnect, or this task is cancelled once the answer is ready)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            job.drop(ClientGone())
            return


def json_bytes(body) -> bytes:
    """``body`` (dicts, lists, numbers, numpy arrays) as JSON, written by orjson: no walk
    over every float (a float32 array is written with the shortest digits that read back
    to the same float32)."""
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def json_response(body, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``body`` as a JSON :class:`Response` for the FastAPI routes (see :func:`json_bytes`)."""
    content = json_bytes(body)
    return Response(content, status_code=status, headers=headers, media_type="application/json")


# ----------------------------------------------------------------------------- the ASGI app
class ServeApp:
    """The ASGI app. Every HTTP request passes the API key (401, compared in constant
    time) and the body limit (413) and is counted in the metrics (route, status,
    latency); ``POST`` to a hot route is then answered here from the ASGI messages, and
    everything else by the FastAPI app ``app``."""

    OPEN_ROUTES = ("/health",)

    def __init__(self, app, state: ServerState):
        self.app = app
        self.state = state
        self.hot = {
            "/v1/embeddings": state.embeddings,
            "/embed": state.embed,
            "/classify": state.classify,
        }
        key = state.config.api_key
        self.key = None if key is None else key.encode("utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # the lifespan
            return await self.app(scope, receive, send)
        path = scope["path"]
        started = time.perf_counter()
        status = 500
        try:
            route = self.hot.get(path) if scope["method"] == "POST" else None
            if route is not None:
                status = await self.answer(route, scope, receive, send)
            else:
                status = await self._delegate(scope, receive, send)
        finally:
            metrics = self.state.metrics
            if metrics is not None and path in KNOWN_ROUTES:
                metrics.observe_request(path, status, time.perf_counter() - started)

    async def answer(self, route, scope, receive, send) -> int:
        """A hot route's answer, sent; returns its status."""
        path = scope["path"]
        try:
            headers = dict(scope["headers"])
            self._check_key(scope, headers)
            body = await _read_body(headers, receive, self.state.config.max_body_bytes)
            if body is None:
                raise ApiError(499, "the client closed the connection", kind="client_closed")
            content = await route(body, receive, path)
        except ApiError as error:
            await _send_error(send, error, path)
            return error.status
        await _send_json(send, 200, content)
        return 200

    async def _delegate(self, scope, receive, send) -> int:
        """The FastAPI app's answer (the key checked and the body read here first)."""
        seen = [500]

        async def send_watching(message):
            if message["type"] == "http.response.start":
                seen[0] = message["status"]
            await send(message)

        headers = dict(scope["headers"])
        try:
            self._check_key(scope, headers)
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await _read_body(headers, receive, self.state.config.max_body_bytes)
                if body is not None:  # else the app sees the disconnect
                    receive = _replay(body, receive)
            elif _declared_too_big(headers, self.state.config.max_body_bytes):
                raise _too_big(self.state.config.max_body_bytes)
        except ApiError as error:
            await _send_error(send_watching, error, scope["path"])
            return seen[0]
        await self.app(scope, receive, send_watching)
        return seen[0]

    def _check_key(self, scope, headers: dict[bytes, bytes]) -> None:
        if self.key is None or scope["path"] in self.OPEN_ROUTES:
            return
        given = headers.get(b"authorization", b"")
        token = given[7:] if given[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
        if hmac.compare_digest(token, self.key):
            return
        error = ApiError(
            401, "missing or wrong API key: send 'Authorization: Bearer KEY'", "authorization"
        )
        error.headers["www-authenticate"] = "Bearer"
        raise error


def _too_big(limit: int) -> ApiError:
    return ApiError(413, f"the body is over {limit:,} bytes, the most this server takes", "body")


def _declared_too_big(headers: dict[bytes, bytes], limit: int) -> bool:
    declared = headers.get(b"content-length")
    return declared is not None and declared.isdigit() and int(declared) > limit


async def _read_body(headers: dict[bytes, bytes], receive, limit: int) -> bytes | None:
    """The whole request body, 413 as soon as it is over ``limit`` bytes (declared or
    counted as it comes); None when the client disconnected first."""
    if _declared_too_big(headers, limit):
        raise _too_big(limit)
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    body = message.get("body", b"")
    if not message.get("more_body", False):  # the usual case: one message
        if len(body) > limit:
            raise _too_big(limit)
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_big(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    """A ``receive`` that gives ``body`` once, then passes on to the real one."""
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(send, status: int, content: bytes, extra: dict[str, str] | None = None):
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))]
    if extra:
        headers += [(k.encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


async def _send_error(send, error: ApiError, path: str) -> None:
    """The error in the route's dialect (OpenAI's for ``/v1/...``, TEI's else)."""
    content = json_bytes(error_body(error, path.startswith("/v1/")))
    await _send_json(send, error.status, content, error.headers)


class _HotRoute:
    """A hot route as a plain ASGI app in FastAPI's routing table, so that FastAPI still
    answers other methods with 405 and ``/embed/`` with a redirect (a POST to the exact
    path never reaches FastAPI)."""

    def __init__(self, serve_app: ServeApp, route):
        self.serve_app, self.route = serve_app, route

    async def __call__(self, scope, receive, send) -> None:
        await self.serve_app.answer(self.route, scope, receive, send)


def create_app(config: ServeConfig, runner: ModelRunner | None = None) -> ServeApp:
    """The ASGI app serving ``runner`` (default: loaded from ``config``)."""
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
    serve_app = ServeApp(app, state)
    for path, route in serve_app.hot.items():
        app.router.routes.append(Route(path, _HotRoute(serve_app, route), methods=["POST"]))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        body = error_body(error, request.url.path.startswith("/v1/"))
        return json_response(body, status=error.status, headers=error.headers)

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

    return serve_app


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
