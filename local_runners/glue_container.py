"""``etl.runner: glue-container``: the Glue job script run in AWS's official Glue image
(``public.ecr.aws/glue/aws-glue-libs:5``, Glue 5.x: Amazon Linux 2023, Spark 3.5 and the
real Glue ETL library), through the Docker SDK for Python.

The image's user is ``hadoop`` and AWS documents running a script with
``spark-submit /home/hadoop/workspace/<script> --JOB_NAME ...``: the script's folder is
bind-mounted read-only at ``/home/hadoop/workspace/src``. Every argument that names a local
path (a ``file://`` URI or an absolute path) is mapped into the container and rewritten:
existing paths are inputs, mounted read-only at ``/data/in-<n>/<name>``; ``--output_uri``,
arguments whose name says output/target/destination/TempDir, and paths that do not exist
yet are outputs: their parent folder is mounted read-write at ``/data/out-<n>``. The
container runs as the calling user (files it writes belong to them), publishes no port,
and gets no credentials: no AWS variables, no ``~/.aws``. On the emulator it gets only the
emulator's endpoint and fake keys. Its output goes to the step log line by line; a non-zero
exit is a StepFailed with the Python traceback's error line (what Glue reports as
``ErrorMessage``) and the log tail. The container is always removed; Ctrl-C stops it first.

``$GLUE_IMAGE`` replaces the image (e.g. a pinned release, or a mirror).
"""
from __future__ import annotations

import collections
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from harness import uris
from harness.errors import HarnessError, StepFailed
from harness.progress import NullProgress, Progress
from local_runners.serve_container import connect_engine, follow_pull, stop_and_remove
from local_runners.spark_session import _interrupts_deferred

log = logging.getLogger(__name__)

IMAGE_ENV = "GLUE_IMAGE"
IMAGE_REPOSITORY = "public.ecr.aws/glue/aws-glue-libs"
# AWS's "Develop and test AWS Glue jobs locally using a Docker image" lists ":5" for Glue 5.
IMAGES = {"5.0": f"{IMAGE_REPOSITORY}:5", "5.1": f"{IMAGE_REPOSITORY}:5"}
DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}:5"
WORKSPACE = "/home/hadoop/workspace"          # the image user's (hadoop) workspace
SCRIPT_DIR = f"{WORKSPACE}/src"
DATA_ROOT = "/data"
LABEL = "mlharness.glue-job-run"
LOG_LINES = 20                                 # the tail a failure shows
KEPT_LINES = 5000                              # lines kept to find the traceback in
OUTPUT_KEY = re.compile(r"output|target|dest|tempdir", re.IGNORECASE)
ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failed)\b.*")
FAKE_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
NO_DOCKER_HINT = ("To run the job without Docker, use 'etl.runner: glue-compat' (the awsglue "
                  "classes over local Spark) or 'etl.runner: spark' (plain PySpark)")


def glue_image(glue_version: str | None = None) -> str:
    """``$GLUE_IMAGE``, else AWS's image for ``glue_version`` (5.0 and 5.1: ``...:5``)."""
    override = os.environ.get(IMAGE_ENV, "").strip()
    return override or IMAGES.get(str(glue_version or ""), DEFAULT_IMAGE)


def _local_path(value: Any) -> Path | None:
    """The host path an argument names (a ``file://`` URI or an absolute path), else None."""
    if not isinstance(value, str):
        return None
    if value.startswith("file:"):
        return Path(uris.local_path(value))
    if value.startswith("/") and "\n" not in value:
        return Path(value)
    return None


