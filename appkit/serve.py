"""`appkit serve`: any loaded model behind HTTP (FastAPI + uvicorn), with dynamic micro-batching.

Requests that arrive together share one model call: the first request waits at most
``max_wait_ms`` for others until ``max_batch`` inputs are gathered (under load the queue
fills while the model works, so batches grow by themselves). One model call runs at a
time, in a worker thread, so the event loop keeps accepting requests meanwhile.

    POST /predict   JSON {"inputs": [...], "options": {...}}; images and audio as base64 strings in
                    "inputs", or as multipart file uploads (any field name; options as a JSON form field)
    GET  /health    status and batching statistics (model calls, batch sizes, queue)
    GET  /model     the model card: task, labels and the saved appkit.json
    GET  /docs      interactive OpenAPI page; the schema is at /openapi.json

Status codes: 200; 400 a request that is not JSON/multipart or names an unknown option; 413 a body
or input count over the limits; 415 an unsupported content type; 422 an input the model cannot use
(the AppkitError's message says which and why); 409 a model that cannot answer yet (no labels);
503 the queue is full (retry later).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi import Request   # at module level: FastAPI reads the route's annotations by name

from .errors import AppkitError, DataError, ModelError, NotTrainedError, _msg, unknown_name

BINARY_INPUTS = ("image", "audio")   # tasks whose inputs arrive as file bytes, never as server paths


@dataclass
class ServeConfig:
    max_batch: int = 32            # most inputs in one model call; 1 = no batching
    max_wait_ms: float = 5.0       # how long the first request of a batch waits for company
    max_queue: int = 256           # most requests in the service at once (waiting or running); more get 503
    max_request_bytes: int = 16 * 1024 * 1024
    max_items: int = 256           # most inputs in one request

    def __post_init__(self):
        for name in ("max_batch", "max_queue", "max_request_bytes", "max_items"):
            if getattr(self, name) < 1:
                raise DataError(_msg(f"{name}={getattr(self, name)} must be at least 1"))
        if self.max_wait_ms < 0:
            raise DataError(_msg(f"max_wait_ms={self.max_wait_ms} must not be negative"))


class HTTPProblem(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def status_for(exc: AppkitError) -> int:
    if isinstance(exc, DataError):
        return 422
    if isinstance(exc, (NotTrainedError, ModelError)):
        return 409
    return 400


@dataclass
class _Job:
    items: list
    options: dict
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class Stats:
    requests: int = 0
    items: int = 0
    model_calls: int = 0
    largest_batch: int = 0
    rejected_full: int = 0
    errors_4xx: int = 0
    in_flight: int = 0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["mean_batch"] = round(self.items / self.model_calls, 2) if self.model_calls else 0.0
        return d


class Batcher:
    """Gathers jobs into batches and runs them through ``task.predict`` one batch at a time."""

    def __init__(self, task, config: ServeConfig):
        self.task, self.config = task, config
        self.stats = Stats()
        self.queue: asyncio.Queue[_Job] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="appkit-model")
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Called after the server stopped taking requests: let queued jobs finish, then stop."""
        while self.stats.in_flight:
            await asyncio.sleep(0.01)
        if self._worker:
            self._worker.cancel()
        self._pool.shutdown(wait=True)

    async def submit(self, items: list, options: dict) -> list:
        if self.stats.in_flight >= self.config.max_queue:
            self.stats.rejected_full += 1
            raise HTTPProblem(503, f"The service is busy: {self.stats.in_flight} requests are waiting "
                                   f"(at most {self.config.max_queue}). Retry in a moment.", {"Retry-After": "1"})
        job = _Job(items, options, asyncio.get_running_loop().create_future())
        self.stats.in_flight += 1
        self.stats.requests += 1
        try:
            self.queue.put_nowait(job)
            return await job.future
        finally:
            self.stats.in_flight -= 1

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Job | None = None      # a job too big to join the last batch starts the next one
        while True:
            batch = [carry or await self.queue.get()]
            carry, size = None, len(batch[0].items)
            deadline = loop.time() + self.config.max_wait_ms / 1000
            while size < self.config.max_batch:
                try:   # what is already queued joins at once; then wait out the rest of max_wait
                    job = self.queue.get_nowait() if not self.queue.empty() else \
                        await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
                except (asyncio.TimeoutError, TimeoutError):
                    break
                if size + len(job.items) > self.config.max_batch:
                    carry = job
                    break
                batch.append(job)
                size += len(job.items)
            try:
                outcomes = await loop.run_in_executor(self._pool, self._run, batch)
            except Exception as exc:   # never let one batch stop the worker: later requests would hang
                outcomes = [exc] * len(batch)
            for job, outcome in zip(batch, outcomes):
                if not job.future.done():
                    (job.future.set_exception if isinstance(outcome, BaseException) else job.future.set_result)(outcome)

    def _run(self, batch: list[_Job]) -> list:
        """One model call per group of jobs with the same options; a job with a bad input gets its own error."""
        groups: dict[str, list[int]] = {}
        for i, job in enumerate(batch):
            groups.setdefault(json.dumps(job.options, sort_keys=True), []).append(i)
        outcomes: list = [None] * len(batch)
        for idx in groups.values():
            jobs = [batch[i] for i in idx]
            for i, out in zip(idx, self._run_group(jobs)):
                outcomes[i] = out
        return outcomes

    def _run_group(self, jobs: list[_Job]) -> list:
        import warnings

        items = [x for job in jobs for x in job.items]
        self.stats.model_calls += 1
        self.stats.items += len(items)
        self.stats.largest_batch = max(self.stats.largest_batch, len(items))
        try:
            with warnings.catch_warnings():   # skipped inputs are answered per request below
                warnings.simplefilter("ignore")
                results = self.task.predict(items, errors="skip", progress=False, **jobs[0].options)
        except AppkitError as exc:          # about the model or the options: every job gets it
            return [exc] * len(jobs)
        except Exception:                   # a bug on some input: find whose, and keep the others' answers
            return [self._alone(job) for job in jobs]
        bad = {i for i, _ in results.skipped}   # this call's, not whatever call set task.skipped last
        out, start = [], 0
        for job in jobs:
            span = range(start, start + len(job.items))
            start += len(job.items)
            # the job's own run names its inputs by their position in the request, not in the batch
            out.append(self._alone(job) if bad.intersection(span) else [results[i] for i in span])
        return out

    def _alone(self, job: _Job):
        try:
            return self.task.predict(job.items, progress=False, **job.options)
        except Exception as exc:
            return exc


