"""Local backend for ``processing``: execute a SageMaker ``CreateProcessingJob`` request.

Does what SageMaker Processing does with the container, on this machine, with ``file://``
URIs in place of S3:

1. a private job folder stands for the container's filesystem; every ``LocalPath`` of
   the request (``/opt/ml/processing/...``, inputs and outputs) is a folder under it,
   as is ``/opt/ml/output`` (where a container leaves its exit message);
2. each input's ``S3Uri`` (S3Prefix semantics: a single file lands as
   ``LocalPath/<its name>``, a folder's files keep their relative paths) is copied to its
   ``LocalPath``;
3. every declared path in ``ContainerEntrypoint``, ``ContainerArguments`` and the
   ``Environment`` values is rewritten to its folder (longest first);
4. the entry point runs: ``python``/``python3`` + a ``.py`` file in this process
   (``local_runners.script_process``, like the training script), anything else as a
   subprocess with this Python first on ``PATH``; its output lines go to the step log;
5. only when it succeeds, each output's ``LocalPath`` is published to its ``S3Uri``
   (atomically; an existing destination is an error, checked before the job starts);
   when it fails, the StepFailed names the job, the script's error (the last stderr
   line, or its exception; job-folder paths as the container's) and the exit code.

The output is the shape of ``DescribeProcessingJob``. ``StoppingCondition`` is enforced
for subprocesses only (a script in this process cannot be stopped).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from harness import uris
from harness.errors import HarnessError, StepFailed
from harness.stages import StageContext, StageRunner
from harness.storage import atomic_dir
from local_runners.script_process import ScriptFailed, run_script

EXIT_MESSAGE_DIR = "/opt/ml/output"  # a container writes its ExitMessage to <this>/message
EXIT_MESSAGE_BYTES = 1024
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")


def _required(node: Any, path: str, what: str = "the processing request") -> Any:
    for i, key in enumerate(path.split(".")):
        if not isinstance(node, dict) or node.get(key) in (None, "", []):
            raise HarnessError(f"{what} lacks a required field",
                               field=".".join(path.split(".")[: i + 1]),
                               expected="a SageMaker CreateProcessingJob request "
                               "(harness.steps.ProcessingStep)")
        node = node[key]
    return node


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def _container_path(path: Any, field: str) -> str:
    p = PurePosixPath(str(path))
    if not p.is_absolute() or ".." in p.parts or str(p) == "/":
        raise HarnessError("a LocalPath is an absolute container path", field=field,
                           expected="e.g. /opt/ml/processing/input/data", got=path)
    return str(p)


def _container_names(text: str, root: Path) -> str:
    """The job folder's paths in ``text`` as the container's (``/opt/ml/...``), as a
    message from the container names them."""
    return text.replace(str(root) + "/", "/").replace(str(root), "/")


class _Job:
    """The request's inputs and outputs, checked, with their folders in the job folder."""

    def __init__(self, request: dict[str, Any]):
        self.name = _required(request, "ProcessingJobName")
        app = _required(request, "AppSpecification")
        self.entrypoint = [str(a) for a in _required(request, "AppSpecification."
                                                     "ContainerEntrypoint")]
        self.arguments = [str(a) for a in app.get("ContainerArguments") or []]
        self.environment = {str(k): str(v) for k, v in (request.get("Environment") or {}).items()}
        self.inputs: list[tuple[str, Path, str, str]] = []  # (name, source, local path, field)
        for i, item in enumerate(request.get("ProcessingInputs") or []):
            field = f"ProcessingInputs[{i}]"
            s3 = item.get("S3Input") if isinstance(item, dict) else None
            if not isinstance(s3, dict):
                raise HarnessError("only S3Input processing inputs run locally",
                                   field=f"{field}.S3Input",
                                   expected="{S3Uri, LocalPath, S3DataType: S3Prefix}")
            data_type = s3.get("S3DataType", "S3Prefix")
            if data_type != "S3Prefix" or s3.get("S3InputMode", "File") != "File":
                raise HarnessError("unsupported processing input", field=f"{field}.S3Input",
                                   expected="S3DataType S3Prefix, S3InputMode File",
                                   got=f"{data_type}, {s3.get('S3InputMode')}")
            self.inputs.append((str(item.get("InputName") or f"input-{i}"),
                                uris.local_path(_required(s3, "S3Uri", field)),
                                _container_path(_required(s3, "LocalPath", field),
                                                f"{field}.S3Input.LocalPath"), field))
        self.outputs: list[tuple[str, Path, str]] = []  # (name, destination, local path)
        outputs = (request.get("ProcessingOutputConfig") or {}).get("Outputs") or []
        for i, item in enumerate(outputs):
            field = f"ProcessingOutputConfig.Outputs[{i}]"
            s3 = _required(item, "S3Output", field)
            self.outputs.append((str(item.get("OutputName") or f"output-{i}"),
                                 uris.local_path(_required(s3, "S3Uri", field)),
                                 _container_path(_required(s3, "LocalPath", field),
                                                 f"{field}.S3Output.LocalPath")))
        self.local_paths = sorted({i[2] for i in self.inputs} | {o[2] for o in self.outputs}
                                  | {EXIT_MESSAGE_DIR}, key=len, reverse=True)

    def rewriter(self, root: Path) -> Callable[[str], str]:
        """Replace every declared container path by its folder under ``root`` (one pass,
        longest first; a path counts only as a whole path component)."""
        pattern = re.compile(r"(?<![\w.\-/])(" + "|".join(map(re.escape, self.local_paths))
                             + r")(?=/|$|[^\w.\-])")
        return lambda text: pattern.sub(lambda m: str(root) + m.group(1), text)


