"""The embedded model server speaks the TF Serving REST API and the SageMaker contract."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from support import C, D, call, free_port, in_process, save_tiny_model

from harness.config import PROJECT_ROOT
from harness.errors import HarnessError
from local_runners.model_server import ModelServer

PROJECT = PROJECT_ROOT





@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(1).random((7, D), dtype=np.float32)


def test_status_and_metadata(server):
    status, body = call(server.url, "GET", "/v1/models/tiny")
    assert status == 200
    assert body == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                              "status": {"error_code": "OK", "error_message": ""}}]}
    assert call(server.url, "GET", "/v1/models/tiny/versions/1") == (200, body)

    status, meta = call(server.url, "GET", "/v1/models/tiny/metadata")
    assert status == 200
    assert meta["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    pixels = sig["inputs"]["pixels"]
    assert pixels["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in pixels["tensor_shape"]["dim"]] == ["-1", str(D)]
    assert sig["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sig["outputs"]["probabilities"]["tensor_shape"]["dim"]] == ["-1", str(C)]
    assert sig["outputs"]["classes"]["dtype"] == "DT_INT64"


@pytest.mark.parametrize("path", ["/v1/models/tiny:predict", "/v1/models/tiny/versions/1:predict"])
def test_predict_row_format_equals_in_process(server, model_dir, x, path):
    want = in_process(model_dir / "1", x)
    for instances in (x.tolist(), [{"pixels": row} for row in x.tolist()]):
        status, body = call(server.url, "POST", path, {"instances": instances})
        assert status == 200, body
        rows = body["predictions"]
        assert len(rows) == len(x) and set(rows[0]) == {"probabilities", "classes"}
        np.testing.assert_allclose([r["probabilities"] for r in rows], want["probabilities"],
                                   rtol=1e-6)
        assert [r["classes"] for r in rows] == want["classes"].tolist()


def test_predict_columnar_format(server, model_dir, x):
    want = in_process(model_dir / "1", x)
    for inputs in ({"pixels": x.tolist()}, x.tolist()):
        status, body = call(server.url, "POST", "/v1/models/tiny:predict",
                            {"signature_name": "serving_default", "inputs": inputs})
        assert status == 200, body
        assert body["outputs"]["classes"] == want["classes"].tolist()
        np.testing.assert_allclose(body["outputs"]["probabilities"], want["probabilities"],
                                   rtol=1e-6)


def test_ping_and_invocations(server, model_dir, x):
    assert call(server.url, "GET", "/ping")[0] == 200
    status, body = call(server.url, "POST", "/invocations", {"instances": x.tolist()})
    assert status == 200
    assert [r["classes"] for r in body["predictions"]] == \
        in_process(model_dir / "1", x)["classes"].tolist()
    status, body = call(server.url, "POST", "/invocations", b"<xml/>",
                        {"Content-Type": "text/xml"})
    assert status == 415 and "application/json" in body["error"]


def test_invocations_through_inference_handlers(model_dir, x):
    """model/inference.py: a bare list of images is accepted; TF Serving errors come back."""
    with ModelServer(model_dir, "tiny", inference_handlers=PROJECT / "model" / "inference.py"
                     ) as srv:
        status, body = call(srv.url, "POST", "/invocations", json.dumps(x.tolist()).encode())
        assert status == 200
        assert [r["classes"] for r in body["predictions"]] == \
            in_process(model_dir / "1", x)["classes"].tolist()
        status, body = call(srv.url, "POST", "/invocations", {"instances": [[0.5] * 3]})
        assert status == 400 and f"expected [N, {D}]" in body["error"]
        status, body = call(srv.url, "POST", "/invocations", b"[[0.5]]",
                            {"Content-Type": "text/csv"})
        assert status == 400 and "expected application/json" in body["error"]


def test_handlers_found_in_model_code_dir(tmp_path, x):
    save_tiny_model(tmp_path)
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text(
        "import json\n"
        "def input_handler(data, context):\n"
        "    return json.dumps({'instances': json.loads(data.read())['images']})\n"
        "def output_handler(response, context):\n"
        "    rows = response.json()['predictions']\n"
        "    return json.dumps([r['classes'] for r in rows]), 'application/json'\n")
    with ModelServer(tmp_path, "tiny") as srv:
        status, body = call(srv.url, "POST", "/invocations", {"images": x.tolist()})
    assert status == 200
    assert body == in_process(tmp_path / "1", x)["classes"].tolist()


def test_single_handler_posts_to_rest_uri(tmp_path, x):
    """A ``handler(data, context)`` calls TF Serving itself at context.rest_uri."""
    save_tiny_model(tmp_path)
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text(
        "import urllib.request\n"
        "def handler(data, context):\n"
        "    req = urllib.request.Request(context.rest_uri, data=data.read(), method='POST')\n"
        "    with urllib.request.urlopen(req) as resp:\n"
        "        return resp.read(), context.accept_header\n")
    with ModelServer(tmp_path, "tiny") as srv:
        status, body = call(srv.url, "POST", "/invocations", {"instances": x.tolist()})
    assert status == 200
    assert [r["classes"] for r in body["predictions"]] == \
        in_process(tmp_path / "1", x)["classes"].tolist()


NAN_BODY = ('{"instances": [[NaN' + ", 0.5" * (D - 1) + "]]}").encode()


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "malformed JSON"),
    ({"rows": [[0.1] * D]}, 400, '"instances" (row format) or "inputs"'),
    ({"instances": [[0.1] * 5]}, 400, f"has shape [1, 5]; expected [N, {D}]"),
    ({"instances": [0.1] * D}, 400, "wrap a single instance in a list"),
    ({"instances": [[0.1] * D, [0.1] * 3]}, 400, "ragged"),
    ({"instances": [["a"] * D]}, 400, "holds strings; expected float32"),
    ({"instances": [[None] * D]}, 400, "nulls"),
    (NAN_BODY, 400, "NaN"),
    ({"instances": []}, 400, "empty batch"),
    ({"inputs": {"pixels": []}}, 400, "expected [N, 12]"),
    ({"instances": [[0.1] * D], "signature_name": "nope"}, 400, "'nope' not found"),
    ({"instances": [{"image": [0.1] * D}]}, 400, "no input 'pixels'"),
])
def test_bad_requests_get_clear_errors_and_server_keeps_serving(server, body, status, message):
    got_status, got = call(server.url, "POST", "/v1/models/tiny:predict", body)
    assert got_status == status
    assert message in got["error"], got["error"]
    ok_status, ok = call(server.url, "POST", "/v1/models/tiny:predict",
                         {"instances": [[0.5] * D]})
    assert ok_status == 200 and len(ok["predictions"]) == 1


@pytest.mark.parametrize("method, path, message", [
    ("POST", "/v1/models/other:predict", "model 'other'"),
    ("POST", "/v1/models/tiny/versions/2:predict", "version 2"),
    ("GET", "/v1/models/other", "model 'other'"),
    ("GET", "/v1/models/tiny/versions/7/metadata", "available version is 1"),
    ("GET", "/nowhere", "/nowhere"),
])
def test_unknown_model_version_or_path_is_404(server, method, path, message):
    status, body = call(server.url, method, path, {"instances": [[0.5] * D]})
    assert status == 404 and message in body["error"]


def test_oversized_body_is_413(model_dir):
    with ModelServer(model_dir, "tiny", max_body_bytes=2000) as srv:
        big = {"instances": [[0.123456] * D] * 100}
        status, body = call(srv.url, "POST", "/v1/models/tiny:predict", big)
        assert status == 413 and "2000 bytes" in body["error"]
        status, _ = call(srv.url, "POST", "/invocations", {"instances": [[0.5] * D]})
        assert status == 200


def test_not_loaded_is_503_and_start_reports_the_cause(tmp_path):
    srv = ModelServer(tmp_path, "tiny")  # no <version>/saved_model.pb under tmp_path
    srv.start(wait=False)
    try:
        with pytest.raises(HarnessError):
            srv.wait_loaded(timeout=30)
        status, body = call(srv.url, "GET", "/ping")
        assert status == 503 and "no servable SavedModel version" in body["error"]
        assert call(srv.url, "POST", "/invocations", {"instances": [[0.5] * D]})[0] == 503
    finally:
        srv.stop()
    with pytest.raises(HarnessError, match="saved_model.pb"):
        ModelServer(tmp_path, "tiny").start()


def test_binds_loopback_and_stop_releases_port(model_dir):
    srv = ModelServer(model_dir, "tiny").start()
    port = srv.port
    assert srv.url == f"http://127.0.0.1:{port}" and port > 0
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    srv.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with ModelServer(model_dir, "tiny", port=port) as again:  # the port is free again
        assert call(again.url, "GET", "/ping")[0] == 200


def test_port_in_use_is_a_clear_error(server, model_dir):
    with pytest.raises(HarnessError, match=f"cannot listen on 127.0.0.1:{server.port}"):
        ModelServer(model_dir, "tiny", port=server.port).start()
    assert call(server.url, "GET", "/ping")[0] == 200


@pytest.mark.slow
def test_foreground_main_serves_until_terminated(model_dir):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    proc = subprocess.Popen([sys.executable, "-m", "local_runners.model_server",
                             "--model-dir", str(model_dir), "--model-name", "tiny",
                             "--port", str(port)], cwd=PROJECT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert f"at http://127.0.0.1:{port}" in line, line
        assert call(f"http://127.0.0.1:{port}", "GET", "/v1/models/tiny")[0] == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
