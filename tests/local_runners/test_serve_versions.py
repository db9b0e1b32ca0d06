"""Model versions: a newer <version>/ is picked up and switched to without failing requests."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
from support import D, call, in_process, save_tiny_model

from local_runners.model_server import ModelServer


def test_new_version_is_served_without_dropping_requests(tmp_path):
    model_dir, staging = tmp_path / "model", tmp_path / "staging"
    model_dir.mkdir()
    save_tiny_model(model_dir, version=1, seed=0)
    x = np.random.default_rng(2).random((5, D), dtype=np.float32)
    v1, v2_dir = in_process(model_dir / "1", x), save_tiny_model(staging, version=2, seed=1)
    v2 = in_process(v2_dir, x)
    assert not np.allclose(v1["probabilities"], v2["probabilities"])

    with ModelServer(model_dir, "tiny", version_poll_seconds=0.1) as srv:
        statuses: list[int] = []
        stop = threading.Event()

        def client(path):
            while not stop.is_set():
                statuses.append(call(srv.url, "POST", path, {"instances": x.tolist()})[0])

        threads = [threading.Thread(target=client, args=(p,)) for p in
                   ("/v1/models/tiny:predict", "/invocations", "/v1/models/tiny:predict")]
        for t in threads:
            t.start()
        time.sleep(0.3)
        before = len(statuses)
        os.rename(v2_dir, model_dir / "2")           # publish atomically, as TF Serving expects
        deadline = time.monotonic() + 30
        while srv.model.version != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(30)

        assert srv.model.version == 2
        assert before > 0 and len(statuses) > before
        assert set(statuses) == {200}, sorted(set(statuses))
        status, body = call(srv.url, "POST", "/v1/models/tiny:predict", {"instances": x.tolist()})
        assert status == 200
        np.testing.assert_allclose([r["probabilities"] for r in body["predictions"]],
                                   v2["probabilities"], rtol=1e-5)
        assert call(srv.url, "GET", "/v1/models/tiny") == (200, {"model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
            {"version": "1", "state": "END", "status": {"error_code": "OK", "error_message": ""}}]})
        assert call(srv.url, "GET", "/v1/models/tiny/versions/1")[1]["model_version_status"][0][
            "state"] == "END"
        status, body = call(srv.url, "POST", "/v1/models/tiny/versions/1:predict",
                            {"instances": x.tolist()})
        assert status == 404 and "available version is 2" in body["error"]
        assert call(srv.url, "GET", "/v1/models/tiny/metadata")[1]["model_spec"]["version"] == "2"


def test_reload_keeps_serving_when_a_new_version_is_broken(tmp_path):
    save_tiny_model(tmp_path, version=1)
    with ModelServer(tmp_path, "tiny") as srv:
        assert srv.reload() == 1                                  # nothing newer
        (tmp_path / "3").mkdir()
        (tmp_path / "3" / "saved_model.pb").write_bytes(b"not a saved model")
        assert srv.reload() == 1
        status, body = call(srv.url, "GET", "/v1/models/tiny")
        states = {s["version"]: (s["state"], s["status"]["error_code"])
                  for s in body["model_version_status"]}
        assert states == {"3": ("END", "UNKNOWN"), "1": ("AVAILABLE", "OK")}
        assert "cannot load the SavedModel" in body["model_version_status"][0]["status"][
            "error_message"]
        assert call(srv.url, "POST", "/v1/models/tiny:predict", {"instances": [[0.5] * D]})[0] == 200
        # a fixed version 3 (its files change) is picked up by the next reload
        (tmp_path / "3" / "saved_model.pb").unlink()
        (tmp_path / "3").rmdir()
        save_tiny_model(tmp_path, version=3, seed=4)
        assert srv.reload() == 3 and srv.model.version == 3
