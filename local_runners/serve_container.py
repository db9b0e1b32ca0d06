"""The ``tf-serving-container`` Endpoint: the official TensorFlow Serving image, started
through the Docker SDK for Python.

The model dir (``<version>/saved_model.pb`` layout) is bind-mounted read-only at
``/models/<model_name>`` and ``MODEL_NAME`` is set, which is all the image's entrypoint
needs; its REST port 8501 is published on ``options.host`` (127.0.0.1 unless the user chose
otherwise). Batching is TF Serving's own (``--enable_batching`` with a
``batching_parameters.txt`` mounted at ``/config``). Clients speak TF Serving's REST API
(``EndpointApi: "tf-serving"``). TF Serving has no SageMaker data capture and does not run
``code/inference.py`` handlers: the embedded server does both.

It and ``local_runners.glue_container`` (AWS's Glue image) are the modules that import
``docker``.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from harness.archives import newest_model_version
from harness.endpoints import API_TF_SERVING, LocalEndpoint, ServingOptions
from harness.errors import HarnessError
from harness.progress import NullProgress, Progress, TaskHandle
from harness.inference_client import (EndpointClient, EndpointError, HttpConnection,
                                      HttpTfServingTransport)

log = logging.getLogger(__name__)

IMAGE_ENV = "TF_SERVING_IMAGE"               # the same variable as docker-compose.yml
IMAGE_REPOSITORY = "tensorflow/serving"
FALLBACK_IMAGE = "tensorflow/serving:2.19.0"  # docker-compose.yml's default
REST_PORT = "8501/tcp"                        # TF Serving's REST API inside the image
CONFIG_MOUNT = "/config"
BATCHING_FILE = "batching_parameters.txt"
LABEL = "mlharness.endpoint"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
STOP_TIMEOUT_S = 10                           # SIGTERM, then SIGKILL after this long
LOG_LINES = 20
EMBEDDED_HINT = ("To serve without Docker, use the embedded server: 'deploy.server: embedded' "
                 "in the config (the default) or 'harness serve --server embedded'")


def tf_serving_image() -> str:
    """``$TF_SERVING_IMAGE``, else ``tensorflow/serving:<major>.<minor>.0`` matching the
    installed TensorFlow (``tensorflow-cpu``, else ``tensorflow``), else the compose default."""
    override = os.environ.get(IMAGE_ENV, "").strip()
    if override:
        return override
    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        major, minor = version.split(".")[:2]
        return f"{IMAGE_REPOSITORY}:{major}.{minor}.0"
    return FALLBACK_IMAGE


def batching_parameters(max_batch_size: int, batch_timeout_micros: int,
                        num_batch_threads: int | None = None) -> str:
    """TF Serving's ``--batching_parameters_file`` (a BatchingParameters text proto)."""
    threads = num_batch_threads or os.cpu_count() or 1
    return (f"max_batch_size {{ value: {max_batch_size} }}\n"
            f"batch_timeout_micros {{ value: {batch_timeout_micros} }}\n"
            f"num_batch_threads {{ value: {threads} }}\n"
            f"max_enqueued_batches {{ value: 100 }}\n")


def _docker_location() -> str:
    """Where ``docker.from_env()`` looks for the engine, for error messages."""
    host = os.environ.get("DOCKER_HOST")
    if host:
        return f"DOCKER_HOST={host}"
    try:
        from docker.context import ContextAPI
        context = ContextAPI.get_current_context()
        if context is not None and context.name != "default" and context.Host:
            return f"{context.Host} (docker context {context.name!r})"
    except Exception:  # noqa: BLE001 - only used to word an error message
        pass
    return f"the default socket {DEFAULT_SOCKET} (DOCKER_HOST is not set)"


def _available_version(body: bytes) -> int | None:
    """The newest AVAILABLE version in a ``GET /v1/models/<name>`` answer."""
    try:
        statuses = orjson.loads(body).get("model_version_status") or []
        versions = [int(s["version"]) for s in statuses if s.get("state") == "AVAILABLE"]
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    return max(versions) if versions else None


