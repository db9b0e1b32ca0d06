"""The cloud path end to end on the embedded emulator: what `make e2e` runs.

``cloud_runners.cloud_run.cloud_run`` itself, pointed at the emulator
(``cloud.endpoint_url``; fake keys in the environment): bootstrap (the CloudFormation
stack), preflight, prepare + upload of the bundled sample, the code and the compiled
state machine, one execution (Glue ETL in Spark, SageMaker training in TensorFlow, the
gate, the hosting trio, the endpoint coming InService), then the test split through
sagemaker-runtime ``InvokeEndpoint`` to the local model server the endpoint runs.
One run (module fixture) serves every assertion.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from cloud_runners import aws
from cloud_runners.emulator.bridge import GlueBridge
from cloud_runners.emulator.hosting_bridge import HostingBridge
from cloud_runners.emulator.server import (
    FAKE_ACCESS_KEY,
    FAKE_SECRET_KEY,
    EmbeddedEmulator,
)
from cloud_runners.emulator.training_bridge import TrainingBridge
from harness import uris
from harness.config import PipelineConfig
from harness.requests import Layout, Names

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings(
    "ignore:Tried to parse AWS.{2}S3.{2}BucketPolicy")]  # moto's CloudFormation skips it

HEAD = ["RunEtl", "Train", "ReadGateMetric", "GateValue", "Gate", "CreateModel",
        "CreateEndpointConfig", "CreateEndpoint"]
POLL = ["WaitForEndpoint", "DescribeEndpoint", "EndpointInService?"]


def e2e_config(runs_dir: Path, endpoint_url: str) -> PipelineConfig:
    cfg = PipelineConfig()
    cfg.runs_dir = str(runs_dir)
    cfg.data.source = "fixture"
    cfg.cloud.endpoint_url = endpoint_url
    cfg.cloud.poll_seconds = 0.2  # the state machine's Wait: 1 s (its minimum)
    # Short training keeps the test fast; the gate still needs a real model.
    cfg.train.hyperparameters = {**cfg.train.hyperparameters, "epochs": 2, "seed": 42}
    cfg.evaluate.threshold = 0.5
    return cfg


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    from rich.console import Console

    from cloud_runners import images
    from cloud_runners.cloud_run import cloud_run
    from cloud_runners.infrastructure import bootstrap

    tmp = tmp_path_factory.mktemp("e2e")
    work = tmp / "work"
    work.mkdir()
    timings: dict[str, float] = {}
    with pytest.MonkeyPatch.context() as mp:
        # Fake keys only, and no profile or config file of the machine is read.
        for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN",
                    "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
            mp.delenv(var, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY)
        mp.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)
        mp.setenv("AWS_CONFIG_FILE", str(tmp / "no-aws-config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp / "no-aws-credentials"))
        mp.setattr(images, "IMAGE_CACHE", tmp / "image_uris.json")
        cfg = PipelineConfig()  # replaced once the emulator's port is known
        bridges = [GlueBridge(cfg, workdir=work), TrainingBridge(cfg, workdir=work),
                   HostingBridge(cfg, workdir=work)]
        with EmbeddedEmulator(region=cfg.cloud.region, bridge=bridges) as emu:
            cfg = e2e_config(tmp / "runs", emu.endpoint_url)
            for b in bridges:
                b.cfg = cfg
            session = aws.session_for(cfg)
            t0 = time.monotonic()
            outputs = bootstrap(cfg, session)
            timings["bootstrap_s"] = time.monotonic() - t0
            out = io.StringIO()
            t0 = time.monotonic()
            code = cloud_run(cfg, Console(file=out, width=200, color_system=None))
            timings["cloud_run_s"] = time.monotonic() - t0
            (run_dir,) = (tmp / "runs").iterdir()
            # execution.json: the execution and its streamed events (record.json: the
            # run record every backend keeps).
            record = json.loads((run_dir / "execution.json").read_text())
            assert "execution" in record, out.getvalue()[-4000:]
            record["run_record"] = json.loads((run_dir / "record.json").read_text())
            sfn = emu.client("stepfunctions")
            history = sfn.get_execution_history(executionArn=record["execution"],
                                                maxResults=1000)["events"]
            described = sfn.describe_execution(executionArn=record["execution"])
            s3 = emu.client("s3")
            layout = Layout(f"s3://{outputs['BucketName']}/"
                            f"{cfg.cloud.prefix.strip('/')}/{record['run_id']}")
            keys = aws.list_keys(s3, layout.base)
            names = Names(cfg, record["run_id"])
            endpoint = emu.client("sagemaker").describe_endpoint(EndpointName=names.endpoint)
            # The local figure on the very artifacts the cloud run left in S3.
            model = aws.download_file(
                s3, uris.join(layout.training, names.training_job, "output", "model.tar.gz"),
                tmp / "local" / "model.tar.gz")
            test_dir = aws.download_prefix(s3, layout.processed_split("test"),
                                           tmp / "local" / "test")
            t0 = time.monotonic()
            local = _local_evaluate(cfg, model, test_dir, tmp / "local" / "evaluation")
            timings["local_evaluate_s"] = time.monotonic() - t0
            print(f"\ne2e timings: {timings}; local accuracy {local['Metrics']['accuracy']}")
            yield {"code": code, "console": out.getvalue(), "record": record,
                   "history": history, "described": described, "keys": keys,
                   "layout": layout, "names": names, "endpoint": endpoint, "local": local,
                   "outputs": outputs, "timings": timings}
        # Leaving the emulator stopped every model server it started.
        assert all(not b.hosted for b in bridges if isinstance(b, HostingBridge))


def _local_evaluate(cfg: PipelineConfig, model: Path, test_dir: Path, out: Path) -> dict:
    import logging

    from harness.stages import StageContext
    from local_runners.evaluate import LocalEvaluateRunner

    ctx = StageContext(run_id="e2e-local", step="evaluate", config=cfg,
                       log=logging.getLogger("test.e2e.evaluate"), announce=lambda m: None)
    return LocalEvaluateRunner().run({
        "ModelArtifacts": uris.file_uri(model), "TestDataUri": uris.file_uri(test_dir),
        "OutputUri": uris.file_uri(out), "Metric": "accuracy", "Threshold": 0.0}, ctx)


def test_cloud_run_succeeds_on_the_emulator(e2e):
    assert e2e["code"] == 0, e2e["console"][-4000:]
    assert e2e["described"]["status"] == "SUCCEEDED"
    assert e2e["record"]["status"] == "SUCCEEDED"
    assert e2e["record"]["run_record"]["status"] == "SUCCEEDED"
    assert "answered 500 test digits" in e2e["console"], e2e["console"][-2000:]


def test_history_lists_every_state_in_order(e2e):
    entered = [e["stateEnteredEventDetails"]["name"] for e in e2e["history"]
               if e["type"].endswith("StateEntered")]
    assert entered[:len(HEAD)] == HEAD, entered
    polls = entered[len(HEAD):-1]
    assert polls and len(polls) % 3 == 0, entered
    assert all(polls[i:i + 3] == POLL for i in range(0, len(polls), 3)), entered
    assert entered[-1] == "Deployed"
    # The streamed record holds the same events.
    assert [e["id"] for e in e2e["record"]["events"]] == [e["id"] for e in e2e["history"]]


def test_artifacts_are_at_the_cloud_layout(e2e):
    layout, names, keys = e2e["layout"], e2e["names"], set(e2e["keys"])

    def key(uri: str) -> str:
        return aws.split_s3(uri)[1]

    for split in ("train", "validation", "test"):
        assert f"{key(layout.raw)}/{split}/part-00000.parquet" in keys, sorted(keys)
        assert any(k.startswith(key(layout.processed_split(split)) + "/")
                   and k.endswith(".parquet") for k in keys), sorted(keys)
    assert key(layout.sourcedir) in keys
    out = f"{key(layout.training)}/{names.training_job}/output"
    assert {f"{out}/model.tar.gz", f"{out}/output.tar.gz"} <= keys
    assert any(k.startswith(key(layout.inference) + "/") and k.endswith(".parquet")
               for k in keys), sorted(keys)


def test_endpoint_accuracy_equals_the_local_figure(e2e):
    inferred = e2e["record"]["infer"]
    local = e2e["local"]
    assert inferred["Count"] == local["Count"] == 500
    assert inferred["Accuracy"] == pytest.approx(local["Metrics"]["accuracy"], abs=1e-12)
    # ... and the gate read the training job's own figure for the same model and data.
    gate = next(json.loads(e["stateExitedEventDetails"]["output"])["Gate"]["Value"]
                for e in e2e["history"] if e["type"] == "ChoiceStateExited"
                and e["stateExitedEventDetails"]["name"] == "Gate")
    assert gate == pytest.approx(local["Metrics"]["accuracy"], abs=1e-6)
    assert e2e["endpoint"]["EndpointStatus"] == "InService"
