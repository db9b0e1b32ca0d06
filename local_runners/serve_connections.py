"""The connection layer of the embedded model server: timeouts, a connection cap, JSON errors.

aiohttp serves HTTP; this module decides how long and how many clients it serves, within
``local_runners.serve_limits.ServeLimits``:

- ``GuardedSite`` listens with ``ConnectionGuard`` as the protocol factory: up to
  ``max_connections`` connections get a ``GuardedRequestHandler``; one more is answered
  ``503 {"error": ...}`` with ``Connection: close`` and closed (after at most a second of
  discarding what it sends, so the answer is not lost to a reset).
- ``GuardedRequestHandler`` (aiohttp's ``RequestHandler``) closes a connection that stays
  without a request for ``idle_timeout`` (silently: no request was started), answers 408 when
  a request's headers do not complete within ``header_timeout`` of its first byte, 400 when
  the client half-closes in the middle of a request, and drops a client that reads nothing
  of its answer for ``idle_timeout`` or more (its unsent answer would stay in memory).
  Every error answer it produces itself (malformed HTTP, an ``Expect`` it cannot meet, ...)
  is JSON, logged as one line, never with a traceback: those are the client's errors.
- ``read_body`` reads a request body within ``body_timeout`` (408 otherwise, e.g. for a
  ``Content-Length`` larger than what is sent) and turns a body that cannot be read (cut
  short by a half-close, undecodable ``Content-Encoding``) into a 400; both close the
  connection after the answer.
- ``json_errors`` is the application middleware that answers everything the handlers raise
  (``RequestError``, aiohttp's 404/405/413, anything else as 500) with ``{"error": ...}``.
- After a burst of connections has drained, the guard releases its memory
  (``release_memory``): a full garbage collection (aiohttp leaves reference cycles behind
  connections that ended in the middle of a request, and with no allocations afterwards the
  collector would not run) and glibc's ``malloc_trim(0)``, which gives freed heap pages back
  to the system. Without them the process stays at its peak size or above: with no cap,
  19,700 half-sent requests took a server from 606 MB to 957 MB, and it was at 1,034 MB
  after they closed; released, 624 MB (bench/serve_storm_bench.py).

aiohttp offers no hook for "waiting for the next request", so ``_awaiting_request`` reads
the same ``RequestHandler`` state aiohttp's own keep-alive check uses (pinned aiohttp
version; tests/local_runners/test_serve_hardening.py covers each path).
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from http import HTTPStatus
from typing import Callable

import orjson
from aiohttp import web

from local_runners.serve_codec import JSON, RequestError
from local_runners.serve_limits import ServeLimits

log = logging.getLogger("local_runners.model_server")

REFUSED_LINGER = 1.0        # seconds a refused connection may still send before it is closed
TRIM_AFTER_PEAK = 64        # connections open at once that count as a burst worth trimming
TRIM_DELAY = 1.0            # seconds the count must stay low before trimming


def json_error(status: int, message: str, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": message}),
                        content_type=JSON, headers=headers)


def raw_json_response(status: int, message: str, extra_headers: str = "") -> bytes:
    """A whole ``Connection: close`` HTTP/1.1 error response, for writing to a transport."""
    body = orjson.dumps({"error": message})
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {JSON}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra_headers}\r\n"
            ).encode("ascii") + body


def json_errors(max_body_bytes: int) -> Callable:
    """The middleware answering whatever a handler raises with ``{"error": ...}``."""
    @web.middleware
    async def errors_as_json(request: web.Request, handler):
        try:
            return await handler(request)
        except RequestError as e:
            resp = json_error(e.status, e.message)
            if e.close:
                resp.force_close()
            return resp
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, f"request body larger than the limit of {max_body_bytes} "
                              "bytes; send fewer instances per request")
        except web.HTTPException as e:
            if e.status < 400:
                raise
            allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
            return json_error(e.status, f"{e.reason}: {request.method} {request.path}; this "
                              "server answers GET /ping, POST /invocations and "
                              "/v1/models/<name>...", allow)
        except Exception as e:  # never let one request take the server down
            log.exception("error handling %s %s", request.method, request.path)
            return json_error(500, f"internal error: {type(e).__name__}: {e}")
    return errors_as_json


async def read_body(request: web.Request, max_bytes: int, timeout: float) -> bytes:
    """The request body, received within ``timeout`` seconds; ``RequestError`` otherwise."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise RequestError(413, f"request body is {length} bytes; the limit is {max_bytes} "
                           "bytes: send fewer instances per request")
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        got = request.content.total_bytes
        of = f" of the {length} announced by Content-Length" if length is not None else ""
        raise RequestError(408, f"the request body did not arrive within {timeout:g} s "
                           f"(body_timeout): received {got} bytes{of}", close=True) from None
    except (web.RequestPayloadError, ConnectionError) as e:
        request.content.feed_eof()      # aiohttp must not linger reading a broken body
        detail = " ".join(str(e).split())
        raise RequestError(400, f"the request body is incomplete or malformed ({detail}); "
                           "expected the whole body its headers announce", close=True) from None


