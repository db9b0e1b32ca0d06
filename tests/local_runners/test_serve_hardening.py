"""The model server against careless and hostile clients, one test (or a few) per defect a
hostile pass found:

1. idle and half-sent connections were never closed, and a storm of them kept its memory;
2. a body shorter than its Content-Length was waited for forever;
3. JSON nested 2,000 deep was a 500 (RecursionError);
4. pixels of 1e30 or -1e9 got confident predictions;
5. ``--poll-seconds -1`` busy-looped and ``--port 70000`` served on another port;
6. aiohttp's own errors (404, 405, 413, bad HTTP) were not JSON.

Timeouts are shrunk to half a second so that every test stays fast."""
from __future__ import annotations

import json
import logging
import random
import socket
import time

import numpy as np
import pytest
from raw_http_support import VALID_BODY, closed_by_server, connect, exchange, read_answer, request
from support import D, call, in_process, save_tiny_model

from harness.config import PROJECT_ROOT
from harness.endpoints import ServingOptions
from harness.errors import ConfigError, HarnessError
from local_runners.model_server import ModelServer
from local_runners.serve_embedded import EmbeddedEndpoint
from local_runners.serve_input_range import RANGES_FILE, read_input_ranges, write_input_ranges
from local_runners.serve_json_depth import scan_json
from local_runners.serve_limits import ServeLimits

FAST = ServeLimits(header_timeout=0.5, body_timeout=0.5, idle_timeout=0.5, max_connections=16)
PREDICT = "/v1/models/tiny:predict"


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def server(model_dir):
    with ModelServer(model_dir, "tiny", limits=FAST) as srv:
        yield srv


def pixels_body(value: float | str) -> bytes:
    return ('{"instances": [[' + ", ".join([str(value)] + ["0.5"] * (D - 1)) + "]]}").encode()


# -- 1. idle and half-sent connections; the connection cap; memory after a storm

def test_idle_connection_is_closed_without_an_answer(server):
    with connect(server.port) as sock:
        started = time.monotonic()
        closed, sent = closed_by_server(sock, within=5)
    assert closed and sent == b""                      # no request started: nothing to say
    assert 0.4 < time.monotonic() - started < 3


def test_keep_alive_connection_is_closed_once_idle(server):
    with connect(server.port) as sock:
        sock.sendall(request("POST", PREDICT, VALID_BODY))
        assert read_answer(sock, "POST").status == 200
        sock.sendall(request("GET", "/ping"))          # still usable within the timeout
        assert read_answer(sock).status == 200
        closed, sent = closed_by_server(sock, within=5)
    assert closed and sent == b""


def test_half_sent_headers_get_408_and_the_connection_closes(server):
    with connect(server.port) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nContent-Le")
        answer = read_answer(sock)
        assert answer.status == 408 and "header_timeout" in answer.error()
        assert answer.headers.get("connection") == "close"
        assert closed_by_server(sock, within=2)[0]


def test_slow_drip_headers_cannot_keep_the_connection(server):
    """One byte at a time: the header timeout runs from the first byte, not the last."""
    with connect(server.port) as sock:
        started = time.monotonic()
        for byte in b"GET /ping HTTP/1.1\r\nHost: x\r\n":
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
        answer = read_answer(sock, started=started)
    assert answer.status == 408 and answer.seconds < 4


def test_a_client_that_never_reads_its_answer_is_dropped(server, caplog):
    """A 4 MB answer to a client with a 4 KB window that reads nothing: the answer cannot
    leave, and would stay in memory for good; the connection is dropped instead."""
    caplog.set_level(logging.INFO, logger="local_runners.model_server")
    rows = ",".join(["[" + ",".join(["0.5"] * D) + "]"] * 60_000)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(request("POST", PREDICT, ('{"instances": [' + rows + "]}").encode()))
        wait_for(lambda: "read nothing of its answer" in caplog.text, timeout=10)
        wait_for(lambda: server.connections.open == 0)     # released, though never read
    finally:
        sock.close()
    assert call(server.url, "GET", "/ping")[0] == 200


def test_connections_over_the_cap_get_503_json_then_service_resumes(model_dir):
    limits = ServeLimits(idle_timeout=30, max_connections=4)
    with ModelServer(model_dir, "tiny", limits=limits) as srv:
        held = [connect(srv.port) for _ in range(4)]
        try:
            wait_for(lambda: srv.connections.open == 4)
            started = time.monotonic()
            answer = exchange(srv.port, request("POST", PREDICT, VALID_BODY), method="POST")
            assert answer.status == 503 and "max_connections" in answer.error()
            assert answer.headers.get("retry-after") == "1"
            assert time.monotonic() - started < 1.0           # refused at once, not queued
            assert srv.connections.refused == 1
        finally:
            held.pop().close()
        wait_for(lambda: srv.connections.open < 4)
        assert call(srv.url, "POST", PREDICT, json.loads(VALID_BODY))[0] == 200
        for sock in held:
            sock.close()


