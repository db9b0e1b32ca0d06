"""The gate on the local backend: LocalGateRunner reads the evaluation.json the pipeline's
evaluate step wrote (as the state machine's getObject + StringToJson would), and the gate
step decides with the threshold of the configuration."""
from __future__ import annotations

import json

import pytest
from pipeline_support import pipeline, request, run_document, stage_context

from harness import uris
from harness.errors import GateFailed, StepFailed
from local_runners.gate import MAX_BYTES, LocalGateRunner

REPORT = {"metrics": {"accuracy": 0.93, "loss": 0.21, "macro_precision": 0.92,
                      "macro_recall": 0.91}, "count": 400, "model_version": 1}


def gate_run(tmp_path, report=REPORT, **overrides):
    """The gate step of a pipeline configured with ``overrides``, its request run on a
    run in ``tmp_path`` whose evaluation.json holds ``report``; (step, output)."""
    cfg, wf = pipeline(**overrides)
    if report is not None:
        path = tmp_path / "evaluation" / "evaluation.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report if isinstance(report, str) else json.dumps(report))
    req = request(wf, "gate", run_document(uris.file_uri(tmp_path)))
    step = wf.step("gate")
    return step, LocalGateRunner().run(req, stage_context(cfg, "gate"))


@pytest.mark.parametrize("overrides, passes", [
    ({"evaluate.threshold": 0.9}, True),
    ({"evaluate.threshold": 0.93}, True),           # >= : equal passes
    ({"evaluate.threshold": 0.95}, False),
    ({"evaluate.metric": "macro_recall", "evaluate.threshold": 1.0}, False),
    ({"evaluate.metric": "loss", "evaluate.direction": "<=", "evaluate.threshold": 0.3}, True),
    ({"evaluate.metric": "loss", "evaluate.direction": "<=", "evaluate.threshold": 0.2}, False),
])
def test_the_gate_passes_by_the_configured_metric_and_threshold(tmp_path, overrides, passes):
    step, out = gate_run(tmp_path, **overrides)
    assert out == {"Body": REPORT}
    assert step.passed(out) is passes
    if passes:
        assert step.after(out) is step.next_step and step.next_step.state_id == "model"
    else:
        with pytest.raises(GateFailed) as e:
            step.after(out)
        metric = step.metric.split(".")[1]
        assert str(e.value).startswith(f"{step.metric} = {REPORT['metrics'][metric]} does not "
                                       f"meet the gate (required {step.direction} ")
    assert step.resume_step().state_id == "train"  # a failed gate is retried from training


def test_a_missing_metric_stops_the_run_naming_it(tmp_path):
    step, out = gate_run(tmp_path, report={"metrics": {"loss": 0.2}})
    with pytest.raises(GateFailed, match="the file has no numeric metrics.accuracy"):
        step.after(out)


@pytest.mark.parametrize("report, message", [
    (None, "the file the gate checks does not exist"),
    ("{not json", "the file is not valid JSON"),
    (json.dumps({"pad": "x" * MAX_BYTES}), "too large for a state machine to read"),
])
def test_an_unreadable_file_is_step_failed_naming_it(tmp_path, report, message):
    with pytest.raises(StepFailed, match=message) as e:
        gate_run(tmp_path, report=report)
    assert e.value.step == "gate"
    assert str(tmp_path / "evaluation" / "evaluation.json") in str(e.value)
