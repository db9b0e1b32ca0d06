"""The cloud drift monitor, offline: the whole AWS path of ``harness cloud monitor`` on the
embedded emulator, in one process (the emulator's state lives as long as the process).

    make drift-cloud-demo        # or: python examples/drift_cloud_demo.py [--epochs N]

1. The stack is bootstrapped and the MNIST pipeline runs as ``harness cloud run`` does:
   Glue ETL, SageMaker training, evaluation, gate, model, endpoint config (data capture at
   100 %) and endpoint, all on the emulator with the local runners behind it.
2. Shifted digits (inverted) go to the endpoint through sagemaker-runtime
   ``InvokeEndpoint``; the emulated endpoint captures them into the emulated S3 under the
   endpoint's capture prefix, in SageMaker's data capture format.
3. ``harness cloud monitor RUN`` (its command, in this process): one execution of the
   monitoring state machine; the drift fails it at the gate (exit code 1).
4. ``harness cloud monitor RUN --schedule 'at(...)' --retrain`` as code: the monitoring
   state machine is deployed and an EventBridge Scheduler schedule created; the
   scheduler bridge fires it. The execution runs ``model/drift_check.py`` as a SageMaker
   Processing job on the captured traffic, its gate finds the violations, and
   ``states:startExecution`` starts the training pipeline's state machine: a new run on the
   data and code the monitored run uploaded.
5. The demo waits for that retrain execution and prints every execution's status, the
   drifted features and where the results are in the emulated S3.

Fixed seeds; ``--epochs``, ``--threshold`` and ``--images`` make it small enough for a
test.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCHEDULER = "cloud_runners.emulator.scheduler_bridge:SchedulerBridge"


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout_s:.0f} s")
        time.sleep(poll_s)


def ended(sfn: Any, execution_arn: str) -> dict[str, Any] | None:
    """DescribeExecution once the execution is no longer running (else None)."""
    described = sfn.describe_execution(executionArn=execution_arn)
    return described if described["status"] != "RUNNING" else None


def test_digits(raw_uri: str, s3: Any, n: int) -> np.ndarray:
    """``n`` digits of the test split the pipeline's prepare step uploaded (0..1)."""
    import io

    import pyarrow.parquet as pq

    bucket, key = raw_uri[len("s3://"):].split("/", 1)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{key.rstrip('/')}/test/")
    part = next(o["Key"] for o in listed["Contents"] if o["Key"].endswith(".parquet"))
    table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=part)["Body"].read()))
    x = np.asarray(table.column("pixels").combine_chunks().flatten(), np.float32)
    return (x.reshape(table.num_rows, -1) / 255.0)[:n]


def check_once(cfg: Any, run_id: str) -> dict[str, Any]:
    """`harness cloud monitor RUN` (its command function, on the emulator): one execution
    of the monitoring state machine, recorded as a run; (its run id, the exit code)."""
    from argparse import Namespace

    from rich.console import Console

    from cloud_runners.cloud_cli import monitor as monitor_command
    from harness.runs import RunStore

    store = RunStore(cfg.runs_path())
    before = set(store.list_ids())
    code = monitor_command(cfg, None, Console(), Namespace(
        target=run_id, schedule=None, unschedule=False, window=None, retrain=False))
    new = sorted(set(store.list_ids()) - before)
    return {"run_id": new[-1] if new else None, "exit_code": code}


