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


class FakeSlowRunner(StageRunner):
    """Starts writing its output folder atomically, says so, then (``FAKE_SLOW=sleep``)
    waits to be killed."""

    def run(self, request, ctx):
        import time

        from harness.storage import atomic_dir

        out = uris.local_path(request["JsonUri"]).parent / "slow-output"
        with atomic_dir(out) as tmp:
            (tmp / "half-written").write_text("x")
            print("SLOW STEP STARTED", flush=True)
            if os.environ.get("FAKE_SLOW") == "sleep":
                time.sleep(120)
        return {"JsonUri": request["JsonUri"], "Rows": request["Rows"]}


class FakeSlow(FakeScore):
    kind = "fake-slow"
    local_runner = "executor_fakes:FakeSlowRunner"


def build(cfg):
    """A pipeline of fakes whose gate threshold comes from the configuration
    (``evaluate.threshold``), for the CLI's resume tests; with ``FAKE_SLOW`` set a step
    'slow' comes before the gate (``FAKE_SLOW=sleep``: it never ends)."""
    from harness.steps import Chain, Gate
    from harness.workflow import Workflow, run_path

    data = FakeData("data", output_uri=run_path("raw"))
    score = FakeScore("score", json_uri=run_path("eval", "e.json"), value=0.95,
                      rows=data.output()["Rows"])
    steps = [data, score]
    if os.environ.get("FAKE_SLOW"):
        steps.append(FakeSlow("slow", json_uri=run_path("eval", "e.json"), value=0.95,
                              rows=data.output()["Rows"]))
    gate = Gate("gate", json_uri=run_path("eval", "e.json"), metric="metrics.score",
                threshold=cfg.evaluate.threshold, retry_from=score)
    check = FakeCheck("check", expected=gate.output()["Body"]["metrics"]["score"])
    return Workflow("fakes", Chain([*steps, gate, check]))