class Mounts:
    """Host paths mapped into the container: inputs read-only, outputs' parents read-write."""

    def __init__(self, script_dir: Path):
        self.binds: dict[str, tuple[str, bool]] = {SCRIPT_DIR: (str(script_dir), True)}
        self._by_host: dict[tuple[str, bool], str] = {(str(script_dir), True): SCRIPT_DIR}

    def _bind(self, host: Path, read_only: bool, kind: str, name: str = "") -> str:
        key = (str(host), read_only)
        if key not in self._by_host:
            n = sum(t.startswith(f"{DATA_ROOT}/{kind}-") for t in self.binds)
            target = f"{DATA_ROOT}/{kind}-{n}" + (f"/{name}" if name else "")
            self.binds[target] = (str(host), read_only)
            self._by_host[key] = target
        return self._by_host[key]

    def input(self, path: Path) -> str:
        path = path.resolve()
        return self._bind(path, True, "in", path.name or "root")

    def output(self, path: Path) -> str:
        path = Path(os.path.abspath(path))
        parent = path.parent
        if parent == Path(parent.anchor):
            raise HarnessError("a Glue job output directly under the filesystem root cannot "
                               "be mounted into the Glue container", file=str(path),
                               hint="write the output into a folder")
        parent.mkdir(parents=True, exist_ok=True)   # as S3 prefixes, made on demand
        return f"{self._bind(parent.resolve(), False, 'out')}/{path.name}"

    def map_argument(self, key: str, value: Any) -> Any:
        path = _local_path(value)
        if path is None:
            return value
        is_output = key == "--output_uri" or bool(OUTPUT_KEY.search(key)) \
            or not path.exists()
        target = self.output(path) if is_output else self.input(path)
        return "file://" + quote(target) if value.startswith("file:") else target

    def docker_mounts(self) -> list:
        from docker.types import Mount

        return [Mount(target, source, type="bind", read_only=ro)
                for target, (source, ro) in self.binds.items()]


def container_environment(region: str | None, emulator_endpoint: str | None
                          ) -> tuple[dict[str, str], dict[str, str]]:
    """(environment, extra hosts) of the container: never credentials; on the emulator its
    endpoint (a local one through host.docker.internal) and fake keys."""
    env = {"PYTHONUNBUFFERED": "1"}
    if region:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = region
    hosts: dict[str, str] = {}
    if emulator_endpoint:
        parsed = urlparse(emulator_endpoint)
        if parsed.hostname in ("127.0.0.1", "localhost", "::1"):
            port = f":{parsed.port}" if parsed.port else ""
            emulator_endpoint = parsed._replace(netloc=f"host.docker.internal{port}").geturl()
            hosts["host.docker.internal"] = "host-gateway"
        env.update(AWS_ENDPOINT_URL=emulator_endpoint, **FAKE_KEYS)
    return env, hosts


def traceback_error(lines: list[str]) -> str | None:
    """The error line of the last Python traceback in ``lines`` (``ValueError: ...``), as
    Glue reports it in ErrorMessage; else the last line that looks like an error."""
    start = max((i for i, line in enumerate(lines)
                 if line.startswith("Traceback (most recent call last)")), default=None)
    if start is not None:
        for line in lines[start + 1:]:
            if line and not line[0].isspace():
                return line.strip()
    candidates = [line.strip() for line in lines if ERROR_LINE.match(line.strip())]
    return candidates[-1] if candidates else None