class ConnectionGuard:
    """The listening socket's protocol factory: serves up to ``max_connections`` at once."""

    def __init__(self, server: web.Server, limits: ServeLimits):
        self.server = server            # aiohttp's: routes requests, tracks connections
        self.limits = limits
        self.open = 0                   # connections being served now
        self.peak = 0                   # most open at once since the last trim
        self.refused = 0                # connections answered 503 (over the cap)
        self.trims = 0                  # times memory was released after a burst
        self._refused: set[_Refused] = set()
        self._trim_timer: asyncio.TimerHandle | None = None
        self.release_memory: Callable[[], None] | None = release_memory

    def __call__(self) -> asyncio.Protocol:
        loop = asyncio.get_running_loop()
        if self.open >= self.limits.max_connections:
            self.refused += 1
            return _Refused(self, loop)
        self.open += 1
        self.peak = max(self.peak, self.open)
        return GuardedRequestHandler(self, loop)

    def connection_closed(self) -> None:
        self.open -= 1
        if (self.release_memory is not None and self.peak >= TRIM_AFTER_PEAK
                and self.open <= self.peak // 16 and self._trim_timer is None):
            self._trim_timer = asyncio.get_running_loop().call_later(TRIM_DELAY, self._trim)

    def _trim(self) -> None:
        """Release the memory of a burst of connections once it has drained."""
        self._trim_timer = None
        if self.open > self.peak // 16 or self.release_memory is None:
            return                      # the burst is not over: try again when it is
        self.peak = self.open
        self.trims += 1
        asyncio.get_running_loop().run_in_executor(None, self.release_memory)

    def close(self) -> None:
        """Close refused connections still lingering and stop trimming (server stopping)."""
        if self._trim_timer is not None:
            self._trim_timer.cancel()
            self._trim_timer = None
        for protocol in list(self._refused):
            protocol.close()


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None elsewhere, e.g. musl or macOS: nothing to trim then)."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_MALLOC_TRIM = _find_malloc_trim()


