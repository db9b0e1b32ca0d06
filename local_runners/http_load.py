"""A lean HTTP/1.1 load generator: keep-alive connections on raw asyncio protocols.

Used by ``bench/serve_bench.py`` (``make bench-serve``) and the serve load test
``tests/local_runners/test_serve_load.py``
(it lives in the package because ``bench/`` is not importable from the tests). Each of
``concurrency`` connections sends one request, waits for the whole response, then sends the
next (no pipelining), so it behaves like ``concurrency`` real keep-alive clients while using
far less CPU than a full client library: on a 2-core machine the load generator shares the
cores with the server it measures. It speaks real HTTP over TCP: request line, headers and a
``Content-Length`` body out; the status line, headers and a ``Content-Length`` or chunked
body (or one ending at close) back. It records each request's latency and counts non-2xx
answers (``http``), answers the ``check`` callback rejects (``bad_answers``) and connections
that failed, were reset or closed mid-request, or timed out (``connection``); after a
connection error the worker reconnects and goes on. Runs on uvloop when it is installed.
"""
from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is pinned in requirements.txt
    uvloop = None

# check(status, body) -> True when the answer is right
Check = Callable[[int, bytes], bool]


class ConnectionFailed(Exception):
    """The connection was refused, reset or closed before the response was complete."""


@dataclass
class LoadResult:
    requests: int                      # answered with a 2xx status within the measured window
    seconds: float                     # measured window
    latencies: np.ndarray              # seconds, one per 2xx answer in the window
    errors: dict = field(default_factory=lambda: {"http": 0, "connection": 0, "bad_answers": 0})
    statuses: collections.Counter = field(default_factory=collections.Counter)

    @property
    def req_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float | None:
        return float(np.percentile(self.latencies, q) * 1000) if len(self.latencies) else None

    def summary(self) -> dict:
        return {"requests": self.requests, "seconds": round(self.seconds, 2),
                "req_per_s": self.req_per_s, "p50_ms": self.percentile_ms(50),
                "p99_ms": self.percentile_ms(99), "errors": dict(self.errors),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}}


class _Protocol(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends bytes and resolves to (status, body)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.future: asyncio.Future | None = None
        self.closed = False
        self.keep_alive = True
        self._head: tuple[int, int | None, bool] | None = None   # status, length, chunked
        self._body_start = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        f = self.future
        if f is not None and not f.done():
            if self._head is not None and self._head[1] is None and not self._head[2]:
                # a body delimited by the end of the connection
                f.set_result((self._head[0], bytes(self.buf[self._body_start:])))
            else:
                f.set_exception(ConnectionFailed(f"connection lost mid-response ({exc})"))

    def request(self, data: bytes) -> asyncio.Future:
        self.future = asyncio.get_running_loop().create_future()
        self._head = None
        self.buf.clear()
        self.transport.write(data)
        return self.future

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.future is None or self.future.done():
            return                                  # bytes nobody asked for: ignored
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                self._head = self._parse_head(bytes(buf[:end]))
            except ValueError as e:
                self.future.set_exception(ConnectionFailed(f"malformed response: {e}"))
                self.transport.close()
                return
            self._body_start = end + 4
        status, length, chunked = self._head
        start = self._body_start
        if length is not None:
            if len(buf) - start >= length:
                self.future.set_result((status, bytes(buf[start:start + length])))
        elif chunked:
            body = _dechunk(buf, start)
            if body is not None:
                self.future.set_result((status, body))

    def _parse_head(self, head: bytes) -> tuple[int, int | None, bool]:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError(f"status line {lines[0][:60]!r}")
        status = int(parts[1])
        length, chunked = None, False
        self.keep_alive = parts[0] == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                self.keep_alive = value.strip().lower() == b"keep-alive"
        if status in (204, 304) or 100 <= status < 200:
            length = 0
        return status, length, chunked


def _dechunk(buf: bytearray, pos: int) -> bytes | None:
    """The body of a complete chunked message starting at ``pos``, or None if incomplete."""
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            return bytes(out) if buf.find(b"\r\n\r\n", pos - 2) >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos:pos + size]
        pos += size + 2


def build_request(host: str, port: int, path: str, body: bytes, method: str = "POST",
                  headers: dict[str, str] | None = None) -> bytes:
    head = {"Host": f"{host}:{port}", "Content-Type": "application/json",
            "Content-Length": str(len(body)), "Connection": "keep-alive", **(headers or {})}
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in head.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def load(host: str, port: int, path: str, body: bytes, concurrency: int, *,
               seconds: float | None = None, total: int | None = None, warmup: float = 0.0,
               check: Check | None = None, timeout: float = 60.0,
               headers: dict[str, str] | None = None) -> LoadResult:
    """``concurrency`` keep-alive connections posting ``body`` to ``path`` back to back,
    for ``warmup + seconds`` (only ``seconds`` measured) or until ``total`` requests have
    been sent (all measured)."""
    if (seconds is None) == (total is None):
        raise ValueError("give exactly one of seconds and total")
    loop = asyncio.get_running_loop()
    data = build_request(host, port, path, body, headers=headers)
    latencies: list[float] = []
    errors = {"http": 0, "connection": 0, "bad_answers": 0}
    statuses: collections.Counter = collections.Counter()
    measuring = total is not None
    sent = 0
    clock = time.perf_counter
    stop_at = clock() + warmup + (seconds or 0.0)

    def more() -> bool:
        nonlocal sent
        if total is not None:
            sent += 1
            return sent <= total
        return clock() < stop_at

    async def connect() -> _Protocol:
        _, proto = await asyncio.wait_for(
            loop.create_connection(_Protocol, host, port), timeout)
        return proto

    async def worker() -> None:
        proto: _Protocol | None = None
        while more():
            t = clock()
            try:
                if proto is None or proto.closed:
                    proto = await connect()
                status, answer = await asyncio.wait_for(proto.request(data), timeout)
            except (OSError, ConnectionFailed, asyncio.TimeoutError):
                if measuring:
                    errors["connection"] += 1
                if proto is not None and proto.transport is not None:
                    proto.transport.close()
                proto = None
                continue
            elapsed = clock() - t
            if not proto.keep_alive:
                proto.transport.close()
                proto = None
            if not measuring:
                continue
            statuses[status] += 1
            if not 200 <= status < 300:
                errors["http"] += 1
            elif check is not None and not check(status, answer):
                errors["bad_answers"] += 1
            else:
                latencies.append(elapsed)
        if proto is not None and proto.transport is not None:
            proto.transport.close()

    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    if total is None and warmup > 0:
        await asyncio.sleep(warmup)
    measuring, start = True, clock()
    await asyncio.gather(*tasks)
    elapsed = clock() - start
    return LoadResult(len(latencies), elapsed, np.array(latencies), errors, statuses)


def run(coro):
    """Run ``coro`` on a fresh event loop (uvloop's when installed)."""
    if uvloop is not None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


def run_load(host: str, port: int, path: str, body: bytes, concurrency: int,
             **kw) -> LoadResult:
    """:func:`load` on its own event loop (call from synchronous code)."""
    return run(load(host, port, path, body, concurrency, **kw))