class _LogFollower:
    """Copies the container's output into the step log, one line at a time (a thread)."""

    def __init__(self, container, step_log: logging.Logger):
        self.lines: collections.deque[str] = collections.deque(maxlen=KEPT_LINES)
        self._stream = container.logs(stream=True, follow=True, stdout=True, stderr=True)
        self._log = step_log
        self._thread = threading.Thread(target=self._run, name="glue-container-logs",
                                        daemon=True)
        self._thread.start()

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self.lines.append(line)
        if line.strip():
            self._log.info("%s", line)

    def _run(self) -> None:
        buf = b""
        try:
            for chunk in self._stream:
                buf += chunk
                *complete, buf = buf.split(b"\n")
                for raw in complete:
                    self._emit(raw)
        except Exception as e:  # noqa: BLE001 - the engine went away; wait() will say so
            log.debug("glue container log stream ended: %s", e)
        if buf:
            self._emit(buf)

    def finish(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            try:
                self._stream.close()
            except Exception:  # noqa: BLE001
                pass
            self._thread.join(2.0)


class GlueContainerRun:
    """One job run in the Glue image: ``run()`` pulls (if missing), runs, waits, removes."""

    def __init__(self, script: Path, job_name: str, run_id: str, arguments: dict[str, Any],
                 *, step: str, step_log: logging.Logger, glue_version: str | None = None,
                 spark_master: str | None = None, shuffle_partitions: int | None = None,
                 region: str | None = None, emulator_endpoint: str | None = None,
                 progress: Progress | None = None):
        self.script, self.job_name, self.run_id = script.resolve(), job_name, run_id
        self.arguments, self.step, self.log = arguments, step, step_log
        self.image = glue_image(glue_version)
        self.spark_master, self.shuffle_partitions = spark_master, shuffle_partitions
        self.region, self.emulator_endpoint = region, emulator_endpoint
        self.progress = progress or NullProgress()
        self.container = None
        self._docker = None

    def command(self, mounts: Mounts) -> list[str]:
        """``spark-submit <script> --JOB_NAME <name> --JOB_RUN_ID <id> <arguments>``."""
        cmd = ["spark-submit"]
        if self.spark_master:
            cmd += ["--master", self.spark_master]
        if self.shuffle_partitions:
            cmd += ["--conf", f"spark.sql.shuffle.partitions={self.shuffle_partitions}"]
        cmd += [f"{SCRIPT_DIR}/{self.script.name}", "--JOB_NAME", self.job_name,
                "--JOB_RUN_ID", self.run_id]
        for key, value in self.arguments.items():
            key = key if key.startswith("--") else f"--{key}"
            cmd += [key, str(mounts.map_argument(key, value))]
        return cmd

    def run(self) -> None:
        mounts = Mounts(self.script.parent)
        command = self.command(mounts)
        try:
            self._docker = self._connect()
            self._ensure_image()
            self._start(command, mounts)
            self._wait()
        finally:
            with _interrupts_deferred():       # a second Ctrl-C does not leave it running
                self._release()

    # ------------------------------------------------------------------ engine

    def _connect(self):
        return connect_engine(
            expected="a running Docker engine: etl.runner glue-container runs the job in "
            f"AWS's Glue image ({self.image}) in a container", hint=NO_DOCKER_HINT)

    def _ensure_image(self) -> None:
        import docker.errors
        from docker.utils import parse_repository_tag

        try:
            self._docker.images.get(self.image)
            return
        except docker.errors.ImageNotFound:
            pass
        self.log.info("pulling %s (not present in the local Docker engine; about 7 GB)",
                      self.image)
        repository, tag = parse_repository_tag(self.image)
        try:
            lines = self._docker.api.pull(repository, tag=tag or "latest", stream=True,
                                          decode=True)
            with self.progress.task(f"docker pull {self.image}", total=None) as task:
                follow_pull(lines, task)
            self._docker.images.get(self.image)
        except docker.errors.DockerException as e:
            reason = getattr(e, "explanation", None) or str(e)
            raise HarnessError(
                f"cannot pull the Glue image {self.image} ({reason})",
                expected=f"the image {self.image} in the local Docker engine or pullable "
                "from its registry",
                hint=f"Run 'docker pull {self.image}' on a machine with network access (or "
                f"set {IMAGE_ENV} to an image you have). {NO_DOCKER_HINT}") from None

    def _start(self, command: list[str], mounts: Mounts) -> None:
        import docker.errors

        env, hosts = container_environment(self.region, self.emulator_endpoint)
        user = f"{os.getuid()}:{os.getgid()}" if hasattr(os, "getuid") else None
        self.log.info("Glue container %s: %s", self.image, " ".join(command))
        for target, (source, ro) in mounts.binds.items():
            self.log.info("  mount %s -> %s (%s)", source, target, "ro" if ro else "rw")
        try:
            self.container = self._docker.containers.create(
                self.image, command=command, detach=True, environment=env, user=user,
                mounts=mounts.docker_mounts(), working_dir=WORKSPACE,
                extra_hosts=hosts or None, labels={LABEL: self.run_id})
            self.container.start()
        except docker.errors.APIError as e:
            raise HarnessError(f"the Docker engine could not start {self.image} for Glue job "
                               f"{self.job_name} ({e.explanation or e})",
                               file=str(self.script), hint=NO_DOCKER_HINT) from None

    def _wait(self) -> None:
        follower = _LogFollower(self.container, self.log)
        interrupted = False
        try:
            status = self.container.wait()
        except KeyboardInterrupt:
            interrupted = True
            self.log.warning("Glue job %s run %s interrupted; stopping container %s",
                             self.job_name, self.run_id, self.container.short_id)
            raise
        finally:
            follower.finish(timeout=0.0 if interrupted else 10.0)
        code = status.get("StatusCode")
        if code == 0:
            return
        lines = list(follower.lines)
        error = traceback_error(lines) or f"exit code {code}, no Python traceback in its log"
        tail = "\n".join(f"  {line}" for line in lines[-LOG_LINES:]) or "  (no output)"
        raise StepFailed(self.step, f"the Glue script {self.script.name} failed in the Glue "
                         f"container (exit code {code}): {error}", file=str(self.script),
                         hint=f"The container's last log lines ({self.image}):\n{tail}")

    def _release(self) -> None:
        """Stop and remove the container; safe to call repeatedly."""
        container, self.container = self.container, None
        if container is not None:
            stop_and_remove(container, self.log)
        if self._docker is not None:
            self._docker.close()
            self._docker = None
