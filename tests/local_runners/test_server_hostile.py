"""A table of hostile and careless HTTP inputs thrown at the running model server.

Each one, sent on a raw socket exactly as written (malformed HTTP, lying Content-Length,
stalled or half-closed requests, deep or poisoned JSON, traversal paths, wrong methods,
binary garbage), must be answered with a 4xx (or 503) whose body is JSON with "error";
afterwards the server still answers a valid request, and nothing logged a traceback."""
from __future__ import annotations

import gzip
import json
import logging

import pytest
from raw_http_support import VALID_BODY, exchange, request, tracebacks
from support import D, call, save_tiny_model

from local_runners.model_server import ModelServer
from local_runners.serve_input_range import write_input_ranges
from local_runners.serve_limits import ServeLimits

LIMITS = ServeLimits(header_timeout=0.5, body_timeout=0.5, idle_timeout=3.0,
                     max_connections=64, max_json_depth=32)
MAX_BODY = 256 * 1024
PREDICT = "/v1/models/tiny:predict"
CHUNKED = b"HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The tiny model, declaring pixels in [0, 1] as the project's export does."""
    d = tmp_path_factory.mktemp("model")
    write_input_ranges(save_tiny_model(d), {"pixels": (0.0, 1.0)})
    return d


@pytest.fixture(scope="module")
def server(model_dir):
    with ModelServer(model_dir, "tiny", limits=LIMITS, max_body_bytes=MAX_BODY) as srv:
        yield srv


def post(path: str, body: bytes | str, **headers) -> bytes:
    return request("POST", path, body.encode() if isinstance(body, str) else body, headers)


def row(value: str) -> str:
    return '{"instances": [[' + ", ".join([value] + ["0.5"] * (D - 1)) + "]]}"