def test_a_storm_of_connections_is_released_and_its_memory_trimmed(model_dir):
    """150 half-sent requests against a cap of 100 (the bench does thousands): 50 are
    refused at once; when the clients go, every connection is released and the freed heap
    is handed back to the system."""
    limits = ServeLimits(header_timeout=30, idle_timeout=30, max_connections=100)
    with ModelServer(model_dir, "tiny", limits=limits) as srv:
        socks = []
        for _ in range(150):
            s = connect(srv.port)
            s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n")
            socks.append(s)
        wait_for(lambda: srv.connections.refused == 50)
        assert srv.connections.open == srv.connections.peak == 100
        assert srv.connections.trims == 0
        for s in socks:
            s.close()
        wait_for(lambda: srv.connections.open == 0)
        wait_for(lambda: srv.connections.trims == 1)
        assert call(srv.url, "GET", "/ping")[0] == 200


def test_stop_closes_idle_and_refused_connections_promptly(model_dir):
    srv = ModelServer(model_dir, "tiny", limits=ServeLimits(idle_timeout=60,
                                                            max_connections=2)).start()
    socks = [connect(srv.port) for _ in range(3)]
    wait_for(lambda: srv.connections.open == 2 and srv.connections.refused == 1)
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 3
    for s in socks:
        assert closed_by_server(s, within=2)[0]
        s.close()


# -- 2. a body shorter than its Content-Length

def test_short_body_gets_408_after_the_body_timeout(server):
    with connect(server.port) as sock:
        started = time.monotonic()
        sock.sendall(request("POST", PREDICT, b'{"instances": [[0.5',
                             {"Content-Length": "4096"}))
        answer = read_answer(sock, "POST", started)
        assert answer.status == 408
        assert "received 19 bytes of the 4096" in answer.error()
        assert 0.4 < answer.seconds < 3 and answer.headers.get("connection") == "close"
        assert closed_by_server(sock, within=3)[0]
    assert call(server.url, "POST", PREDICT, json.loads(VALID_BODY))[0] == 200


def test_short_body_then_half_close_gets_400_at_once(server):
    answer = exchange(server.port, request("POST", "/invocations", b'{"inst',
                                           {"Content-Length": "500"}), half_close=True)
    assert answer.status == 400 and "incomplete or malformed" in answer.error()
    assert answer.seconds < 0.4                           # not the body timeout


def test_a_whole_request_then_half_close_is_answered(server):
    answer = exchange(server.port, request("POST", PREDICT, VALID_BODY), half_close=True,
                      method="POST")
    assert answer.status == 200 and len(json.loads(answer.body)["predictions"]) == 1


# -- 3. deep JSON

@pytest.mark.parametrize("path", [PREDICT, "/invocations"])
def test_json_2000_deep_is_400_naming_the_limit(server, path):
    status, body = call(server.url, "POST", path, b"[" * 2000 + b"]" * 2000)
    assert status == 400
    assert "2000 levels deep; the limit is 32 (max_json_depth)" in body["error"]


def test_deep_json_is_400_through_inference_handlers(model_dir):
    """model/inference.py parses the body itself: the depth is checked before it runs."""
    with ModelServer(model_dir, "tiny", inference_handlers=PROJECT_ROOT / "model" /
                     "inference.py", limits=ServeLimits(max_json_depth=8)) as srv:
        status, body = call(srv.url, "POST", "/invocations", b'{"a": ' * 40 + b"1" + b"}" * 40)
        assert status == 400 and "the limit is 8" in body["error"]
        x = np.full((2, D), 0.25, np.float32)
        status, body = call(srv.url, "POST", "/invocations", json.dumps(x.tolist()).encode())
        assert status == 200 and len(body["predictions"]) == 2