def connect_engine(expected: str, hint: str) -> Any:
    """A Docker client that answered a ping; else a HarnessError saying where it looked
    (``expected``/``hint``: what needs the engine, and how to do without it)."""
    import docker
    import docker.errors
    import requests

    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException,
            OSError) as e:
        raise HarnessError(
            f"no Docker engine answers at {_docker_location()} ({type(e).__name__}: {e})",
            expected=expected, hint=hint) from None
    return client


def stop_and_remove(container: Any, logger: logging.Logger,
                    timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop a container (SIGTERM, SIGKILL after ``timeout``) and remove it; a container
    already gone is fine, any other failure is logged with the command that removes it."""
    import docker.errors

    try:
        container.stop(timeout=timeout)
    except docker.errors.NotFound:
        pass
    except Exception as e:  # noqa: BLE001 - still try to remove it
        logger.warning("could not stop container %s: %s", container.short_id, e)
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except Exception as e:  # noqa: BLE001 - the engine went away, or an API error
        if getattr(e, "status_code", None) != 409:   # 409: removal already in progress
            logger.warning("could not remove container %s (%s); remove it with "
                           "'docker rm -f %s'", container.short_id, e, container.id)


def follow_pull(lines, task: TaskHandle) -> None:
    """Follow a pull's JSON stream: bytes downloaded over all layers on ``task``; an
    ``{"error": ...}`` line raises APIError (``images.pull()`` would swallow it)."""
    import docker.errors

    layers: dict[str, tuple[int, int]] = {}          # layer id -> (downloaded, size)
    for line in lines:
        if not isinstance(line, dict):
            continue
        if line.get("error"):
            raise docker.errors.APIError(line["error"])
        layer, status = line.get("id"), line.get("status", "")
        detail = line.get("progressDetail") or {}
        if status == "Downloading" and detail.get("total"):
            layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
        elif status in ("Download complete", "Pull complete") and layer in layers:
            layers[layer] = (layers[layer][1], layers[layer][1])
        else:
            continue
        task.update(completed=sum(c for c, _ in layers.values()),
                    total=sum(t for _, t in layers.values()))


class TfServingContainerEndpoint(LocalEndpoint):
    kind = "tf-serving-container"

    def __init__(self, model_dir: Path, model_name: str,
                 options: ServingOptions = ServingOptions()):
        super().__init__(model_dir, model_name, options)
        self.image = tf_serving_image()
        self.container = None            # docker.models.containers.Container once started
        self.port: int | None = None
        self.model_version: int | None = None
        self._docker = None              # docker.DockerClient
        self._config_dir: Path | None = None

    # ------------------------------------------------------------------ start / stop

    def start(self, timeout: float = 120.0, progress: Progress | None = None
              ) -> "TfServingContainerEndpoint":
        """Pull the image if missing (a bar on ``progress``), run it, wait for the model."""
        if self.container is not None:
            return self
        o = self.options
        if o.capture_dir:
            raise HarnessError("data capture is not available with the TF Serving container",
                               field="deploy.data_capture_percent (or serve --capture-dir)",
                               expected="0 (off) with deploy.server: tf-serving-container",
                               got=f"capture into {o.capture_dir}",
                               hint="The embedded server reproduces SageMaker's data capture: "
                               "use 'deploy.server: embedded'")
        model_dir = self.model_dir.resolve()
        newest_model_version(model_dir)   # DataError naming the dir if nothing is servable
        if (model_dir / "code" / "inference.py").is_file():
            log.warning("%s: TF Serving does not run code/inference.py handlers (the embedded "
                        "server does); requests reach the model unchanged", model_dir)
        try:
            self._docker = self._connect()
            self._ensure_image(progress)
            self.container = self._run_container(model_dir)
            self.port = self._published_port()
            self.model_version = self._wait_available(timeout)
        except BaseException:
            self._release()
            raise
        log.info("TF Serving container %s (%s) serves model '%s' version %s at %s",
                 self.container.short_id, self.image, self.model_name, self.model_version,
                 self.url)
        return self

    def stop(self) -> None:
        self._release()

    def _release(self) -> None:
        """Stop and remove the container, delete the config dir; safe to call repeatedly."""
        container, self.container = self.container, None
        if container is not None:
            # SIGTERM: TF Serving finishes the requests in flight, then exits.
            stop_and_remove(container, log)
        if self._config_dir is not None:
            shutil.rmtree(self._config_dir, ignore_errors=True)
            self._config_dir = None
        if self._docker is not None:
            self._docker.close()
            self._docker = None
        self.port = None
        self.model_version = None

    def _connect(self):
        return connect_engine(
            expected="a running Docker engine: the tf-serving-container server runs the "
            f"official TensorFlow Serving image ({self.image}) in a container",
            hint=EMBEDDED_HINT)

    def _ensure_image(self, progress: Progress | None = None) -> None:
        import docker.errors
        from docker.utils import parse_repository_tag

        try:
            self._docker.images.get(self.image)
            return
        except docker.errors.ImageNotFound:
            pass
        log.info("pulling %s (not present in the local Docker engine)", self.image)
        repository, tag = parse_repository_tag(self.image)
        try:
            # The pull streams progress; a failure may come as an HTTP error or as an
            # {"error": ...} line in the stream (which images.pull() would swallow).
            lines = self._docker.api.pull(repository, tag=tag or "latest", stream=True,
                                          decode=True)
            with (progress or NullProgress()).task(f"docker pull {self.image}", total=None
                                                   ) as task:
                follow_pull(lines, task)
            self._docker.images.get(self.image)
        except docker.errors.DockerException as e:
            reason = getattr(e, "explanation", None) or str(e)
            raise HarnessError(
                f"cannot pull the TensorFlow Serving image {self.image} ({reason})",
                expected=f"the image {self.image} in the local Docker engine or pullable "
                "from its registry",
                hint=f"Run 'docker pull {self.image}' on a machine with network access (or "
                f"set {IMAGE_ENV} to an image you have). {EMBEDDED_HINT}") from None

    def _run_container(self, model_dir: Path):
        import docker.errors
        from docker.types import Mount

        o = self.options
        host = o.host or "127.0.0.1"     # never let an empty host publish on all interfaces
        mounts = [Mount(f"/models/{self.model_name}", str(model_dir), type="bind",
                        read_only=True)]
        command: list[str] = []
        if o.max_batch_size:            # None (or 0, as in deploy config): batching off
            self._config_dir = Path(tempfile.mkdtemp(prefix="mlharness-tfs-"))
            (self._config_dir / BATCHING_FILE).write_text(
                batching_parameters(o.max_batch_size, o.batch_timeout_micros))
            mounts.append(Mount(CONFIG_MOUNT, str(self._config_dir), type="bind",
                                read_only=True))
            command += ["--enable_batching=true",
                        f"--batching_parameters_file={CONFIG_MOUNT}/{BATCHING_FILE}"]
        if o.version_poll_seconds is not None:
            # TF Serving polls the model dir for new versions itself (every second by
            # default); its flag takes whole seconds.
            command.append("--file_system_poll_wait_seconds="
                           f"{max(1, round(o.version_poll_seconds))}")
        container = None
        try:
            container = self._docker.containers.create(
                self.image, command=command or None, detach=True,
                environment={"MODEL_NAME": self.model_name},
                mounts=mounts, ports={REST_PORT: (host, o.port or None)},
                labels={LABEL: self.endpoint_name})
            self.container = container          # removed by _release() if start fails
            container.start()
        except docker.errors.APIError as e:
            where = f"{host}:{o.port}" if o.port else host
            hint = (f"Is port {o.port} already in use? Choose another deploy.port, or 0 for "
                    "any free port" if o.port and "allocated" in str(e.explanation)
                    else EMBEDDED_HINT)
            raise HarnessError(f"the Docker engine could not start {self.image} for model "
                               f"'{self.model_name}' on {where} ({e.explanation or e})",
                               file=str(model_dir), hint=hint) from None
        return container

    def _published_port(self) -> int:
        self.container.reload()
        try:
            return int(self.container.attrs["NetworkSettings"]["Ports"][REST_PORT][0]
                       ["HostPort"])
        except (KeyError, IndexError, TypeError, ValueError):
            if self.container.status != "running":
                self._fail("exited before publishing its port",
                           "a container that keeps running")
            raise HarnessError(f"the Docker engine did not report the host port of container "
                               f"{self.container.short_id}", field=f"NetworkSettings.Ports"
                               f"[{REST_PORT}]", expected="a published HostPort",
                               got=self.container.attrs.get("NetworkSettings")) from None

    def _wait_available(self, timeout: float) -> int:
        """Poll ``GET /v1/models/<name>`` until a version is AVAILABLE."""
        import docker.errors

        deadline = time.monotonic() + timeout
        conn = HttpConnection(self.url, timeout=5.0)
        last = "no answer yet"
        try:
            while True:
                try:
                    status, body, _ = conn.request("GET", f"/v1/models/{self.model_name}")
                    version = _available_version(body) if status == 200 else None
                    if version is not None:
                        return version
                    last = f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
                except EndpointError as e:
                    last = e.problem
                try:
                    self.container.reload()
                    running = self.container.status in ("created", "running")
                except docker.errors.NotFound:
                    running = False
                if not running:
                    code = self.container.attrs.get("State", {}).get("ExitCode")
                    self._fail(f"exited (code {code}) before the model was AVAILABLE",
                               "<version>/saved_model.pb that this TensorFlow Serving version "
                               "can load")
                if time.monotonic() >= deadline:
                    self._fail(f"did not report the model AVAILABLE within {timeout:g} s "
                               f"(last answer: {last})",
                               "the model loaded within the start timeout (pull and load "
                               "times grow with the model; allow a longer timeout)")
                time.sleep(0.2)
        finally:
            conn.close()

    def _fail(self, what: str, expected: str) -> None:
        raise HarnessError(
            f"the TF Serving container {self.container.short_id} ({self.image}) serving "
            f"model '{self.model_name}' {what}", file=str(self.model_dir), expected=expected,
            hint=f"{EMBEDDED_HINT}. The container's last log lines:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            text = self.container.logs(stdout=True, stderr=True, tail=LOG_LINES)
            lines = text.decode("utf-8", "replace").rstrip().splitlines()[-LOG_LINES:]
        except Exception as e:  # noqa: BLE001 - the error being raised matters more
            return f"  (logs unavailable: {e})"
        return "\n".join(f"  {line}" for line in lines) or "  (no output)"

    # ------------------------------------------------------------------ clients

    @property
    def url(self) -> str | None:
        if self.port is None:
            return None
        host = self.options.host or "127.0.0.1"
        if host in ("0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    def client(self) -> EndpointClient:
        if self.container is None or self.model_version is None:
            raise HarnessError(f"endpoint {self.endpoint_name} is not started",
                               hint="Call start() first (or use it as a context manager)")
        return EndpointClient(HttpTfServingTransport(self.url, self.model_name),
                              self.endpoint_name)

    def describe(self) -> dict[str, Any]:
        started = self.container is not None and self.model_version is not None
        out: dict[str, Any] = {"EndpointName": self.endpoint_name,
                               "EndpointStatus": "InService" if started else "OutOfService",
                               "ServedModelName": self.model_name, "Server": self.kind,
                               "Image": self.image}
        if started:
            out.update(EndpointUrl=self.url, EndpointApi=API_TF_SERVING,
                       ModelVersion=self.model_version, ContainerId=self.container.id)
        return out
