"""Stand-in step kinds for the executor's own tests (records, failure, resume, gate).

They are defined here, outside the package, the way a user adds a step kind: a Step
subclass naming its local runner by dotted path. No Spark or TensorFlow.
"""
import json
import os

from harness import uris
from harness.errors import DataError
from harness.stages import StageRunner
from harness.steps.base import AFTER, BEFORE, Step, task_state

CALLS: list[str] = []


class FakeData(Step):
    kind = "fake-data"
    placement = BEFORE
    local_runner = "executor_fakes:FakeDataRunner"

    def __init__(self, state_id, *, output_uri):
        super().__init__(state_id)
        self.output_uri = output_uri

    def request(self, ctx):
        return {"OutputUri": self.output_uri}

    def facts(self, output):
        return {"rows": output["Rows"]}


class FakeDataRunner(StageRunner):
    def run(self, request, ctx):
        CALLS.append(ctx.step)
        ctx.log.info("prepared")
        return {"RawUri": request["OutputUri"], "Rows": 10}


class FakeScore(Step):
    """Writes {"metrics": {"score": value}} to a JSON file (a gate reads it)."""

    kind = "fake-score"
    local_runner = "executor_fakes:FakeScoreRunner"
    result_fields = ("JsonUri",)

    def __init__(self, state_id, *, json_uri, value, rows=None):
        super().__init__(state_id)
        self.json_uri, self.value, self.rows = json_uri, value, rows

    def request(self, ctx):
        return {"JsonUri": self.json_uri, "Value": self.value, "Rows": self.rows}

    def states(self, ctx, next_state):
        return {self.state_id: task_state("arn:aws:states:::aws-sdk:s3:putObject",
                                          self.parameters(ctx), self.result_key, next_state,
                                          "fake")}


class FakeScoreRunner(StageRunner):
    def run(self, request, ctx):
        CALLS.append(ctx.step)
        if os.environ.get("FAKE_FAIL") == ctx.step:
            raise DataError("corrupt input", file="raw/train/part-00000.parquet")
        value = float(os.environ.get("FAKE_SCORE", request["Value"]))
        ctx.registry.setdefault("fake:scores", {})[ctx.step] = value
        path = uris.local_path(request["JsonUri"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"metrics": {"score": value}}))
        return {"JsonUri": request["JsonUri"], "Rows": request["Rows"]}

    def replay(self, request, output, ctx):
        ctx.registry.setdefault("fake:scores", {})[ctx.step] = "replayed"


class FakeCheck(Step):
    kind = "fake-check"
    placement = AFTER
    local_runner = "executor_fakes:FakeCheckRunner"

    def __init__(self, state_id, *, expected):
        super().__init__(state_id)
        self.expected = expected

    def request(self, ctx):
        return {"Expected": self.expected}

    def headline(self, output):
        return {"checked": output["Seen"]}


class FakeCheckRunner(StageRunner):
    def run(self, request, ctx):
        CALLS.append(ctx.step)
        return {"Seen": request["Expected"], "Registry": ctx.registry.get("fake:scores")}
