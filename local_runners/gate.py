"""Local ``gate``: read the JSON file a gate checks (the state machine's
``aws-sdk:s3:getObject`` + ``States.StringToJson``).

The output is ``{"Body": <the parsed file>}``, as in the state machine; the step kind
(``harness.steps.gate.Gate``) compares the metric, so the decision is the same code on
every backend.
"""
from __future__ import annotations

import json
from typing import Any

from harness import uris
from harness.errors import StepFailed
from harness.stages import StageContext, StageRunner

MAX_BYTES = 256 * 1024  # Step Functions' payload limit: the cloud gate could not read more


class LocalGateRunner(StageRunner):
    kind = "gate"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        uri = request.get("Uri")
        if not isinstance(uri, str) or not uri:
            raise StepFailed(ctx.step, "the gate has no file to read", field="Uri",
                             expected="the URI of a JSON file an earlier step wrote")
        path = uris.local_path(uri)
        if not path.is_file():
            raise StepFailed(ctx.step, "the file the gate checks does not exist", file=uri,
                             hint="the step that writes it must run before the gate")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise StepFailed(ctx.step, "the file is too large for a state machine to read",
                             file=uri, expected=f"at most {MAX_BYTES} bytes", got=size)
        try:
            body = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise StepFailed(ctx.step, f"the file is not valid JSON ({e})", file=uri) from None
        ctx.log.info("gate read %s", uri)
        return {"Body": body}
