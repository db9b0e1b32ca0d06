"""Embedded model server: the TF Serving REST API and the SageMaker container contract.

One SavedModel in TF Serving layout (``<model_dir>/<version>/saved_model.pb``) is loaded
(the newest numeric version, as TF Serving's default policy does) and served on aiohttp:

- ``GET  /v1/models/<name>[/versions/<v>]``            model status
- ``GET  /v1/models/<name>[/versions/<v>]/metadata``   signature definitions
- ``POST /v1/models/<name>[/versions/<v>]:predict``    row (``instances``) or columnar
  (``inputs``) format
- ``GET  /ping`` and ``POST /invocations``              the SageMaker hosting contract; with
  ``code/inference.py`` handlers (``input_handler``/``output_handler`` or ``handler``) the
  request goes through them, as in the SageMaker TensorFlow Serving container.

This module is the HTTP server (routes, lifecycle, version polling); the foreground
command is ``local_runners.serve_foreground``, and the parts it serves with live next to it:
``local_runners.serve_model`` (loading the SavedModel, calling a signature),
``local_runners.serve_codec`` (TF Serving request and response bodies),
``local_runners.serve_handlers`` (the ``inference.py`` contract) and
``local_runners.serve_connections`` (timeouts, the connection cap, JSON errors).

Errors are ``{"error": "<what was expected>"}`` with a 4xx status (503 while the model is not
loaded or too many connections are open, 500 only for a server bug), aiohttp's own too (404,
405, 413, malformed HTTP); the server keeps serving afterwards. ``limits``
(``local_runners.serve_limits``) bound what one client may take: header, body and idle
timeouts, ``max_connections``, JSON nesting depth. With ``check_input_range`` (the default)
inputs outside the range the model declares (``local_runners.serve_input_range``) are a 400;
NaN and infinities always are. Arguments are checked on construction (``ConfigError``).
Small bodies are decoded on the event loop, large ones in a thread pool;
model calls run in their own pool through an adaptive micro-batcher
(``local_runners.serve_batching``: ``max_batch_size``, ``batch_timeout_micros``) that merges
concurrent requests into one call. With ``version_poll_seconds`` (or on ``reload()``) a newer
``<version>/`` is loaded, warmed up and switched to atomically: requests in flight finish on
the version they started with. ``data_capture`` (``local_runners.serve_capture``) records
sampled request/response pairs in SageMaker's data capture format. The event loop is uvloop's
when it is installed. ``stop()`` is graceful: the listener closes (new connections are
refused), requests in flight are answered within ``shutdown_timeout``, then the port is free.
Run in the foreground with ``python -m local_runners.model_server --model-dir D
--model-name N --port P``; SIGTERM or Ctrl+C stops it the same way, exit status 0.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import re
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import orjson
from aiohttp import web

from harness.archives import newest_model_version
from harness.errors import HarnessError
from local_runners.serve_batching import MicroBatcher
from local_runners.serve_capture import DataCapture
from local_runners.serve_codec import (JSON, RequestError, check_json_depth,
                                       decode_predict_request, encode_predictions, error_body)
from local_runners.serve_connections import ConnectionGuard, GuardedSite, json_errors, read_body
from local_runners.serve_handlers import Context, invoke_handlers, load_inference_handlers
from local_runners.serve_limits import ServeLimits, check_server_args
from local_runners.serve_model import LoadedModel, version_stamp

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_BATCH_SIZE = 128
DEFAULT_BATCH_TIMEOUT_MICROS = 1000
DEFAULT_SHUTDOWN_TIMEOUT = 10.0   # grace period for requests in flight when stopping
INLINE_BODY_BYTES = 32 * 1024     # smaller bodies are decoded on the event loop itself
INLINE_ROWS = 16                  # responses with at most this many rows encoded there too
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop (libuv: less CPU per request) when installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# ------------------------------------------------------------------------------ server

_MODEL_PATH = re.compile(r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
                         r"(?:(?P<metadata>/metadata)|:(?P<method>[A-Za-z]+))?$")


class ModelServer:
    """Serve one SavedModel over HTTP from a background asyncio thread. Once started,
    ``connections`` (a ``ConnectionGuard``) counts the connections open, refused, at peak."""

    def __init__(self, model_dir: str | Path, model_name: str, host: str = "127.0.0.1",
                 port: int = 0, inference_handlers: Any = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, workers: int = 2,
                 max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE,
                 batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS,
                 num_batch_threads: int = 1, version_poll_seconds: float | None = None,
                 data_capture: DataCapture | None = None,
                 shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
                 limits: ServeLimits | None = None, check_input_range: bool = True):
        """``max_batch_size=None`` turns micro-batching off (one model call per request).
        ``version_poll_seconds`` polls ``model_dir`` for a newer version (None: only on
        ``reload()``). ``data_capture`` is closed (flushed) by ``stop()``.
        ``shutdown_timeout`` is the grace period ``stop()`` gives requests in flight.
        ``limits``: timeouts, connection cap, JSON depth (``ServeLimits()`` by default).
        ``check_input_range=False`` accepts values outside the model's declared ranges."""
        limits = ServeLimits() if limits is None else limits
        check_server_args(model_name=model_name, host=host, port=port,
                          max_body_bytes=max_body_bytes, workers=workers,
                          max_batch_size=max_batch_size,
                          batch_timeout_micros=batch_timeout_micros,
                          num_batch_threads=num_batch_threads,
                          version_poll_seconds=version_poll_seconds,
                          shutdown_timeout=shutdown_timeout, limits=limits,
                          check_input_range=check_input_range)
        self.limits = limits
        self.check_input_range = check_input_range
        self.model_dir = Path(model_dir)
        self.model_name = model_name
        self.host = host
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.shutdown_timeout = shutdown_timeout
        self._handler_source = inference_handlers
        self.handlers: SimpleNamespace | None = None
        self.model: LoadedModel | None = None
        self.load_error: BaseException | None = None
        # version -> (state, error message), as GET /v1/models/<name> reports them
        self.versions: dict[int, tuple[str, str]] = {}
        self._failed_loads: dict[int, tuple] = {}
        self._reload_lock = threading.Lock()
        self.version_poll_seconds = version_poll_seconds
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None
        self.data_capture = data_capture
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, "model-server")
        self._model_executor = concurrent.futures.ThreadPoolExecutor(num_batch_threads, "model")
        self.batcher = (MicroBatcher(self._run_model, max_batch_size, batch_timeout_micros,
                                     num_batch_threads) if max_batch_size else None)
        # inference.py handlers get their own pool: a ``handler`` that posts to
        # ``context.rest_uri`` must never wait for a predict worker it is occupying.
        self._handler_executor = concurrent.futures.ThreadPoolExecutor(workers, "handlers")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.connections: ConnectionGuard | None = None
        self._thread: threading.Thread | None = None
        self._load_future: concurrent.futures.Future | None = None

    # -- lifecycle
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def state(self) -> str:
        if self.model is not None:
            return "AVAILABLE"
        return "END" if self.load_error is not None else "LOADING"

    def start(self, wait: bool = True, timeout: float = 120.0) -> "ModelServer":
        """Listen, then load the model; with ``wait`` return once it is loaded (or raise)."""
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        listening = threading.Event()
        self._stopping.clear()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(listening, failure),
                                        name=f"model-server-{self.model_name}", daemon=True)
        self._thread.start()
        listening.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise HarnessError(f"cannot listen on {self.host}:{self.port} ({failure[0]})",
                               hint="choose another deploy.port, or 0 for any free port")
        self._load_future = self._executor.submit(self._load)
        if wait:
            try:
                self._load_future.result(timeout)
            except BaseException:
                self.stop()
                raise
        return self

    def wait_loaded(self, timeout: float = 120.0) -> None:
        self._load_future.result(timeout)

    def stop(self) -> None:
        """Stop gracefully: close the listener (new connections are refused), let requests
        in flight finish and answer them (for up to ``shutdown_timeout`` seconds; handlers
        still running then are cancelled), close every connection, then the loop and the
        pools. The port is free when this returns."""
        if self._thread is None:
            return
        grace = self.shutdown_timeout
        self._stopping.set()
        loop = self._loop
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(grace), loop).result(grace + 10)
        except concurrent.futures.TimeoutError:
            log.error("model server %s did not shut down within %.0f s", self.model_name,
                      grace + 10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._thread = None
        if self._poller is not None:
            self._poller.join(10)
            self._poller = None
        for pool in (self._executor, self._handler_executor, self._model_executor):
            pool.shutdown(wait=False, cancel_futures=True)
        if self.data_capture is not None:
            self.data_capture.close(10)

    async def _shutdown(self, grace: float) -> None:  # grace: AppRunner's shutdown_timeout
        """aiohttp's graceful shutdown (``AppRunner.cleanup``): stop the sites (listener
        closed), close idle keep-alive connections, wait up to ``shutdown_timeout`` for the
        handlers in progress (their answers go out with ``Connection: close``), then cancel
        what is left and close the rest."""
        server = self._runner.server
        if server is not None and server.connections:
            log.info("stopping %s: %d connection(s) open; requests in flight get up to "
                     "%.0f s to finish", self.model_name, len(server.connections), grace)
        await self._runner.cleanup()
        self.connections.close()

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, listening: threading.Event, failure: list) -> None:
        loop = new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._bind())
        except OSError as e:
            failure.append(e)
            listening.set()
            loop.close()
            return
        listening.set()
        try:
            loop.run_forever()
            # what outlived the grace period (e.g. a hung model call) is cancelled
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()

    async def _bind(self) -> None:
        app = web.Application(client_max_size=self.max_body_bytes,
                              middlewares=[json_errors(self.max_body_bytes)])
        app.router.add_get("/ping", self._ping)
        app.router.add_post("/invocations", self._invocations)
        app.router.add_get("/v1/models/{path:.+}", self._get_model)
        app.router.add_post("/v1/models/{path:.+}", self._post_model)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=self.shutdown_timeout)
        await self._runner.setup()
        self.connections = ConnectionGuard(self._runner.server, self.limits)
        await GuardedSite(self._runner, self.host, self.port, self.connections).start()
        self.port = self._runner.addresses[0][1]

    def _load(self) -> None:
        try:
            source = self._handler_source
            if source is None and (self.model_dir / "code" / "inference.py").is_file():
                source = self.model_dir / "code" / "inference.py"
            handlers = load_inference_handlers(source) if source is not None else None
            with self._reload_lock:
                model = LoadedModel(self.model_dir)
                self.handlers = handlers
                self._install(model)
        except BaseException as e:
            self.load_error = e
            log.error("model %s failed to load: %s", self.model_name, e)
            raise
        if self.version_poll_seconds and self._poller is None:
            self._poller = threading.Thread(target=self._poll_versions, daemon=True,
                                            name=f"version-poll-{self.model_name}")
            self._poller.start()

    def _install(self, model: LoadedModel) -> None:
        """Switch to ``model`` (one reference assignment: requests that already hold the
        previous version finish on it)."""
        old, self.model = self.model, model
        self.load_error = None
        self.versions[model.version] = ("AVAILABLE", "")
        if old is not None and old.version != model.version:
            self.versions[old.version] = ("END", "")
        log.info("serving %s version %d from %s at %s", self.model_name, model.version,
                 model.path, self.url)

    def reload(self) -> int | None:
        """Load and switch to a newer ``<version>/`` if one appeared; return the version
        served. A version that fails to load is reported (state END with its error) and
        retried only once its files change; the current version keeps serving."""
        with self._reload_lock:
            current = self.model.version if self.model is not None else None
            try:
                version, path = newest_model_version(self.model_dir)
            except (HarnessError, OSError):
                return current
            if current is not None and version <= current:
                return current
            stamp = version_stamp(path)
            if self._failed_loads.get(version) == stamp:
                return current
            self.versions[version] = ("LOADING", "")
            try:
                model = LoadedModel(self.model_dir, version)
            except Exception as e:
                self._failed_loads[version] = stamp
                self.versions[version] = ("END", str(e))
                log.error("model %s version %d failed to load: %s", self.model_name, version, e)
                return current
            self._failed_loads.pop(version, None)
            self._install(model)
            return version

    def _poll_versions(self) -> None:
        while not self._stopping.wait(self.version_poll_seconds):
            try:
                self.reload()
            except Exception:  # keep polling whatever happens
                log.exception("polling %s for new versions failed", self.model_dir)

    # -- HTTP plumbing
    def _decode(self, model: LoadedModel, body: bytes):
        """``decode_predict_request`` with this server's depth limit and range check."""
        return decode_predict_request(
            model, body, max_depth=self.limits.max_json_depth,
            ranges=model.input_ranges if self.check_input_range else None)

    def _require_model(self) -> LoadedModel:
        if self.model is None:
            if self.load_error is not None:
                raise RequestError(503, f"model '{self.model_name}' failed to load: "
                                   f"{self.load_error}")
            raise RequestError(503, f"model '{self.model_name}' is still loading; retry shortly")
        return self.model

    def _resolve(self, path: str, want_method: bool) -> tuple[LoadedModel, re.Match]:
        m = _MODEL_PATH.match(path)
        if not m or bool(m["method"]) != want_method or (want_method and m["metadata"]):
            form = ("/v1/models/<name>[/versions/<v>]:predict" if want_method
                    else "/v1/models/<name>[/versions/<v>][/metadata]")
            raise RequestError(404, f"unknown path /v1/models/{path}; expected {form}")
        if m["name"] != self.model_name:
            raise RequestError(404, f"servable not found: model '{m['name']}'; this server "
                               f"serves '{self.model_name}'")
        model = self._require_model()
        if (m["version"] is not None and m["version"] != str(model.version)
                and not (not want_method and not m["metadata"]
                         and m["version"].isdigit() and int(m["version"]) in self.versions)):
            raise RequestError(404, f"servable not found: model '{m['name']}' version "
                               f"{m['version']}; the available version is {model.version}")
        return model, m

    async def _run(self, fn: Callable, *args, pool=None):
        return await asyncio.get_running_loop().run_in_executor(pool or self._executor, fn, *args)

    async def _run_model(self, fn: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(self._model_executor, fn, *args)

    async def _predict(self, model: LoadedModel, body: bytes) -> tuple[int, bytes]:
        """A TF Serving predict body in, (status, JSON body) out, through the batcher."""
        batcher = self.batcher
        if batcher is None:
            return await self._run(self.predict_bytes, model, body)
        try:
            if len(body) <= INLINE_BODY_BYTES:
                sig, arrays, fmt = self._decode(model, body)
            else:
                batcher.arrive()
                try:
                    sig, arrays, fmt = await self._run(self._decode, model, body)
                except BaseException:
                    batcher.depart()
                    raise
            key = (model, sig.name) + tuple((k, a.shape[1:], a.dtype.str)
                                            for k, a in arrays.items())
            outputs = await batcher.submit(key, sig, arrays,
                                           arrived=len(body) > INLINE_BODY_BYTES)
            rows = len(next(iter(outputs.values())))
            if rows <= INLINE_ROWS:
                return 200, encode_predictions(outputs, fmt)
            return 200, await self._run(encode_predictions, outputs, fmt)
        except Exception as e:
            return error_body(e)

    def _capture(self, body: bytes, request_type: str | None, status: int, payload: bytes,
                 response_type: str) -> None:
        if self.data_capture is not None and status < 400:
            self.data_capture.capture(body, request_type or JSON, payload, response_type)

    # -- endpoints
    async def _ping(self, request: web.Request) -> web.Response:
        self._require_model()
        return web.Response(status=200, body=b"", content_type=JSON)

    async def _get_model(self, request: web.Request) -> web.Response:
        model, m = self._resolve(request.match_info["path"], want_method=False)
        if m["metadata"]:
            body = {"model_spec": {"name": self.model_name, "signature_name": "",
                                   "version": str(model.version)},
                    "metadata": {"signature_def": {"signature_def": {
                        name: sig.describe() for name, sig in model.signatures.items()}}}}
        else:
            versions = sorted(self.versions.items(), reverse=True)
            if m["version"] is not None:
                versions = [(v, st) for v, st in versions if str(v) == m["version"]]
            body = {"model_version_status": [{
                "version": str(v), "state": state,
                "status": {"error_code": "UNKNOWN" if error else "OK", "error_message": error}}
                for v, (state, error) in versions]}
        return _json(200, orjson.dumps(body))

    async def _post_model(self, request: web.Request) -> web.Response:
        model, m = self._resolve(request.match_info["path"], want_method=True)
        if m["method"] != "predict":
            raise RequestError(400, f"method ':{m['method']}' is not supported; this server "
                               "implements :predict")
        body = await read_body(request, self.max_body_bytes, self.limits.body_timeout)
        status, payload = await self._predict(model, body)
        self._capture(body, request.headers.get("Content-Type"), status, payload, JSON)
        return _json(status, payload)

    async def _invocations(self, request: web.Request) -> web.Response:
        model = self._require_model()
        body = await read_body(request, self.max_body_bytes, self.limits.body_timeout)
        headers = {k: request.headers.get(k) for k in
                   ("Content-Type", "Accept", CUSTOM_ATTRIBUTES_HEADER)}
        if self.handlers is None:
            ctype = (headers["Content-Type"] or JSON).split(";")[0].strip()
            if ctype != JSON:
                raise RequestError(415, f"Content-Type {ctype!r} is not supported without "
                                   "inference handlers; expected application/json")
            status, payload = await self._predict(model, body)
            self._capture(body, headers["Content-Type"], status, payload, JSON)
            return _json(status, payload)
        if (headers["Content-Type"] or JSON).split(";")[0].strip() == JSON:
            check_json_depth(body, self.limits.max_json_depth)  # before any handler parses it
        status, payload, ctype = await self._run(self._invoke_handlers, model, body, headers,
                                                pool=self._handler_executor)
        self._capture(body, headers["Content-Type"], status, payload, ctype)
        return web.Response(status=status, body=payload, headers={"Content-Type": ctype})

    # -- work done in the thread pool
    def predict_bytes(self, model: LoadedModel, body: bytes) -> tuple[int, bytes]:
        """A TF Serving predict body in, (status, JSON body) out; never raises."""
        try:
            sig, arrays, fmt = self._decode(model, body)
            return 200, encode_predictions(sig(arrays), fmt)
        except Exception as e:
            return error_body(e)

    def _predict_from_thread(self, model: LoadedModel, body: bytes) -> tuple[int, bytes]:
        """``_predict`` (batched) for a handler thread; never raises."""
        if self.batcher is None or self._loop is None:
            return self.predict_bytes(model, body)
        return asyncio.run_coroutine_threadsafe(self._predict(model, body), self._loop).result(300)

    def _invoke_handlers(self, model: LoadedModel, body: bytes, headers: dict
                         ) -> tuple[int, bytes, str]:
        context = Context(self.model_name, str(model.version), "predict",
                          f"{self.url}/v1/models/{self.model_name}:predict", None, None,
                          headers[CUSTOM_ATTRIBUTES_HEADER],
                          headers["Content-Type"] or JSON, headers["Accept"] or JSON, len(body))
        return invoke_handlers(self.handlers, body, context,
                               functools.partial(self._predict_from_thread, model))


def _json(status: int, payload: bytes) -> web.Response:
    return web.Response(status=status, body=payload, content_type=JSON)


if __name__ == "__main__":  # python -m local_runners.model_server: see serve_foreground
    from local_runners.serve_foreground import main

    sys.exit(main())
