"""The tf-serving-container Endpoint, driven through the real Docker SDK against a fake
Docker engine (tests/fake_docker_engine.py) that runs the embedded model server in place of
tensorflow_model_server; and without any engine at all."""
from __future__ import annotations

import contextlib
import glob
import os
import re
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest
from fake_docker_engine import FakeDockerEngine, free_port
from support import (D, TaskUpdates, in_process, port_is_free, predicted_classes,
                     wait_until_answering)

from harness.config import PROJECT_ROOT
from harness.endpoints import ServingOptions, open_local_endpoint
from harness.errors import HarnessError
from harness.inference_client import client_for_endpoint
from local_runners.serve_container import TfServingContainerEndpoint, tf_serving_image



@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(3).random((5, D), dtype=np.float32)


@pytest.fixture(scope="module")
def engine():
    with FakeDockerEngine() as e:
        yield e


@pytest.fixture
def docker_env(engine, monkeypatch):
    """DOCKER_HOST at the fake engine; the image present; no TLS or context from outside."""
    for k in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT", "TF_SERVING_IMAGE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DOCKER_HOST", engine.url)
    engine.images = {tf_serving_image()}
    engine.pull_error, engine.pull_error_in_stream = None, False
    engine.pulls.clear()
    yield engine
    assert engine.running_containers() == []


@pytest.fixture(autouse=True)
def own_tempdir(tmp_path, monkeypatch):
    """This test's own temp folder: the config folders counted are this test's alone
    (pytest-xdist runs other tests that start TF Serving containers at the same time)."""
    own = tmp_path / "tmp"
    own.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(own))


def config_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "mlharness-tfs-*")))



def test_image_follows_tensorflow_and_matches_compose(monkeypatch):
    monkeypatch.delenv("TF_SERVING_IMAGE", raising=False)
    compose = (PROJECT_ROOT / "docker-compose.yml").read_text()
    default = re.search(r"image: \$\{TF_SERVING_IMAGE:-([^}]+)\}", compose).group(1)
    assert tf_serving_image() == default == "tensorflow/serving:2.19.0"
    monkeypatch.setenv("TF_SERVING_IMAGE", "registry.example/tfs:9.9.0")
    assert tf_serving_image() == "registry.example/tfs:9.9.0"
    assert "127.0.0.1:" in compose.split("tf-serving:")[1].split("ports:")[1].splitlines()[1]