def release_memory() -> None:
    """Collect reference cycles, then give the freed heap back to the system (glibc)."""
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class _Refused(asyncio.Protocol):
    """A connection over the cap: answered 503 at once, closed soon after."""

    def __init__(self, guard: ConnectionGuard, loop: asyncio.AbstractEventLoop):
        self.guard, self.loop = guard, loop
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.guard._refused.add(self)
        limit = self.guard.limits.max_connections
        transport.write(raw_json_response(
            503, f"the server already has {limit} connections open (max_connections); "
            "retry shortly or reuse a keep-alive connection", "Retry-After: 1\r\n"))
        if transport.can_write_eof():
            transport.write_eof()
        # keep reading (and discarding) for a moment: closing with unread data would reset
        # the connection and could destroy the answer before the client reads it
        self.timer = self.loop.call_later(REFUSED_LINGER, self.close)

    def data_received(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None
        self.guard._refused.discard(self)


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's HTTP/1.1 protocol with idle and header timeouts and JSON error answers."""

    __slots__ = ("_guard", "_timer", "_reading_headers", "_half_closed", "_unsent")

    def __init__(self, guard: ConnectionGuard, loop: asyncio.AbstractEventLoop):
        limits = guard.limits
        # aiohttp's keep-alive timer is only a backstop: ours (below) fires first
        super().__init__(guard.server, loop=loop, access_log=None,
                         keepalive_timeout=limits.idle_timeout + limits.header_timeout + 1,
                         lingering_time=min(limits.body_timeout, 5.0))
        self._guard = guard
        self._timer: asyncio.TimerHandle | None = None
        self._reading_headers = False   # bytes of a request have come, its headers have not
        self._half_closed = False
        self._unsent = -1               # bytes waiting for the client at the last tick

    # -- timers
    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(seconds, self._on_timer)

    def _awaiting_request(self) -> bool:
        """Whether the connection waits for the (rest of the) headers of a new request: no
        handler running, none queued (aiohttp's own idle test, ``_process_keepalive``)."""
        if self._messages or self._request_in_progress:
            return False
        waiter = self._waiter
        return self._request_count == 0 or (waiter is not None and not waiter.done())

    def _on_timer(self) -> None:
        self._timer = None
        if self.transport is None:
            return
        limits = self._guard.limits
        if not self._awaiting_request():        # a request is being handled: check later
            unsent = self.transport.get_write_buffer_size() if self.writing_paused else -1
            if unsent >= 0 and unsent == self._unsent:
                log.info("dropping a connection from %s: it read nothing of its answer for "
                         "%g s", self.peername, limits.idle_timeout)
                transport = self.transport
                self.force_close()
                transport.abort()           # close() would wait for the answer to be read
                return
            self._unsent = unsent
            self._arm(limits.idle_timeout)
            return
        if self._reading_headers:
            log.info("closing a connection from %s: request headers incomplete after %g s",
                     self.peername, limits.header_timeout)
            self.transport.write(raw_json_response(
                408, f"the request headers did not arrive within {limits.header_timeout:g} s "
                "(header_timeout)"))
        self.force_close()

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm(self._guard.limits.idle_timeout)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not data or self.transport is None:
            return
        waiting = self._awaiting_request()
        if waiting and not self._reading_headers:       # the first bytes of a new request
            self._reading_headers = True
            self._arm(self._guard.limits.header_timeout)
        elif not waiting:
            self._reading_headers = False

    def eof_received(self) -> bool | None:
        """The client half-closed: answer what it sent if we can, then close."""
        if self._awaiting_request():
            if self._reading_headers and self.transport is not None:
                self.transport.write(raw_json_response(
                    400, "the connection was closed in the middle of the request headers"))
            return None                                 # nothing more to answer: close
        request = self._current_request
        if request is not None and not request.content.is_eof():
            request.content.set_exception(web.RequestPayloadError(
                "the client closed its side of the connection before the end of the body"))
            request.content.feed_eof()          # and aiohttp must not linger reading it
        self._half_closed = True
        return True                                     # keep the transport to answer

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        counted, self._guard = self._guard, None
        super().connection_lost(exc)
        if counted is not None:
            counted.connection_closed()

    # -- aiohttp.web.RequestHandler
    async def finish_response(self, request, resp, start_time):
        if (isinstance(resp, web.StreamResponse) and resp.status >= 400
                and resp.content_type != JSON):
            # raised by aiohttp outside the middleware (e.g. 417 for an unknown Expect)
            text = getattr(resp, "text", None) or resp.reason
            resp = json_error(resp.status, f"{resp.reason}: {text}")
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._reading_headers = False
            if self._half_closed:
                self.close()                            # nothing more will come
            elif self.transport is not None and self._guard is not None:
                self._arm(self._guard.limits.idle_timeout)

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse (or a handler that escaped the
        middleware): JSON, and one log line without traceback for the client's errors."""
        if status >= 500:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
            text = f"internal error: {type(exc).__name__ if exc else HTTPStatus(status).phrase}"
        else:
            detail = " ".join(str(message or exc or HTTPStatus(status).phrase).split())[:300]
            log.info("rejected a malformed request from %s (%d): %s", request.remote, status,
                     detail)
            text = (f"malformed HTTP request: {detail}; expected an HTTP/1.1 request such as "
                    "POST /invocations with a JSON body")
        if request.writer.output_size > 0:  # as aiohttp: a response is already under way
            raise ConnectionError("response already started; cannot send the error")
        resp = json_error(status, text)
        resp.force_close()
        return resp


class GuardedSite(web.BaseSite):
    """A TCP listener whose connections come from ``factory`` (a ``ConnectionGuard``)."""

    __slots__ = ("_host", "_port", "_factory")

    def __init__(self, runner: web.BaseRunner, host: str, port: int,
                 factory: Callable[[], asyncio.Protocol], backlog: int = 128):
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._factory = host, port, factory

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self._factory, self._host, self._port, backlog=self._backlog, reuse_address=True)
