"""The design holds: step kinds defined here, outside the package, chain into a pipeline
that runs locally, compiles to ASL that passes the project's checks, and SUCCEEDS on the
embedded emulator, with no edit to harness/, local_runners/ or cloud_runners/.

- ``DigitStatsStep``: a processing step with its own small script (digit_stats.py);
- ``CopyObjectStep``: a brand-new kind: copies a file of the run. Locally its runner (in
  this module) copies the file; in the state machine it is ``aws-sdk:s3:copyObject``.
"""
import json
import shutil
from pathlib import Path

import pytest

from harness import uris
from harness.asl_check import validate
from harness.config import load_config
from harness.errors import StepFailed
from harness.placeholders import BASE_URI, BUCKET_KEY, PREFIX_KEY, Placeholder
from harness.stages import StageRunner
from harness.steps import (Gate, PrepareDataStep, ProcessingInput, ProcessingOutput,
                           ProcessingStep)
from harness.steps.base import Step, selector, task_state
from harness.workflow import Workflow, run_path

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse AWS.{2}S3.{2}BucketPolicy")


class DigitStatsStep(ProcessingStep):
    kind = "digit-stats"
    title = "statistics of the raw digits"

    def __init__(self, state_id, *, raw, output):
        super().__init__(
            state_id, job_name="digit-stats", code=HERE / "digit_stats.py",
            inputs=[ProcessingInput(raw, "/opt/ml/processing/input/raw", "raw")],
            outputs=[ProcessingOutput("/opt/ml/processing/stats", output, "stats")],
            arguments=["--raw", "/opt/ml/processing/input/raw",
                       "--output", "/opt/ml/processing/stats"],
            instance_type="ml.m5.large")

    def headline(self, output):
        return {}


class CopyObjectStep(Step):
    kind = "copy-object"
    title = "copy a file of the run"
    local_runner = f"{__name__}:CopyObjectRunner"
    result_fields = ("CopyObjectResult",)

    def __init__(self, state_id, *, source: str, target: str):
        super().__init__(state_id)
        self.source, self.target = source, target

    def request(self, ctx):
        return {"Source": self.source, "Target": self.target}

    @staticmethod
    def _key(uri: str) -> str:
        base = str(BASE_URI) + "/"
        assert uri.startswith(base), "run paths only"
        return f"{Placeholder(f'$.{PREFIX_KEY}')}/{uri[len(base):]}"

    def states(self, ctx, next_state):
        from harness.placeholders import asl_parameters
        params = asl_parameters({
            "Bucket": Placeholder(f"$.{BUCKET_KEY}"),
            "CopySource": f"{Placeholder(f'$.{BUCKET_KEY}')}/{self._key(self.source)}",
            "Key": self._key(self.target)})
        return {self.state_id: task_state("arn:aws:states:::aws-sdk:s3:copyObject", params,
                                          self.result_key, next_state, self.title,
                                          selector(self.result_fields))}

    def facts(self, output):
        return {"copied": True}


class CopyObjectRunner(StageRunner):
    def run(self, request, ctx):
        src, dst = uris.local_path(request["Source"]), uris.local_path(request["Target"])
        if not src.is_file():
            raise StepFailed(ctx.step, "nothing to copy", file=request["Source"])
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        return {"CopyObjectResult": {"ETag": "local"}}


def workflow(min_rows: int) -> Workflow:
    prepare = PrepareDataStep("prepare", output_uri=run_path("raw"), source="fixture")
    stats = DigitStatsStep("stats", raw=run_path("raw"), output=run_path("evaluation"))
    publish = CopyObjectStep("publish", source=run_path("evaluation", "stats.json"),
                             target=run_path("evaluation", "published", "stats.json"))
    gate = Gate("enough-rows", json_uri=run_path("evaluation", "published", "stats.json"),
                metric="train_rows", threshold=min_rows)
    return Workflow("custom-kinds", prepare >> stats >> publish >> gate)


@pytest.fixture
def cfg(tmp_path):
    return load_config(overrides={"runs_dir": str(tmp_path / "runs"), "data.source": "fixture",
                                  "cloud.poll_seconds": 0.2})


def test_it_runs_locally_and_compiles_to_valid_asl(cfg):
    wf = workflow(min_rows=1000)
    result = wf.run("local", config=cfg)
    assert result.record.status == "SUCCEEDED"
    published = result.run_dir / "evaluation" / "published" / "stats.json"
    assert json.loads(published.read_text())["train_rows"] == 4000
    assert result.output("enough-rows")["Body"]["train_rows"] == 4000
    definition = wf.definition()
    assert validate(definition) == []
    assert definition["States"]["publish"]["Resource"] == "arn:aws:states:::aws-sdk:s3:copyObject"
    assert definition["States"]["stats"]["Parameters"]["AppSpecification"][
        "ContainerEntrypoint"] == ["python3", "/opt/ml/processing/input/code/digit_stats.py"]
    assert wf.name_prefixes()["processing-job"] == "digit-stats"


@pytest.mark.slow
def test_it_succeeds_on_the_emulator_and_its_gate_stops_it_when_unmet(cfg):
    ok = workflow(min_rows=1000).run("emulator", config=cfg)
    assert ok.record.status == "SUCCEEDED"
    assert [s.status for s in ok.record.steps] == ["SUCCEEDED"] * 4
    assert ok.output("enough-rows")["Body"]["splits"]["test"]["rows"] == 500
    events = json.loads((ok.run_dir / "execution.json").read_text())["events"]
    assert [e["step"] for e in events if e["type"] == "TaskScheduled"] == [
        "stats", "publish", "enough-rows"]
    with pytest.raises(StepFailed, match=r"train_rows = 4000 does not meet the gate \(required >= 100000\)") as e:
        workflow(min_rows=100_000).run("emulator", config=cfg)
    # the state machine took the gate's Fail branch (GateNotPassed) and stopped there
    record = e.value.run_record
    assert record.failed_step == "enough-rows" and "GateNotPassed" in str(e.value)
    events = json.loads((cfg.runs_path() / record.run_id / "execution.json").read_text())
    entered = [ev["step"] for ev in events["events"] if ev["type"].endswith("StateEntered")]
    assert entered == ["stats", "publish", "enough-rows", "enough-rows-check",
                       "enough-rows-failed"], entered