def test_without_a_docker_engine(model_dir, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    before = config_dirs()
    ep = open_local_endpoint("tf-serving-container", model_dir, "tiny")
    with pytest.raises(HarnessError) as err:
        ep.start(timeout=5)
    message = str(err.value)
    assert "Docker engine" in message and "unix:///nonexistent/docker.sock" in message
    assert "deploy.server: embedded" in message and "--server embedded" in message
    assert ep.describe()["EndpointStatus"] == "OutOfService" and ep.container is None
    assert config_dirs() == before
    ep.stop()


def test_refuses_capture_and_unservable_dirs(model_dir, tmp_path):
    ep = TfServingContainerEndpoint(model_dir, "tiny", ServingOptions(capture_dir=str(tmp_path)))
    with pytest.raises(HarnessError, match="data capture.*embedded"):
        ep.start()
    with pytest.raises(HarnessError, match="no servable SavedModel version"):
        TfServingContainerEndpoint(tmp_path, "tiny").start()


def test_serves_through_docker(model_dir, x, docker_env):
    engine = docker_env
    engine.images = set()          # not present locally: start() pulls it
    before = config_dirs()
    options = ServingOptions(port=0, max_batch_size=8, batch_timeout_micros=500,
                             endpoint_name="digits")
    ep = TfServingContainerEndpoint(model_dir, "tiny", options)
    progress = TaskUpdates()
    ep.start(progress=progress)
    with ep:
        assert engine.pulls == [tf_serving_image()]
        # the pull showed the bytes of all layers, to the end
        assert progress.updates[f"docker pull {tf_serving_image()}"][-1] == (42_000_000,
                                                                            42_000_000)
        got, want = ep.client().predict(x), in_process(model_dir / "1", x)
        np.testing.assert_array_equal(got["classes"], want["classes"])
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-5)
        d = ep.describe()
        with client_for_endpoint(d) as client:
            np.testing.assert_array_equal(client.predict(x)["classes"], want["classes"])

        # What the engine was asked for.
        body = engine.created[-1]
        container = engine.containers[d["ContainerId"]]
        port = int(container.host_binding["HostPort"])     # the port "Docker" chose
        assert d == {"EndpointName": "digits", "EndpointStatus": "InService",
                     "EndpointUrl": f"http://127.0.0.1:{port}", "EndpointApi": "tf-serving",
                     "ServedModelName": "tiny", "ModelVersion": 1, "Server": "tf-serving-container",
                     "ContainerId": container.id, "Image": tf_serving_image()}
        host = body["HostConfig"]
        assert host["PortBindings"] == {"8501/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
        assert "8501/tcp" in body["ExposedPorts"]
        mounts = {m["Target"]: m for m in host["Mounts"]}
        assert mounts["/models/tiny"]["Source"] == str(model_dir.resolve())
        assert mounts["/models/tiny"]["ReadOnly"] is True and mounts["/config"]["ReadOnly"]
        assert "MODEL_NAME=tiny" in body["Env"]
        assert body["Labels"] == {"mlharness.endpoint": "digits"}
        assert body["Cmd"] == ["--enable_batching=true",
                               "--batching_parameters_file=/config/batching_parameters.txt"]
        params = Path(mounts["/config"]["Source"], "batching_parameters.txt").read_text()
        assert "max_batch_size { value: 8 }" in params
        assert "batch_timeout_micros { value: 500 }" in params
        assert f"num_batch_threads {{ value: {os.cpu_count()} }}" in params
        assert "max_enqueued_batches { value: 100 }" in params
        # ... and what the "image" ran with it.
        argv = container.argv
        assert argv[argv.index("--max-batch-size") + 1] == "8"
        assert argv[argv.index("--batch-timeout-micros") + 1] == "500"
        assert argv[argv.index("--host") + 1] == "127.0.0.1"

    assert container.id in engine.removed and not engine.containers
    assert port_is_free(port)
    assert config_dirs() == before
    assert ep.describe()["EndpointStatus"] == "OutOfService" and "EndpointUrl" not in ep.describe()
    ep.stop()                      # twice is fine


@pytest.mark.parametrize("in_stream", [False, True], ids=["http-error", "stream-error"])
def test_pull_failure(model_dir, docker_env, in_stream):
    engine = docker_env
    engine.images = set()
    engine.pull_error = "Get \"https://registry-1.docker.io/v2/\": dial tcp: no such host"
    engine.pull_error_in_stream = in_stream
    before = config_dirs()
    with pytest.raises(HarnessError) as err:
        TfServingContainerEndpoint(model_dir, "tiny").start()
    message = str(err.value)
    image = tf_serving_image()
    assert f"cannot pull the TensorFlow Serving image {image}" in message
    assert "no such host" in message and f"docker pull {image}" in message
    assert "embedded" in message
    assert engine.pulls == [image] and not engine.containers and config_dirs() == before


def test_port_in_use_fixed_port_without_batching(model_dir, docker_env):
    engine = docker_env
    before = config_dirs()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        ep = TfServingContainerEndpoint(model_dir, "tiny",
                                        ServingOptions(port=port, max_batch_size=None,
                                                       version_poll_seconds=3))
        with pytest.raises(HarnessError, match=f"port {port} already in use"):
            ep.start()
    body = engine.created[-1]
    assert body["HostConfig"]["PortBindings"] == {
        "8501/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert body["Cmd"] == ["--file_system_poll_wait_seconds=3"]     # no batching flags
    assert [m["Target"] for m in body["HostConfig"]["Mounts"]] == ["/models/tiny"]
    assert not engine.containers and config_dirs() == before


def test_container_that_exits_at_once(tmp_path, docker_env):
    engine = docker_env
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    before = config_dirs()
    ep = TfServingContainerEndpoint(tmp_path, "broken")
    with pytest.raises(HarnessError) as err:
        ep.start(timeout=60)
    message = str(err.value)
    assert "exited (code 1) before the model was AVAILABLE" in message
    assert "last log lines" in message and "cannot load the SavedModel" in message
    assert engine.removed[-1] not in engine.containers and not engine.containers
    assert config_dirs() == before and ep.container is None


def test_timeout_removes_the_container(model_dir, docker_env):
    engine = docker_env
    ep = TfServingContainerEndpoint(model_dir, "tiny", ServingOptions(port=free_port()))
    with pytest.raises(HarnessError, match="did not report the model AVAILABLE within 0.3 s"):
        ep.start(timeout=0.3)
    assert not engine.containers and ep.describe()["EndpointStatus"] == "OutOfService"


def _trio(tmp_path, model_dir, server: str, run_id: str):
    """The pipeline's hosting requests for a run in ``tmp_path`` whose training job left
    ``model_dir`` as model.tar.gz, with ``deploy.server`` = ``server``."""
    import tarfile

    from harness import uris
    from pipeline_support import hosting_requests, pipeline, run_document

    archive = tmp_path / run_id / "model.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(model_dir / "1", arcname="1")
    cfg, wf = pipeline(**{"deploy.server": server})
    doc = run_document(uris.file_uri(tmp_path / run_id), run_id, Train={
        "ModelArtifacts": {"S3ModelArtifacts": uris.file_uri(archive)}})
    return cfg, hosting_requests(wf, doc)


def test_local_endpoint_on_the_container_answers_as_the_embedded_server(docker_env, model_dir,
                                                                         x, tmp_path):
    """deploy.server picks the implementation the endpoint step serves with; the infer
    step's client gets the same answers from both."""
    from pipeline_support import deploy

    answers = {}
    for server in ("embedded", "tf-serving-container"):
        run_id = f"r-{server}"
        cfg, requests = _trio(tmp_path, model_dir, server, run_id)
        with contextlib.ExitStack() as resources:
            deployed = deploy(cfg, requests, resources, run_id=run_id)["endpoint"]
            assert deployed["Server"] == server and deployed["EndpointStatus"] == "InService"
            assert deployed["EndpointUrl"].startswith("http://127.0.0.1:")
            with client_for_endpoint(deployed) as client:
                answers[server] = client.predict(x)
        assert docker_env.running_containers() == []
    assert deployed["EndpointApi"] == "tf-serving"
    assert answers["embedded"]["classes"].tolist() == \
        answers["tf-serving-container"]["classes"].tolist()
    np.testing.assert_allclose(answers["embedded"]["probabilities"],
                               answers["tf-serving-container"]["probabilities"], rtol=1e-6)


def test_local_endpoint_on_the_container_without_an_engine_says_so(model_dir, tmp_path,
                                                                    monkeypatch):
    from pipeline_support import deploy

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    cfg, requests = _trio(tmp_path, model_dir, "tf-serving-container", "r-none")

    def leftovers() -> set[str]:
        return set(glob.glob(os.path.join(tempfile.gettempdir(), "mlharness-*r-none*"))) \
            | config_dirs()
    before = leftovers()
    with pytest.raises(HarnessError, match="Docker engine") as err, \
            contextlib.ExitStack() as resources:
        deploy(cfg, requests, resources, run_id="r-none")
    assert "deploy.server: embedded" in str(err.value)
    assert leftovers() <= before


def test_harness_serve_on_the_container_and_predict(docker_env, model_dir, x, tmp_path):
    """What a user runs: `harness serve --server tf-serving-container`, `harness predict`,
    Ctrl+C / SIGTERM; the container is gone afterwards."""
    import signal
    import subprocess
    import sys

    engine = docker_env
    engine.images = set()                       # the first serve pulls the image
    np.save(tmp_path / "x.npy", x)
    port = free_port()
    env = {**os.environ, "DOCKER_HOST": engine.url}
    server = subprocess.Popen([sys.executable, "-m", "harness.cli", "serve", str(model_dir),
                               "--server", "tf-serving-container", "--port", str(port),
                               "--model-name", "tiny", "--runs-dir", str(tmp_path / "runs")],
                              cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/v1/models/tiny", server, 90)
        assert engine.pulls == [tf_serving_image()]
        body = engine.created[-1]
        assert body["HostConfig"]["PortBindings"]["8501/tcp"][0]["HostIp"] == "127.0.0.1"
        out = subprocess.run([sys.executable, "-m", "harness.cli", "predict",
                              str(tmp_path / "x.npy"), "--url", f"http://127.0.0.1:{port}",
                              "--model-name", "tiny", "--runs-dir", str(tmp_path / "runs")],
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert predicted_classes(out.stdout) == \
            in_process(model_dir / "1", x)["classes"].tolist()
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    assert code == 0, server.stdout.read()
    assert "tf-serving-container" in server.stdout.read()
    assert engine.running_containers() == [] and not engine.containers