class LocalProcessingRunner(StageRunner):
    kind = "processing"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        job = _Job(request)
        for oname, dest, _ in job.outputs:
            if dest.exists():
                raise StepFailed(ctx.step, f"processing job {job.name}: output '{oname}' "
                                 "already exists; refusing to overwrite it", file=str(dest),
                                 hint="job names and output locations are unique per run; "
                                 "start a new run")
        for iname, source, _, field in job.inputs:
            if not source.exists():
                raise StepFailed(ctx.step, f"processing job {job.name} failed: input "
                                 f"'{iname}' not found", file=str(source),
                                 field=f"{field}.S3Input.S3Uri",
                                 expected="an existing file or folder (an earlier step's "
                                 "output)")

        start = time.time()
        ctx.log.info("processing job %s: %s", job.name, " ".join(job.entrypoint))
        with ctx.progress.task(f"processing job {job.name}", total=None) as task, \
                tempfile.TemporaryDirectory(prefix=f"mlharness-processing-{job.name[:40]}-") \
                as tmp:
            root = Path(tmp) / "container"
            folder = lambda local_path: root / local_path.lstrip("/")  # noqa: E731
            task.update(description=f"  processing job {job.name}: copying inputs")
            for _, source, local_path, _ in job.inputs:
                self._copy_in(source, folder(local_path))
            for local_path in job.local_paths:
                folder(local_path).mkdir(parents=True, exist_ok=True)
            rewrite = job.rewriter(root)
            entrypoint = [rewrite(a) for a in job.entrypoint]
            arguments = [rewrite(a) for a in job.arguments]
            environment = {k: rewrite(v) for k, v in job.environment.items()}
            task.update(description=f"  processing job {job.name}: running")
            self._execute(job.name, entrypoint, arguments, environment, root,
                          request.get("StoppingCondition") or {}, ctx)
            exit_message = self._exit_message(folder(EXIT_MESSAGE_DIR))
            task.update(description=f"  processing job {job.name}: uploading outputs")
            for oname, dest, local_path in job.outputs:
                with atomic_dir(dest) as staged:
                    for item in folder(local_path).iterdir():
                        shutil.move(str(item), str(staged / item.name))
                ctx.log.info("processing job %s: output '%s' -> %s", job.name, oname,
                             uris.file_uri(dest))
        end = time.time()
        ctx.log.info("processing job %s completed in %.1f s", job.name, end - start)
        out = {
            "ProcessingJobName": job.name,
            "ProcessingJobArn": f"arn:aws:sagemaker:local:000000000000:processing-job/"
                                f"{job.name}",
            "ProcessingJobStatus": "Completed",
            "ProcessingInputs": request.get("ProcessingInputs") or [],
            "ProcessingOutputConfig": request.get("ProcessingOutputConfig") or {"Outputs": []},
            "ProcessingResources": request.get("ProcessingResources") or {},
            "AppSpecification": request["AppSpecification"],
            "StoppingCondition": request.get("StoppingCondition") or {},
            "Environment": dict(request.get("Environment") or {}),
            "ProcessingStartTime": _iso(start),
            "ProcessingEndTime": _iso(end),
            "ExitMessage": exit_message,
        }
        if request.get("RoleArn"):
            out["RoleArn"] = request["RoleArn"]
        return out

    # -- pieces ---------------------------------------------------------------------------

    @staticmethod
    def _copy_in(source: Path, target: Path) -> None:
        """S3Prefix semantics: a file lands as ``target/<its name>``, a folder's files keep
        their relative paths under ``target``."""
        target.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target / source.name)

    @staticmethod
    def _exit_message(directory: Path) -> str:
        path = directory / "message"
        if not path.is_file():
            return ""
        return path.read_bytes()[:EXIT_MESSAGE_BYTES].decode("utf-8", "replace")

    def _execute(self, name: str, entrypoint: list[str], arguments: list[str],
                 environment: dict[str, str], root: Path, stopping: dict[str, Any],
                 ctx: StageContext) -> None:
        def on_line(line: str) -> None:
            ctx.log.info("%s", line)

        in_process = (len(entrypoint) >= 2 and _PYTHON.match(Path(entrypoint[0]).name)
                      and entrypoint[1].endswith(".py") and not entrypoint[1].startswith("-"))
        if in_process:
            script = Path(entrypoint[1])
            if not script.is_file():
                raise StepFailed(ctx.step, f"processing job {name} failed: the entry point "
                                 "script is not in the container", file=str(script),
                                 field="AppSpecification.ContainerEntrypoint",
                                 expected="a script under one of the inputs' LocalPath "
                                 "(the code input)")
            try:
                run_script(script, [str(script), *entrypoint[2:], *arguments], environment,
                           source=script.parent, cwd=root, on_stdout=on_line,
                           on_stderr=on_line)
            except ScriptFailed as e:
                if e.traceback:
                    ctx.log.error("%s", e.traceback)
                raise StepFailed(ctx.step, f"processing job {name} failed: "
                                 f"{_container_names(e.detail, root)}",
                                 hint=f"exit code {e.exit_code}; the step log has the full "
                                 "output") from None
            return
        code, tail = self._subprocess([*entrypoint, *arguments], environment, root,
                                      stopping.get("MaxRuntimeInSeconds"), on_line)
        if code != 0:
            detail = _container_names(tail[-1], root) if tail else f"exit code {code}"
            if code is None:
                detail = (f"stopped after MaxRuntimeInSeconds "
                          f"({stopping.get('MaxRuntimeInSeconds')} s)")
            raise StepFailed(ctx.step, f"processing job {name} failed: {detail}",
                             hint=f"exit code {code}; the step log has the full output")

    @staticmethod
    def _subprocess(command: list[str], environment: dict[str, str], cwd: Path,
                    max_runtime: Any, on_line: Callable[[str], None]
                    ) -> tuple[int | None, list[str]]:
        """Run ``command``; lines to ``on_line``; (exit code or None if stopped, the last
        non-blank stderr lines)."""
        env = {**os.environ, **environment}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                       env.get("PATH", os.defpath)])
        try:
            proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, errors="replace")
        except OSError as e:
            raise HarnessError(f"cannot start the processing container's entry point ({e})",
                               field="AppSpecification.ContainerEntrypoint",
                               got=command[0]) from None
        tail: list[str] = []

        def pump(stream: Any, is_err: bool) -> None:
            for line in stream:
                line = line.rstrip("\r\n")
                if is_err and line.strip():
                    tail[:] = (tail + [line])[-5:]
                on_line(line)

        readers = [threading.Thread(target=pump, args=(proc.stdout, False), daemon=True),
                   threading.Thread(target=pump, args=(proc.stderr, True), daemon=True)]
        for r in readers:
            r.start()
        try:
            code: int | None = proc.wait(timeout=float(max_runtime) if max_runtime else None)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        for r in readers:
            r.join()
        return code, tail