def test_json_scan_matches_a_parser_on_tricky_strings():
    """Depth and true/false literals as a parser sees them, strings full of brackets,
    quotes and backslashes notwithstanding; small and large bodies (two code paths)."""
    def depth(obj) -> int:
        if isinstance(obj, (list, dict)):
            items = obj.values() if isinstance(obj, dict) else obj
            return 1 + max((depth(v) for v in items), default=0)
        return 0

    def has_bool(obj) -> bool:
        if isinstance(obj, (list, dict)):
            return any(has_bool(v) for v in (obj.values() if isinstance(obj, dict) else obj))
        return isinstance(obj, bool)

    rng = random.Random(3)
    atoms = [0.5, -1e30, None, True, False, "[", "]]}}", '"[', "\\", '\\"[[', "\\\\",
             "{\\\\\"[", "true", "f"]

    def build(level: int):
        roll = rng.random()
        if level == 0 or roll < 0.25:
            return rng.choice(atoms)
        if roll < 0.6:
            return [build(level - 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(["k", "[", '"{', "t"]) + str(i): build(level - 1)
                for i in range(rng.randint(0, 3))}

    for _ in range(1500):
        doc = build(rng.randint(0, 9))
        for body in (doc, [doc, [[] for _ in range(300)]]):      # the second one is large
            assert scan_json(json.dumps(body).encode()) == (depth(body), has_bool(body)), body
    assert scan_json(b"[" * 2000 + b"]" * 2000) == (2000, False)
    assert scan_json(b'["' + b'\\"[' * 1000 + b'"]') == (1, False)
    assert scan_json(b'{"instances": [[0.5, true]]}') == (3, True)


# -- 4. values outside the declared range, NaN, infinities

@pytest.fixture(scope="module")
def exported_dir(tmp_path_factory):
    """A model exported by the project's own export (model/network.py)."""
    import keras

    from model.network import export_saved_model
    d = tmp_path_factory.mktemp("exported")
    net = keras.Sequential([keras.Input((D,), name="pixels"),
                            keras.layers.Dense(3, activation="softmax")])
    export_saved_model(net, d)
    return d


def test_the_export_declares_pixels_in_0_1(exported_dir):
    assert (exported_dir / "1" / RANGES_FILE).is_file()
    assert read_input_ranges(exported_dir / "1", ["pixels"]) == {"pixels": (0.0, 1.0)}


@pytest.mark.parametrize("value, shown", [("1e30", "1e+30"), ("-1e9", "-1e+09"),
                                          ("1.0000001", "1"), ("-0.001", "-0.001")])
def test_values_outside_the_declared_range_are_400(exported_dir, value, shown):
    with ModelServer(exported_dir, "tiny") as srv:
        status, body = call(srv.url, "POST", PREDICT, pixels_body(value))
        assert status == 400
        assert f"holds {shown} at [0, 0]; the model expects values in [0, 1]" in body["error"]
        assert call(srv.url, "POST", PREDICT, pixels_body("1.0"))[0] == 200
        assert call(srv.url, "POST", PREDICT, pixels_body("0"))[0] == 200


@pytest.mark.parametrize("value, words", [("NaN", "NaN"), ("Infinity", "Infinity"),
                                          ("-Infinity", "-Infinity"), ("1e999", "inf at [0, 0]"),
                                          ("3.5e38", "beyond the range of float32")])
def test_nan_and_infinities_are_400_even_without_a_declared_range(server, value, words):
    status, body = call(server.url, "POST", PREDICT, pixels_body(value))
    assert status == 400 and words in body["error"], body


def test_no_declared_range_means_no_range_check(server, model_dir):
    """The tiny test model declares nothing: any finite value is served, as before."""
    x = np.full((1, D), 1e30, np.float32)
    status, body = call(server.url, "POST", PREDICT, {"instances": x.tolist()})
    assert status == 200
    assert body["predictions"][0]["classes"] == int(in_process(model_dir / "1", x)["classes"][0])


def test_range_check_can_be_switched_off(exported_dir):
    with ModelServer(exported_dir, "tiny", check_input_range=False) as srv:
        assert call(srv.url, "POST", PREDICT, pixels_body("1e30"))[0] == 200
    options = ServingOptions(check_input_range=False)
    with EmbeddedEndpoint(exported_dir, "tiny", options) as ep:
        assert call(ep.url, "POST", "/invocations", pixels_body("-1e9"))[0] == 200
    with EmbeddedEndpoint(exported_dir, "tiny") as ep:    # on by default
        status, body = call(ep.url, "POST", "/invocations", pixels_body("-1e9"))
        assert status == 400 and "[0, 1]" in body["error"]


@pytest.mark.parametrize("declared, words", [
    ("{not json", "cannot read"),
    ('{"pixels": [1, 0]}', "is not [min, max]"),
    ('{"pixels": [0, "1"]}', "is not [min, max]"),
    ('{"image": [0, 1]}', "input 'image', which the model does not have"),
])
def test_a_malformed_declaration_fails_the_load(tmp_path, declared, words):
    version = save_tiny_model(tmp_path)
    (version / RANGES_FILE).parent.mkdir(exist_ok=True)
    (version / RANGES_FILE).write_text(declared)
    with pytest.raises(HarnessError, match="input_ranges.json") as err:
        ModelServer(tmp_path, "tiny").start()
    assert words in str(err.value)


def test_a_declared_range_can_be_added_to_any_model(tmp_path):
    write_input_ranges(save_tiny_model(tmp_path), {"pixels": (-1, 1)})
    with ModelServer(tmp_path, "tiny") as srv:
        assert call(srv.url, "POST", PREDICT, pixels_body("-0.5"))[0] == 200
        status, body = call(srv.url, "POST", PREDICT, pixels_body("2"))
        assert status == 400 and "[-1, 1]" in body["error"]


# -- 5. options checked where they enter

@pytest.mark.parametrize("kwargs, field", [
    ({"port": 70000}, "port"), ({"port": -1}, "port"), ({"port": "8080"}, "port"),
    ({"port": True}, "port"), ({"version_poll_seconds": -1}, "version_poll_seconds"),
    ({"version_poll_seconds": 0}, "version_poll_seconds"),
    ({"version_poll_seconds": float("nan")}, "version_poll_seconds"),
    ({"capture_percent": 101}, "capture_percent"), ({"capture_percent": -1}, "capture_percent"),
    ({"max_batch_size": -3}, "max_batch_size"), ({"batch_timeout_micros": -1},
                                                 "batch_timeout_micros"),
    ({"host": ""}, "host"), ({"check_input_range": "no"}, "check_input_range"),
])
def test_serving_options_reject_bad_values(kwargs, field):
    with pytest.raises(ConfigError) as err:
        ServingOptions(**kwargs)
    assert err.value.field == field and err.value.exit_code == 2
    assert "Got" in str(err.value)


@pytest.mark.parametrize("kwargs, field", [
    ({"port": 70000}, "port"), ({"version_poll_seconds": -1}, "version_poll_seconds"),
    ({"version_poll_seconds": float("inf")}, "version_poll_seconds"),
    ({"max_body_bytes": 0}, "max_body_bytes"), ({"workers": 0}, "workers"),
    ({"shutdown_timeout": -1}, "shutdown_timeout"), ({"max_batch_size": -1}, "max_batch_size"),
    ({"limits": ServeLimits}, "limits"), ({"check_input_range": 1}, "check_input_range"),
])
def test_model_server_rejects_bad_arguments_before_listening(model_dir, kwargs, field):
    with pytest.raises(ConfigError) as err:
        ModelServer(model_dir, "tiny", **kwargs)
    assert err.value.field == field


@pytest.mark.parametrize("name", ["", "a/b", "tiny:predict", "has space", "x" * 200])
def test_model_server_rejects_unusable_model_names(model_dir, name):
    with pytest.raises(ConfigError, match="model_name"):
        ModelServer(model_dir, name)


@pytest.mark.parametrize("kwargs, field", [
    ({"header_timeout": 0}, "header_timeout"), ({"body_timeout": -1}, "body_timeout"),
    ({"idle_timeout": float("inf")}, "idle_timeout"), ({"max_connections": 0},
                                                        "max_connections"),
    ({"max_json_depth": 1}, "max_json_depth"), ({"max_json_depth": 10_000}, "max_json_depth"),
])
def test_serve_limits_reject_bad_values(kwargs, field):
    with pytest.raises(ConfigError) as err:
        ServeLimits(**kwargs)
    assert err.value.field == field


@pytest.mark.parametrize("flags, words", [
    (["--poll-seconds", "-1"], "version_poll_seconds"), (["--port", "70000"], "port"),
    (["--capture-percent", "150"], "--capture-percent"), (["--max-connections", "0"],
                                                          "max_connections"),
    (["--header-timeout", "0"], "header_timeout"), (["--max-body-mb", "0"], "--max-body-mb"),
])
def test_foreground_command_rejects_bad_flags(model_dir, capsys, flags, words):
    from local_runners.serve_foreground import main
    assert main(["--model-dir", str(model_dir), "--model-name", "tiny", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err


@pytest.mark.parametrize("flags, words", [(["--poll-seconds", "-1"], "version_poll_seconds"),
                                          (["--port", "70000"], "port"),
                                          (["--capture-percent", "-5"], "capture_percent"),
                                          (["--model-name", "a/b"], "--model-name")])
def test_harness_serve_rejects_bad_flags(model_dir, tmp_path, monkeypatch, capsys, flags, words):
    from harness.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["serve", str(model_dir), "--runs-dir", str(tmp_path / "runs"), *flags]) == 2
    out = capsys.readouterr()
    assert words in out.out + out.err and "Traceback" not in out.out + out.err


# -- 6. aiohttp's own errors are JSON

@pytest.mark.parametrize("raw, status", [
    (request("GET", "/nowhere"), 404),
    (request("DELETE", "/ping"), 405),
    (request("POST", PREDICT, b"{}", {"Content-Length": str(64 * 2**20)}), 413),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /ping HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
])
def test_framework_errors_are_json(server, raw, status):
    answer = exchange(server.port, raw)
    assert answer.status == status and answer.error()


def test_405_keeps_the_allow_header(server):
    answer = exchange(server.port, request("DELETE", "/invocations"))
    assert answer.status == 405 and "POST" in answer.headers.get("allow", "")
