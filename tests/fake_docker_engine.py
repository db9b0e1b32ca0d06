"""A test double of the Docker Engine HTTP API on a unix socket, so the real Docker SDK is
exercised over real HTTP without a Docker engine.

It implements what ``local_runners.serve_container`` (through the SDK) calls: ping,
version, image inspect and pull, container create/start/inspect/logs/stop/wait/remove.
"Running" a container runs what the tensorflow/serving image would, with the embedded model
server standing in for ``tensorflow_model_server``: ``--model-dir`` is the host path bound at
``/models/$MODEL_NAME``, the REST port is the host binding of 8501/tcp (a free port when
none is given), and ``--enable_batching`` / ``--batching_parameters_file`` are translated.
A container of AWS's Glue image (``aws-glue-libs`` in its name, or one of ``glue_images``)
runs its ``spark-submit <script> args...`` with this venv's python through
``local_runners.glue_compat.run_script`` (local Spark; the awsglue compatibility layer when
the script uses GlueContext & co.), container paths mapped back to the host mounts;
``logs?follow=1`` streams the output until the container exits.

    with FakeDockerEngine(images={"tensorflow/serving:2.19.0"}) as engine:
        monkeypatch.setenv("DOCKER_HOST", engine.url)
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web

PROJECT = Path(__file__).resolve().parent.parent
API_VERSION = "1.45"
REST_PORT = "8501/tcp"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


@dataclass
class FakeContainer:
    id: str
    name: str
    body: dict[str, Any]                 # the JSON body of POST /containers/create
    log_path: Path
    proc: subprocess.Popen | None = None
    argv: list[str] = field(default_factory=list)
    host_binding: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.body.get("Env") or [])

    def host_path(self, container_path: str) -> Path | None:
        """The host path of a file or dir inside the container, through its bind mounts."""
        host_config = self.body.get("HostConfig") or {}
        binds = [(m["Source"], m["Target"]) for m in host_config.get("Mounts") or []
                 if m.get("Type") == "bind"]
        binds += [tuple(b.split(":")[:2]) for b in host_config.get("Binds") or []]
        for source, target in binds:
            if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
                return Path(source) / container_path[len(target):].lstrip("/")
        return None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def exit_code(self) -> int:
        return 0 if self.proc is None or self.proc.poll() is None else self.proc.returncode

    def inspect(self) -> dict[str, Any]:
        status = ("running" if self.running else "exited" if self.proc else "created")
        return {"Id": self.id, "Name": "/" + self.name, "Image": "sha256:" + "0" * 64,
                "Config": {"Image": self.body.get("Image"), "Env": self.body.get("Env"),
                           "Cmd": self.body.get("Cmd"), "Labels": self.body.get("Labels") or {},
                           "Tty": False},
                "State": {"Status": status, "Running": self.running,
                          "ExitCode": self.exit_code, "Pid": self.proc.pid if self.running else 0},
                "HostConfig": self.body.get("HostConfig") or {},
                "NetworkSettings": {"Ports": {REST_PORT: [self.host_binding]}
                                    if self.running and self.host_binding else {}}}


class FakeDockerEngine:
    """The engine: ``images`` present locally; ``pull_error`` makes pulls fail (as an HTTP
    500, or inside the progress stream with ``pull_error_in_stream``)."""

    def __init__(self, images: set[str] | None = None):
        self.images: set[str] = set(images or ())
        self.pull_error: str | None = None
        self.pull_error_in_stream = False
        self.pulls: list[str] = []
        self.pull_layers = {"a1b2c3": 30_000_000, "d4e5f6": 12_000_000}   # layer id -> bytes
        self.created: list[dict[str, Any]] = []        # create bodies, in order
        self.containers: dict[str, FakeContainer] = {}
        self.removed: list[str] = []
        self.glue_images: set[str] = set()             # besides names with aws-glue-libs
        self._dir = Path(tempfile.mkdtemp(prefix="fakedocker-"))  # short: sun_path limit
        self.socket_path = self._dir / "docker.sock"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.routes = [
            ("GET", r"/_ping", self.ping), ("HEAD", r"/_ping", self.ping),
            ("GET", r"/version", self.version),
            ("GET", r"/images/(?P<name>.+)/json", self.image_inspect),
            ("POST", r"/images/create", self.image_pull),
            ("POST", r"/containers/create", self.container_create),
            ("POST", r"/containers/(?P<id>[^/]+)/start", self.container_start),
            ("GET", r"/containers/(?P<id>[^/]+)/json", self.container_inspect),
            ("GET", r"/containers/(?P<id>[^/]+)/logs", self.container_logs),
            ("POST", r"/containers/(?P<id>[^/]+)/stop", self.container_stop),
            ("POST", r"/containers/(?P<id>[^/]+)/wait", self.container_wait),
            ("DELETE", r"/containers/(?P<id>[^/]+)", self.container_remove),
        ]

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    # --------------------------------------------------------------- life cycle

    def start(self) -> "FakeDockerEngine":
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            app.router.add_route("*", "/{path:.*}", self.dispatch)
            runner = web.AppRunner(app)
            self._loop.run_until_complete(runner.setup())
            self._loop.run_until_complete(web.UnixSite(runner, str(self.socket_path)).start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="fake-docker-engine", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"the fake Docker engine did not start on {self.socket_path}")
        return self

    def stop(self) -> None:
        for c in self.containers.values():
            if c.running:
                c.proc.kill()
                c.proc.wait()
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "FakeDockerEngine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def running_containers(self) -> list[FakeContainer]:
        return [c for c in self.containers.values() if c.running]

    # --------------------------------------------------------------- routing

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = re.sub(r"^/v\d+\.\d+(?=/)", "", request.path)   # /v1.45/containers/...
        for method, pattern, handler in self.routes:
            m = re.fullmatch(pattern, path)
            if m and request.method == method:
                return await handler(request, **m.groupdict())
        return _error(404, f"page not found: {request.method} {request.path}")

    def _container(self, ident: str) -> FakeContainer:
        for c in self.containers.values():
            if ident in (c.id, c.name):
                return c
        raise web.HTTPNotFound(text=json.dumps({"message": f"No such container: {ident}"}),
                               content_type="application/json")

    # --------------------------------------------------------------- system, images

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(text="OK", headers={"Api-Version": API_VERSION})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"ApiVersion": API_VERSION, "MinAPIVersion": "1.24",
                                  "Version": "fake", "Os": "linux", "Arch": "amd64"})

    async def image_inspect(self, request: web.Request, name: str) -> web.Response:
        if name not in self.images:
            return _error(404, f"No such image: {name}")
        return web.json_response({"Id": "sha256:" + hashlib.sha256(name.encode()).hexdigest(),
                                  "RepoTags": [name]})

    async def image_pull(self, request: web.Request) -> web.StreamResponse:
        name = f"{request.query['fromImage']}:{request.query.get('tag') or 'latest'}"
        self.pulls.append(name)
        if self.pull_error and not self.pull_error_in_stream:
            return _error(500, self.pull_error)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(json.dumps({"status": f"Pulling from {name}"}).encode() + b"\r\n")
        if self.pull_error:
            await resp.write(json.dumps({"errorDetail": {"message": self.pull_error},
                                         "error": self.pull_error}).encode() + b"\r\n")
        else:
            for layer, size in self.pull_layers.items():   # as Docker streams a pull
                for current in (size // 2, size):
                    await resp.write(json.dumps({
                        "status": "Downloading", "id": layer, "progress": "[==>  ]",
                        "progressDetail": {"current": current, "total": size}}).encode()
                        + b"\r\n")
                await resp.write(json.dumps({"status": "Pull complete", "id": layer,
                                             "progressDetail": {}}).encode() + b"\r\n")
            self.images.add(name)
            await resp.write(json.dumps({"status": f"Downloaded newer image for {name}"}
                                        ).encode() + b"\r\n")
        await resp.write_eof()
        return resp

    # --------------------------------------------------------------- containers

    async def container_create(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.created.append(body)
        if body.get("Image") not in self.images:
            return _error(404, f"No such image: {body.get('Image')}")
        cid = uuid.uuid4().hex + uuid.uuid4().hex
        name = request.query.get("name") or f"fake_{cid[:8]}"
        self.containers[cid] = FakeContainer(cid, name, body, self._dir / f"{cid}.log")
        return web.json_response({"Id": cid, "Warnings": []}, status=201)

    async def container_start(self, request: web.Request, id: str) -> web.Response:
        c = self._container(id)
        if c.running:
            return web.Response(status=304)
        if self.is_glue_image(c.body.get("Image") or ""):
            return self._start_glue(c)
        bindings = ((c.body.get("HostConfig") or {}).get("PortBindings") or {}).get(REST_PORT)
        host, port = "127.0.0.1", 0
        if bindings:
            host = bindings[0].get("HostIp") or "0.0.0.0"
            port = int(bindings[0].get("HostPort") or 0)
        if port:
            try:
                with socket.socket() as s:
                    s.bind((host, port))
            except OSError:
                return _error(500, f"driver failed programming external connectivity on "
                              f"endpoint {c.name}: Bind for {host}:{port} failed: port is "
                              f"already allocated")
        port = port or free_port(host)
        c.argv = self._model_server_argv(c, host, port)
        c.host_binding = {"HostIp": host, "HostPort": str(port)}
        with open(c.log_path, "ab") as log:
            c.proc = subprocess.Popen(c.argv, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, cwd=PROJECT)
        return web.Response(status=204)

    def _model_server_argv(self, c: FakeContainer, host: str, port: int) -> list[str]:
        """tensorflow_model_server's command line, for the embedded model server."""
        name = c.env.get("MODEL_NAME", "model")
        model_dir = c.host_path(f"/models/{name}") or Path("/nonexistent/models") / name
        flags = dict(a.removeprefix("--").split("=", 1) for a in c.body.get("Cmd") or []
                     if a.startswith("--") and "=" in a)
        argv = [sys.executable, "-m", "local_runners.model_server", "--model-dir",
                str(model_dir), "--model-name", name, "--host", host, "--port", str(port)]
        if flags.get("enable_batching") == "true":
            params_file = c.host_path(flags.get("batching_parameters_file", "")) \
                if flags.get("batching_parameters_file") else None
            params = dict(re.findall(r"(\w+)\s*\{\s*value:\s*(\d+)\s*\}",
                                     params_file.read_text())) if params_file else {}
            argv += ["--max-batch-size", params.get("max_batch_size", "32"),
                     "--batch-timeout-micros", params.get("batch_timeout_micros", "1000")]
        else:
            argv += ["--max-batch-size", "0"]      # TF Serving does not batch by default
        if "file_system_poll_wait_seconds" in flags:
            argv += ["--poll-seconds", flags["file_system_poll_wait_seconds"]]
        return argv

    # --------------------------------------------------------------- the Glue image

    def is_glue_image(self, image: str) -> bool:
        return "aws-glue-libs" in image or image in self.glue_images

    def _start_glue(self, c: FakeContainer) -> web.Response:
        c.argv = self._glue_argv(c)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(c.env)
        env["PYTHONPATH"] = str(PROJECT)
        with open(c.log_path, "ab") as log:
            c.proc = subprocess.Popen(c.argv, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, cwd=PROJECT, env=env)
        return web.Response(status=204)

    def _to_host(self, c: FakeContainer, arg: str) -> str:
        """A container path (plain or file://) as the host path of its mount."""
        uri = arg.startswith("file://")
        host = c.host_path(unquote(arg[7:]) if uri else arg) if uri or arg[:1] == "/" else None
        return arg if host is None else "file://" + quote(str(host)) if uri else str(host)

    def _glue_argv(self, c: FakeContainer) -> list[str]:
        """``spark-submit [--opt value]... <script> args...`` -> run_script <script> args."""
        cmd = list(c.body.get("Cmd") or [])
        assert cmd[:1] == ["spark-submit"], f"fake Glue image: not spark-submit: {cmd}"
        rest = cmd[1:]
        while rest and rest[0].startswith("--"):   # spark-submit's own options
            rest = rest[2:]
        return [sys.executable, "-m", "local_runners.glue_compat.run_script",
                *(self._to_host(c, a) for a in rest)]

    async def _follow_logs(self, request: web.Request, c: FakeContainer
                           ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={
            "Content-Type": "application/vnd.docker.multiplexed-stream"})
        await resp.prepare(request)
        offset, pending = 0, b""
        while True:
            done = not c.running
            data = c.log_path.read_bytes()[offset:] if c.log_path.exists() else b""
            offset += len(data)
            *lines, pending = (pending + data).split(b"\n")
            if done and pending:
                lines, pending = [*lines, pending], b""
            for line in lines:
                line += b"\n"
                await resp.write(struct.pack(">BxxxL", 1, len(line)) + line)
            if done:
                break
            await asyncio.sleep(0.05)
        await resp.write_eof()
        return resp

    async def container_inspect(self, request: web.Request, id: str) -> web.Response:
        return web.json_response(self._container(id).inspect())

    async def container_logs(self, request: web.Request, id: str) -> web.StreamResponse:
        c = self._container(id)
        if request.query.get("follow") in ("1", "true", "True"):
            return await self._follow_logs(request, c)
        lines = c.log_path.read_bytes().splitlines(keepends=True) if c.log_path.exists() else []
        tail = request.query.get("tail", "all")
        if tail != "all":
            lines = lines[-int(tail):] if int(tail) > 0 else []
        # Non-TTY containers' logs are multiplexed: an 8-byte header (stream 1 = stdout).
        frames = b"".join(struct.pack(">BxxxL", 1, len(line)) + line for line in lines)
        return web.Response(body=frames,
                            content_type="application/vnd.docker.multiplexed-stream")

    async def container_stop(self, request: web.Request, id: str) -> web.Response:
        c = self._container(id)
        if not c.running:
            return web.Response(status=304)
        c.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(c.proc.wait, float(request.query.get("t", 10)))
        except subprocess.TimeoutExpired:
            c.proc.kill()
            await asyncio.to_thread(c.proc.wait)
        return web.Response(status=204)

    async def container_wait(self, request: web.Request, id: str) -> web.Response:
        c = self._container(id)
        if c.proc is not None:
            await asyncio.to_thread(c.proc.wait)
        return web.json_response({"StatusCode": c.exit_code, "Error": None})

    async def container_remove(self, request: web.Request, id: str) -> web.Response:
        c = self._container(id)
        if c.running:
            if request.query.get("force") not in ("1", "true", "True"):
                return _error(409, f"cannot remove container {c.id}: container is running: "
                              "stop the container before removing or force remove")
            c.proc.kill()
            await asyncio.to_thread(c.proc.wait)
        del self.containers[c.id]
        self.removed.append(c.id)
        c.log_path.unlink(missing_ok=True)
        return web.Response(status=204)