HOSTILE = [
    # (id, what is sent: bytes or pauses, options, expected status, words in the error)
    # -- not HTTP at all
    ("tls-hello", [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256))],
     {}, 400, "malformed HTTP"),
    ("binary-garbage", [bytes(range(255, -1, -1)) * 4 + b"\r\n\r\n"], {}, 400, "malformed"),
    ("nul-bytes", [b"\x00" * 64 + b"\r\n\r\n"], {}, 400, "malformed"),
    ("words", [b"HELLO WORLD\r\n\r\n"], {}, 400, "malformed"),
    ("http2-preface", [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"], {}, None, ""),
    # -- broken HTTP/1.1
    ("bad-version", [b"GET /ping HTTP/9.9\r\nHost: x\r\n\r\n"], {}, None, ""),
    ("header-without-colon", [b"GET /ping HTTP/1.1\r\nHost x\r\n\r\n"], {}, 400, "malformed"),
    ("space-in-header-name", [b"GET /ping HTTP/1.1\r\nBad Name: x\r\n\r\n"], {}, 400, ""),
    ("nul-in-path", [b"GET /pi\x00ng HTTP/1.1\r\nHost: x\r\n\r\n"], {}, 400, ""),
    ("request-line-10k", [b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"], {}, None, ""),
    ("header-value-20k", [b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 20000 + b"\r\n\r\n"],
     {}, None, ""),
    ("300-headers", [b"GET /ping HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i
                                                         for i in range(300)) + b"\r\n"],
     {}, None, ""),
    ("negative-content-length", [request("POST", PREDICT, b"", {"Content-Length": "-5"})],
     {}, 400, ""),
    ("text-content-length", [request("POST", PREDICT, b"", {"Content-Length": "ten"})],
     {}, 400, ""),
    ("huge-content-length", [request("POST", PREDICT, b"{}",
                                     {"Content-Length": "99999999999999999999"})],
     {}, None, ""),
    ("content-length-over-limit", [request("POST", PREDICT, b"{}",
                                           {"Content-Length": str(MAX_BODY + 1)})],
     {}, 413, f"limit is {MAX_BODY} bytes"),
    ("two-content-lengths", [request("POST", PREDICT, b"{}", {"Content-Length": "2",
                                                              "content-length": "3"})],
     {}, 400, ""),
    ("content-length-and-chunked",
     [b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"], {}, 400, ""),
    ("bad-chunk-size", [b"POST /invocations " + CHUNKED + b"\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"],
     {}, 400, ""),
    ("chunked-over-limit", [b"POST /invocations " + CHUNKED + b"\r\n\r\n"
                            + (b"8000\r\n" + b"[" * 0x8000 + b"\r\n") * 9 + b"0\r\n\r\n"],
     {}, 413, "limit"),
    ("unknown-expect", [request("POST", PREDICT, VALID_BODY, {"Expect": "teapot"})],
     {}, 417, ""),
    ("chunked-identity", [b"POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, "
                          b"identity\r\n\r\n0\r\n\r\n"], {}, 400, "Transfer-Encoding"),
    ("folded-header", [b"GET /ping HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n"], {}, 400,
     ""),
    ("bare-newlines", [b"GET /ping HTTP/1.1\nHost: x\n\n"], {}, 400, ""),
    ("websocket-upgrade", [request("GET", "/nowhere", b"", {
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) + b"\x81\x85garbage"], {}, 404, ""),
    ("bad-deflate", [request("POST", PREDICT, b"not deflate", {"Content-Encoding": "deflate"})],
     {}, 400, "content-encoding"),
    ("brotli", [request("POST", PREDICT, b"not brotli", {"Content-Encoding": "br"})], {}, 400,
     ""),
    ("gzip-bomb", [request("POST", PREDICT, gzip.compress(b"[" + b"0," * 5_000_000 + b"0]"),
                           {"Content-Encoding": "gzip"})], {}, 413, "limit"),
    # -- stalled and truncated
    ("stalled-headers", [b"POST /invocations HTTP/1.1\r\nHost: x\r\n"], {}, 408,
     "header_timeout"),
    ("headers-then-half-close", [b"GET /ping HTTP/1.1\r\nHo"], {"half_close": True}, 400,
     "middle of the request headers"),
    ("short-body-stalled", [request("POST", PREDICT, b'{"instances": [[',
                                    {"Content-Length": "1000"})], {}, 408, "body_timeout"),
    ("short-body-half-close", [request("POST", PREDICT, b'{"instances": [[',
                                       {"Content-Length": "1000"})], {"half_close": True},
     400, "incomplete or malformed"),
    ("chunked-never-ends", [b"POST /invocations " + CHUNKED + b"\r\n\r\n4\r\n{\"in\r\n"], {},
     408, "body_timeout"),
    # -- routes and methods
    ("unknown-route", [request("GET", "/nowhere")], {}, 404, "/nowhere"),
    ("root", [request("GET", "/")], {}, 404, ""),
    ("traversal", [request("GET", "/../../etc/passwd")], {}, 404, ""),
    ("traversal-in-model", [request("GET", "/v1/models/../../../etc/passwd")], {}, 404, ""),
    ("encoded-traversal", [request("GET", "/v1/models/%2e%2e%2f%2e%2e%2fetc%2fpasswd")],
     {}, 404, ""),
    ("traversal-version", [request("GET", "/v1/models/tiny/versions/..%2f..%2f1")], {}, 404,
     ""),
    ("absolute-uri", [request("GET", "http://evil.example/ping/../../x")], {}, 404, ""),
    ("delete-ping", [request("DELETE", "/ping")], {}, 405, "DELETE /ping"),
    ("get-invocations", [request("GET", "/invocations")], {}, 405, ""),
    ("put-predict", [request("PUT", PREDICT, VALID_BODY)], {}, 405, ""),
    ("trace", [request("TRACE", "/ping")], {}, 405, ""),
    ("connect", [b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"],
     {}, None, ""),
    ("made-up-method", [request("BREW", "/ping")], {}, 400, "Invalid method"),
    ("classify", [post("/v1/models/tiny:classify", VALID_BODY)], {}, 400, ":predict"),
    ("other-model", [post("/v1/models/other:predict", VALID_BODY)], {}, 404, "'other'"),
    ("version-9", [post("/v1/models/tiny/versions/9:predict", VALID_BODY)], {}, 404,
     "version 9"),
    # -- content types and bodies
    ("xml-invocations", [post("/invocations", b"<x/>", **{"Content-Type": "text/xml"})],
     {}, 415, "application/json"),
    ("empty-body", [post(PREDICT, b"")], {}, 400, "malformed JSON"),
    ("not-json", [post(PREDICT, b"{instances: 1}")], {}, 400, "malformed JSON"),
    ("invalid-utf8", [post(PREDICT, b'{"instances": "\xff\xfe"}')], {}, 400, ""),
    ("json-null", [post(PREDICT, b"null")], {}, 400, "JSON null"),
    ("json-list", [post(PREDICT, b"[[0.5]]")], {}, 400, "JSON array"),
    ("instances-string", [post(PREDICT, '{"instances": "all of them"}')], {}, 400,
     "must be a list"),
    ("instances-object", [post(PREDICT, '{"instances": {"pixels": 1}}')], {}, 400, ""),
    ("boolean-among-numbers", [post(PREDICT, row("true"))], {}, 400, "boolean at [0, 0]"),
    ("booleans", [post(PREDICT, '{"instances": [' + json.dumps([True] * D) + "]}")], {}, 400,
     "booleans"),
    ("strings", [post(PREDICT, '{"instances": [' + json.dumps(["x"] * D) + "]}")], {}, 400,
     "strings"),
    ("nulls", [post(PREDICT, row("null"))], {}, 400, "nulls"),
    ("signature-name-list", [post(PREDICT, '{"signature_name": ["a"], "instances": [[1]]}')],
     {}, 400, "signature_name"),
    ("deep-2000", [post(PREDICT, b"[" * 2000 + b"]" * 2000)], {}, 400, "limit is 32"),
    ("deep-objects", [post(PREDICT, b'{"a":' * 1500 + b"1" + b"}" * 1500)], {}, 400,
     "limit is 32"),
    ("deep-unclosed", [post(PREDICT, b"[" * 100_000)], {}, 400, "limit is 32"),
    ("deep-in-invocations", [post("/invocations", b"[" * 5000 + b"]" * 5000)], {}, 400,
     "max_json_depth"),
    ("brackets-in-strings-are-not-depth", [post(PREDICT, '{"x": "' + "[" * 40 + '\\"[[",'
                                                ' "instances": [[1]]}')], {}, 400, "shape"),
    ("nan", [post(PREDICT, row("NaN"))], {}, 400, "NaN"),
    ("infinity", [post(PREDICT, row("Infinity"))], {}, 400, "Infinity"),
    ("minus-infinity", [post(PREDICT, row("-Infinity"))], {}, 400, "Infinity"),
    ("1e400", [post(PREDICT, row("1e400"))], {}, 400, "inf"),
    ("beyond-float32", [post(PREDICT, row("1e39"))], {}, 400, "float32"),
    ("1e30", [post(PREDICT, row("1e30"))], {}, 400, "[0, 1]"),
    ("minus-1e9", [post(PREDICT, row("-1e9"))], {}, 400, "-1e+09"),
    ("huge-integer", [post(PREDICT, row("1" + "0" * 40))], {}, 400, ""),
    ("wrong-width", [post(PREDICT, '{"instances": [[0.5, 0.5]]}')], {}, 400, "shape"),
    ("empty-instances", [post(PREDICT, '{"instances": []}')], {}, 400, "empty batch"),
    ("ragged", [post(PREDICT, '{"instances": [[0.5], [0.5, 0.5]]}')], {}, 400, ""),
    ("long-string", [post(PREDICT, '{"instances": ["' + "x" * 100_000 + '"]}')], {}, 400,
     ""),
]


@pytest.mark.parametrize("parts, options, status, words",
                         [pytest.param(*case[1:], id=case[0]) for case in HOSTILE])
def test_hostile_input_gets_a_json_4xx_and_the_server_keeps_serving(
        server, caplog, parts, options, status, words):
    caplog.set_level(logging.DEBUG)
    answer = exchange(server.port, *parts, **options)
    message = answer.error()
    if status is None:
        assert 400 <= answer.status < 500, (answer.status, message)
    else:
        assert answer.status == status, (answer.status, message)
    assert words in message, message
    ok_status, ok = call(server.url, "POST", PREDICT, VALID_BODY)
    assert ok_status == 200 and len(ok["predictions"]) == 1, ok
    assert tracebacks(caplog.records) == []


def test_timeouts_answer_promptly(server):
    """The stalled cases of the table are answered after the configured 0.5 s, not later."""
    answer = exchange(server.port, request("POST", PREDICT, b"{", {"Content-Length": "99"}))
    assert answer.status == 408 and 0.4 < answer.seconds < 3.0, answer
    answer = exchange(server.port, b"GET /ping HTTP/1.1\r\n")
    assert answer.status == 408 and 0.4 < answer.seconds < 3.0, answer


def test_head_of_unknown_route_is_404_without_body(server):
    answer = exchange(server.port, request("HEAD", "/nowhere"), method="HEAD")
    assert answer.status == 404 and answer.body == b""
