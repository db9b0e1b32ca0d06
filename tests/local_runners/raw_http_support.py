"""Raw-socket HTTP for the model server's hardening tests: send exactly the bytes given
(malformed, truncated, stalled, half-closed), read whatever comes back, and check that it
is the JSON error the server promises; plus the log check that no traceback was written."""
from __future__ import annotations

import http.client
import json
import logging
import socket
import time
from dataclasses import dataclass, field

VALID_BODY = json.dumps({"instances": [[0.5] * 12]}).encode()


@dataclass
class Answer:
    status: int | None                  # None: the connection closed without an answer
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0                # from the first byte sent to the answer (or close)

    def error(self) -> str:
        """The message of a JSON error answer (fails the test if it is not one)."""
        assert self.status is not None, "the server closed the connection without answering"
        ctype = self.headers.get("content-type", "")
        assert ctype.startswith("application/json"), (self.status, ctype, self.body[:200])
        doc = json.loads(self.body)
        assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], doc
        return doc["error"]


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_answer(sock: socket.socket, method: str = "GET", started: float | None = None
                ) -> Answer:
    started = time.monotonic() if started is None else started
    resp = http.client.HTTPResponse(sock, method=method)
    try:
        resp.begin()
        body = resp.read()
    except (http.client.RemoteDisconnected, ConnectionResetError, http.client.IncompleteRead):
        return Answer(None, seconds=time.monotonic() - started)
    return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body,
                  time.monotonic() - started)


def exchange(port: int, *parts: bytes | float, half_close: bool = False, method: str = "GET",
             timeout: float = 10.0) -> Answer:
    """Send ``parts`` (bytes, or a float: pause that many seconds), optionally shut down the
    sending side, and read the answer."""
    with connect(port, timeout) as sock:
        started = time.monotonic()
        for part in parts:
            if isinstance(part, (int, float)):
                time.sleep(part)
            else:
                try:
                    sock.sendall(part)
                except (BrokenPipeError, ConnectionResetError):
                    break           # the server answered early and closed: read the answer
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_answer(sock, method, started)


def closed_by_server(sock: socket.socket, within: float) -> tuple[bool, bytes]:
    """Whether the server closes ``sock`` within ``within`` seconds; and what it sent."""
    sock.settimeout(within)
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True, got
            got += chunk
    except socket.timeout:
        return False, got
    except ConnectionResetError:
        return True, got


def request(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    """The bytes of one well-formed HTTP/1.1 request."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if body or method in ("POST", "PUT", "PATCH"):
        hdrs.setdefault("Content-Length", str(len(body)))
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def tracebacks(records: list[logging.LogRecord]) -> list[str]:
    """The log records that carry a traceback (or say they do)."""
    return [f"{r.name}: {r.getMessage()}" for r in records
            if r.exc_info or r.exc_text or "Traceback" in r.getMessage()]