def _decode_base64(item, where: str) -> bytes:
    if isinstance(item, dict) and "base64" in item:
        item = item["base64"]
    if not isinstance(item, str):
        raise DataError(_msg(f"{where} is a {type(item).__name__}, not base64 text",
                             expected="the file's bytes as a base64 string (or {'base64': '...'}), or a multipart upload"))
    if item.startswith("data:") and "," in item:       # a data URL: data:image/png;base64,....
        item = item.split(",", 1)[1]
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise DataError(_msg(f"{where} is not valid base64", fix="send base64.b64encode(file_bytes).decode()")) from None


# long: the routes and error handlers are closures over one batcher and model; together they are the API at a glance
def create_app(task, config: ServeConfig | None = None):
    """The FastAPI app for a loaded appkit model (``appkit serve`` runs it with uvicorn)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from . import __version__

    config = config or ServeConfig()
    batcher = Batcher(task, config)
    binary = task.input_column in BINARY_INPUTS

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    name = task.meta.get("catalogue") or task.meta.get("source") or task.task
    app = FastAPI(title=f"appkit {task.task}: {name}", version=__version__, lifespan=lifespan,
                  description=__doc__.split("\n\n")[1])
    app.state.batcher = batcher
    app.add_middleware(_BodyLimit, max_bytes=config.max_request_bytes)

    @app.exception_handler(HTTPProblem)
    async def _problem(request, exc: HTTPProblem):
        if exc.status < 500:
            batcher.stats.errors_4xx += 1
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(AppkitError)
    async def _appkit(request, exc: AppkitError):
        batcher.stats.errors_4xx += 1
        return JSONResponse({"error": " ".join(str(exc).split()), "type": type(exc).__name__},
                            status_code=status_for(exc))

    @app.get("/health", summary="Status and batching statistics")
    async def health():
        return {"status": "ok", "task": task.task, "model": name, "config": config.__dict__,
                "stats": batcher.stats.as_dict()}

    @app.get("/model", summary="The model card: task, labels and the saved appkit.json")
    async def model_card():
        return json.loads(json.dumps({"task": task.task, "model": name, "labels": task.labels,
                                      "input": task.input_column, "predict_options": list(task.predict_options),
                                      "appkit_version": __version__, "meta": task.meta}, default=str))

    @app.post("/predict", summary="Predict one or more inputs", openapi_extra=_openapi_body(task, binary))
    async def predict(request: Request):
        items, options = await _read_request(request, task, binary, config)
        unknown = set(options) - set(task.predict_options)
        if unknown:   # the client's mistake: 400, before the request takes a place in a batch
            raise unknown_name(f"option for {task.task} predict", sorted(unknown)[0], task.predict_options)
        return {"predictions": await batcher.submit(items, options)}

    return app


async def _read_request(request, task, binary: bool, config: ServeConfig) -> tuple[list, dict]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HTTPProblem(400, f"The request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict) or "inputs" not in body:
            raise HTTPProblem(400, 'The JSON body needs an "inputs" key, e.g. {"inputs": ["first text", "second"]}')
        items = body["inputs"] if isinstance(body["inputs"], list) else [body["inputs"]]
        options = body.get("options") or {}
        if binary:
            items = [_decode_base64(x, f"Input {i}") for i, x in enumerate(items)]
    elif kind == "multipart/form-data":
        form = await request.form(max_part_size=config.max_request_bytes)
        items, options = [], {}
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                items.append(await value.read())
            elif key == "options":
                options = _json_field(value)
            elif key == "inputs" and not binary:
                items.append(value)
        if not items:
            raise HTTPProblem(400, "The multipart request has no file (or 'inputs' field): "
                                   "upload each input as a file, e.g. curl -F file=@photo.jpg")
        if not binary and any(isinstance(x, bytes) for x in items):
            items = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in items]
    else:
        raise HTTPProblem(415, f"Unsupported content type {kind or '(none)'!r}: send application/json"
                               + (" or multipart/form-data (file uploads)" if binary else ""))
    if not isinstance(options, dict):
        raise HTTPProblem(400, '"options" must be a JSON object, e.g. {"top_k": 3}')
    if not items:
        raise HTTPProblem(422, '"inputs" is empty: send at least one input')
    if len(items) > config.max_items:
        raise HTTPProblem(413, f"The request has {len(items)} inputs; at most {config.max_items} are accepted per request. "
                               "Split it into several requests.")
    return items, options


def _json_field(value: str) -> dict:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise HTTPProblem(400, 'The "options" form field is not JSON, e.g. {"top_k": 3}') from None


def _openapi_body(task, binary: bool) -> dict:
    item = {"type": "string", "description": "base64 of the file's bytes" if binary else "the text"}
    json_schema = {"type": "object", "required": ["inputs"], "properties": {
        "inputs": {"oneOf": [item, {"type": "array", "items": item}]},
        "options": {"type": "object", "description": f"predict options: {list(task.predict_options)}"}}}
    content = {"application/json": {"schema": json_schema}}
    if binary:
        content["multipart/form-data"] = {"schema": {"type": "object", "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
            "options": {"type": "string", "description": "JSON object of predict options"}}}}
    return {"requestBody": {"required": True, "content": content}}


class _BodyLimit:
    """413 for a body over the limit, by Content-Length or, for chunked uploads, while it streams in."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._reject(send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:   # answered by the app's HTTPProblem handler
                raise HTTPProblem(413, self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return (f"The request body is larger than the limit of {self.max_bytes} bytes. "
                "Send fewer or smaller inputs per request.")

    async def _reject(self, send):
        body = json.dumps({"error": self._message()}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def serve(task, *, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None,
          graceful_timeout_s: int = 30) -> None:
    """Run the service until SIGINT/SIGTERM; requests in flight then finish (up to ``graceful_timeout_s``)."""
    import uvicorn

    app = create_app(task, config)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False,
                timeout_graceful_shutdown=graceful_timeout_s)
