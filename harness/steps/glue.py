"""``GlueStartJobRunStep``: run an AWS Glue job (``glue:startJobRun.sync``).

The step owns its Glue job: the ``CreateJob`` body (script, Glue version, workers,
default arguments) is a setup request each backend creates before the run (locally it is
registered for the local Spark runner; in the cloud the job is created or updated), and
the step's request is the ``StartJobRun`` body: the job name and the run's arguments
(strings keyed ``--name``, as Glue passes them to the script).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.placeholders import Placeholder
from harness.steps.base import (
    BuildContext,
    CodeAsset,
    SetupRequest,
    Step,
    absolute,
)

GLUE_VERSIONS = ("5.0", "5.1")
GLUE_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}")
WORKER_TYPES = ("G.025X", "G.1X", "G.2X", "G.4X", "G.8X")


def argument_strings(arguments: dict[str, Any], where: str) -> dict[str, str]:
    """Job arguments as Glue takes them: ``--name`` -> a string (a placeholder becomes its
    text, so a number from an earlier step arrives as "28")."""
    out: dict[str, str] = {}
    for key, value in (arguments or {}).items():
        if not isinstance(key, str) or not key.startswith("--"):
            raise ConfigError("Glue job arguments are named '--name'", field=f"{where}.{key}",
                              expected="a key starting with '--'", got=key)
        if isinstance(value, (dict, list, tuple)) or value is None:
            raise ConfigError("a Glue job argument is a string", field=f"{where}.{key}",
                              expected="a string, number or placeholder", got=value)
        out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


class GlueStartJobRunStep(Step):
    kind = "glue"
    title = "AWS Glue job run"
    local_runner = "local_runners.etl:LocalEtlRunner"
    cacheable = True
    emulator_bridge = "cloud_runners.emulator.bridge:GlueBridge"
    resource = "arn:aws:states:::glue:startJobRun.sync"
    result_fields = ("Id", "JobName", "JobRunState")

    def __init__(self, state_id: str, *, job_name: str, script: str | Path,
                 arguments: dict[str, Any] | None = None, glue_version: str = "5.1",
                 worker_type: str = "G.1X", number_of_workers: int = 2,
                 default_arguments: dict[str, Any] | None = None,
                 expected_hours: float = 0.1, timeout_minutes: int | None = None,
                 comment: str | None = None):
        super().__init__(state_id, comment=comment)
        if not isinstance(job_name, str) or not job_name or isinstance(job_name, Placeholder):
            raise ConfigError("the Glue job needs a fixed name", field=f"{state_id}.job_name",
                              expected="a non-empty string (the job is created once and "
                              "run by every execution)", got=job_name)
        if not GLUE_JOB_NAME.fullmatch(job_name):
            # Glue itself takes almost any text up to 255 characters; the name also
            # names files and IAM resources here, so it is one plain path component
            raise ConfigError("not a usable Glue job name", field=f"{state_id}.job_name",
                              expected="1-255 letters, digits, '-' or '_', starting "
                              "with a letter or digit", got=job_name)
        if glue_version not in GLUE_VERSIONS:
            raise ConfigError("unsupported Glue version", field=f"{state_id}.glue_version",
                              expected=" | ".join(GLUE_VERSIONS), got=glue_version)
        if worker_type not in WORKER_TYPES:
            raise ConfigError("unknown Glue worker type", field=f"{state_id}.worker_type",
                              expected=" | ".join(WORKER_TYPES), got=worker_type)
        if not isinstance(number_of_workers, int) or number_of_workers < 2:
            raise ConfigError("Glue needs at least 2 workers",
                              field=f"{state_id}.number_of_workers", expected="an integer >= 2",
                              got=number_of_workers)
        self.job_name = job_name
        self.script = absolute(script, f"{state_id}.script")
        self.arguments = argument_strings(arguments or {}, f"{state_id}.arguments")
        self.default_arguments = argument_strings(default_arguments or {},
                                                  f"{state_id}.default_arguments")
        self.glue_version = glue_version
        self.worker_type = worker_type
        self.number_of_workers = number_of_workers
        self.expected_hours = expected_hours
        if timeout_minutes is not None and (not isinstance(timeout_minutes, int)
                                            or timeout_minutes < 1):
            raise ConfigError("a Glue job's timeout is a whole number of minutes",
                              field=f"{state_id}.timeout_minutes", expected="an integer >= 1",
                              got=timeout_minutes)
        self.timeout_minutes = timeout_minutes

    @property
    def _script_asset(self) -> CodeAsset:
        return CodeAsset(self.script, f"{self.state_id}/{self.script.name}", "file")

    def code(self) -> list[CodeAsset]:
        return [self._script_asset]

    def cache_inputs(self, request: dict[str, Any]) -> list[Any] | None:
        # StartJobRun names the job, not its script and default arguments (CreateJob does)
        return [self.script, {"default_arguments": self.default_arguments,
                              "glue_version": self.glue_version}]

    def job_definition(self, script_uri: str, role: str | None = None) -> dict[str, Any]:
        """The Glue ``CreateJob`` request."""
        body: dict[str, Any] = {
            "Name": self.job_name,
            "Command": {"Name": "glueetl", "ScriptLocation": script_uri, "PythonVersion": "3"},
            "GlueVersion": self.glue_version,
            "WorkerType": self.worker_type,
            "NumberOfWorkers": self.number_of_workers,
            "DefaultArguments": {"--job-language": "python", **self.default_arguments},
        }
        if self.timeout_minutes is not None:
            body["Timeout"] = self.timeout_minutes
        if role:
            body["Role"] = role
        return body

    def setup_requests(self, code_uris: dict[str, str], ctx: BuildContext
                       ) -> list[SetupRequest]:
        uri = code_uris[self._script_asset.target]
        return [SetupRequest("glue", "CreateJob", self.job_name,
                             self.job_definition(uri, ctx.roles.get("glue")))]

    def request(self, ctx: BuildContext) -> dict[str, Any]:
        return {"JobName": self.job_name, "Arguments": dict(self.arguments)}

    def state_comment(self) -> str:
        return f"Glue job {self.job_name}: {self.comment}"

    def facts(self, output: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"job run": f"{output.get('JobName')} {output.get('Id', '')}"}
        if output.get("Report"):
            out["rows"] = ", ".join(f"{split} {c.get('rows_out', c)}"
                                   for split, c in output["Report"].items()
                                   if isinstance(c, dict))
        return out

    def creates(self, request: dict[str, Any]) -> list[tuple[str, str]]:
        return [("Glue job run", f"of {self.job_name} ({self.number_of_workers} x "
                                 f"{self.worker_type}, Glue {self.glue_version})")]

    def name_prefixes(self) -> dict[str, str]:
        return {"glue-job": self.job_name}

    def cost(self, pricing: Any) -> list[Any]:
        return [pricing.glue(f"Glue job {self.job_name}", self.worker_type,
                             self.number_of_workers, self.expected_hours,
                             field=f"{self.state_id}.worker_type")]
