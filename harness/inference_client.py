"""Talk to a served model: one client, pluggable transports.

A transport moves bytes: ``invoke(body, content_type) -> (body, content_type)``. The local
backend uses HTTP (``/invocations`` as SageMaker hosting does, or TF Serving's
``/v1/models/<name>:predict``); the cloud backend adds a sagemaker-runtime
``InvokeEndpoint`` transport in its own module, so this one never imports boto3.
The client encodes TF Serving request bodies (``{"instances": ...}``) and decodes
``{"predictions": [{"probabilities": [...], "classes": k}, ...]}``.
"""
from __future__ import annotations

import http.client
import threading
import time
from typing import Any, Callable, Protocol
from urllib.parse import urlparse

import numpy as np
import orjson

from harness.errors import HarnessError

JSON = "application/json"


class EndpointError(HarnessError):
    """The endpoint answered with an error status (or not at all)."""

    def __init__(self, problem: str, status: int | None = None, server_message: str | None = None,
                 **kw):
        self.status = status
        self.server_message = server_message
        super().__init__(problem, **kw)


class Transport(Protocol):
    def invoke(self, body: bytes, content_type: str) -> tuple[bytes, str]: ...
    def close(self) -> None: ...


def _error_message(body: bytes) -> str:
    try:
        doc = orjson.loads(body)
        if isinstance(doc, dict) and "error" in doc:
            return str(doc["error"])
    except orjson.JSONDecodeError:
        pass
    return body[:500].decode("utf-8", "replace").strip() or "(empty body)"


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to ``url``; reconnects once if it went stale."""

    def __init__(self, url: str, timeout: float = 60.0):
        parsed = urlparse(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise HarnessError(f"unsupported endpoint URL {url!r}",
                               expected="http://HOST:PORT")
        self.url = url.rstrip("/")
        self.base_path = parsed.path.rstrip("/")
        self._host, self._port, self._timeout = parsed.hostname, parsed.port or 80, timeout
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
        """Return (status, body, content type)."""
        with self._lock:
            for attempt in (1, 2):
                reused = self._conn is not None
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(self._host, self._port,
                                                            timeout=self._timeout)
                try:
                    self._conn.request(method, self.base_path + path, body=body,
                                       headers=headers or {})
                    resp = self._conn.getresponse()
                    data = resp.read()
                    if resp.getheader("Connection", "").lower() == "close":
                        self.close()
                    return resp.status, data, resp.getheader("Content-Type", "")
                except (ConnectionError, http.client.HTTPException, OSError) as e:
                    self.close()
                    if attempt == 1 and reused and isinstance(
                            e, (http.client.RemoteDisconnected, ConnectionResetError,
                                BrokenPipeError)):
                        continue  # a kept-alive connection the server had closed
                    raise EndpointError(f"cannot reach the endpoint at {self.url} "
                                        f"({type(e).__name__}: {e})",
                                        hint="is the endpoint still being served?") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _HttpTransport:
    path: str

    def __init__(self, url: str, timeout: float = 60.0):
        self.http = HttpConnection(url, timeout)

    @property
    def url(self) -> str:
        return self.http.url

    def invoke(self, body: bytes, content_type: str = JSON) -> tuple[bytes, str]:
        status, data, ctype = self.http.request(
            "POST", self.path, body, {"Content-Type": content_type, "Accept": JSON})
        if status >= 400:
            message = _error_message(data)
            raise EndpointError(f"endpoint {self.url}{self.path} answered HTTP {status}: "
                                f"{message}", status=status, server_message=message)
        return data, ctype

    def close(self) -> None:
        self.http.close()


class HttpInvocationsTransport(_HttpTransport):
    """POST <url>/invocations: the SageMaker hosting contract."""

    path = "/invocations"


class HttpTfServingTransport(_HttpTransport):
    """POST <url>/v1/models/<name>[/versions/<v>]:predict: the TF Serving REST API."""

    def __init__(self, url: str, model_name: str, version: int | str | None = None,
                 timeout: float = 60.0):
        super().__init__(url, timeout)
        self.path = f"/v1/models/{model_name}" + (f"/versions/{version}" if version else "") \
            + ":predict"


def encode_instances(pixels: np.ndarray) -> bytes:
    """The TF Serving row-format request body for a batch of flattened images."""
    arr = np.ascontiguousarray(pixels, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise HarnessError("cannot send this batch", field="pixels",
                           expected="a non-empty float array of shape [N, D]",
                           got=f"shape {list(arr.shape)}")
    return orjson.dumps({"instances": arr}, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_predictions(body: bytes, n: int) -> dict[str, np.ndarray]:
    """Parse ``{"predictions": [...]}`` (or columnar ``{"outputs": ...}``) for ``n`` rows."""
    expected = ('{"predictions": [{"probabilities": [...], "classes": k}, ...]} with one '
                f"entry per instance ({n})")
    try:
        doc = orjson.loads(body)
        if "predictions" in doc:
            rows = doc["predictions"]
            probabilities = np.asarray([r["probabilities"] for r in rows], dtype=np.float32)
            classes = np.asarray([r["classes"] for r in rows], dtype=np.int64)
        else:
            out = doc["outputs"]
            probabilities = np.asarray(out["probabilities"], dtype=np.float32)
            classes = np.asarray(out["classes"], dtype=np.int64)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise EndpointError(f"unexpected response from the endpoint ({type(e).__name__}: {e})",
                            expected=expected, got=body[:200].decode("utf-8", "replace")) from None
    if probabilities.ndim != 2 or len(probabilities) != n or classes.shape != (n,):
        raise EndpointError("the endpoint returned the wrong number of predictions",
                            expected=expected,
                            got=f"probabilities {list(probabilities.shape)}, "
                            f"classes {list(classes.shape)}")
    return {"probabilities": probabilities, "classes": classes}


class EndpointClient:
    """Predict over any transport; keeps request count and latency statistics."""

    def __init__(self, transport: Transport, name: str | None = None):
        self.transport = transport
        self.name = name
        self.requests = 0
        self.total_latency_s = 0.0

    @property
    def mean_latency_ms(self) -> float:
        return 1000.0 * self.total_latency_s / self.requests if self.requests else 0.0

    def predict(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """One request: pixels float [N, D] -> probabilities [N, C], classes [N]."""
        body = encode_instances(pixels)
        start = time.perf_counter()
        data, _ = self.transport.invoke(body, JSON)
        self.total_latency_s += time.perf_counter() - start
        self.requests += 1
        return decode_predictions(data, len(pixels))

    def predict_batches(self, x: np.ndarray, batch_size: int, progress_task: Any = None
                        ) -> dict[str, np.ndarray]:
        """Send ``x`` in requests of ``batch_size`` rows; advance ``progress_task`` per row."""
        if batch_size < 1:
            raise HarnessError("batch size must be positive", field="BatchSize",
                               expected="an integer >= 1", got=batch_size)
        parts = []
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            parts.append(self.predict(batch))
            if progress_task is not None:
                progress_task.advance(len(batch))
        if not parts:
            raise HarnessError("nothing to predict: the input holds no rows", field="x",
                               expected="at least one row")
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "EndpointClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ping(url: str, timeout: float = 30.0, interval: float = 0.1) -> None:
    """Wait until ``GET <url>/ping`` answers 200; raise EndpointError after ``timeout``."""
    deadline = time.monotonic() + timeout
    conn = HttpConnection(url, timeout=min(timeout, 10.0))
    last = "no answer"
    try:
        while True:
            try:
                status, body, _ = conn.request("GET", "/ping")
                if status == 200:
                    return
                last = f"HTTP {status}: {_error_message(body)}"
            except EndpointError as e:
                last = e.problem
            if time.monotonic() >= deadline:
                raise EndpointError(f"the endpoint at {url} is not ready after {timeout:.0f} s "
                                    f"({last})")
            time.sleep(interval)
    finally:
        conn.close()


def client_for_endpoint(description: dict[str, Any],
                        transport_factory: Callable[[dict[str, Any]], Transport] | None = None
                        ) -> EndpointClient:
    """A client for a deploy step's output (a DescribeEndpoint-shaped dict).

    Local endpoints carry ``EndpointUrl``; for others pass ``transport_factory`` (the cloud
    backend's InvokeEndpoint transport).
    """
    name = description.get("EndpointName")
    if description.get("EndpointUrl"):
        # ``EndpointApi`` says which HTTP contract the server speaks (harness.endpoints):
        # TF Serving's REST API (the official container) or SageMaker's /invocations.
        if description.get("EndpointApi") == "tf-serving":
            served = description.get("ServedModelName")
            if not served:
                raise HarnessError("a TF Serving endpoint description needs the model name",
                                   field="ServedModelName",
                                   expected="the name in /v1/models/<name>")
            return EndpointClient(HttpTfServingTransport(description["EndpointUrl"], served),
                                  name)
        return EndpointClient(HttpInvocationsTransport(description["EndpointUrl"]), name)
    if transport_factory is not None:
        return EndpointClient(transport_factory(description), name)
    raise HarnessError("the endpoint description has no EndpointUrl", field="EndpointUrl",
                       expected="the output of a local deploy step (http://127.0.0.1:PORT)",
                       hint="for a SageMaker endpoint, use the cloud backend's transport")