def run(runs_dir: Path, *, epochs: int = 2, threshold: float = 0.5, images: int = 300,
        say: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole scenario (module doc), run records in ``runs_dir``; returns what a test
    checks."""
    from cloud_runners import aws
    from cloud_runners.cloud_run import CloudBackend
    from cloud_runners.emulator.backend import offline_cloud
    from cloud_runners.monitor_schedule import monitored, schedule, workflow_for
    from cloud_runners.stack import bootstrap
    from harness.config import load_config
    from harness.workflow import load_workflow

    cfg = load_config(overrides={
        "runs_dir": str(runs_dir), "data.source": "fixture", "cloud.poll_seconds": 0.2,
        "train.hyperparameters.epochs": epochs, "evaluate.threshold": threshold})
    pipeline = load_workflow(cfg.pipeline, cfg)
    bridges = [*pipeline.emulator_bridges(), SCHEDULER]
    with tempfile.TemporaryDirectory(prefix="mlharness-demo-") as tmp, \
            offline_cloud(cfg, tmp, bridges, label="the cloud drift demo") as (emu, aimed, bs):
        hosting = next(b for b in bs if type(b).__name__ == "HostingBridge")
        scheduler = next(b for b in bs if type(b).__name__ == "SchedulerBridge")
        session = aws.session_for(aimed)
        bootstrap(aimed, session, pipeline, announce=say)
        say("1. the pipeline on the emulator (harness cloud run)")
        result = CloudBackend().run(pipeline, aimed, session=session,
                                    announce=lambda m: None)
        run_id = result.record.run_id
        target, run_cfg, execution = monitored(aimed, run_id)
        say(f"   run {run_id} SUCCEEDED; endpoint {target.endpoint_name} captures to "
            f"{target.capture_uri}")

        say(f"2. {images} inverted test digits through InvokeEndpoint")
        x = 1.0 - test_digits(execution["Prepare"]["RawUri"], emu.client("s3"), images)
        runtime = emu.client("sagemaker-runtime")
        for i in range(0, len(x), 50):
            body = json.dumps({"instances": np.round(x[i:i + 50], 4).tolist()})
            runtime.invoke_endpoint(EndpointName=target.endpoint_name, Body=body,
                                    ContentType="application/json")
        delivered = hosting.flush_captures(target.endpoint_name)
        say(f"   {delivered} capture records delivered to the emulated S3")

        say(f"3. harness cloud monitor {run_id}: one check now, no retraining")
        once = check_once(aimed, run_id)
        say(f"   monitoring run {once['run_id']}: exit code {once['exit_code']} (1: the gate "
            "found drift and failed the execution)")

        say("4. harness cloud monitor --schedule 'at(...)' --retrain")
        monitor = workflow_for(aimed, target, run_cfg, execution, retrain=True)
        when = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2))
        made = schedule(aimed, session, monitor, run_id,
                        f"at({when.strftime('%Y-%m-%dT%H:%M:%S')})", announce=say)
        sfn = emu.client("stepfunctions")
        fired = wait_for("the schedule's firing", lambda: [
            f for f in scheduler.firings_snapshot() if f.get("execution_arn") or f.get("error")],
            120)
        if fired[0].get("error"):
            raise RuntimeError(f"the schedule did not start the monitor: {fired[0]['error']}")
        check = wait_for("the scheduled monitoring execution", lambda: ended(
            sfn, fired[0]["execution_arn"]), 240)
        output = json.loads(check.get("output") or "{}")
        say(f"   monitoring execution {check['name']}: {check['status']}")
        report = output.get("DriftGate", {}).get("Body", {})
        drifted = [f["name"] for f in report.get("features", []) if f.get("drifted")]
        say(f"   violations: {report.get('violation_count')}; drifted features: "
            f"{', '.join(drifted) or 'none'}")
        started = output.get("Retrain", {}).get("ExecutionArn")
        retrain = None
        if started:
            say(f"5. retrain execution {started.rsplit(':', 1)[-1]} (the training pipeline)")
            retrain = wait_for("the retrain execution", lambda: ended(sfn, started), 600)
            say(f"   {retrain['status']}" + ("" if retrain["status"] == "SUCCEEDED" else
                                               f": {retrain.get('error')}: "
                                               f"{str(retrain.get('cause'))[:2000]}"))
        return {"run_id": run_id, "monitoring": check, "report": report,
                "firings": scheduler.firings_snapshot(), "retrain": retrain,
                "schedule": made, "execution_input": execution, "once": once,
                "runs_dir": str(runs_dir)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threshold", type=float, default=0.5,
                   help="the pipeline's gate on test accuracy (small data, few epochs)")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--json", metavar="FILE", help="also write what happened as JSON")
    p.add_argument("--runs-dir", metavar="DIR",
                   help="keep the run records here (default: a temporary folder)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mlharness-drift-cloud-") as tmp:
        out = run(Path(args.runs_dir or tmp), epochs=args.epochs, threshold=args.threshold,
                  images=args.images)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    ok = out["monitoring"]["status"] == "SUCCEEDED" and out["retrain"] is not None \
        and out["retrain"]["status"] == "SUCCEEDED"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
