"""Local backend for ``start-execution`` (``harness.steps.start_execution``): the started
pipeline runs as ``harness run`` with the request's configuration, in a child process (its
TensorFlow and Spark memory is returned when it ends), and the step waits for it.

Its output lines go to this step's log; the output names the new run
(``ExecutionArn``: ``local:run:<run id>``, ``RunId``, ``Status``). A failed child run (a
step failed, or its gate kept the new model from being deployed) is reported in the
output, not raised: starting the run was this step's job, as on Step Functions, where
``states:startExecution`` succeeds whatever the started execution does later.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness.config import PROJECT_ROOT
from harness.errors import StepFailed
from harness.runs import RunStore
from harness.stages import StageContext, StageRunner, required_field


class LocalStartExecutionRunner(StageRunner):
    kind = "start-execution"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        config = required_field(request, "Config", what="the start-execution request",
                                expected="the started pipeline's configuration")
        name = request.get("StateMachineName") or "pipeline"
        config = {**config, "backend": "local"}
        config["deploy"] = {**config.get("deploy", {}), "keep_serving": False}
        store = RunStore(Path(config.get("runs_dir") or ctx.config.runs_path()))
        before = set(store.list_ids())
        started = dt.datetime.now(dt.timezone.utc)
        with tempfile.TemporaryDirectory(prefix="mlharness-start-") as tmp:
            cfg_file = Path(tmp) / "config.json"   # JSON is YAML: `--config` reads it
            cfg_file.write_text(json.dumps(config))
            cmd = [sys.executable, "-m", "harness.cli", "run", "--config", str(cfg_file)]
            ctx.announce(f"{ctx.step}: starting {name} as a local run (harness run, "
                         "waiting for it)")
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
            with subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, errors="replace") as p:
                assert p.stdout is not None
                last = ""
                for line in p.stdout:
                    line = line.rstrip()
                    if line:
                        ctx.log.info("%s", line)
                        last = line
                code = p.wait()
        new = sorted(r for r in store.list_ids() if r not in before)
        if not new:
            raise StepFailed(ctx.step, f"the started run of {name} did not begin (exit code "
                             f"{code}): {last}", hint="the step's log has its output")
        run_id = new[-1]
        status = "SUCCEEDED" if code == 0 else "FAILED"
        ctx.announce(f"{ctx.step}: run {run_id} of {name} {status}"
                     + ("" if code == 0 else f" ({last})"))
        return {"ExecutionArn": f"local:run:{run_id}", "RunId": run_id, "Status": status,
                "StartDate": started.isoformat(), "ExitCode": code}
